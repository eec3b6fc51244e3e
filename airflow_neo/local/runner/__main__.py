"""``python -m airflow_neo.local.runner``: see :func:`airflow_neo.local.runner.launch.main`."""

import sys

from airflow_neo.local.runner.launch import main

if __name__ == "__main__":
    sys.exit(main())
