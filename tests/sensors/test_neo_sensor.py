"""The sensor for jobs started elsewhere: poke, reschedule and deferrable modes."""

from __future__ import annotations

import pytest
from moto import mock_aws

from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow_neo.hooks.neo import NeoHook
from airflow_neo.sensors.neo import NeoCompilationJobSensor
from tests.support import moto_neo
from tests.support.context import make_context
from tests.support.requests import valid_request

NO_RETRY = {"retries": {"mode": "standard", "total_max_attempts": 1}}


@pytest.fixture
def hook():
    moto_neo.install()
    moto_neo.reset_extension_state()
    with mock_aws():
        yield NeoHook(aws_conn_id=None, region_name="us-east-1", config=NO_RETRY)
    moto_neo.reset_extension_state()


def _sensor(name, **kwargs):
    kwargs.setdefault("poke_interval", 0)
    return NeoCompilationJobSensor(
        task_id="wait", compilation_job_name=name, aws_conn_id=None, region_name="us-east-1", botocore_config=NO_RETRY, **kwargs
    )


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_poke_until_completed_returns_payload(hook, mode):
    hook.create_compilation_job(valid_request("s-ok"))
    sensor = _sensor("s-ok", mode=mode)
    results = [sensor.poke(make_context()) for _ in range(3)]
    assert results[:2] == [False, False]
    assert results[2].is_done and results[2].xcom_value["CompilationJobStatus"] == "COMPLETED"


def test_execute_in_poke_mode_returns_payload(hook):
    hook.create_compilation_job(valid_request("s-exec"))
    payload = _sensor("s-exec").execute(make_context())
    assert payload["CompilationJobName"] == "s-exec" and payload["CompilationJobStatus"] == "COMPLETED"


def test_failed_job_fails_with_reason(hook):
    hook.create_compilation_job(valid_request("s-f", Tags=[{"Key": "moto:fail-reason", "Value": "bad shape"}]))
    with pytest.raises(AirflowException, match="FAILED: bad shape"):
        _sensor("s-f").execute(make_context())


def test_stopped_job_fails(hook):
    hook.create_compilation_job(valid_request("s-stop"))
    hook.stop_compilation_job("s-stop")
    with pytest.raises(AirflowException, match="STOPPED"):
        _sensor("s-stop").execute(make_context())


def test_missing_job(hook):
    with pytest.raises(AirflowException, match="not found"):
        _sensor("s-missing").poke(make_context())
    assert _sensor("s-missing", fail_if_not_found=False).poke(make_context()) is False


async def test_deferrable_sensor_end_to_end(aws_conn_env):
    NeoHook(aws_conn_id=aws_conn_env).create_compilation_job(valid_request("s-def"))
    sensor = NeoCompilationJobSensor(
        task_id="wait", compilation_job_name="s-def", aws_conn_id=aws_conn_env, deferrable=True, poke_interval=0.01
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(make_context())
    trigger = info.value.trigger
    assert trigger.stop_on_kill is False, "a sensor never stops a job that someone else started"
    async for event in trigger.run():
        payload = sensor.execute_complete(make_context(), event.payload)
        break
    assert payload["CompilationJobStatus"] == "COMPLETED"
