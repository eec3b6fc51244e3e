"""airflow-neo: SageMaker Neo compilation jobs from Airflow DAGs, on SageMaker or locally with TVM."""

from __future__ import annotations

__version__ = "0.1.0"
