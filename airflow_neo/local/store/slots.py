"""Compile slots: at most ``limit`` jobs compile at once per host, the others queue in creation order.

A runner first *enqueues* its STARTING job (``slot_state = "queued"``, ``slot_host`` = this host,
its pid and lease recorded as for a running job, so the reaper ends the job if the runner dies
while it waits). It then polls :meth:`SlotQueue.peek` (a plain read) and renews the job's lease
while it waits; when the job is among the first ``free`` queued jobs of its host it calls
:meth:`SlotQueue.claim`, which moves it STARTING -> INPROGRESS with ``slot_state = "held"``.

Invariants:

* a slot is *held* by a job whose ``slot_state`` is ``"held"`` and whose status is running
  (INPROGRESS/STOPPING): a job that ends (completed, failed, stopped, or reaped because its runner
  died or its lease ran out) frees its slot with the same UPDATE that ends it; nothing else has to
  be released;
* the queue of a host is its STARTING jobs with ``slot_state = "queued"`` in (CreationTime, name)
  order; a job may claim only when fewer queued jobs are ahead of it than slots are free, and
  (with a cluster cap) while fewer than ``cluster_limit`` slots are held on all hosts together;
* a claim re-counts under one write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction
  advisory lock) and is one conditional UPDATE on STARTING/queued, so two runners can never both
  take the last slot, and a stop that ended the queued job first wins;
* held slots are checked for dead runners (pid on this host, lease anywhere) before they are
  counted, so a killed runner's slot is reclaimed by the next runner in line.

The host key is the host name and kernel boot id (``name|boot``): runners in containers that
share the host name share its slots (they share its cores and memory), and slots held before a
reboot do not count against the new boot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from airflow_neo.core import status as st
from airflow_neo.local.store.connection import StoreConnection
from airflow_neo.local.store.liveness import RUNNING
from airflow_neo.local.store.schema import JOBS

__all__ = ["QUEUED", "HELD", "QueueState", "SlotQueue"]

QUEUED, HELD = "queued", "held"
_PG_SLOT_LOCK = 0x4E454F534C  # pg_advisory_xact_lock key ("NEOSL")


@dataclass(frozen=True)
class QueueState:
    """Where a queued job stands. ``position`` is 1-based among its host's queued jobs (0 when not queued)."""

    status: str
    queued: bool
    position: int
    waiting: int
    busy: int
    limit: int | None
    cluster_busy: int | None = None
    cluster_limit: int = 0
    claimed: bool = False

    @property
    def claimable(self) -> bool:
        if not self.queued:
            return False
        free = (self.limit - self.busy) if self.limit is not None else self.position
        if self.position > free:
            return False
        return not self.cluster_limit or (self.cluster_busy or 0) < self.cluster_limit

    def describe(self, host: str) -> str:
        """``queued: position 3 of 5 on host X; 2 compile slots, both busy``."""
        text = f"queued: position {self.position} of {self.waiting} on host {host}; "
        if self.limit is None:
            text += "no slot limit"
        else:
            plural = "" if self.limit == 1 else "s"
            if self.busy >= self.limit:
                busy = {1: "busy", 2: "both busy"}.get(self.limit, "all busy")
            else:
                busy = f"{self.busy} busy"
            text += f"{self.limit} compile slot{plural}, {busy}"
        if self.cluster_limit:
            text += f"; {self.cluster_busy} of {self.cluster_limit} slots busy in the cluster"
        return text


