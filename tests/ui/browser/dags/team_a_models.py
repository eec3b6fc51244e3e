"""Team A's DAG for the browser tests: one local compile of the sample CNN, run by ``airflow dags test``.

The archive and output folder come from the environment the test sets (``NEO_UI_TEST_ARCHIVE``,
``NEO_UI_TEST_OUT``); the job store is ``[neo] local_store``. The operator tags the job with this
task instance and records its name in XCom, which is how the "Compilation job" tab finds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG
from airflow_neo.operators.neo import NeoCompilationOperator

ARCHIVE = Path(os.environ.get("NEO_UI_TEST_ARCHIVE", "/nonexistent/model.tar.gz"))
OUT = Path(os.environ.get("NEO_UI_TEST_OUT", "/nonexistent/out"))

with DAG("team_a_models", schedule=None, catchup=False, tags=["airflow-neo-ui-tests"]):
    NeoCompilationOperator(
        task_id="compile",
        backend="local",
        aws_conn_id=None,
        deferrable=False,
        check_interval=0.5,
        config={
            "CompilationJobName": "cnn-team-a",
            "RoleArn": "arn:aws:iam::123456789012:role/NeoRole",
            "InputConfig": {"S3Uri": ARCHIVE.as_uri(), "Framework": "ONNX", "DataInputConfig": {"data": [1, 3, 32, 32]}},
            "OutputConfig": {"S3OutputLocation": OUT.as_uri(), "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
            "StoppingCondition": {"MaxRuntimeInSeconds": 1200},
        },
    )
