"""Operators on the SageMaker backend: moto decorator mode for sync paths, a moto server for deferral."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow_neo.core.attach import TASK_TAG_KEY, TaskInstanceRef, created_by
from airflow_neo.core.exceptions import CompilationJobExists, UnknownBackendError
from airflow_neo.hooks.neo import NeoHook
from airflow_neo.operators.neo import (
    NeoCompilationOperator,
    NeoDescribeCompilationJobOperator,
    NeoListCompilationJobsOperator,
    NeoStopCompilationJobOperator,
)
from airflow_neo.triggers.neo import NeoCompilationJobTrigger
from tests.support import moto_neo
from tests.support.context import make_context
from tests.support.requests import valid_request

NO_RETRY = {"retries": {"mode": "standard", "total_max_attempts": 1}}


@pytest.fixture
def mocked_aws():
    moto_neo.install()
    moto_neo.reset_extension_state()
    with mock_aws():
        yield
    moto_neo.reset_extension_state()


def _compile_op(config, **kwargs):
    kwargs.setdefault("check_interval", 0)
    return NeoCompilationOperator(
        task_id="compile", config=config, aws_conn_id=None, region_name="us-east-1", botocore_config=NO_RETRY, **kwargs
    )


def _hook():
    return NeoHook(aws_conn_id=None, region_name="us-east-1", config=NO_RETRY)


def test_compile_waits_and_returns_full_payload(mocked_aws):
    context = make_context()
    payload = _compile_op(valid_request("c1")).execute(context)
    assert payload["CompilationJobStatus"] == "COMPLETED"
    assert payload["ModelArtifacts"]["S3ModelArtifacts"].startswith("s3://models/compiled/")
    assert json.loads(json.dumps(payload)) == payload
    assert context["ti"].xcoms["compilation_job_name"] == "c1"
    link = context["ti"].xcoms["neo_compilation_job"]
    assert link["job_name"] == "c1" and link["region_name"] == "us-east-1"


def test_compile_without_waiting_returns_current_payload(mocked_aws):
    payload = _compile_op(valid_request("c2"), wait_for_completion=False).execute(make_context())
    assert payload["CompilationJobStatus"] == "STARTING"


def test_failed_job_fails_the_task_with_reason(mocked_aws):
    request = valid_request("c3", Tags=[{"Key": "moto:fail-reason", "Value": "OpNotImplemented: Foo"}])
    with pytest.raises(AirflowException, match="FAILED: OpNotImplemented: Foo"):
        _compile_op(request).execute(make_context())


def test_invalid_config_fails_before_any_call(mocked_aws):
    request = valid_request("c4")
    request["InputConfig"]["Framework"] = "CAFFE"
    with pytest.raises(AirflowException, match="InputConfig.Framework"):
        _compile_op(request).execute(make_context())
    assert _hook().list_compilation_jobs() == []


def test_templated_integers_and_dict_options(mocked_aws):
    request = valid_request("c5")
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": "900"}
    request["OutputConfig"]["CompilerOptions"] = {"mcpu": "skylake-avx512"}
    _compile_op(request, wait_for_completion=False).execute(make_context())
    payload = _hook().describe_compilation_job("c5")
    assert payload["StoppingCondition"]["MaxRuntimeInSeconds"] == 900
    assert json.loads(payload["OutputConfig"]["CompilerOptions"]) == {"mcpu": "skylake-avx512"}


def test_timeout_stops_the_job_and_fails(mocked_aws):
    with pytest.raises(AirflowException, match="max wait.*stopped"):
        _compile_op(valid_request("c6"), max_ingestion_time=0).execute(make_context())
    hook = _hook()
    assert hook.describe_compilation_job("c6")["CompilationJobStatus"] == "STOPPING"


def test_retry_reattaches_instead_of_creating_a_second_job(mocked_aws):
    first = _compile_op(valid_request("c7"), wait_for_completion=False)
    first.execute(make_context(try_number=1))
    payload = _compile_op(valid_request("c7")).execute(make_context(try_number=2))
    assert payload["CompilationJobName"] == "c7" and payload["CompilationJobStatus"] == "COMPLETED"
    assert [s["CompilationJobName"] for s in _hook().list_compilation_jobs()] == ["c7"]
    tags = _hook().list_compilation_job_tags("c7")
    assert any(t["Key"] == TASK_TAG_KEY for t in tags)


def test_a_job_names_the_task_instance_that_created_it(mocked_aws):
    request = valid_request("c7b", Tags=[{"Key": "team", "Value": "ml"}])
    _compile_op(request, wait_for_completion=False).execute(make_context(task_id="compile_b", map_index=3))
    tags = _hook().list_compilation_job_tags("c7b")
    assert {"Key": "team", "Value": "ml"} in tags
    assert created_by(tags) == TaskInstanceRef("neo_dag", "compile_b", "manual__2026-11-25T00:00:00+00:00", 3)


def test_name_taken_by_another_task(mocked_aws):
    _compile_op(valid_request("c8"), wait_for_completion=False).execute(make_context(task_id="other"))
    with pytest.raises(CompilationJobExists, match="already exists"):
        _compile_op(valid_request("c8")).execute(make_context())
    payload = _compile_op(valid_request("c8"), action_if_job_exists="increment").execute(make_context())
    assert payload["CompilationJobName"] == "c8-1"
    payload = _compile_op(valid_request("c8"), action_if_job_exists="timestamp").execute(make_context(task_id="third"))
    assert payload["CompilationJobName"].startswith("c8-2")


def test_mapped_instances_do_not_share_jobs(mocked_aws):
    _compile_op(valid_request("m"), wait_for_completion=False, action_if_job_exists="increment").execute(make_context(map_index=0))
    payload = _compile_op(valid_request("m"), wait_for_completion=False, action_if_job_exists="increment").execute(make_context(map_index=1))
    assert payload["CompilationJobName"] == "m-1"


def test_on_kill_stops_the_job(mocked_aws):
    op = _compile_op(valid_request("k1"), wait_for_completion=False)
    op.execute(make_context())
    op.on_kill()
    hook = _hook()
    assert hook.describe_compilation_job("k1")["CompilationJobStatus"] == "STOPPING"


def test_describe_list_stop_operators(mocked_aws):
    common = {"aws_conn_id": None, "region_name": "us-east-1", "botocore_config": NO_RETRY}
    _compile_op(valid_request("d1"), wait_for_completion=False).execute(make_context())
    _compile_op(valid_request("d2"), wait_for_completion=False).execute(make_context(task_id="t2"))
    stopped = NeoStopCompilationJobOperator(task_id="stop", compilation_job_name="d1", check_interval=0, **common).execute(make_context())
    assert stopped["CompilationJobStatus"] == "STOPPED"
    described = NeoDescribeCompilationJobOperator(task_id="describe", compilation_job_name="d1", **common).execute(make_context())
    assert described["CompilationJobName"] == "d1" and described["CompilationJobStatus"] == "STOPPED"
    assert described == stopped
    again = NeoStopCompilationJobOperator(task_id="stop2", compilation_job_name="d1", check_interval=0, **common).execute(make_context())
    assert again["CompilationJobStatus"] == "STOPPED"
    listed = NeoListCompilationJobsOperator(task_id="list", name_contains="d", sort_by="Name", sort_order="Ascending", **common).execute(make_context())
    assert [s["CompilationJobName"] for s in listed] == ["d1", "d2"]
    stopped_only = NeoListCompilationJobsOperator(task_id="list2", status_equals="STOPPED", **common).execute(make_context())
    assert [s["CompilationJobName"] for s in stopped_only] == ["d1"]
    json.dumps(listed)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(UnknownBackendError, match="'azure'.*\\['sagemaker', 'local'\\]"):
        NeoCompilationOperator(task_id="x", config=valid_request(), backend="azure")
    with pytest.raises(ValueError, match="action_if_job_exists"):
        NeoCompilationOperator(task_id="x", config=valid_request(), action_if_job_exists="overwrite")


def test_default_deferrable_comes_from_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    from airflow.sdk.configuration import conf

    assert conf.getboolean("operators", "default_deferrable")
    assert NeoCompilationOperator(task_id="x", config=valid_request()).deferrable is True


# -- deferral end to end against a moto server -------------------------------------------


async def _run_trigger(trigger: NeoCompilationJobTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("trigger fired no event")


def _serialized_roundtrip(trigger: NeoCompilationJobTrigger) -> NeoCompilationJobTrigger:
    import importlib

    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


@pytest.mark.parametrize(
    ("name", "tags", "expected"),
    [("def-ok", [], "COMPLETED"), ("fail-def", [], "FAILED")],
)
async def test_deferred_compile_end_to_end(aws_conn_env, name, tags, expected):
    op = NeoCompilationOperator(
        task_id="compile", config=valid_request(name), aws_conn_id=aws_conn_env, deferrable=True, check_interval=0.01,
        region_name="us-east-1", verify=False, botocore_config=NO_RETRY,
    )
    context = make_context()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = _serialized_roundtrip(info.value.trigger)
    assert trigger.serialize() == info.value.trigger.serialize()
    kwargs = trigger.serialize()[1]
    assert kwargs["region_name"] == "us-east-1" and kwargs["verify"] is False and kwargs["botocore_config"] == NO_RETRY
    event = await _run_trigger(trigger)
    method = getattr(op, info.value.method_name)
    if expected == "COMPLETED":
        payload = method(context, event)
        assert payload["CompilationJobStatus"] == "COMPLETED"
        assert payload == NeoHook(aws_conn_id=aws_conn_env).describe_compilation_job(name)
    else:
        assert event["status"] == "failed"
        with pytest.raises(AirflowException, match="FAILED"):
            method(context, event)


def test_sagemaker_compile_defers_in_a_kubernetes_executor_pod_too(aws_conn_env, monkeypatch):
    """Only local compiles live in the task's pod; a SageMaker job does not."""
    monkeypatch.setenv("AIRFLOW_IS_K8S_EXECUTOR_POD", "True")
    op = NeoCompilationOperator(
        task_id="compile", config=valid_request("def-k8s"), aws_conn_id=aws_conn_env, deferrable=True,
        check_interval=0.01,
    )
    with pytest.raises(TaskDeferred):
        op.execute(make_context())