class SlotQueue:
    """The compile-slot queue of one store, seen from this host (see the module docstring).

    :param limit: compile slots on this host (None: no limit; the job still counts as held).
    :param cluster_limit: slots held on all hosts together (0: no cluster-wide cap).
    """

    def __init__(self, store: StoreConnection, *, limit: int | None, cluster_limit: int = 0):
        self.store, self.limit, self.cluster_limit = store, limit, cluster_limit
        self.host_key = f"{store.host}|{store._reaper.boot_id or ''}"

    # ---------------------------------------------------------------- writes

    def enqueue(self, name: str, pid: int, lease_seconds: float) -> bool:
        """Queue the STARTING job ``name`` for a slot of this host, owned by runner ``pid``.

        Returns False (changing nothing) when the job is not STARTING (stopped, taken, ended).
        """
        store = self.store
        now = store._now_us()
        values = {
            "owner_host": store.host,
            "pid": pid,
            **store._reaper.runner_fields(store.host, pid),
            "lease_expires_us": now + int(lease_seconds * 1_000_000),
            "slot_host": self.host_key,
            "slot_state": QUEUED,
        }
        with store._write() as conn:
            return bool(
                conn.execute(
                    sa.update(JOBS).where(JOBS.c.name == name, JOBS.c.status == st.STARTING).values(**values)
                ).rowcount
            )

    def claim(self, name: str, lease_seconds: float) -> QueueState:
        """Take a slot for the queued job ``name`` if it is its turn: STARTING -> INPROGRESS, slot held.

        Counts again under the store's write lock; the returned state has ``claimed`` True when
        the slot was taken.
        """
        self._reap_holders()
        store = self.store
        with store._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SLOT_LOCK})
            state = self._state(conn, name)
            if not state.claimable:
                return state
            now = store._now_us()
            changed = conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.name == name, JOBS.c.status == st.STARTING, JOBS.c.slot_state == QUEUED)
                .values(status=st.INPROGRESS, slot_state=HELD, start_us=now, last_modified_us=now,
                        lease_expires_us=now + int(lease_seconds * 1_000_000))
            ).rowcount
        return QueueState(**{**state.__dict__, "claimed": bool(changed), "status": st.INPROGRESS if changed else state.status})

    # ---------------------------------------------------------------- reads

    def peek(self, name: str) -> QueueState:
        """The job's place in its host's queue (a read; dead slot holders are reaped first)."""
        self._reap_holders()
        with self.store._engine.connect() as conn:
            return self._state(conn, name)

    def holders(self) -> list[str]:
        """The jobs holding a slot of this host, oldest first."""
        statement = self._held(sa.select(JOBS.c.name), cluster=False).order_by(JOBS.c.creation_us, JOBS.c.name)
        return [row["name"] for row in self.store._read(statement)]

    def _held(self, statement: Any, *, cluster: bool) -> Any:
        statement = statement.where(JOBS.c.slot_state == HELD, JOBS.c.status.in_(RUNNING))
        return statement if cluster else statement.where(JOBS.c.slot_host == self.host_key)

    def _reap_holders(self) -> None:
        rows = self.store._read(self._held(sa.select(JOBS), cluster=bool(self.cluster_limit)))
        if rows:
            self.store._reap_rows(rows)

    def _state(self, conn: Any, name: str) -> QueueState:
        row = conn.execute(
            sa.select(JOBS.c.status, JOBS.c.slot_state, JOBS.c.slot_host, JOBS.c.creation_us).where(JOBS.c.name == name)
        ).mappings().first()
        count = sa.select(sa.func.count()).select_from(JOBS)
        busy = conn.execute(self._held(count, cluster=False)).scalar() or 0
        cluster_busy = conn.execute(self._held(count, cluster=True)).scalar() if self.cluster_limit else None
        queue = count.where(JOBS.c.slot_host == self.host_key, JOBS.c.slot_state == QUEUED, JOBS.c.status == st.STARTING)
        waiting = conn.execute(queue).scalar() or 0
        queued = _is_queued(row, self.host_key)
        position = 0
        if queued:
            created = row["creation_us"]
            ahead = sa.or_(JOBS.c.creation_us < created, sa.and_(JOBS.c.creation_us == created, JOBS.c.name < name))
            position = (conn.execute(queue.where(ahead)).scalar() or 0) + 1
        return QueueState(status=row["status"] if row else "DELETED", queued=queued, position=position,
                          waiting=waiting, busy=busy, limit=self.limit, cluster_busy=cluster_busy,
                          cluster_limit=self.cluster_limit)


def _is_queued(row: Mapping[str, Any] | None, host_key: str) -> bool:
    return bool(row) and row["status"] == st.STARTING and row["slot_state"] == QUEUED and row["slot_host"] == host_key
