"""Tests of the stateful compilation-job extension of moto, with plain boto3."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import moto
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support import moto_neo
from tests.support.fixtures import (  # noqa: F401  (pytest fixtures)
    aws_conn_env,
    aws_env,
    aws_connection_json,
    moto_reset,
    moto_server,
)

ROLE_ARN = "arn:aws:iam::123456789012:role/NeoRole"
REQUEST: dict[str, Any] = {
    "RoleArn": ROLE_ARN,
    "InputConfig": {
        "S3Uri": "s3://bucket/model.tar.gz",
        "Framework": "ONNX",
        "DataInputConfig": '{"data":[1,3,224,224]}',
    },
    "OutputConfig": {"S3OutputLocation": "s3://bucket/out", "TargetDevice": "ml_c5"},
    "StoppingCondition": {"MaxRuntimeInSeconds": 900},
}
NO_RETRY = Config(retries={"max_attempts": 1})


def _client(endpoint_url: str | None = None) -> Any:
    return boto3.client(
        "sagemaker", region_name="us-east-1", endpoint_url=endpoint_url, config=NO_RETRY
    )


@pytest.fixture(params=["decorator", "server"])
def sagemaker(request: pytest.FixtureRequest, aws_env: None) -> Iterator[Any]:  # noqa: F811
    """A SageMaker client on moto in decorator mode, then in server mode."""
    moto_neo.install()
    moto_neo.reset_extension_state()
    if request.param == "decorator":
        with moto.mock_aws():
            yield _client()
    else:
        yield _client(request.getfixturevalue("moto_reset"))
    moto_neo.reset_extension_state()


def _create(client: Any, name: str, **overrides: Any) -> None:
    client.create_compilation_job(CompilationJobName=name, **{**REQUEST, **overrides})


def _describe(client: Any, name: str) -> dict[str, Any]:
    return client.describe_compilation_job(CompilationJobName=name)


def _statuses(client: Any, name: str, count: int) -> list[str]:
    return [_describe(client, name)["CompilationJobStatus"] for _ in range(count)]


def _error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


# -- lifecycle -----------------------------------------------------------------
def test_job_moves_one_step_per_describe(sagemaker: Any) -> None:
    _create(sagemaker, "job-ok")

    starting = _describe(sagemaker, "job-ok")
    running = _describe(sagemaker, "job-ok")
    done = _describe(sagemaker, "job-ok")

    assert starting["CompilationJobStatus"] == "STARTING"
    assert "CompilationStartTime" not in starting
    assert "CompilationEndTime" not in starting
    assert running["CompilationJobStatus"] == "INPROGRESS"
    assert running["CompilationStartTime"] >= starting["CreationTime"]
    assert "CompilationEndTime" not in running
    assert done["CompilationJobStatus"] == "COMPLETED"
    assert done["CompilationEndTime"] >= done["CompilationStartTime"]
    assert done["LastModifiedTime"] == done["CompilationEndTime"]
    assert done["FailureReason"] == ""
    assert done["ModelArtifacts"]["S3ModelArtifacts"] == "s3://bucket/out/model-ml_c5.tar.gz"
    assert _describe(sagemaker, "job-ok")["CompilationJobStatus"] == "COMPLETED"


def test_last_modified_time_moves_with_status(sagemaker: Any) -> None:
    _create(sagemaker, "job-ok")
    starting, running, done = (_describe(sagemaker, "job-ok") for _ in range(3))
    assert starting["LastModifiedTime"] == starting["CreationTime"]
    assert running["LastModifiedTime"] == running["CompilationStartTime"]
    assert done["LastModifiedTime"] == done["CompilationEndTime"]
    assert _describe(sagemaker, "job-ok")["LastModifiedTime"] == done["LastModifiedTime"]


def test_immediate_progression(sagemaker: Any) -> None:
    moto_neo.set_transition("immediate")
    _create(sagemaker, "job-now")
    job = _describe(sagemaker, "job-now")
    assert job["CompilationJobStatus"] == "COMPLETED"
    assert "CompilationStartTime" in job and "CompilationEndTime" in job


def test_manual_progression_with_several_describes_per_step(sagemaker: Any) -> None:
    moto_neo.set_transition("manual", times=2)
    _create(sagemaker, "job-slow")
    assert _statuses(sagemaker, "job-slow", 5) == [
        "STARTING",
        "STARTING",
        "INPROGRESS",
        "INPROGRESS",
        "COMPLETED",
    ]


def test_time_progression(sagemaker: Any) -> None:
    moto_neo.set_transition("time", seconds=0.2)
    _create(sagemaker, "job-timed")
    time.sleep(0.25)
    assert _describe(sagemaker, "job-timed")["CompilationJobStatus"] == "INPROGRESS"
    time.sleep(0.25)
    assert _describe(sagemaker, "job-timed")["CompilationJobStatus"] == "COMPLETED"


def test_list_does_not_advance_jobs(sagemaker: Any) -> None:
    _create(sagemaker, "job-ok")
    _describe(sagemaker, "job-ok")
    for _ in range(3):
        (summary,) = sagemaker.list_compilation_jobs()["CompilationJobSummaries"]
        assert summary["CompilationJobStatus"] == "STARTING"
    assert _describe(sagemaker, "job-ok")["CompilationJobStatus"] == "INPROGRESS"


# -- failures ------------------------------------------------------------------
def test_fail_prefix_ends_failed_with_reason(sagemaker: Any) -> None:
    _create(sagemaker, "fail-job")
    assert _statuses(sagemaker, "fail-job", 2) == ["STARTING", "INPROGRESS"]
    job = _describe(sagemaker, "fail-job")
    assert job["CompilationJobStatus"] == "FAILED"
    assert job["FailureReason"] == moto_neo.DEFAULT_FAILURE_REASON
    assert "CompilationEndTime" in job


def test_fail_reason_tag_sets_the_reason(sagemaker: Any) -> None:
    reason = "ClientError: OperatorNotImplemented: NonMaxSuppression"
    tags = [{"Key": moto_neo.FAIL_REASON_TAG, "Value": reason}]
    _create(sagemaker, "job-tagged", Tags=tags)
    job = [_describe(sagemaker, "job-tagged") for _ in range(3)][-1]
    assert job["CompilationJobStatus"] == "FAILED"
    assert job["FailureReason"] == reason


# -- stop ----------------------------------------------------------------------
def test_stop_goes_stopping_then_stopped(sagemaker: Any) -> None:
    _create(sagemaker, "job-stop")
    assert _describe(sagemaker, "job-stop")["CompilationJobStatus"] == "STARTING"

    sagemaker.stop_compilation_job(CompilationJobName="job-stop")
    sagemaker.stop_compilation_job(CompilationJobName="job-stop")  # no-op while STOPPING

    stopping = _describe(sagemaker, "job-stop")
    stopped = _describe(sagemaker, "job-stop")
    assert stopping["CompilationJobStatus"] == "STOPPING"
    assert stopped["CompilationJobStatus"] == "STOPPED"
    assert "CompilationEndTime" in stopped
    assert stopped["FailureReason"] == ""
    assert _describe(sagemaker, "job-stop")["CompilationJobStatus"] == "STOPPED"


def test_stop_of_terminal_job_is_a_validation_error(sagemaker: Any) -> None:
    _create(sagemaker, "job-done")
    _statuses(sagemaker, "job-done", 3)
    with pytest.raises(ClientError) as excinfo:
        sagemaker.stop_compilation_job(CompilationJobName="job-done")
    assert _error_code(excinfo) == "ValidationException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_stop_of_unknown_job_is_resource_not_found(sagemaker: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        sagemaker.stop_compilation_job(CompilationJobName="no-such-job")
    assert _error_code(excinfo) == "ResourceNotFound"


def test_delete_needs_a_terminal_job(sagemaker: Any) -> None:
    _create(sagemaker, "job-del")
    with pytest.raises(ClientError) as excinfo:
        sagemaker.delete_compilation_job(CompilationJobName="job-del")
    assert _error_code(excinfo) == "ValidationException"
    _statuses(sagemaker, "job-del", 3)
    sagemaker.delete_compilation_job(CompilationJobName="job-del")
    assert sagemaker.list_compilation_jobs()["CompilationJobSummaries"] == []


# -- list ----------------------------------------------------------------------
def test_list_with_target_platform_without_accelerator(sagemaker: Any) -> None:
    platform = {"Os": "LINUX", "Arch": "ARM64"}
    output = {"S3OutputLocation": "s3://bucket/out", "TargetPlatform": platform}
    _create(sagemaker, "job-arm", OutputConfig=output)
    _create(sagemaker, "job-c5")

    summaries = sagemaker.list_compilation_jobs(SortBy="Name")["CompilationJobSummaries"]

    arm, c5 = summaries
    assert arm["CompilationTargetPlatformOs"] == "LINUX"
    assert arm["CompilationTargetPlatformArch"] == "ARM64"
    assert "CompilationTargetPlatformAccelerator" not in arm
    assert c5["CompilationTargetDevice"] == "ml_c5"


def test_list_filters_on_status(sagemaker: Any) -> None:
    _create(sagemaker, "job-a")
    _create(sagemaker, "job-b")
    _statuses(sagemaker, "job-a", 2)

    running = sagemaker.list_compilation_jobs(StatusEquals="INPROGRESS")
    names = [s["CompilationJobName"] for s in running["CompilationJobSummaries"]]
    assert names == ["job-a"]


# -- transient errors ----------------------------------------------------------
def test_throttle_next_fails_describes_without_advancing(sagemaker: Any) -> None:
    _create(sagemaker, "job-t")
    _create(sagemaker, "job-other")
    # max_attempts=1 is one *retry* in botocore's legacy mode: 2 calls per describe.
    moto_neo.throttle_next(2, job_name="job-t")

    with pytest.raises(ClientError) as excinfo:
        _describe(sagemaker, "job-t")
    assert _error_code(excinfo) == "ThrottlingException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert _describe(sagemaker, "job-other")["CompilationJobStatus"] == "STARTING"
    assert _describe(sagemaker, "job-t")["CompilationJobStatus"] == "STARTING"


def test_throttle_absorbed_by_a_retry(sagemaker: Any) -> None:
    _create(sagemaker, "job-t")
    moto_neo.throttle_next(1)
    response = _describe(sagemaker, "job-t")
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert response["CompilationJobStatus"] == "STARTING"


# -- install and server helpers ------------------------------------------------
def test_install_is_idempotent() -> None:
    moto_neo.install()
    patched = moto.sagemaker.responses.SageMakerResponse.describe_compilation_job
    moto_neo.install()
    assert moto.sagemaker.responses.SageMakerResponse.describe_compilation_job is patched


def test_moto_model_registry_files_job_under_sagemaker() -> None:
    from moto.core.model_instances import model_data

    assert model_data["sagemaker"]["NeoCompilationJob"] is moto_neo.NeoCompilationJob


def test_server_transition_and_reset_over_http(moto_reset: str, aws_env: None) -> None:  # noqa: F811
    client = _client(moto_reset)
    moto_neo.set_server_transition(moto_reset, "immediate")
    _create(client, "job-http")
    assert _describe(client, "job-http")["CompilationJobStatus"] == "COMPLETED"

    moto_neo.reset_server(moto_reset)
    assert client.list_compilation_jobs()["CompilationJobSummaries"] == []


# -- Airflow connection ----------------------------------------------------------
@pytest.mark.parametrize("extra_as_string", [False, True])
def test_airflow_aws_hook_reaches_server(
    aws_conn_env: str,  # noqa: F811
    moto_reset: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    extra_as_string: bool,
) -> None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    if extra_as_string:
        conn = json.loads(aws_connection_json(moto_reset))
        conn["extra"] = json.dumps(conn["extra"])
        monkeypatch.setenv("AIRFLOW_CONN_AWS_NEO_TEST", json.dumps(conn))

    client = AwsBaseHook(aws_conn_id=aws_conn_env, client_type="sagemaker").conn

    assert client.meta.endpoint_url == moto_reset
    assert client.meta.region_name == "us-east-1"
    _create(client, "job-airflow")
    assert _describe(client, "job-airflow")["CompilationJobStatus"] == "STARTING"
