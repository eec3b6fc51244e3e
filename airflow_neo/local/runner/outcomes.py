"""How a run ends early: one exception per recorded outcome.

Invariants: every outcome is a ``BaseException``, so no ``except Exception`` in a helper (the
cache, the tuning sync, an S3 call) can swallow it; :meth:`~airflow_neo.local.runner.job.JobRun.execute`
turns each into exactly one recorded status (:class:`Failed` -> FAILED with its reason,
:class:`Stopped` -> STOPPED, :class:`Lost` -> left as someone else recorded it,
:class:`Terminated` -> FAILED and re-raised so that ``main`` exits 128 + signal).
"""

from __future__ import annotations

__all__ = ["Failed", "Lost", "Outcome", "Stopped", "Terminated"]


class Outcome(BaseException):
    """Ends a run with a recorded status (BaseException so nothing swallows it)."""


class Failed(Outcome):
    """The job fails with ``reason`` as its FailureReason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Stopped(Outcome):
    """A stop was requested: the job ends STOPPED, nothing published."""


class Lost(Outcome):
    """The job is no longer ours (it was ended or deleted by someone else)."""


class Terminated(BaseException):
    """The runner process received SIGTERM/SIGINT/SIGHUP (only installed by ``main``)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
