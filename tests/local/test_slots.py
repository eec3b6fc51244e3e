"""Compile slots (airflow_neo.local.slots, store/slots.py, runner/watch.py SlotWait) with real runners.

Every runner here is a real detached ``python -m airflow_neo.local.runner`` process on a real
SQLite file or PostgreSQL schema; the compile function is a fake (by dotted name) that appends its
start and end to a file and waits for a gate file, so the tests decide when a slot frees up.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from airflow_neo.core import status as st
from airflow_neo.local import runner
from airflow_neo.local.config import LocalJobConfig
from airflow_neo.local.slots import DEFAULT_MEMORY_CAP_BYTES, HostResources, resolve_slots_and_cap
from airflow_neo.local.store import JobStore, QueueState, SlotQueue, pid_alive
from tests.local.test_runner import _tag, _write_tar_gz, make_request
from tests.support.waiting import wait_for

GiB = 1024**3


# ----------------------------------------------------------------------------- the fake compile


def fake_gated(request, archive_path, artifact_path, *, log=print, **_):
    """Appends ``<job> start|end <time>`` to the ``record`` tag's file; waits for the ``gate`` file first."""
    name = request.payload["CompilationJobName"]
    record, gate = _tag(request, "record"), _tag(request, "gate")
    _append(record, f"{name} start {time.time():.6f}")
    while gate and not os.path.exists(gate):
        time.sleep(0.05)
    time.sleep(float(_tag(request, "seconds") or 0.3))
    _append(record, f"{name} end {time.time():.6f}")
    _write_tar_gz(artifact_path, {"compiled.so": name.encode()})
    return {}


def _append(path: str | None, line: str) -> None:
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


FAKE = "tests.local.test_slots:fake_gated"


@pytest.fixture
def store_path(store_kind, store_target, tmp_path):
    return tmp_path / "state" / "jobs.db" if store_kind == "sqlite" else store_target


@pytest.fixture
def setup(store_path, tmp_path):
    archive = tmp_path / "models" / "m.tar.gz"
    archive.parent.mkdir()
    _write_tar_gz(str(archive), {"model.onnx": b"x" * 100})
    store = JobStore(store_path)
    config = LocalJobConfig(store=str(store_path), memory_limit_bytes=None, lease_seconds=5.0,
                            max_concurrent_compiles=1)
    return store, config, archive, tmp_path


def _create(store, archive, out_root: Path, name: str, **tags: str) -> None:
    store.create(make_request(name, str(archive), str(out_root / "out" / name), tags=tags))


def _log(store: JobStore, name: str) -> str:
    path = store.log_path(name)
    return path.read_text() if path.exists() else ""


def _records(path: Path) -> list[tuple[str, str, float]]:
    lines = path.read_text().split() if path.exists() else []
    return [(lines[i], lines[i + 1], float(lines[i + 2])) for i in range(0, len(lines), 3)]


def _max_overlap(records: list[tuple[str, str, float]]) -> int:
    running = peak = 0
    for _name, event, _t in sorted(records, key=lambda r: (r[2], r[1] == "start")):
        running += 1 if event == "start" else -1
        peak = max(peak, running)
    return peak


def _terminal(store: JobStore, name: str) -> bool:
    return store.describe(name)["CompilationJobStatus"] in st.TERMINAL_STATES


# ----------------------------------------------------------------------------- real runners