async def test_deferred_timeout_stops_the_job(aws_conn_env):
    op = NeoCompilationOperator(
        task_id="compile", config=valid_request("def-slow"), aws_conn_id=aws_conn_env, deferrable=True,
        check_interval=0.01, max_ingestion_time=0.01,
    )
    context = make_context()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    event = await _run_trigger(info.value.trigger)
    assert event["status"] == "timeout"
    with pytest.raises(AirflowException, match="not finished"):
        op.execute_complete(context, event)
    assert NeoHook(aws_conn_id=aws_conn_env).describe_compilation_job("def-slow")["CompilationJobStatus"] in ("STOPPING", "STOPPED")


def test_execute_complete_never_takes_a_bad_event_as_success():
    op = NeoCompilationOperator(task_id="x", config=valid_request())
    for event in (None, {}, {"status": "stopped", "payload": {"CompilationJobName": "j", "CompilationJobStatus": "STOPPED"}},
                  {"status": "error", "message": "boom"},
                  {"status": "success", "payload": {"CompilationJobName": "j", "CompilationJobStatus": "FAILED", "FailureReason": "x"}}):
        with pytest.raises(AirflowException):
            op.execute_complete(make_context(), event)


# -- the create path and the connection parameters -----------------------------------------


def test_request_is_validated_once_on_the_create_path(mocked_aws, monkeypatch):
    from airflow_neo.core import validation

    calls = []
    original = validation.normalize_request

    def counting(config, **kwargs):
        calls.append(config.get("CompilationJobName"))
        return original(config, **kwargs)

    monkeypatch.setattr(validation, "normalize_request", counting)
    _compile_op(valid_request("once"), wait_for_completion=False).execute(make_context())
    payload = _compile_op(valid_request("once"), wait_for_completion=False, action_if_job_exists="increment").execute(
        make_context(task_id="other")
    )
    assert calls == ["once", "once"]  # one validation per task, renamed or not
    assert payload["CompilationJobName"] == "once-1"
    assert any(t["Key"] == TASK_TAG_KEY for t in _hook().list_compilation_job_tags("once-1"))


def test_connection_parameters_take_default_args_and_expand():
    from airflow.sdk import DAG

    with DAG("neo_defaults", schedule=None, default_args={"aws_conn_id": "from_defaults", "backend": "local"}):
        op = NeoCompilationOperator(task_id="x", config=valid_request())
        mapped = NeoDescribeCompilationJobOperator.partial(task_id="m", compilation_job_name="j").expand(
            region_name=["eu-west-1", "us-east-1"]
        )
    assert op.aws_conn_id == "from_defaults" and op.backend == "local"
    assert op.connection_params.to_dict()["aws_conn_id"] == "from_defaults"
    assert mapped.expand_input.value == {"region_name": ["eu-west-1", "us-east-1"]}
