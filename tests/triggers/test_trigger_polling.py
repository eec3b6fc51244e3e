"""Shared polling of many deferred jobs in one loop (airflow_neo.triggers.polling)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from botocore.exceptions import ClientError

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.hooks.neo import NeoHook
from airflow_neo.hooks.params import NeoConnectionParams
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

    board = FakeBoard(NeoConnectionParams())
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


async def test_local_board_missing_job_per_watch(tmp_path):
    """One store query for both watches; only the one allowing a missing job gets ``None``."""
    store_path = str(tmp_path / "state" / "jobs.sqlite")
    store = JobStore(store_path, host="remote-runner")
    board = polling.board_for(NeoConnectionParams(backend="local", local_store=store_path))
    waiting = board.watch("soon", 1.0, allow_missing=True)
    strict = board.watch("soon", 1.0)
    assert waiting.allow_missing and not strict.allow_missing
    results = await asyncio.gather(board.refresh(waiting, None), board.refresh(strict, None), return_exceptions=True)
    assert results[0] is None and waiting.missing and waiting.checked
    assert isinstance(results[1], CompilationJobNotFound) and strict.force
    assert board.stats["batches"] == 1
    assert await board.refresh(waiting, 1.0) is None  # still waiting, still on the board
    store.create(valid_request("soon"), lease_seconds=3600)
    payload = await board.refresh(waiting, 2.0)
    assert payload["CompilationJobStatus"] == st.STARTING and not waiting.missing
    board.unwatch(waiting)
    board.unwatch(strict)


async def test_sagemaker_missing_job_backs_off_until_the_sweep_shows_it():
    created_at = 30  # the tick at which someone creates the job

    class FakeBoard(polling._SageMakerBoard):
        tick = 0

        async def _describe(self, name, urgent=True):
            self.stats["describes"] += 1
            if self.tick < created_at:
                raise CompilationJobNotFound(f"Could not find compilation job '{name}'.")
            return {"CompilationJobName": name, "CompilationJobStatus": st.STARTING}

        async def _sweep(self, tick):
            return {"later": st.STARTING} if tick >= created_at else {}

    board = FakeBoard(NeoConnectionParams())
    watch = board.watch("later", 1.0, allow_missing=True)
    described_at, results = [], []
    for tick in range(created_at + 1):
        board.tick = tick
        before = board.stats["describes"]
        results.append(await board.refresh(watch, None if tick == 0 else float(tick)))
        if board.stats["describes"] > before:
            described_at.append(tick)
    assert results[:created_at] == [None] * created_at  # no error: still waiting for it
    assert results[created_at]["CompilationJobStatus"] == st.STARTING
    # While missing: the usual backed-off safety describes (0, 1, 3, 7, 15, 25), not one per tick;
    # the sweep shows the job at its creation and it is described at that very tick.
    assert described_at == [0, 1, 3, 7, 15, 25, created_at]
    assert watch.gap == 1 and not watch.missing  # a job that appeared backs off from the start
    board.unwatch(watch)


async def test_sagemaker_missing_job_raises_without_allow_missing():
    class FakeBoard(polling._SageMakerBoard):
        async def _describe(self, name, urgent=True):
            raise CompilationJobNotFound(f"Could not find compilation job '{name}'.")

    board = FakeBoard(NeoConnectionParams())
    watch = board.watch("gone", 1.0)
    with pytest.raises(CompilationJobNotFound):
        await board.refresh(watch, None)
    assert watch.force and not watch.missing
    board.unwatch(watch)


def test_trigger_serialization_is_unchanged():
    trigger = NeoCompilationJobTrigger(compilation_job_name="j", backend="local", local_store="postgresql://u@h/d")
    path, kwargs = trigger.serialize()
    assert path == "airflow_neo.triggers.neo.NeoCompilationJobTrigger"
    assert set(kwargs) == {
        "compilation_job_name", "backend", "aws_conn_id", "region_name", "verify", "botocore_config",
        "local_store", "poll_interval", "max_attempts", "max_transient_errors", "stop_on_kill",
        "fail_if_not_found",
    }


async def test_changed_jobs_are_described_before_safety_describes():
    order: list[str] = []

    class FakeHook:
        async def adescribe_compilation_job(self, name):
            order.append(name)
            await asyncio.sleep(0.01)
            return {"CompilationJobName": name, "CompilationJobStatus": st.COMPLETED}

    class FakeBoard(polling._SageMakerBoard):
        async def _get_session(self):
            return FakeHook()

    board = FakeBoard(NeoConnectionParams())
    board._semaphore = asyncio.Semaphore(1)
    safety = [asyncio.ensure_future(board._describe(f"safe-{i}", urgent=False)) for i in range(3)]
    urgent = [asyncio.ensure_future(board._describe(f"done-{i}", urgent=True)) for i in range(3)]
    await asyncio.gather(*safety, *urgent)
    assert order[:3] == ["done-0", "done-1", "done-2"]  # a burst of completions is reported first
    assert sorted(order[3:]) == ["safe-0", "safe-1", "safe-2"]
    assert board._urgent == set() and board._urgent_done.is_set()
