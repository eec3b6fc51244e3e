from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from airflow_neo.core import status
from airflow_neo.core.attach import (
    TASK_TAG_KEY,
    JobExistsAction,
    choose_job_name,
    parse_action,
    task_identity,
    with_identity_tag,
    TaskInstanceRef,
    created_by,
    task_instance_tags,
)
from airflow_neo.core.backends import Backend, parse_backend
from airflow_neo.core.exceptions import CompilationJobExists, CompilationJobFailed, CompilationJobTimeout, UnknownBackendError
from airflow_neo.core.naming import incremented_name, timestamped_name
from airflow_neo.core.outcome import raise_unless_completed
from airflow_neo.core.payload import describe_payload
from airflow_neo.core.retry import call_with_retries, is_transient
from airflow_neo.core.waiting import wait_for_terminal


class FakeClientError(Exception):
    def __init__(self, code, http=400):
        super().__init__(code)
        self.response = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": http}}


def test_status_sets():
    assert status.RUNNING_STATES == {"STARTING", "INPROGRESS", "STOPPING"}
    assert status.SUCCESS_STATES == {"COMPLETED"}
    assert status.FAILURE_STATES == {"FAILED", "STOPPED"}
    assert "STOPPED" not in status.SUCCESS_STATES  # a stopped job is never success


def test_payload_is_json_safe_utc_and_keeps_every_field():
    tz = ZoneInfo("America/Los_Angeles")
    response = {
        "CompilationJobName": "j",
        "CompilationJobStatus": "COMPLETED",
        "CreationTime": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz),
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/k"},
        "ResponseMetadata": {"RequestId": "x"},
        "FailureReason": "",
    }
    payload = describe_payload(response)
    assert payload["CreationTime"] == "2026-01-02T11:04:05+00:00"
    assert "ResponseMetadata" not in payload
    assert payload["FailureReason"] == "" and payload["ModelArtifacts"] == {"S3ModelArtifacts": "s3://b/k"}
    json.dumps(payload)


def test_backend_parsing():
    assert parse_backend("SageMaker") is Backend.SAGEMAKER
    assert parse_backend("local") is Backend.LOCAL
    with pytest.raises(UnknownBackendError, match="'gcp'.*sagemaker"):
        parse_backend("gcp")


