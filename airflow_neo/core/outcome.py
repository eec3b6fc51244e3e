"""What a terminal payload means for a task: one rule for operators, sensor and trigger."""

from __future__ import annotations

from airflow_neo.core.exceptions import CompilationJobFailed
from airflow_neo.core.status import COMPLETED, FAILED, STOPPED


def failure_message(payload: dict) -> str | None:
    """None when the job COMPLETED; otherwise the message a failed task should raise."""
    name = payload.get("CompilationJobName")
    status = payload.get("CompilationJobStatus")
    if status == COMPLETED:
        return None
    if status == FAILED:
        return f"Compilation job {name} FAILED: {payload.get('FailureReason') or 'no FailureReason given'}"
    if status == STOPPED:
        return f"Compilation job {name} was STOPPED before it completed"
    return f"Compilation job {name} ended in unexpected status {status!r}"


def raise_unless_completed(payload: dict) -> dict:
    """Return the payload of a COMPLETED job; raise :class:`CompilationJobFailed` otherwise."""
    message = failure_message(payload)
    if message:
        raise CompilationJobFailed(message, payload)
    return payload