def test_one_slot_runs_three_runners_one_at_a_time_in_creation_order(setup):
    store, config, archive, tmp = setup
    record, gate = tmp / "record.txt", tmp / "gate"
    _create(store, archive, tmp, "blocker", record=str(record), gate=str(gate))
    for name in ("j1", "j2", "j3"):
        _create(store, archive, tmp, name, record=str(record))
    runner.launch_detached(store.target, "blocker", config=config, compile_fn=FAKE)
    wait_for(lambda: "blocker start" in (record.read_text() if record.exists() else ""), timeout=60)
    for name in ("j3", "j2", "j1"):  # launched in reverse: the queue still goes by CreationTime
        runner.launch_detached(store.target, name, config=config, compile_fn=FAKE)
    wait_for(lambda: all(f"queued: position {i} of 3 on host {store.host}; 1 compile slot, busy" in _log(store, f"j{i}")
                         for i in (1, 2, 3)), timeout=60)
    assert [store.describe(f"j{i}")["CompilationJobStatus"] for i in (1, 2, 3)] == [st.STARTING] * 3
    assert SlotQueue(store, limit=1).holders() == ["blocker"]
    gate.touch()
    wait_for(lambda: all(_terminal(store, n) for n in ("blocker", "j1", "j2", "j3")), timeout=90)
    for name in ("blocker", "j1", "j2", "j3"):
        job = store.describe(name)
        assert job["CompilationJobStatus"] == st.COMPLETED, job.get("FailureReason")
    records = _records(record)
    assert _max_overlap(records) == 1
    assert [name for name, event, _t in sorted(records, key=lambda r: r[2]) if event == "start"] == [
        "blocker", "j1", "j2", "j3"]
    assert "compile slot taken on host" in _log(store, "j3")


def test_stop_of_a_queued_job_ends_it_at_once_without_a_slot(setup):
    store, config, archive, tmp = setup
    record, gate = tmp / "record.txt", tmp / "gate"
    _create(store, archive, tmp, "holder", record=str(record), gate=str(gate))
    _create(store, archive, tmp, "waiter", record=str(record))
    runner.launch_detached(store.target, "holder", config=config, compile_fn=FAKE)
    wait_for(lambda: "holder start" in (record.read_text() if record.exists() else ""), timeout=60)
    pid = runner.launch_detached(store.target, "waiter", config=config, compile_fn=FAKE)
    wait_for(lambda: "queued: position 1 of 1" in _log(store, "waiter"), timeout=60)
    store.request_stop("waiter")
    job = store.describe("waiter")
    assert job["CompilationJobStatus"] == st.STOPPED and "CompilationStartTime" not in job
    wait_for(lambda: not pid_alive(pid), timeout=30)
    assert "job left the compile-slot queue: it is STOPPED" in _log(store, "waiter")
    gate.touch()
    wait_for(lambda: _terminal(store, "holder"), timeout=60)
    assert store.describe("holder")["CompilationJobStatus"] == st.COMPLETED
    assert "waiter" not in record.read_text()  # it never compiled


def test_slot_of_a_killed_runner_goes_to_the_next_job(setup):
    store, config, archive, tmp = setup
    record, gate = tmp / "record.txt", tmp / "never"
    _create(store, archive, tmp, "doomed", record=str(record), gate=str(gate))
    _create(store, archive, tmp, "next", record=str(record))
    doomed = runner.launch_detached(store.target, "doomed", config=config, compile_fn=FAKE)
    wait_for(lambda: "doomed start" in (record.read_text() if record.exists() else ""), timeout=60)
    runner.launch_detached(store.target, "next", config=config, compile_fn=FAKE)
    wait_for(lambda: "queued: position 1 of 1" in _log(store, "next"), timeout=60)
    os.kill(doomed, signal.SIGKILL)
    wait_for(lambda: _terminal(store, "next"), timeout=60)
    assert store.describe("next")["CompilationJobStatus"] == st.COMPLETED
    failed = store.describe("doomed")
    assert failed["CompilationJobStatus"] == st.FAILED
    assert f"process {doomed} on host {store.host} exited without recording a result" in failed["FailureReason"]
    assert SlotQueue(store, limit=1).holders() == []


# ----------------------------------------------------------------------------- defaults and messages


def test_defaults_derived_from_the_host():
    small = HostResources(cpus=16, memory_bytes=20 * GiB)
    assert resolve_slots_and_cap(None, None, cap_given=False, host=small) == (2, DEFAULT_MEMORY_CAP_BYTES)
    assert resolve_slots_and_cap(0, None, cap_given=False, host=HostResources(2, 64 * GiB)) == (2, 8 * GiB)
    assert resolve_slots_and_cap(4, None, cap_given=False, host=small) == (4, 5 * GiB)  # 4 x 5 GiB fits 20
    assert resolve_slots_and_cap(None, 2 * GiB, cap_given=True, host=small) == (10, 2 * GiB)
    assert resolve_slots_and_cap(None, None, cap_given=True, host=small) == (16, None)  # no cap: the CPUs
    assert resolve_slots_and_cap(None, None, cap_given=False, host=HostResources(8, 4 * GiB)) == (1, 4 * GiB)
    assert resolve_slots_and_cap(None, None, cap_given=False)[0] >= 1  # this machine
    with pytest.raises(ValueError, match=r"local_max_concurrent_compiles must be a whole number >= 0.*-1"):
        resolve_slots_and_cap(-1, None, cap_given=False)