def test_retry_retries_transient_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise FakeClientError("ThrottlingException")
        return "ok"

    sleeps = []
    assert call_with_retries(flaky, max_retries=5, base_delay=0.01, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2

    def broken():
        calls.append(1)
        raise FakeClientError("ValidationException")

    calls.clear()
    with pytest.raises(FakeClientError):
        call_with_retries(broken, sleep=sleeps.append)
    assert len(calls) == 1


def test_retry_gives_up_after_max_retries():
    calls = []

    def always():
        calls.append(1)
        raise FakeClientError("ServiceUnavailable", 503)

    with pytest.raises(FakeClientError):
        call_with_retries(always, max_retries=2, base_delay=0, sleep=lambda s: None)
    assert len(calls) == 3


def test_transient_classification():
    assert is_transient(FakeClientError("Throttling"))
    assert is_transient(FakeClientError("Whatever", 502))
    assert is_transient(ConnectionResetError())
    assert not is_transient(FakeClientError("ResourceNotFound"))
    assert not is_transient(ValueError("x"))


def test_wait_returns_terminal_payload_and_times_out():
    states = iter(["STARTING", "INPROGRESS", "COMPLETED"])
    payload = wait_for_terminal(lambda n: {"CompilationJobStatus": next(states)}, "j", check_interval=0, sleep=lambda s: None)
    assert payload["CompilationJobStatus"] == "COMPLETED"
    clock = iter(range(100))
    with pytest.raises(CompilationJobTimeout) as info:
        wait_for_terminal(
            lambda n: {"CompilationJobStatus": "INPROGRESS"}, "j", check_interval=1, max_wait=3,
            sleep=lambda s: None, clock=lambda: next(clock),
        )
    assert info.value.payload == {"CompilationJobStatus": "INPROGRESS"}


@pytest.mark.parametrize(("state", "reason"), [("FAILED", "bad op Foo"), ("STOPPED", "STOPPED")])
def test_failed_and_stopped_are_not_success(state, reason):
    with pytest.raises(CompilationJobFailed, match=reason):
        raise_unless_completed({"CompilationJobName": "j", "CompilationJobStatus": state, "FailureReason": "bad op Foo"})
    assert raise_unless_completed({"CompilationJobStatus": "COMPLETED"})


def test_names():
    assert incremented_name("job", {"job", "job-1"}) == "job-2"
    long = "a" * 63
    assert len(incremented_name(long, {long})) == 63
    stamped = timestamped_name("job", dt.datetime(2026, 11, 25, 3, 4, 5, tzinfo=dt.timezone.utc))
    assert stamped == "job-20261125030405"
    assert len(timestamped_name("b" * 63)) == 63


def _choose(existing, action="fail", identity=None, tags=None, statuses=None):
    tags = tags or {}
    statuses = statuses or {}
    return choose_job_name(
        "job", parse_action(action), existing_names=existing, identity=identity,
        tags_of=lambda n: tags.get(n, []), status_of=lambda n: statuses.get(n, "COMPLETED"),
    )


def test_choose_job_name_rules():
    assert _choose([]).name == "job"
    with pytest.raises(CompilationJobExists, match="increment"):
        _choose(["job"])
    assert _choose(["job", "job-1"], "increment").name == "job-2"
    assert _choose(["job"], "timestamp").name.startswith("job-2")


def test_retry_reattaches_to_its_own_running_job():
    me = task_identity("dag", "task", "run", 0)
    other = task_identity("dag", "task", "run", 1)
    assert me != other
    tags = {"job": [{"Key": TASK_TAG_KEY, "Value": other}], "job-1": [{"Key": TASK_TAG_KEY, "Value": me}]}
    decision = _choose(["job", "job-1"], "increment", me, tags, {"job-1": "INPROGRESS"})
    assert decision.reattach and decision.name == "job-1"


def test_retry_after_own_failed_job_gets_a_fresh_name_even_in_fail_mode():
    me = task_identity("dag", "task", "run")
    decision = _choose(["job"], "fail", me, {"job": [{"Key": TASK_TAG_KEY, "Value": me}]}, {"job": "FAILED"})
    assert not decision.reattach and decision.name == "job-1"


def test_created_by_tags_round_trip_and_leave_out_values_the_api_refuses():
    tags = task_instance_tags("team_a", "compile", "manual__2026-12-02T08:00:00+00:00", 2)
    assert created_by([{"Key": "team", "Value": "ml"}, *tags]) == TaskInstanceRef(
        "team_a", "compile", "manual__2026-12-02T08:00:00+00:00", 2)
    odd_run = task_instance_tags("team_a", "compile", "my~run")  # '~' is outside the API's tag pattern
    assert created_by(odd_run) == TaskInstanceRef("team_a", "compile", None, -1)
    assert created_by([{"Key": TASK_TAG_KEY, "Value": "x"}]) is None  # made outside Airflow (or before the tags)
    request = with_identity_tag({"Tags": tags}, "id", task_instance_tags("team_b", "t", "r"))
    assert created_by(request["Tags"]) == TaskInstanceRef("team_b", "t", "r", -1)
    assert len(request["Tags"]) == 5


def test_identity_tag_replaces_existing():
    request = with_identity_tag({"Tags": [{"Key": "team", "Value": "ml"}, {"Key": TASK_TAG_KEY, "Value": "old"}]}, "new")
    assert request["Tags"] == [{"Key": "team", "Value": "ml"}, {"Key": TASK_TAG_KEY, "Value": "new"}]
    with pytest.raises(ValueError, match="action_if_job_exists.*increment"):
        parse_action("replace")
    assert JobExistsAction("timestamp") is JobExistsAction.TIMESTAMP
