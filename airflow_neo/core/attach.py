"""Choosing the job name for a create, and re-attaching a task retry to the job it already made.

A job created by an operator carries a tag that identifies the task instance (DAG, task, run,
map index). When a retry of that task finds a job with its own tag that is running or
COMPLETED, it re-attaches instead of creating a second job.

It also carries the task instance in readable tags (:func:`task_instance_tags`): the UI links a
job to the task that created it and asks the auth manager about that DAG before it shows or stops
the job. :func:`created_by` reads them back; a job without them was made outside Airflow.
A readable tag whose value the API's tag pattern refuses (a run id with ``~``, say) is left out.
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
#: the readable tags of the task instance that created a job: tag key -> TaskInstanceRef field
CREATED_BY_TAG_KEYS = {
    "airflow-neo:dag-id": "dag_id",
    "airflow-neo:task-id": "task_id",
    "airflow-neo:run-id": "run_id",
    "airflow-neo:map-index": "map_index",
}
# The API's tag value pattern, ASCII part (\p{L}, \p{Z}, \p{N} beyond ASCII are allowed there too).
_TAG_VALUE = re.compile(r"[A-Za-z0-9 _.:/=+\-@]{1,256}")


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


@dataclass(frozen=True)
class TaskInstanceRef:
    """The Airflow task instance that created a job."""

    dag_id: str
    task_id: str
    run_id: str | None = None
    map_index: int = -1


def task_instance_tags(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> list[dict]:
    """The readable tags naming a task instance (those the API's pattern refuses are left out)."""
    values = {"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "map_index": str(map_index)}
    return [{"Key": key, "Value": values[field]} for key, field in CREATED_BY_TAG_KEYS.items()
            if _TAG_VALUE.fullmatch(values[field])]


def created_by(tags: Iterable[dict]) -> TaskInstanceRef | None:
    """The task instance named by a job's readable tags; None for a job made outside Airflow."""
    found = {CREATED_BY_TAG_KEYS[t["Key"]]: t.get("Value") for t in tags
             if isinstance(t, dict) and t.get("Key") in CREATED_BY_TAG_KEYS}
    if not found.get("dag_id") or not found.get("task_id"):
        return None
    try:
        map_index = int(found.get("map_index") or -1)
    except ValueError:
        map_index = -1
    return TaskInstanceRef(found["dag_id"], found["task_id"], found.get("run_id") or None, map_index)


def with_identity_tag(request: dict, identity: str, extra_tags: Iterable[dict] = ()) -> dict:
    """``request`` with the task-instance identity tag and ``extra_tags``, replacing tags of the same keys."""
    added = [{"Key": TASK_TAG_KEY, "Value": identity}, *extra_tags]
    keys = {tag["Key"] for tag in added}
    tags = [t for t in request.get("Tags") or [] if t.get("Key") not in keys]
    return {**request, "Tags": [*tags, *added]}


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
