"""What a running job must notice while it works: a stop request, the loss of its lease, its time limit.

Invariants: the heartbeat thread renews the job's lease every ``min(poll_interval, lease / 3)``
seconds (at least 0.05 s) until halted; a busy store never stops it (the renewal is retried), a job
that is no longer ours does. :meth:`JobWatch.check` raises the one outcome due, in this order:
:class:`~.outcomes.Lost`, :class:`~.outcomes.Stopped`, then :class:`~.outcomes.Failed` once
``MaxRuntimeInSeconds`` has passed since the run started.

Before that, :class:`SlotWait` queues the STARTING job for a compile slot of its host
(:mod:`airflow_neo.local.store.slots`): it renews the job's lease while it waits (so the reaper
does not take a queued job for a lost one), logs the job's queue position whenever it changes, and
returns once the job holds a slot (INPROGRESS) or is no longer queued (stopped, reaped, deleted).
It looks every ``poll_interval`` when it is next in line, less often the further back it is.
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy as sa

from airflow_neo.core.exceptions import CompilationJobNotFound, CompilationJobStateError
from airflow_neo.local.runner.outcomes import Failed, Lost, Stopped
from airflow_neo.local.store import JobStore, QueueState, SlotQueue

__all__ = ["Heartbeat", "JobWatch", "SlotWait"]


class Heartbeat(threading.Thread):
    """Renews the job's lease and notices stop requests while the supervisor works."""

    def __init__(self, store: JobStore, name: str, lease_seconds: float, interval: float, logger: logging.Logger):
        super().__init__(name=f"neo-heartbeat-{name}", daemon=True)
        self.store, self.job, self.lease_seconds, self.interval, self.logger = store, name, lease_seconds, interval, logger
        self.stop_requested = threading.Event()
        self.lost = threading.Event()
        self.lost_reason = ""
        self._halt = threading.Event()

    def beat(self) -> None:
        try:
            if self.store.renew_lease(self.job, self.lease_seconds):
                self.stop_requested.set()
        except (CompilationJobStateError, CompilationJobNotFound) as err:
            self.lost_reason = str(err)
            self.lost.set()
            self._halt.set()
        except Exception as err:  # a busy database must not kill the heartbeat
            self.logger.warning("lease renewal failed (will retry): %s", err)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.beat()

    def halt(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)


class JobWatch:
    """The heartbeat of one run and its deadline; :meth:`check` raises what is due."""

    def __init__(self, store: JobStore, name: str, *, lease_seconds: float, poll_interval: float,
                 logger: logging.Logger):
        self.started = time.monotonic()
        interval = max(0.05, min(poll_interval, lease_seconds / 3))
        self.heartbeat = Heartbeat(store, name, lease_seconds, interval, logger)
        self.max_runtime: int | None = None
        self.deadline: float | None = None

    def start(self) -> None:
        self.heartbeat.start()

    def halt(self) -> None:
        self.heartbeat.halt()

    def limit(self, max_runtime: int | None) -> None:
        """The job's MaxRuntimeInSeconds, counted from the start of the run (None: no limit)."""
        self.max_runtime = max_runtime
        self.deadline = self.started + float(max_runtime) if max_runtime else None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check(self) -> None:
        """Raise Lost, Stopped or Failed (time limit) when one is due."""
        if self.heartbeat.lost.is_set():
            raise Lost(self.heartbeat.lost_reason)
        if self.heartbeat.stop_requested.is_set():
            raise Stopped()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Failed(
                f"Compilation job exceeded MaxRuntimeInSeconds ({self.max_runtime} s) and was stopped; raise "
                "StoppingCondition.MaxRuntimeInSeconds if the model needs longer to compile"
            )


class SlotWait:
    """Queues a STARTING job for a compile slot and waits for its turn (see the module docstring)."""

    def __init__(self, store: JobStore, name: str, *, limit: int | None, cluster_limit: int,
                 lease_seconds: float, poll_interval: float, logger: logging.Logger):
        self.store, self.name, self.lease_seconds, self.logger = store, name, lease_seconds, logger
        self.queue = SlotQueue(store, limit=limit, cluster_limit=cluster_limit)
        self.poll = max(0.05, poll_interval)
        self.renew_every = max(0.05, lease_seconds / 3)
        self.max_sleep = max(self.poll, min(5.0, lease_seconds / 6))

    def take(self, pid: int) -> bool:
        """True once the job holds a slot (INPROGRESS); False when it could not be queued or left the queue."""
        if not self.queue.enqueue(self.name, pid, self.lease_seconds):
            return False
        shown = None
        next_renewal = time.monotonic() + self.renew_every
        while True:
            try:
                state = self.queue.peek(self.name)
                if state.claimable:
                    state = self.queue.claim(self.name, self.lease_seconds)
                    if state.claimed:
                        if shown is not None:
                            self.logger.info("compile slot taken on host %s after waiting", self.store.host)
                        return True
            except sa.exc.OperationalError as err:  # a busy or full database server: look again
                self.logger.warning("compile-slot queue read failed (will retry): %s", _first_line(err))
                time.sleep(self.max_sleep)
                continue
            finally:
                self._release_connections()
            if not state.queued:
                self.logger.info("job left the compile-slot queue: it is %s", state.status)
                return False
            seen = (state.position, state.waiting, state.busy, state.cluster_busy)
            if seen != shown:
                self.logger.info("%s", state.describe(self.store.host))
                shown = seen
            time.sleep(self._pause(state))
            now = time.monotonic()
            if now >= next_renewal:
                self._renew()  # a job that is no longer queued is seen by the next peek
                self._release_connections()
                next_renewal = now + self.renew_every

    def _pause(self, state: QueueState) -> float:
        """Seconds to the next look: one poll for the next in line, longer the further back (at most
        ``min(5 s, lease / 6)``), so a long queue does not load the store with reads."""
        behind = state.position - max(1, (state.limit or 1) - state.busy)
        return min(self.poll * max(1, behind), self.max_sleep)

    def _release_connections(self) -> None:
        """Close the pooled connections of a database server between looks: a hundred queued runners
        must not hold a hundred idle connections (PostgreSQL's max_connections)."""
        engine = self.store._engine
        if engine.dialect.name != "sqlite":
            engine.dispose()

    def _renew(self) -> None:
        try:
            self.store.renew_lease(self.name, self.lease_seconds)
        except (CompilationJobStateError, CompilationJobNotFound):
            pass
        except Exception as err:  # a busy database must not end the wait
            self.logger.warning("lease renewal failed while queued (will retry): %s", err)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
