"""How a run ends early: one exception per recorded outcome.

Invariants: every outcome is a ``BaseException``, so no ``except Exception`` in a helper (the
cache, the tuning sync, an S3 call) can swallow it; :meth:`~airflow_neo.local.runner.job.JobRun.execute`
turns each into exactly one recorded status (:class:`Failed` -> FAILED with its reason,
:class:`Stopped` -> STOPPED, :class:`Lost` -> left as someone else recorded it,
:class:`Terminated` -> FAILED and re-raised so that ``main`` exits 128 + signal).
A :class:`Failed` reason is always in SageMaker Neo's form (``ClientError: ...`` or
``ServerError: ...``, see :mod:`airflow_neo.local.errors`).
"""

from __future__ import annotations

import re

from airflow_neo.local.errors import CLIENT_ERROR, INPUT_CONFIGURATION, SERVER_ERROR, is_neo_reason, neo_reason

__all__ = ["Failed", "Lost", "Outcome", "Stopped", "Terminated", "classify_reason"]


class Outcome(BaseException):
    """Ends a run with a recorded status (BaseException so nothing swallows it)."""


class Failed(Outcome):
    """The job fails with ``reason`` as its FailureReason, in SageMaker Neo's form.

    A reason already in that form (``ClientError: ...``/``ServerError: ...``) is kept. Otherwise
    ``kind``/``neo_class`` name the form; without them :func:`classify_reason` picks it from the
    field the reason starts with.
    """

    def __init__(self, reason: str, *, kind: str | None = None, neo_class: str | None = None):
        if not is_neo_reason(reason):
            if kind is None:
                kind, neo_class = classify_reason(reason)
            reason = neo_reason(kind, neo_class, reason)
        super().__init__(reason)
        self.reason = reason


#: How the runner's own reasons map onto Neo's form, checked in order (first match wins): a
#: request field the user gave (InputConfig is Neo's InputConfiguration) or an S3 transfer (Neo
#: passes those errors through as client errors) is a ClientError; everything else (a time limit,
#: a compiler that wrote nothing) is a ServerError, as Neo's "all other errors are system errors".
REASON_RULES: tuple[tuple[re.Pattern, str, str | None], ...] = (
    (re.compile(r"^(InputConfig\b|ModelPackageVersionArn\b)"), CLIENT_ERROR, INPUT_CONFIGURATION),
    (re.compile(r"^(OutputConfig\b|Could not (upload|publish) the compiled model\b)"), CLIENT_ERROR, None),
)


def classify_reason(reason: str) -> tuple[str, str | None]:
    """``(kind, neo_class)`` of a runner reason not yet in Neo's form (see :data:`REASON_RULES`)."""
    for pattern, kind, neo_class in REASON_RULES:
        if pattern.search(reason):
            return kind, neo_class
    return SERVER_ERROR, None


class Stopped(Outcome):
    """A stop was requested: the job ends STOPPED, nothing published."""


class Lost(Outcome):
    """The job is no longer ours (it was ended or deleted by someone else)."""


class Terminated(BaseException):
    """The runner process received SIGTERM/SIGINT/SIGHUP (only installed by ``main``)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
