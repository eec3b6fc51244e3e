"""Test DAG (tests/operators/test_report_assets.py): a local compile whose outlets name its artifact
and an unrelated asset, and a downstream task that prints the asset events' extra it reads as inlets;
and a NeoVerifyArtifactOperator whose artifact_uri is a template pulling the compile's XCom (with a
short profile), and a task that prints the report it pulls from the verify task's XCom.

The model archive and output location come from the environment the test sets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow.sdk import DAG, Asset, task
from airflow_neo.operators.neo import NeoCompilationOperator
from airflow_neo.operators.verify import NeoVerifyArtifactOperator

ARCHIVE = Path(os.environ.get("NEO_REPORT_TEST_ARCHIVE", "/nonexistent/model.tar.gz"))
OUT = Path(os.environ.get("NEO_REPORT_TEST_OUT", "/nonexistent/out"))
ARTIFACT = Asset((OUT / "model-linux-x86_64.tar.gz").as_uri())
UNRELATED = Asset((OUT.parent / "elsewhere").as_uri())

with DAG("neo_report_assets", schedule=None, catchup=False):
    compiled = NeoCompilationOperator(
        task_id="compile",
        backend="local",
        aws_conn_id=None,
        check_interval=0.5,
        outlets=[ARTIFACT, UNRELATED],
        config={
            "CompilationJobName": "report-assets",
            "RoleArn": "arn:aws:iam::123456789012:role/NeoRole",
            "InputConfig": {"S3Uri": ARCHIVE.as_uri(), "Framework": "ONNX", "DataInputConfig": {"data": [1, 3, 32, 32]}},
            "OutputConfig": {"S3OutputLocation": OUT.as_uri(), "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        },
    )

    @task(inlets=[ARTIFACT, UNRELATED])
    def read_reports(*, inlet_events=None, ti=None):
        seen = {asset.uri: [dict(event.extra) for event in inlet_events[asset]] for asset in (ARTIFACT, UNRELATED)}
        print("NEO_REPORT_EVENTS " + json.dumps(seen, sort_keys=True))
        print("NEO_REPORT_XCOM " + json.dumps(ti.xcom_pull(task_ids="compile", key="neo_report"), sort_keys=True))

    verify = NeoVerifyArtifactOperator(
        task_id="verify",
        artifact_uri="{{ ti.xcom_pull(task_ids='compile')['ModelArtifacts']['S3ModelArtifacts'] }}",
        profile_seconds=0.05,
        aws_conn_id=None,
    )

    @task
    def keep_verify_report(report):
        print("NEO_VERIFY_REPORT " + json.dumps(report, sort_keys=True))

    compiled >> read_reports()
    compiled >> verify
    keep_verify_report(verify.output)
