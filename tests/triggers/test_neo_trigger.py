"""The deferrable trigger against a moto server, through an Airflow AWS connection."""

from __future__ import annotations

import asyncio

import pytest

from airflow_neo.hooks.neo import NeoHook
from airflow_neo.local.store import JobStore
from airflow_neo.triggers.neo import NeoCompilationJobTrigger
from tests.support import moto_neo
from tests.support.requests import valid_request


def _trigger(conn_id, name, **kwargs):
    kwargs.setdefault("poll_interval", 0.01)
    return NeoCompilationJobTrigger(compilation_job_name=name, aws_conn_id=conn_id, **kwargs)


async def _first_event(trigger):
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def test_serialize_round_trips_every_argument():
    trigger = NeoCompilationJobTrigger(
        compilation_job_name="j", backend="local", aws_conn_id="c", region_name="eu-west-1", verify="/ca.pem",
        botocore_config={"read_timeout": 5}, local_store="/tmp/s.sqlite", poll_interval=7, max_attempts=9,
        max_transient_errors=2, stop_on_kill=False, fail_if_not_found=False,
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_neo.triggers.neo.NeoCompilationJobTrigger"
    assert NeoCompilationJobTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs == {
        "compilation_job_name": "j", "backend": "local", "aws_conn_id": "c", "region_name": "eu-west-1",
        "verify": "/ca.pem", "botocore_config": {"read_timeout": 5}, "local_store": "/tmp/s.sqlite",
        "poll_interval": 7, "max_attempts": 9, "max_transient_errors": 2, "stop_on_kill": False,
        "fail_if_not_found": False,
    }


def test_connection_parameters_are_one_value_read_as_attributes():
    from airflow_neo.hooks.params import NeoConnectionParams

    trigger = NeoCompilationJobTrigger(compilation_job_name="j", backend="LOCAL", local_store="/s.sqlite", verify=False)
    assert trigger.connection == NeoConnectionParams(backend="local", local_store="/s.sqlite", verify=False)
    assert (trigger.backend, trigger.aws_conn_id, trigger.local_store, trigger.verify) == ("local", "aws_default", "/s.sqlite", False)
    with pytest.raises(AttributeError):
        trigger.no_such_attribute  # noqa: B018
    with pytest.raises(TypeError, match="region"):
        NeoCompilationJobTrigger(compilation_job_name="j", region="eu-west-1")


@pytest.mark.parametrize("fail_if_not_found", [True, False])
def test_serialize_round_trips_fail_if_not_found(fail_if_not_found):
    trigger = NeoCompilationJobTrigger(compilation_job_name="j", fail_if_not_found=fail_if_not_found)
    path, kwargs = trigger.serialize()
    assert kwargs["fail_if_not_found"] is fail_if_not_found
    rebuilt = NeoCompilationJobTrigger(**kwargs)
    assert rebuilt.fail_if_not_found is fail_if_not_found
    assert rebuilt.serialize() == (path, kwargs)


def test_fail_if_not_found_defaults_to_true():
    trigger = NeoCompilationJobTrigger(compilation_job_name="j")
    assert trigger.fail_if_not_found is True and trigger.serialize()[1]["fail_if_not_found"] is True


@pytest.mark.parametrize(
    ("name", "tags", "status", "reason"),
    [
        ("t-ok", [], "success", None),
        ("t-bad", [{"Key": "moto:fail-reason", "Value": "Unsupported op Foo"}], "failed", "Unsupported op Foo"),
    ],
)
async def test_terminal_events(aws_conn_env, name, tags, status, reason):
    NeoHook(aws_conn_id=aws_conn_env).create_compilation_job(valid_request(name, Tags=tags) if tags else valid_request(name))
    event = await _first_event(_trigger(aws_conn_env, name))
    assert event["status"] == status and event["compilation_job_name"] == name
    assert event["payload"]["CompilationJobName"] == name
    if reason:
        assert event["payload"]["FailureReason"] == reason


async def test_stopped_event(aws_conn_env):
    hook = NeoHook(aws_conn_id=aws_conn_env)
    hook.create_compilation_job(valid_request("t-stop"))
    hook.stop_compilation_job("t-stop")
    event = await _first_event(_trigger(aws_conn_env, "t-stop"))
    assert event["status"] == "stopped"
    assert event["payload"]["CompilationJobStatus"] == "STOPPED"


async def test_timeout_event_carries_last_payload(aws_conn_env):
    NeoHook(aws_conn_id=aws_conn_env).create_compilation_job(valid_request("t-slow"))
    event = await _first_event(_trigger(aws_conn_env, "t-slow", max_attempts=1))
    assert event["status"] == "timeout"
    assert event["payload"]["CompilationJobStatus"] == "STARTING"


async def test_not_found_is_an_error_event(aws_conn_env):
    event = await _first_event(_trigger(aws_conn_env, "missing"))
    assert event["status"] == "error" and "not found" in event["message"]


async def test_transient_errors_are_tolerated(aws_conn_env):
    NeoHook(aws_conn_id=aws_conn_env).create_compilation_job(valid_request("t-flaky"))
    moto_neo.throttle_next(3, job_name="t-flaky")
    event = await _first_event(_trigger(aws_conn_env, "t-flaky", max_transient_errors=3))
    assert event["status"] == "success"


async def test_too_many_transient_errors_end_in_error(aws_conn_env):
    NeoHook(aws_conn_id=aws_conn_env).create_compilation_job(valid_request("t-flaky2"))
    moto_neo.throttle_next(5, job_name="t-flaky2")
    event = await _first_event(_trigger(aws_conn_env, "t-flaky2", max_transient_errors=2))
    assert event["status"] == "error" and "Throttling" in event["message"]


async def test_on_kill_stops_the_job(aws_conn_env):
    hook = NeoHook(aws_conn_id=aws_conn_env)
    hook.create_compilation_job(valid_request("t-kill"))
    # The job cannot finish on its own while the trigger polls (1000 describes per step), so the
    # stop below never races its completion, however fast the trigger polls.
    moto_neo.set_transition("manual", times=1000)
    trigger = _trigger(aws_conn_env, "t-kill", poll_interval=0.05)
    task = asyncio.ensure_future(_first_event(trigger))
    await asyncio.sleep(0.2)
    await trigger.on_kill()
    moto_neo.set_transition("manual", times=1)  # STOPPING -> STOPPED at the next describe
    event = await asyncio.wait_for(task, 30)
    assert event["status"] == "stopped"


async def test_on_kill_can_leave_the_job_running(aws_conn_env):
    hook = NeoHook(aws_conn_id=aws_conn_env)
    hook.create_compilation_job(valid_request("t-keep"))
    await _trigger(aws_conn_env, "t-keep", stop_on_kill=False).on_kill()
    assert hook.describe_compilation_job("t-keep")["CompilationJobStatus"] == "STARTING"


# ----------------------------------------------------------------------------- jobs that do not exist yet


async def _event_after_creating(trigger, create, wait=0.3):
    """Run ``trigger``; once it has checked a few times, ``create`` the job (in a thread)."""
    task = asyncio.ensure_future(_first_event(trigger))
    await asyncio.sleep(wait)
    assert not task.done(), f"the trigger ended before the job existed: {task.result()}"
    await asyncio.to_thread(create)
    return await asyncio.wait_for(task, 60)


@pytest.mark.parametrize(
    ("name", "tags", "status"),
    [
        ("later-ok", [], "success"),
        ("later-bad", [{"Key": "moto:fail-reason", "Value": "Unsupported op Bar"}], "failed"),
    ],
)
async def test_waits_for_a_job_started_later(aws_conn_env, name, tags, status):
    hook = NeoHook(aws_conn_id=aws_conn_env)
    request = valid_request(name, Tags=tags) if tags else valid_request(name)
    trigger = _trigger(aws_conn_env, name, poll_interval=0.02, fail_if_not_found=False)
    event = await _event_after_creating(trigger, lambda: hook.create_compilation_job(request))
    assert event["status"] == status, event
    assert event["compilation_job_name"] == name
    assert event["payload"]["CompilationJobName"] == name
    if status == "failed":
        assert event["payload"]["FailureReason"] == "Unsupported op Bar"
    else:
        assert event["payload"]["CompilationJobStatus"] == "COMPLETED"


async def test_job_that_never_appears_times_out_naming_it(aws_conn_env):
    event = await _first_event(_trigger(aws_conn_env, "never-there", max_attempts=4, fail_if_not_found=False))
    assert event["status"] == "timeout", event
    assert event["compilation_job_name"] == "never-there"
    assert "never-there" in event["message"] and "not found after 4 checks" in event["message"]
    assert event["payload"] == {}


async def test_local_waits_for_a_job_started_later(tmp_path):
    store_path = str(tmp_path / "state" / "jobs.sqlite")
    store = JobStore(store_path, host="remote-runner")
    names = ["loc-ok", "loc-bad"]
    triggers = [
        NeoCompilationJobTrigger(
            compilation_job_name=name, backend="local", local_store=store_path, poll_interval=0.02, fail_if_not_found=False
        )
        for name in names
    ]
    tasks = {name: asyncio.ensure_future(_first_event(t)) for name, t in zip(names, triggers)}
    await asyncio.sleep(0.3)
    assert not any(task.done() for task in tasks.values()), {n: t.result() for n, t in tasks.items() if t.done()}

    def start_and_run():
        for name in names:
            store.create(valid_request(name), lease_seconds=3600)
            store.mark_inprogress(name, "remote-runner", 1, 3600)

    await asyncio.to_thread(start_and_run)
    await asyncio.sleep(0.1)
    assert not any(task.done() for task in tasks.values()), "INPROGRESS is not an outcome"
    await asyncio.to_thread(store.complete, "loc-ok", "s3://b/loc-ok.tar.gz", "00", None)
    await asyncio.to_thread(store.fail, "loc-bad", "boom")
    events = {name: await asyncio.wait_for(task, 60) for name, task in tasks.items()}
    assert events["loc-ok"]["status"] == "success"
    assert events["loc-ok"]["payload"]["CompilationJobStatus"] == "COMPLETED"
    assert events["loc-bad"]["status"] == "failed"
    assert events["loc-bad"]["payload"]["FailureReason"] == "boom"


async def test_local_job_that_never_appears_times_out_naming_it(tmp_path):
    store_path = str(tmp_path / "state" / "jobs.sqlite")
    JobStore(store_path)
    trigger = NeoCompilationJobTrigger(
        compilation_job_name="loc-never", backend="local", local_store=store_path, poll_interval=0.01,
        max_attempts=3, fail_if_not_found=False,
    )
    event = await _first_event(trigger)
    assert event["status"] == "timeout", event
    assert "loc-never" in event["message"] and "not found after 3 checks" in event["message"]


async def test_local_missing_job_is_still_an_error_by_default(tmp_path):
    store_path = str(tmp_path / "state" / "jobs.sqlite")
    JobStore(store_path)
    trigger = NeoCompilationJobTrigger(
        compilation_job_name="loc-missing", backend="local", local_store=store_path, poll_interval=0.01, max_attempts=50
    )
    event = await _first_event(trigger)
    assert event["status"] == "error" and "loc-missing not found" in event["message"]
