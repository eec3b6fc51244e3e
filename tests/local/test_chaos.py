"""Chaos tests of the local backend with real processes (issue 15): ``kill -9`` of the detached
runner and of its compile child in each phase, and what readers see afterwards.

Every case must end with the job FAILED (a killed runner: "Compile worker lost" once a reader
checks its pid; a killed child: the runner records the crash), nothing at the output location
(no artifact; a temporary file only where the runner was killed mid-copy, removed by the next
publish there), no compile-cache entry for the job (unless its compile had ended: killed while
publishing) and every entry intact,
and the tuning database's files whole JSON lines. The compile is the fake
:func:`tests.support.chaos.phased` (it announces its phase and hangs in it; its tune phase writes
real records through :mod:`airflow_neo.local.tuning_db`). ``benchmarks/chaos.py`` repeats every case.
"""

from __future__ import annotations

import pytest

from airflow_neo.core import status as st
from tests.support.chaos import (
    CHILD_PHASES,
    PHASES,
    Tmpfs,
    World,
    cache_keys,
    cache_problems,
    clock_skew_case,
    disk_full_case,
    kill_case,
    s3_down_case,
    tuning_problems,
)
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """One SQLite store for all the cases, primed with a completed job (a cache entry, tuning records)."""
    world = World(tmp_path_factory.mktemp("chaos"))
    world.create("prime")
    world.launch("prime")
    wait_for(lambda: world.status("prime")["CompilationJobStatus"] in st.TERMINAL_STATES, timeout=120)
    assert world.status("prime")["CompilationJobStatus"] == st.COMPLETED, world.status("prime").get("FailureReason")
    assert len(cache_keys(world.cache_dir)) == 1 and not tuning_problems(world.tuning_dir)
    return world


def _assert_clean(seen: dict) -> None:
    assert seen["status"] == st.FAILED, seen
    if seen["phase"] == "publish" and seen["victim"] == "runner":
        # a writer killed mid-copy cannot remove its hidden temporary file; the next publish there does
        assert [f for f in seen["output_files"] if not (f.startswith(".") and f.endswith(".partial"))] == [], seen
    else:
        assert seen["output_files"] == [], seen  # no artifact, no temporary file next to it
    # killed while publishing, the compile itself had ended: its (whole, checked) cache entry is kept for a retry
    assert len(seen["new_cache_keys"]) == (1 if seen["phase"] == "publish" else 0), seen
    assert seen["cache_problems"] == [], seen
    assert seen["tuning_problems"] == [], seen
    assert seen["phase_hit"], seen


@pytest.mark.parametrize("phase", PHASES)
def test_kill_9_of_the_runner(world, phase):
    seen = kill_case(world, "runner", phase, f"runner-{phase}")
    _assert_clean(seen)
    assert seen["runner_pid"] == seen["launched_pid"]
    assert seen["reason"] == (
        f"ServerError: Compile worker lost: process {seen['runner_pid']} on host {seen['host']} "
        "exited without recording a result"
    )
    if phase == "publish":  # a retry publishing to the same location removes the dead writer's temporary file
        out = world.create(f"retry-{phase}", retry_of=seen["name"])
        world.launch(f"retry-{phase}")
        wait_for(lambda: world.status(f"retry-{phase}")["CompilationJobStatus"] in st.TERMINAL_STATES, timeout=120)
        assert world.status(f"retry-{phase}")["CompilationJobStatus"] == st.COMPLETED
        assert sorted(p.name for p in out.iterdir()) == [f"{seen['name']}-ml_c5.tar.gz"]


@pytest.mark.parametrize("phase", CHILD_PHASES)
def test_kill_9_of_the_compile_child(world, phase):
    seen = kill_case(world, "child", phase, f"child-{phase}")
    _assert_clean(seen)
    assert seen["child_is_runners_child"], seen
    assert seen["reason"].startswith(
        "ServerError: Compilation failed: internal compiler crash (signal 9: SIGKILL) (killed, possibly by the "
        "kernel's out-of-memory killer)"
    ), seen


def test_the_store_works_after_the_kills(world):
    """A job after the kills completes (no lock left held, no stale work dir in the way) and none is left running."""
    out = world.create("after")
    world.launch("after")
    wait_for(lambda: world.status("after")["CompilationJobStatus"] in st.TERMINAL_STATES, timeout=120)
    assert world.status("after")["CompilationJobStatus"] == st.COMPLETED, world.status("after").get("FailureReason")
    assert sorted(p.name for p in out.iterdir()) == ["after-ml_c5.tar.gz"]
    assert cache_problems(world.cache_dir) == [] and tuning_problems(world.tuning_dir) == []
    running = [s for state in st.RUNNING_STATES for s in world.store.list(StatusEquals=state)["CompilationJobSummaries"]]
    assert running == []


def test_disk_full_while_publishing(world):
    """The output location is a 1 MiB tmpfs (mounted for the test: root, as in CI); the artifact is 4 MiB."""
    why_not = Tmpfs.usable(world.root)
    if why_not:
        pytest.skip(why_not)
    seen = disk_full_case(world, "disk-full")
    assert seen["status"] == st.FAILED, seen
    assert seen["reason"].startswith(
        f"ClientError: Could not publish the compiled model to {seen['out']}/disk-full-ml_c5.tar.gz: "
        "[Errno 28] No space left on device"
    ), seen
    assert seen["output_files"] == ["other-file"], seen  # nothing half-written, no temporary file
    assert seen["cache_problems"] == [], seen


@pytest.mark.parametrize("restart", [True], ids=["restarted"])  # benchmarks/chaos.py: also a server that stays down
def test_s3_server_killed_mid_upload(world, restart):
    """A real moto server is killed while the runner's multipart upload is under way and started again
    at once at the same address: FAILED (the upload's parts died with the server), no object."""
    # two attempts per request keep the test short; benchmarks/chaos.py runs botocore's default retries
    seen = s3_down_case(world, f"s3-down-{int(restart)}", restart=restart, max_attempts=2)
    assert seen["status"] == st.FAILED, seen
    name = f"s3-down-{int(restart)}"
    assert seen["reason"].startswith(f"ClientError: Could not upload the compiled model to s3://chaos/out/{name}/{name}-ml_c5.tar.gz: "), seen
    assert seen["objects"] == [], seen


def _postgres_or_skip() -> None:
    import shutil
    from pathlib import Path

    if not (list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb")):
        pytest.skip("PostgreSQL is not installed (scripts/postgres.sh installs it as root)")


def test_postgres_server_restarted_mid_job(tmp_path, monkeypatch):
    """The store's own PostgreSQL server (private data dir and port) is stopped while 3 jobs compile
    and started again: every job ends COMPLETED or FAILED with a reason, none is left running."""
    _postgres_or_skip()
    from tests.support.chaos import PrivatePostgres, postgres_restart_case
    from tests.support.stores import create_schema, with_search_path

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow-home"))  # the runners' logs and work dirs
    pg = PrivatePostgres()
    try:
        url = pg.start()
        world = World(tmp_path / "world", store_target=with_search_path(url, create_schema(url)))
        seen = postgres_restart_case(world, pg, "pg")
    finally:
        pg.remove()
    assert seen["still_running"] == [] and seen["wrong_outputs"] == [], seen  # an artifact only for a COMPLETED job
    for status, reason in seen["finals"].values():
        assert status == st.COMPLETED or (status == st.FAILED and reason.startswith("ServerError: ")), seen


def test_clock_skew_below_the_lease_is_harmless(world):
    """A reader on another host whose clock is ahead by less than what is left of a renewed lease
    (renewed every lease/3: at least 2/3 of it) sees the job running; the job completes."""
    seen = clock_skew_case(world, "skew-small", skew_seconds=world.lease / 3)
    assert seen["seen_by_skewed_reader"] == [st.INPROGRESS], seen
    assert seen["status"] == st.COMPLETED, seen


def test_clock_skew_beyond_the_lease_fails_a_live_job_cleanly(world):
    """Documented behaviour: a reader whose clock is ahead by more than the lease takes the live
    runner's lease for expired and ends the job FAILED ("lease expired"); the runner sees at its next
    renewal that the job is no longer its own, kills the compile and publishes nothing."""
    seen = clock_skew_case(world, "skew-big", skew_seconds=3 * world.lease)
    assert seen["seen_by_skewed_reader"] == [st.FAILED], seen
    assert seen["status"] == st.FAILED, seen
    assert seen["reason"].startswith("ServerError: Compile worker lost: lease expired at "), seen
    assert seen["reason"].endswith(f"(process {seen['runner_pid']} on host {seen['host']} stopped renewing it)"), seen
    assert seen["output_files"] == [], seen
    assert "no longer ours" in seen["runner_log"], seen["runner_log"][-2000:]
