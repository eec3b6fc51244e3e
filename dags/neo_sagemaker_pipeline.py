"""Compilation on SageMaker: create a job deferrably, wait for a job started elsewhere, describe, consume.

Connection id, S3 bucket, role and the name of the externally started job come from params;
an empty param falls back to an Airflow Variable (``neo_aws_conn_id``, ``neo_bucket``,
``neo_role_arn``, ``neo_external_job``) and then to a default.
"""

from __future__ import annotations

import os

import pendulum

from airflow.sdk import Param, dag, task
from airflow_neo.operators.neo import (
    NeoCompilationOperator,
    NeoDescribeCompilationJobOperator,
    NeoListCompilationJobsOperator,
    NeoStopCompilationJobOperator,
)
from airflow_neo.sensors.neo import NeoCompilationJobSensor

# Seconds between status checks; SageMaker jobs take minutes, so 30 s is plenty.
POLL_SECONDS = float(os.environ.get("NEO_EXAMPLE_POLL_SECONDS", "30"))
CONN_ID = "{{ params.aws_conn_id or var.value.get('neo_aws_conn_id', 'aws_default') }}"
BUCKET = "{{ params.bucket or var.value.get('neo_bucket', 'my-neo-models') }}"
ROLE_ARN = "{{ params.role_arn or var.value.get('neo_role_arn', 'arn:aws:iam::123456789012:role/SageMakerNeoRole') }}"
EXTERNAL_JOB = "{{ params.external_job or var.value.get('neo_external_job', 'nightly-export-ml-c5') }}"

# [START howto_operator_neo_sagemaker_config]
SAGEMAKER_CONFIG = {
    "CompilationJobName": "resnet18-c5-{{ ds_nodash }}",
    "RoleArn": ROLE_ARN,
    "InputConfig": {
        "S3Uri": f"s3://{BUCKET}/models/resnet18/model.tar.gz",
        "Framework": "PYTORCH",
        "FrameworkVersion": "2.0",
        "DataInputConfig": {"input0": [1, 3, 224, 224]},
    },
    "OutputConfig": {
        "S3OutputLocation": f"s3://{BUCKET}/compiled/",
        "TargetDevice": "ml_c5",
    },
    "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    "Tags": [{"Key": "team", "Value": "vision"}],
}
# [END howto_operator_neo_sagemaker_config]


@dag(
    dag_id="neo_sagemaker_pipeline",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["neo", "sagemaker"],
    doc_md=__doc__,
    params={
        "aws_conn_id": Param("", type="string", description="AWS connection id (empty: Variable neo_aws_conn_id, else aws_default)"),
        "bucket": Param("", type="string", description="S3 bucket (empty: Variable neo_bucket)"),
        "role_arn": Param("", type="string", description="SageMaker execution role (empty: Variable neo_role_arn)"),
        "external_job": Param("", type="string", description="job started outside the DAG (empty: Variable neo_external_job)"),
    },
)
def neo_sagemaker_pipeline():
    # [START howto_operator_neo_compilation_deferrable]
    compile_model = NeoCompilationOperator(
        task_id="compile",
        config=SAGEMAKER_CONFIG,
        aws_conn_id=CONN_ID,
        deferrable=True,
        check_interval=POLL_SECONDS,
        max_ingestion_time=3600,
        action_if_job_exists="timestamp",
    )
    # [END howto_operator_neo_compilation_deferrable]

    # [START howto_sensor_neo_compilation_job]
    wait_external = NeoCompilationJobSensor(
        task_id="wait_for_external_job",
        compilation_job_name=EXTERNAL_JOB,
        aws_conn_id=CONN_ID,
        deferrable=True,
        poke_interval=POLL_SECONDS,
        timeout=6 * 3600,
    )
    # [END howto_sensor_neo_compilation_job]

    # [START howto_operator_neo_describe]
    describe = NeoDescribeCompilationJobOperator(
        task_id="describe",
        compilation_job_name="{{ ti.xcom_pull(task_ids='compile')['CompilationJobName'] }}",
        aws_conn_id=CONN_ID,
    )
    # [END howto_operator_neo_describe]

    # A speculative compile for a second target, started without waiting and then cancelled.
    # [START howto_operator_neo_compilation_no_wait]
    start_canary = NeoCompilationOperator(
        task_id="start_canary",
        config={**SAGEMAKER_CONFIG, "CompilationJobName": "resnet18-c6g-{{ ds_nodash }}",
                "OutputConfig": {"S3OutputLocation": f"s3://{BUCKET}/compiled/", "TargetDevice": "ml_c6g"}},
        aws_conn_id=CONN_ID,
        wait_for_completion=False,
        action_if_job_exists="timestamp",
    )
    # [END howto_operator_neo_compilation_no_wait]

    # [START howto_operator_neo_stop]
    cancel_canary = NeoStopCompilationJobOperator(
        task_id="cancel_canary",
        compilation_job_name="{{ ti.xcom_pull(task_ids='start_canary')['CompilationJobName'] }}",
        aws_conn_id=CONN_ID,
        check_interval=POLL_SECONDS,
        max_wait=1800,
    )
    # [END howto_operator_neo_stop]

    # [START howto_operator_neo_list]
    list_today = NeoListCompilationJobsOperator(
        task_id="list_todays_jobs",
        name_contains="{{ ds_nodash }}",
        sort_by="CreationTime",
        sort_order="Descending",
        aws_conn_id=CONN_ID,
    )
    # [END howto_operator_neo_list]

    @task
    def publish_manifest(compiled: dict, external: dict) -> dict:
        """A downstream consumer: build a deployment manifest from the two payloads."""
        manifest = {
            job["CompilationJobName"]: {
                "artifact": job["ModelArtifacts"]["S3ModelArtifacts"],
                "digest": job.get("ModelDigests", {}).get("ArtifactDigest"),
                "target": job["OutputConfig"].get("TargetDevice") or job["OutputConfig"].get("TargetPlatform"),
                "completed_at": job.get("CompilationEndTime"),
            }
            for job in (compiled, external)
        }
        print(manifest)
        return manifest

    compile_model >> describe
    start_canary >> cancel_canary >> list_today
    publish_manifest(describe.output, wait_external.output)


neo_sagemaker_pipeline()
