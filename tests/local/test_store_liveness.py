"""Tests of runner liveness (airflow_neo.local.store.liveness) without a database: who counts as dead, and why."""

from __future__ import annotations

import os

from airflow_neo.core import status as st
from airflow_neo.local.store.liveness import Reaper, pid_alive, process_start_token

NOW = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z in microseconds
DEAD_PID = 2**22 + 12345  # above any pid_max: never a live process


def _reaper(host: str = "here") -> Reaper:
    return Reaper(engine=None, host=host)  # type: ignore[arg-type] - death_reason reads no database


def _row(**values) -> dict:
    row = {"name": "j", "status": st.INPROGRESS, "owner_host": "here", "pid": os.getpid(), "pid_start": None,
           "pid_namespace": None, "owner_boot_id": None, "lease_expires_us": NOW + 1}
    row.update(values)
    return row


def test_this_process_is_alive_and_a_reused_pid_is_not():
    me = os.getpid()
    assert pid_alive(me) and pid_alive(me, process_start_token(me))
    assert not pid_alive(DEAD_PID) and not pid_alive(0) and not pid_alive(-1)
    if process_start_token(me) is not None:  # /proc present
        assert not pid_alive(me, "not-my-start")


def test_a_live_runner_with_a_lease_has_no_death_reason():
    assert _reaper().death_reason(_row(), NOW) is None


def test_a_dead_local_runner_is_seen_at_once():
    reason = _reaper().death_reason(_row(pid=DEAD_PID), NOW)
    assert reason == f"ServerError: Compile worker lost: process {DEAD_PID} on host here exited without recording a result"


def test_a_runner_elsewhere_is_left_to_its_lease():
    reaper = _reaper()
    for row in (
        _row(pid=DEAD_PID, owner_host="there"),
        _row(pid=DEAD_PID, owner_boot_id="another-boot"),
        _row(pid=DEAD_PID, pid_namespace="pid:[0]"),  # no real namespace has inode 0
    ):
        assert not reaper.same_pid_space(row)
        assert reaper.death_reason(row, NOW) is None
        expired = reaper.death_reason({**row, "lease_expires_us": NOW - 60_000_000}, NOW)
        assert expired == (
            f"ServerError: Compile worker lost: lease expired at 2024-05-01T11:59:00+00:00 "
            f"(process {DEAD_PID} on host {row['owner_host']} stopped renewing it)"
        )


def test_a_job_nobody_picked_up_dies_with_its_start_lease():
    reason = _reaper().death_reason(_row(pid=None, owner_host=None, lease_expires_us=NOW - 1), NOW)
    assert reason == (
        "ServerError: Compile worker lost: no runner picked up the job before its start lease expired at 2024-05-01T11:59:59.999999+00:00"
    )


def test_runner_fields_are_recorded_only_for_this_host():
    reaper = _reaper()
    assert _reaper("elsewhere").runner_fields("here", os.getpid()) == {"pid_start": None, "pid_namespace": None, "owner_boot_id": None}
    fields = reaper.runner_fields("here", os.getpid())
    assert fields == {"pid_start": process_start_token(os.getpid()), "pid_namespace": reaper.pid_namespace, "owner_boot_id": reaper.boot_id}
