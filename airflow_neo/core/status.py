"""Compilation-job statuses, as the SageMaker API spells them (upper case)."""

from __future__ import annotations

STARTING = "STARTING"
INPROGRESS = "INPROGRESS"
STOPPING = "STOPPING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
STOPPED = "STOPPED"

RUNNING_STATES = frozenset({STARTING, INPROGRESS, STOPPING})
SUCCESS_STATES = frozenset({COMPLETED})
FAILURE_STATES = frozenset({FAILED, STOPPED})
TERMINAL_STATES = SUCCESS_STATES | FAILURE_STATES
ALL_STATES = RUNNING_STATES | TERMINAL_STATES


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATES
