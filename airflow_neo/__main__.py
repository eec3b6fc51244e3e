"""``python -m airflow_neo``: the ``airflow-neo`` command line."""

from __future__ import annotations

import sys

from airflow_neo.cli import main

if __name__ == "__main__":
    sys.exit(main())
