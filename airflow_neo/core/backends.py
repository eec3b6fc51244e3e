"""Execution backends: the one place that knows their names."""

from __future__ import annotations

from enum import Enum

from airflow_neo.core.exceptions import UnknownBackendError


class Backend(str, Enum):
    """Where a compilation job runs."""

    SAGEMAKER = "sagemaker"
    LOCAL = "local"


def parse_backend(value: str | Backend) -> Backend:
    """The Backend for ``value``; a clear error naming the allowed values otherwise."""
    if isinstance(value, Backend):
        return value
    try:
        return Backend(str(value).strip().lower())
    except ValueError:
        allowed = [b.value for b in Backend]
        raise UnknownBackendError(f"backend: got {value!r}; must be one of {allowed}") from None
