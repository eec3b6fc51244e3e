"""What a running job must notice while it works: a stop request, the loss of its lease, its time limit.

Invariants: the heartbeat thread renews the job's lease every ``min(poll_interval, lease / 3)``
seconds (at least 0.05 s) until halted; a busy store never stops it (the renewal is retried), a job
that is no longer ours does. :meth:`JobWatch.check` raises the one outcome due, in this order:
:class:`~.outcomes.Lost`, :class:`~.outcomes.Stopped`, then :class:`~.outcomes.Failed` once
``MaxRuntimeInSeconds`` has passed since the run started.
"""

from __future__ import annotations

import logging
import threading
import time

from airflow_neo.core.exceptions import CompilationJobNotFound, CompilationJobStateError
from airflow_neo.local.runner.outcomes import Failed, Lost, Stopped
from airflow_neo.local.store import JobStore

__all__ = ["Heartbeat", "JobWatch"]


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
