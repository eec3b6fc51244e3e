"""Errors of the local (TVM) backend; each message says what was wrong and what is allowed.

Every class subclasses :class:`~airflow_neo.core.exceptions.NeoError`; none needs Airflow or TVM.
A compile child process reports one of these by class name and message, so keep messages
self-contained (they become the job's FailureReason).
"""

from __future__ import annotations

from airflow_neo.core.exceptions import NeoError


class LocalCompilationError(NeoError):
    """Base class of the local backend's errors."""

    #: A short machine-readable kind, stable across versions (used in FailureReason prefixes).
    kind = "ClientError"


class ModelArchiveError(LocalCompilationError, ValueError):
    """The model archive is corrupt or unsafe, or the model file in it is missing or ambiguous."""

    kind = "ModelArchiveError"


class ModelInputError(LocalCompilationError, ValueError):
    """DataInputConfig or the ``dtype`` option does not match the model's real inputs."""

    kind = "ModelInputError"


class UnsupportedFrameworkError(LocalCompilationError, ValueError):
    """A Framework that the local backend cannot import."""

    kind = "UnsupportedFrameworkError"


class UnsupportedTargetError(LocalCompilationError, ValueError):
    """A TargetDevice, TargetPlatform or CPU option that the local backend cannot build for."""

    kind = "UnsupportedTargetError"


class CompilationError(LocalCompilationError):
    """TVM (or tl2cgen) failed: unsupported operators, a missing C compiler, a build error."""

    kind = "CompilationError"


class UnsupportedOperatorsError(CompilationError):
    """The model uses operators that TVM's frontend cannot convert; ``operators`` lists them."""

    kind = "UnsupportedOperatorsError"

    def __init__(self, message: str, operators: list[str] | None = None):
        super().__init__(message)
        self.operators = list(operators or [])


class IncompatibleArtifactError(LocalCompilationError):
    """A compiled artifact that cannot run on this machine (another CPU architecture or features)."""

    kind = "IncompatibleArtifactError"


__all__ = [
    "CompilationError",
    "IncompatibleArtifactError",
    "LocalCompilationError",
    "ModelArchiveError",
    "ModelInputError",
    "UnsupportedFrameworkError",
    "UnsupportedOperatorsError",
    "UnsupportedTargetError",
]
