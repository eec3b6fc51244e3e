"""Runner liveness: is the process that owns a running job still there, and the reap of those that are not.

A runner holds a *lease* on its job (``lease_expires_us``) and renews it while it works; a job
that no runner picked up still has the start lease that ``create`` gave it. Every
``describe``/``list`` (and ``request_stop``/``delete``) first looks at the running jobs concerned
(:meth:`Reaper.reap`, :meth:`Reaper.reap_rows`); one whose lease ran out is marked FAILED
("ServerError: Compile worker lost: lease expired at ...", an internal failure in SageMaker Neo's
form, :mod:`airflow_neo.local.errors`) or STOPPED when a stop had been requested, whichever host
reads it.

A runner on the reader's own machine is also checked by process id, so a crash is seen at once
instead of when the lease runs out. "Own machine" means the same host name, kernel boot
(:func:`boot_id`) and PID namespace (:func:`pid_namespace`): two containers can share a host name
but not their pids, and a pid from before a reboot means nothing. A pid counts as alive only when
the process exists, is not a zombie and started when the recorded one did
(:func:`process_start_token`), so a reused pid is not taken for the runner.

The reap is one conditional ``UPDATE`` per dead job, matching the status, pid and lease that were
read, so a runner that renews its lease (or records its result) meanwhile wins, and two readers
never both record an end.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_neo.core import status as st
from airflow_neo.local.errors import SERVER_ERROR, neo_reason
from airflow_neo.local.store.engines import read_rows, write_transaction
from airflow_neo.local.store.records import clip_reason
from airflow_neo.local.store.schema import JOBS
from airflow_neo.local.store.times import us_to_iso

RUNNING = tuple(sorted(st.RUNNING_STATES))


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) from /proc, or None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return ("X", "") if os.path.isdir("/proc/self") else None
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def process_start_token(pid: int) -> str | None:
    """An identifier of the process's start (so a reused pid is not taken for the same process)."""
    info = _proc_stat(pid)
    return info[1] if info and info[1] else None


def pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[4026531836]``) where /proc shows it, else None.

    Two containers can share a host name (host networking) but not their pids: a pid is only
    checked for liveness from the same namespace.
    """
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def pid_alive(pid: int, start_token: str | None = None) -> bool:
    """Whether process ``pid`` on this host is alive (zombies and reused pids count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    info = _proc_stat(pid)
    if info is None:
        return True
    state, started = info
    if state in ("Z", "X", "x"):
        return False
    if start_token and started and started != start_token:
        return False
    return True


def boot_id() -> str | None:
    """This machine's boot id (Linux), so a pid is only checked on the kernel that issued it."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


# --------------------------------------------------------------------------- the reaper


class Reaper:
    """Finds the running jobs whose runner is gone, as seen from this machine (``host``), and ends them."""

    def __init__(self, engine: Engine, host: str):
        self._engine = engine
        self.host = host
        self.pid_namespace = pid_namespace()
        self.boot_id = boot_id()

    def runner_fields(self, owner_host: str, pid: int) -> dict[str, Any]:
        """What identifies runner ``pid`` on ``owner_host`` for later liveness checks (None unless it runs here)."""
        local = owner_host == self.host
        return {
            "pid_start": process_start_token(pid) if local else None,
            "pid_namespace": self.pid_namespace if local else None,
            "owner_boot_id": self.boot_id if local else None,
        }

    def reap(self, now: int, name: str | None = None) -> list[str]:
        """End the dead-runner jobs among this host's running jobs and those with an expired lease."""
        statement = sa.select(JOBS).where(
            JOBS.c.status.in_(RUNNING), sa.or_(JOBS.c.owner_host == self.host, JOBS.c.lease_expires_us < now)
        )
        if name is not None:
            statement = statement.where(JOBS.c.name == name)
        return self.reap_rows(read_rows(self._engine, statement), now)

    def reap_rows(self, rows: Iterable[Mapping[str, Any]], now: int) -> list[str]:
        """Record the end of the jobs among ``rows`` whose runner is gone; returns their names."""
        reaped = []
        for row in rows:
            if row["status"] not in st.RUNNING_STATES:
                continue
            reason = self.death_reason(row, now)
            if reason is None:
                continue
            new_status = st.STOPPED if row["status"] == st.STOPPING else st.FAILED
            with write_transaction(self._engine) as conn:
                changed = conn.execute(
                    sa.update(JOBS)
                    .where(
                        JOBS.c.name == row["name"],
                        JOBS.c.status == row["status"],
                        JOBS.c.pid.is_not_distinct_from(row["pid"]),
                        JOBS.c.lease_expires_us.is_not_distinct_from(row["lease_expires_us"]),
                    )
                    .values(
                        status=new_status,
                        failure_reason="" if new_status == st.STOPPED else clip_reason(reason),
                        end_us=now,
                        last_modified_us=now,
                        lease_expires_us=None,
                    )
                ).rowcount
            if changed:
                reaped.append(row["name"])
        return reaped

    def same_pid_space(self, row: Mapping[str, Any]) -> bool:
        """Whether the runner's pid means something here: same host name, kernel boot and PID namespace.

        Another machine (or a container sharing our host name, or this machine before a reboot)
        is left to the lease.
        """
        if row["owner_host"] != self.host:
            return False
        recorded_boot = row.get("owner_boot_id")
        if recorded_boot is not None and recorded_boot != self.boot_id:
            return False
        recorded_ns = row["pid_namespace"]
        return recorded_ns is None or recorded_ns == self.pid_namespace

    def death_reason(self, row: Mapping[str, Any], now: int) -> str | None:
        """Why the job's runner is gone (its FailureReason, a ``ServerError: ...``), or None while it may be alive."""
        reason = self._death_text(row, now)
        return neo_reason(SERVER_ERROR, None, reason) if reason is not None else None

    def _death_text(self, row: Mapping[str, Any], now: int) -> str | None:
        pid, host = row["pid"], row["owner_host"]
        if pid is not None and self.same_pid_space(row) and not pid_alive(pid, row["pid_start"]):
            return f"Compile worker lost: process {pid} on host {host} exited without recording a result"
        lease = row["lease_expires_us"]
        if lease is not None and lease < now:
            if pid is None:
                return (
                    f"Compile worker lost: no runner picked up the job before its start lease expired at "
                    f"{us_to_iso(lease)}"
                )
            return (
                f"Compile worker lost: lease expired at {us_to_iso(lease)} "
                f"(process {pid} on host {host} stopped renewing it)"
            )
        return None
