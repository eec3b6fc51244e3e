"""One regression test per Amazon-provider bug that airflow-neo must not repeat."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from moto import mock_aws

from airflow.sdk.exceptions import AirflowException
from airflow_neo.core.payload import describe_payload
from airflow_neo.core.status import FAILURE_STATES, SUCCESS_STATES
from airflow_neo.operators.neo import NeoCompilationOperator
from airflow_neo.triggers.neo import NeoCompilationJobTrigger
from tests.support import moto_neo
from tests.support.context import make_context
from tests.support.requests import valid_request


def test_42423_67281_stopped_is_never_success():
    assert "STOPPED" in FAILURE_STATES and "STOPPED" not in SUCCESS_STATES
    op = NeoCompilationOperator(task_id="x", config=valid_request())
    with pytest.raises(AirflowException, match="STOPPED"):
        op.execute_complete(make_context(), {"status": "stopped", "payload": {"CompilationJobName": "j", "CompilationJobStatus": "STOPPED"}})


def test_69042_failed_deferred_job_is_not_marked_success():
    op = NeoCompilationOperator(task_id="x", config=valid_request())
    event = {"status": "failed", "payload": {"CompilationJobName": "j", "CompilationJobStatus": "FAILED", "FailureReason": "OOM"}}
    with pytest.raises(AirflowException, match="OOM"):
        op.execute_complete(make_context(), event)


async def test_71653_events_distinguish_failed_stopped_timeout(aws_conn_env):
    from airflow_neo.hooks.neo import NeoHook

    hook = NeoHook(aws_conn_id=aws_conn_env)
    hook.create_compilation_job(valid_request("fail-r"))
    hook.create_compilation_job(valid_request("r-stop"))
    hook.stop_compilation_job("r-stop")
    hook.create_compilation_job(valid_request("r-slow"))
    statuses = {}
    for name, attempts in (("fail-r", None), ("r-stop", None), ("r-slow", 1)):
        trigger = NeoCompilationJobTrigger(name, aws_conn_id=aws_conn_env, poll_interval=0.01, max_attempts=attempts)
        async for event in trigger.run():
            statuses[name] = event.payload["status"]
    assert statuses == {"fail-r": "failed", "r-stop": "stopped", "r-slow": "timeout"}


def test_72144_region_verify_botocore_config_survive_deferral():
    trigger = NeoCompilationJobTrigger(
        "j", region_name="ap-south-1", verify="/etc/ca.pem", botocore_config={"retries": {"mode": "adaptive"}}
    )
    kwargs = trigger.serialize()[1]
    hook = NeoCompilationJobTrigger(**kwargs).hook()
    assert hook.region_name == "ap-south-1"
    assert hook.verify == "/etc/ca.pem"
    assert hook.config.retries == {"mode": "adaptive"}


def test_16386_no_datetimes_in_xcom(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    local = dt.datetime(2026, 5, 1, 10, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
    payload = describe_payload({"CreationTime": local, "CompilationStartTime": local, "Nested": [{"T": local}]})
    assert payload == {"CreationTime": "2026-05-01T04:30:00+00:00", "CompilationStartTime": "2026-05-01T04:30:00+00:00", "Nested": [{"T": "2026-05-01T04:30:00+00:00"}]}
    json.dumps(payload)


def test_34017_upper_case_failed_is_recognised():
    assert "FAILED" in FAILURE_STATES
    op = NeoCompilationOperator(task_id="x", config=valid_request())
    with pytest.raises(AirflowException, match="FAILED"):
        op._finish({"CompilationJobName": "j", "CompilationJobStatus": "FAILED", "FailureReason": "r"})


def test_21941_no_name_collision_on_retry():
    moto_neo.install()
    moto_neo.reset_extension_state()
    with mock_aws():
        kwargs = dict(task_id="compile", config=valid_request("retry-me"), aws_conn_id=None, region_name="us-east-1", check_interval=0)
        NeoCompilationOperator(wait_for_completion=False, **kwargs).execute(make_context(try_number=1))
        payload = NeoCompilationOperator(**kwargs).execute(make_context(try_number=2))
    assert payload["CompilationJobName"] == "retry-me" and payload["CompilationJobStatus"] == "COMPLETED"
