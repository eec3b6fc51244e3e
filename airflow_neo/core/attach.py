"""Choosing the job name for a create, and re-attaching a task retry to the job it already made.

A job created by an operator carries a tag that identifies the task instance (DAG, task, run,
map index). When a retry of that task finds a job with its own tag that is running or
COMPLETED, it re-attaches instead of creating a second job.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from airflow_neo.core.exceptions import CompilationJobExists
from airflow_neo.core.naming import incremented_name, timestamped_name
from airflow_neo.core.status import FAILURE_STATES

TASK_TAG_KEY = "airflow-neo:task-instance"


class JobExistsAction(str, Enum):
    """What to do when a job with the requested name exists."""

    FAIL = "fail"
    INCREMENT = "increment"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True)
class NameDecision:
    name: str
    reattach: bool


def task_identity(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """A short, tag-safe identity for a task instance (stable across its tries)."""
    raw = f"{dag_id}\x1f{task_id}\x1f{run_id}\x1f{map_index}"
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def with_identity_tag(request: dict, identity: str) -> dict:
    tags = [t for t in request.get("Tags") or [] if t.get("Key") != TASK_TAG_KEY]
    return {**request, "Tags": [*tags, {"Key": TASK_TAG_KEY, "Value": identity}]}


def parse_action(value: str | JobExistsAction) -> JobExistsAction:
    try:
        return JobExistsAction(value)
    except ValueError:
        allowed = [a.value for a in JobExistsAction]
        raise ValueError(f"action_if_job_exists: got {value!r}; must be one of {allowed}") from None


def choose_job_name(
    base_name: str,
    action: JobExistsAction,
    *,
    existing_names: Iterable[str],
    identity: str | None,
    tags_of: Callable[[str], list[dict]],
    status_of: Callable[[str], str],
) -> NameDecision:
    """Decide the name to create, or the job of this task instance to re-attach to.

    :param existing_names: names of jobs whose name contains ``base_name``.
    :param identity: the task-instance identity, or None when not run by a task.
    """
    existing = set(existing_names)
    owned_failed = False
    if identity is not None:
        family = re.compile(rf"^{re.escape(base_name)}(-\d+)?$")
        for name in sorted((n for n in existing if family.match(n)), reverse=True):
            if {"Key": TASK_TAG_KEY, "Value": identity} not in tags_of(name):
                continue
            if status_of(name) not in FAILURE_STATES:
                return NameDecision(name, reattach=True)
            owned_failed = True
    if base_name not in existing:
        return NameDecision(base_name, reattach=False)
    if action is JobExistsAction.TIMESTAMP:
        return NameDecision(timestamped_name(base_name), reattach=False)
    if action is JobExistsAction.INCREMENT or owned_failed:
        # A retry after this task's own job failed gets a fresh name even in "fail" mode.
        return NameDecision(incremented_name(base_name, existing), reattach=False)
    raise CompilationJobExists(
        f"A compilation job named {base_name!r} already exists; set action_if_job_exists to "
        f"'increment' or 'timestamp' to create a new one with a derived name"
    )
