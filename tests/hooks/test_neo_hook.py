"""NeoHook against moto in decorator mode (sync) and a moto server (async)."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from airflow_neo.core.exceptions import (
    CompilationJobExists,
    CompilationJobNotFound,
    CompilationJobStateError,
    CompilationJobTimeout,
    InvalidCompilationRequest,
)
from airflow_neo.hooks.neo import NeoHook
from tests.core.test_validation import BAD_REQUESTS
from tests.support import moto_neo
from tests.support.requests import valid_request

DESCRIBE_FIELDS = {
    "CompilationJobName", "CompilationJobArn", "CompilationJobStatus", "CompilationStartTime",
    "CompilationEndTime", "StoppingCondition", "InferenceImage", "CreationTime", "LastModifiedTime",
    "FailureReason", "ModelArtifacts", "ModelDigests", "RoleArn", "InputConfig", "OutputConfig",
    "DerivedInformation",
}


@pytest.fixture
def hook():
    moto_neo.install()
    moto_neo.reset_extension_state()
    with mock_aws():
        yield NeoHook(aws_conn_id=None, region_name="us-east-1", config={"retries": {"mode": "standard", "total_max_attempts": 1}}, retry_delay=0.01)
    moto_neo.reset_extension_state()


def test_create_describe_walks_the_states(hook):
    response = hook.create_compilation_job(valid_request("walk"))
    assert response["CompilationJobArn"].endswith(":compilation-job/walk")
    seen = [hook.describe_compilation_job("walk")["CompilationJobStatus"] for _ in range(3)]
    assert seen == ["STARTING", "INPROGRESS", "COMPLETED"]


def test_describe_payload_is_full_and_json_safe(hook):
    hook.create_compilation_job(valid_request("full"))
    payload = hook.wait_for_compilation_job("full", check_interval=0)
    assert DESCRIBE_FIELDS <= set(payload)
    assert "ResponseMetadata" not in payload
    assert payload["CreationTime"].endswith("+00:00")
    assert json.loads(json.dumps(payload)) == payload


def test_validation_happens_before_any_call(hook):
    request = valid_request("bad")
    request["OutputConfig"]["TargetDevice"] = "ml_c99"
    with pytest.raises(InvalidCompilationRequest, match="OutputConfig.TargetDevice"):
        hook.create_compilation_job(request)
    assert hook.list_compilation_jobs() == []


@pytest.mark.parametrize(("case", "request_", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_create_no_job(hook, case, request_, field):
    with pytest.raises(InvalidCompilationRequest) as info:
        hook.create_compilation_job(request_)
    assert field in [p.path for p in info.value.problems]
    assert hook.list_compilation_jobs() == []


def test_duplicate_name_is_resource_in_use(hook):
    hook.create_compilation_job(valid_request("dup"))
    with pytest.raises(CompilationJobExists):
        hook.create_compilation_job(valid_request("dup"))


def test_unknown_job_is_not_found(hook):
    with pytest.raises(CompilationJobNotFound):
        hook.describe_compilation_job("nope")
    with pytest.raises(CompilationJobNotFound):
        hook.stop_compilation_job("nope")


def test_failed_job_reports_reason(hook):
    hook.create_compilation_job(valid_request("fail-op"))
    payload = hook.wait_for_compilation_job("fail-op", check_interval=0)
    assert payload["CompilationJobStatus"] == "FAILED"
    assert payload["FailureReason"]


def test_stop_goes_through_stopping_to_stopped(hook):
    hook.create_compilation_job(valid_request("stopme"))
    assert hook.describe_compilation_job("stopme")["CompilationJobStatus"] == "STARTING"
    hook.stop_compilation_job("stopme")
    statuses = [hook.describe_compilation_job("stopme")["CompilationJobStatus"] for _ in range(2)]
    assert statuses == ["STOPPING", "STOPPED"]
    with pytest.raises(CompilationJobStateError):
        hook.stop_compilation_job("stopme")


def test_delete_only_terminal(hook):
    hook.create_compilation_job(valid_request("del"))
    with pytest.raises(CompilationJobStateError):
        hook.delete_compilation_job("del")
    hook.wait_for_compilation_job("del", check_interval=0)
    hook.delete_compilation_job("del")
    with pytest.raises(CompilationJobNotFound):
        hook.describe_compilation_job("del")


def test_wait_times_out(hook):
    hook.create_compilation_job(valid_request("slow"))
    with pytest.raises(CompilationJobTimeout):
        hook.wait_for_compilation_job("slow", check_interval=0, max_wait=0)


def test_list_every_page_filters_and_sort(hook):
    for i in range(7):
        hook.create_compilation_job(valid_request(f"job-{i}"))
    hook.create_compilation_job(valid_request("other"))
    for i in range(3):  # finish job-0, job-1, job-2
        hook.wait_for_compilation_job(f"job-{i}", check_interval=0)
    names = [s["CompilationJobName"] for s in hook.list_compilation_jobs(NameContains="job-", SortBy="Name", SortOrder="Ascending")]
    assert names == [f"job-{i}" for i in range(7)]
    assert len(hook.list_compilation_jobs(max_results=3)) == 3
    completed = {s["CompilationJobName"] for s in hook.list_compilation_jobs(StatusEquals="COMPLETED")}
    assert completed == {"job-0", "job-1", "job-2"}
    summary = hook.list_compilation_jobs(NameContains="other")[0]
    assert summary["CreationTime"].endswith("+00:00")
    with pytest.raises(ValueError, match="NameLike"):
        hook.list_compilation_jobs(NameLike="x")


def test_list_pages_are_all_read(hook, monkeypatch):
    for i in range(5):
        hook.create_compilation_job(valid_request(f"p-{i}"))
    calls = []
    original = hook.conn.list_compilation_jobs

    def small_pages(**kwargs):
        calls.append(kwargs)
        return original(**{**kwargs, "MaxResults": 2})

    monkeypatch.setattr(hook.conn, "list_compilation_jobs", small_pages)
    assert len(hook.list_compilation_jobs()) == 5
    assert len(calls) == 3 and "NextToken" in calls[1]


def test_tags_are_listed(hook):
    hook.create_compilation_job(valid_request("tagged", Tags=[{"Key": "team", "Value": "vision"}]))
    assert {"Key": "team", "Value": "vision"} in hook.list_compilation_job_tags("tagged")


def test_throttling_is_retried(hook):
    hook.create_compilation_job(valid_request("throttled"))
    moto_neo.throttle_next(2)
    assert hook.describe_compilation_job("throttled")["CompilationJobStatus"] == "STARTING"


def test_throttling_beyond_retries_raises(hook):
    hook.max_retries = 1
    hook.create_compilation_job(valid_request("throttled2"))
    moto_neo.throttle_next(3)
    with pytest.raises(Exception, match="Throttling"):
        hook.describe_compilation_job("throttled2")


async def test_async_describe_through_the_connection(aws_conn_env):
    hook = NeoHook(aws_conn_id=aws_conn_env)
    hook.create_compilation_job(valid_request("async-job"))
    payload = await hook.adescribe_compilation_job("async-job")
    assert payload["CompilationJobStatus"] == "STARTING"
    assert payload["CreationTime"].endswith("+00:00")
    with pytest.raises(CompilationJobNotFound):
        await hook.adescribe_compilation_job("missing")


def test_tags_of_a_described_job_is_one_listtags_call(hook):
    hook.create_compilation_job(valid_request("tagged", Tags=[{"Key": "team", "Value": "ml"}]))
    payload = hook.describe_compilation_job("tagged")
    calls: list[str] = []
    hook.conn.meta.events.register("before-call.sagemaker.*", lambda model, **_: calls.append(model.name))
    assert hook.tags_of(payload) == [{"Key": "team", "Value": "ml"}]
    assert calls == ["ListTags"]
    assert hook.list_compilation_job_tags("tagged") == [{"Key": "team", "Value": "ml"}]
    assert calls == ["ListTags", "DescribeCompilationJob", "ListTags"]