def test_config_fields_are_checked_and_travel():
    config = LocalJobConfig(store="/s.db", max_concurrent_compiles=3, max_concurrent_compiles_cluster=5)
    assert LocalJobConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match=r"max_concurrent_compiles must be a whole number >= 1 .*got 0"):
        LocalJobConfig(store="/s.db", max_concurrent_compiles=0)
    with pytest.raises(ValueError, match=r"max_concurrent_compiles_cluster must be .*got -2"):
        LocalJobConfig(store="/s.db", max_concurrent_compiles_cluster=-2)


def test_hook_reads_the_options(monkeypatch, tmp_path):
    from airflow_neo.hooks.local import local_job_config

    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_STORE", str(tmp_path / "jobs.db"))
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_MAX_CONCURRENT_COMPILES", "3")
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_MAX_CONCURRENT_COMPILES_CLUSTER", "7")
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_MEMORY_LIMIT_MB", "1024")
    config = local_job_config()
    assert (config.max_concurrent_compiles, config.max_concurrent_compiles_cluster) == (3, 7)
    assert config.memory_limit_bytes == 1024 * 1024 * 1024
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_MEMORY_LIMIT_MB", "")  # derived: slots x cap fits the host
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_MAX_CONCURRENT_COMPILES", "0")
    config = local_job_config()
    memory = HostResources().memory_bytes
    assert config.max_concurrent_compiles >= 1
    assert config.max_concurrent_compiles * config.memory_limit_bytes <= max(memory, DEFAULT_MEMORY_CAP_BYTES)
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_MAX_CONCURRENT_COMPILES", "two")
    with pytest.raises(ValueError, match=r"\[neo\] local_max_concurrent_compiles must be a whole number >= 0; got 'two'"):
        local_job_config()


def test_queue_position_messages():
    state = QueueState(status=st.STARTING, queued=True, position=3, waiting=5, busy=2, limit=2)
    assert state.describe("h1") == "queued: position 3 of 5 on host h1; 2 compile slots, both busy"
    assert not state.claimable
    assert QueueState(status=st.STARTING, queued=True, position=2, waiting=2, busy=0, limit=2).claimable
    capped = QueueState(status=st.STARTING, queued=True, position=1, waiting=1, busy=0, limit=4,
                        cluster_busy=8, cluster_limit=8)
    assert not capped.claimable
    assert capped.describe("h") == "queued: position 1 of 1 on host h; 4 compile slots, 0 busy; 8 of 8 slots busy in the cluster"


def test_a_schema_2_store_is_migrated(setup):
    import sqlalchemy as sa

    store, _config, archive, tmp = setup
    _create(store, archive, tmp, "before")
    target = store.target
    url = target if "://" in target else f"sqlite:///{target}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:  # back to schema 2, as airflow-neo 0.2 left it
            conn.exec_driver_sql("DROP INDEX neo_jobs_by_slot")
            for column in ("slot_host", "slot_state"):
                conn.exec_driver_sql(f"ALTER TABLE neo_jobs DROP COLUMN {column}")
            conn.exec_driver_sql("UPDATE neo_meta SET value='2' WHERE key='schema_version'")
    finally:
        engine.dispose()
    migrated = JobStore(target)
    assert migrated.schema_version() == 3
    assert migrated.describe("before")["CompilationJobStatus"] == st.STARTING
    queue = SlotQueue(migrated, limit=1)
    assert queue.enqueue("before", os.getpid(), 30) and queue.claim("before", 30).claimed
    assert queue.holders() == ["before"]
