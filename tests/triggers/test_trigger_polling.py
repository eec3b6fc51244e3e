"""Shared polling of many deferred jobs in one loop (airflow_neo.triggers.polling)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from botocore.exceptions import ClientError

from airflow_neo.core import status as st
from airflow_neo.hooks.neo import NeoHook
from airflow_neo.local.store import JobStore
from airflow_neo.triggers import polling
from airflow_neo.triggers.neo import NeoCompilationJobTrigger
from tests.support import moto_neo
from tests.support.requests import valid_request


async def _events(triggers) -> dict[str, tuple[float, dict]]:
    out: dict[str, tuple[float, dict]] = {}

    async def consume(trigger):
        async for event in trigger.run():
            out[trigger.compilation_job_name] = (time.time(), event.payload)
            return

    await asyncio.gather(*(consume(t) for t in triggers))
    return out


def _board() -> polling._Board:
    [board] = polling._BOARDS[asyncio.get_running_loop()].values()
    return board


# ----------------------------------------------------------------------------- local backend


async def test_local_triggers_share_one_store_query_per_tick(store_target, monkeypatch):
    interval = 0.25
    store = JobStore(store_target, host="remote-runner")
    names = [f"many-{i:02d}" for i in range(40)]
    for name in names:
        store.create(valid_request(name), lease_seconds=3600)
        store.mark_inprogress(name, "remote-runner", 1, 3600)
    batches: list[int] = []
    original = JobStore.describe_many

    def counting(self, wanted):
        wanted = list(wanted)
        batches.append(len(wanted))
        return original(self, wanted)

    monkeypatch.setattr(JobStore, "describe_many", counting)
    completed_at: dict[str, float] = {}

    async def finish_all():
        await asyncio.sleep(0.6)
        for i, name in enumerate(names):
            if i % 2:
                await asyncio.to_thread(store.complete, name, f"s3://b/{name}.tar.gz", "00", None)
            else:
                await asyncio.to_thread(store.fail, name, "boom")
            completed_at[name] = time.time()
            if i % 10 == 9:
                await asyncio.sleep(0.3)

    triggers = [
        NeoCompilationJobTrigger(compilation_job_name=n, backend="local", local_store=store_target, poll_interval=interval)
        for n in names
    ]
    started = time.time()
    events, _ = await asyncio.gather(_events(triggers), finish_all())
    elapsed = time.time() - started
    assert {n: e[1]["status"] for n, e in events.items()} == {
        n: ("success" if i % 2 else "failed") for i, n in enumerate(names)
    }
    assert events["many-00"][1]["payload"]["FailureReason"] == "boom"
    # One query per tick for all 40 triggers (the first checks coalesce too), not one per trigger.
    assert batches[0] == 40
    assert len(batches) <= elapsed / interval + 3, (len(batches), elapsed)
    assert sum(batches) > len(batches) * 5
    for name in names:  # seen at the first tick after the job ended
        assert events[name][0] - completed_at[name] <= interval + 0.5


async def test_local_missing_job_is_an_error_event(store_target):
    JobStore(store_target)
    trigger = NeoCompilationJobTrigger(compilation_job_name="nope", backend="local", local_store=store_target, poll_interval=0.1)
    [(_, event)] = (await _events([trigger])).values()
    assert event["status"] == "error" and "not found" in event["message"]


# ----------------------------------------------------------------------------- SageMaker backend


async def test_sagemaker_triggers_sweep_and_back_off(aws_conn_env):
    interval, step = 0.1, 1.5
    moto_neo.set_transition("time", seconds=step)
    hook = NeoHook(aws_conn_id=aws_conn_env)
    names = [f"sweep-{i}" for i in range(6)]
    for name in names:
        hook.create_compilation_job(valid_request(name))
    triggers = [
        NeoCompilationJobTrigger(compilation_job_name=n, aws_conn_id=aws_conn_env, poll_interval=interval) for n in names
    ]
    started = time.time()
    task = asyncio.ensure_future(_events(triggers))
    await asyncio.sleep(0.2)
    board = _board()
    events = await asyncio.wait_for(task, 60)
    elapsed = time.time() - started
    assert {e[1]["status"] for e in events.values()} == {"success"}
    ticks = elapsed / interval
    assert ticks > 20
    # Without the sweep every trigger would describe at every tick; with it, an unchanged job is
    # described every 1, 2, 4, 8, then 10 ticks, plus once per status change.
    assert board.stats["describes"] <= len(names) * (ticks / 4 + 4), (board.stats, ticks)
    assert board.stats["sweeps"] <= ticks + 2
    for when, event in events.values():
        payload = event["payload"]
        due = dt.datetime.fromisoformat(payload["CompilationStartTime"]).timestamp() + step
        assert when - due <= interval + 1.0, (when - due, payload["CompilationJobName"])


async def test_sagemaker_without_list_permission_describes_every_tick(aws_conn_env, monkeypatch):
    async def denied(self):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "ListCompilationJobs")

    monkeypatch.setattr(polling._SageMakerBoard, "_list_changed", denied)
    moto_neo.set_transition("manual", times=2)  # each status is read twice: the second read is "unchanged"
    hook = NeoHook(aws_conn_id=aws_conn_env)
    hook.create_compilation_job(valid_request("no-list"))
    trigger = NeoCompilationJobTrigger(compilation_job_name="no-list", aws_conn_id=aws_conn_env, poll_interval=0.05)
    task = asyncio.ensure_future(_events([trigger]))
    await asyncio.sleep(0.1)
    board = _board()
    [(_, event)] = (await asyncio.wait_for(task, 30)).values()
    assert event["status"] == "success"
    # STARTING, STARTING, INPROGRESS, INPROGRESS, COMPLETED: a describe at every tick, none skipped
    assert board.feed_ok is False and board.stats["describes"] == 5


async def test_describe_gap_doubles_to_the_cap():
    class FakeBoard(polling._SageMakerBoard):
        async def _describe(self, name, urgent=True):
            self.stats["describes"] += 1
            return {"CompilationJobName": name, "CompilationJobStatus": st.INPROGRESS}

        async def _sweep(self, tick):
            return {}

    board = FakeBoard("sagemaker", {})
    watch = board.watch("long", 1.0)
    described_at = []
    for tick in range(200):
        before = board.stats["describes"]
        await board.refresh(watch, None if tick == 0 else float(tick))
        if board.stats["describes"] > before:
            described_at.append(tick)
    gaps = [b - a for a, b in zip(described_at, described_at[1:])]
    assert gaps[:6] == [1, 2, 4, 8, 10, 10]
    assert set(gaps[4:]) == {polling.MAX_DESCRIBE_GAP}
    board.unwatch(watch)


def test_trigger_serialization_is_unchanged():
    trigger = NeoCompilationJobTrigger(compilation_job_name="j", backend="local", local_store="postgresql://u@h/d")
    path, kwargs = trigger.serialize()
    assert path == "airflow_neo.triggers.neo.NeoCompilationJobTrigger"
    assert set(kwargs) == {
        "compilation_job_name", "backend", "aws_conn_id", "region_name", "verify", "botocore_config",
        "local_store", "poll_interval", "max_attempts", "max_transient_errors", "stop_on_kill",
    }


async def test_changed_jobs_are_described_before_safety_describes():
    order: list[str] = []

    class FakeClient:
        async def describe_compilation_job(self, CompilationJobName):
            order.append(CompilationJobName)
            await asyncio.sleep(0.01)
            return {"CompilationJobName": CompilationJobName, "CompilationJobStatus": st.COMPLETED}

    class FakeBoard(polling._SageMakerBoard):
        async def _get_client(self):
            return FakeClient()

    board = FakeBoard("sagemaker", {})
    board._semaphore = asyncio.Semaphore(1)
    safety = [asyncio.ensure_future(board._describe(f"safe-{i}", urgent=False)) for i in range(3)]
    urgent = [asyncio.ensure_future(board._describe(f"done-{i}", urgent=True)) for i in range(3)]
    await asyncio.gather(*safety, *urgent)
    assert order[:3] == ["done-0", "done-1", "done-2"]  # a burst of completions is reported first
    assert sorted(order[3:]) == ["safe-0", "safe-1", "safe-2"]
    assert board._urgent == set() and board._urgent_done.is_set()
