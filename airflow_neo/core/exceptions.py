"""Small, precise exception classes; none of them needs Airflow."""

from __future__ import annotations

from dataclasses import dataclass


class NeoError(Exception):
    """Base class of every airflow-neo error."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where, what was given, what is allowed."""

    path: str
    value: object
    allowed: str

    def __str__(self) -> str:
        return f"{self.path}: got {_short_repr(self.value)}; {self.allowed}"


class InvalidCompilationRequest(NeoError, ValueError):
    """A CreateCompilationJob request that breaks one or more rules; lists every problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid CreateCompilationJob request ({len(self.problems)} problem(s)):\n{lines}")


class UnknownBackendError(NeoError, ValueError):
    """A backend name that airflow-neo does not know."""


class CompilationJobNotFound(NeoError):
    """The API's ResourceNotFound for a compilation job."""

    code = "ResourceNotFound"


class CompilationJobExists(NeoError):
    """The API's ResourceInUse: a compilation job with that name already exists."""

    code = "ResourceInUse"


class CompilationJobStateError(NeoError):
    """An operation that the job's current status does not allow (for example deleting a running job)."""

    code = "ValidationException"


class CompilationJobFailed(NeoError):
    """The job ended FAILED or STOPPED, or did not end in time."""

    def __init__(self, message: str, payload: dict | None = None):
        super().__init__(message)
        self.payload = payload or {}


class CompilationJobTimeout(CompilationJobFailed):
    """Waiting for the job took longer than allowed."""


def _short_repr(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
