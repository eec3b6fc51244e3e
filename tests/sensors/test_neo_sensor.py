"""The sensor for jobs started elsewhere: poke, reschedule and deferrable modes."""

from __future__ import annotations

import asyncio

import pytest
from moto import mock_aws

from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow_neo.hooks.neo import NeoHook
from airflow_neo.local.store import JobStore
from airflow_neo.sensors.neo import NeoCompilationJobSensor
from airflow_neo.triggers.neo import NeoCompilationJobTrigger
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


# ----------------------------------------------------------------------------- deferred, job not started yet


def _defer(sensor) -> NeoCompilationJobTrigger:
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(make_context())
    trigger = info.value.trigger
    path, kwargs = trigger.serialize()  # what the triggerer rebuilds the trigger from
    assert path == "airflow_neo.triggers.neo.NeoCompilationJobTrigger"
    return NeoCompilationJobTrigger(**kwargs)


async def _complete_after(sensor, trigger, create=None, wait=0.3):
    """Run the trigger (creating the job once it has waited a while) and hand its event to the sensor."""

    async def first_event():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    task = asyncio.ensure_future(first_event())
    if create is not None:
        await asyncio.sleep(wait)
        assert not task.done(), f"the trigger ended before the job existed: {task.result()}"
        await asyncio.to_thread(create)
    event = await asyncio.wait_for(task, 60)
    return sensor.execute_complete(make_context(), event)


async def test_deferrable_sensor_waits_for_a_job_started_later(aws_conn_env):
    sensor = NeoCompilationJobSensor(
        task_id="wait", compilation_job_name="s-later", aws_conn_id=aws_conn_env, deferrable=True,
        poke_interval=0.02, fail_if_not_found=False,
    )
    trigger = _defer(sensor)
    assert trigger.fail_if_not_found is False and trigger.stop_on_kill is False
    hook = NeoHook(aws_conn_id=aws_conn_env)
    payload = await _complete_after(sensor, trigger, lambda: hook.create_compilation_job(valid_request("s-later")))
    assert payload["CompilationJobName"] == "s-later" and payload["CompilationJobStatus"] == "COMPLETED"


async def test_deferrable_sensor_reports_the_failure_of_a_job_started_later(aws_conn_env):
    sensor = NeoCompilationJobSensor(
        task_id="wait", compilation_job_name="s-later-bad", aws_conn_id=aws_conn_env, deferrable=True,
        poke_interval=0.02, fail_if_not_found=False,
    )
    trigger = _defer(sensor)
    hook = NeoHook(aws_conn_id=aws_conn_env)
    request = valid_request("s-later-bad", Tags=[{"Key": "moto:fail-reason", "Value": "bad layout"}])
    with pytest.raises(AirflowException, match="FAILED: bad layout"):
        await _complete_after(sensor, trigger, lambda: hook.create_compilation_job(request))


async def test_deferrable_sensor_on_a_job_that_never_appears_times_out(aws_conn_env):
    sensor = NeoCompilationJobSensor(
        task_id="wait", compilation_job_name="s-never", aws_conn_id=aws_conn_env, deferrable=True,
        poke_interval=0.01, timeout=3, fail_if_not_found=False,
    )
    trigger = _defer(sensor)
    assert trigger.max_attempts == 3
    with pytest.raises(AirflowException, match="s-never not found after 3 checks"):
        await _complete_after(sensor, trigger)


def test_deferrable_sensor_fails_at_once_on_a_missing_job_by_default(aws_conn_env):
    sensor = NeoCompilationJobSensor(
        task_id="wait", compilation_job_name="s-absent", aws_conn_id=aws_conn_env, deferrable=True, poke_interval=0.01
    )
    with pytest.raises(AirflowException, match="s-absent not found"):
        sensor.execute(make_context())


async def test_deferrable_local_sensor_waits_for_a_job_started_later(tmp_path):
    store_path = str(tmp_path / "state" / "jobs.sqlite")
    store = JobStore(store_path, host="remote-runner")
    sensor = NeoCompilationJobSensor(
        task_id="wait", compilation_job_name="s-local", backend="local", local_store=store_path, deferrable=True,
        poke_interval=0.02, fail_if_not_found=False,
    )
    trigger = _defer(sensor)
    assert trigger.backend == "local" and trigger.local_store == store_path and trigger.fail_if_not_found is False

    def start_and_finish():
        store.create(valid_request("s-local"), lease_seconds=3600)
        store.mark_inprogress("s-local", "remote-runner", 1, 3600)
        store.complete("s-local", "s3://b/s-local.tar.gz", "00", None)

    payload = await _complete_after(sensor, trigger, start_and_finish)
    assert payload["CompilationJobName"] == "s-local" and payload["CompilationJobStatus"] == "COMPLETED"
