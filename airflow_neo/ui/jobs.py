"""The jobs of one backend as the UI shows them: list pages, a job's page, stop.

:class:`JobsView` works only through the hook contract and asks :class:`~airflow_neo.ui.access.JobAccess`
before it shows or stops anything. A job the user may not read is left out of a list page (and
counted in ``hidden``) and is "not found" on its own page, so its name, status and failure
reason never reach that user. Every value returned is JSON-safe.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow_neo.core.attach import TaskInstanceRef, created_by
from airflow_neo.core.exceptions import CompilationJobNotFound, CompilationJobStateError, NeoError
from airflow_neo.core.payload import json_safe
from airflow_neo.core.report import target_of
from airflow_neo.core.status import INPROGRESS, RUNNING_STATES, STARTING, TERMINAL_STATES
from airflow_neo.ui.query import ListQuery, parse_time

if TYPE_CHECKING:
    from airflow_neo.core.backends import Backend
    from airflow_neo.hooks.base import CompilationJobHook
    from airflow_neo.ui.access import JobAccess

#: jobs described at once while a list page is built (SageMaker: one describe and one ListTags each)
DESCRIBE_THREADS = 8
LOG_TAIL_LINES = 40
STOPPABLE = frozenset({STARTING, INPROGRESS})


class JobNotReadable(CompilationJobNotFound):
    """The job does not exist, or this user may not read it (the two look the same)."""


class StopRefused(PermissionError):
    """The user may read the job but not stop it."""


class BackendUnavailable(NeoError):
    """The backend failed to answer (the service, its credentials, the job store)."""


@contextlib.contextmanager
def backend_errors(backend: Backend) -> Iterator[None]:
    """Turn a failure of the backend's client (botocore, the store's driver) into BackendUnavailable.

    The package's own errors, and ValueError (a bad query value), pass through unchanged.
    """
    try:
        yield
    except (NeoError, ValueError, PermissionError):
        raise
    except Exception as err:  # noqa: BLE001 - any client library's error, reported to the page
        raise BackendUnavailable(f"the {backend.value} backend failed: {type(err).__name__}: {err}") from err


class JobsView:
    """One backend's jobs, for one user."""

    def __init__(self, backend: Backend, hook: CompilationJobHook, access: JobAccess, airflow_base: str = "") -> None:
        self.backend = backend
        self.hook = hook
        self.access = access
        self.airflow_base = airflow_base.rstrip("/")

    # -- the list ---------------------------------------------------------------------------

    def page(self, query: ListQuery) -> dict:
        """One ListCompilationJobs page, the jobs the user may not read left out."""
        listed = self.hook.list_compilation_jobs_page(**query.api_arguments())
        names = [item["CompilationJobName"] for item in listed.get("CompilationJobSummaries") or []]
        jobs = [job for job in self._read_many(names) if job is not None]
        return {
            "backend": self.backend.value,
            "jobs": [job["summary"] for job in jobs],
            "next_token": listed.get("NextToken") or None,
            "hidden": len(names) - len(jobs),
            "running": sum(job["summary"]["status"] in RUNNING_STATES for job in jobs),
        }

    def _read_many(self, names: list[str]) -> list[dict | None]:
        if len(names) <= 1:
            return [self._read_or_none(name) for name in names]
        with ThreadPoolExecutor(min(DESCRIBE_THREADS, len(names)), thread_name_prefix="neo-ui") as pool:
            return list(pool.map(self._read_or_none, names))

    def _read_or_none(self, name: str) -> dict | None:
        try:
            return self._read(name)
        except CompilationJobNotFound:  # deleted since the page was listed, or not readable
            return None

    # -- one job --------------------------------------------------------------------------------

    def detail(self, name: str) -> dict:
        """The job's page: summary, payload, report, console link, log tail."""
        job = self._read(name)
        payload = job["payload"]
        terminal = payload.get("CompilationJobStatus") in TERMINAL_STATES
        report = self.hook.compilation_report(name, payload=payload) if terminal else None
        console = getattr(self.hook, "console_url", None)
        return json_safe({
            "job": job["summary"],
            "payload": payload,
            "report": report,
            "console_url": console(name) if callable(console) else None,
            "log_tail": _tail(self.hook.job_log(name), LOG_TAIL_LINES),
        })

    def stop(self, name: str) -> dict:
        """Stop a running job the user may stop; raise StopRefused or CompilationJobStateError."""
        job = self._read(name)
        if not self.access.may_stop(job["owner"]):
            raise StopRefused(_refusal(name, job["owner"]))
        status = job["summary"]["status"]
        if status not in STOPPABLE:
            raise CompilationJobStateError(f"compilation job {name!r} is {status}: only STARTING or INPROGRESS "
                                           "jobs can be stopped")
        self.hook.log.info("Compilation job %s: stop asked by %s in the UI", name, self.access.user_name)
        self.hook.stop_compilation_job(name)
        return {"name": name, "status": "STOPPING", "created_by": job["summary"]["created_by"]}

    def created_by_task_instance(self, ref: TaskInstanceRef, names: list[str]) -> list[dict]:
        """The summaries of the jobs of ``names`` that the task instance ``ref`` created."""
        found = [job for job in self._read_many(names) if job is not None and job["owner"] == ref]
        return [job["summary"] for job in found]

    def _read(self, name: str) -> dict:
        payload = self.hook.describe_compilation_job(name)
        owner = created_by(self.hook.tags_of(payload))
        if not self.access.may_read(owner):
            raise JobNotReadable(f"no compilation job named {name!r} that you may read")
        return {"payload": payload, "owner": owner, "summary": self._summary(payload, owner)}

    def _summary(self, payload: dict, owner: TaskInstanceRef | None) -> dict:
        name = payload["CompilationJobName"]
        status = payload.get("CompilationJobStatus")
        return json_safe({
            "name": name,
            "backend": self.backend.value,
            "status": status,
            "framework": (payload.get("InputConfig") or {}).get("Framework"),
            "target": target_of(payload.get("OutputConfig") or {}),
            "created": payload.get("CreationTime"),
            "started": payload.get("CompilationStartTime"),
            "ended": payload.get("CompilationEndTime"),
            "duration_seconds": _duration(payload),
            "failure_reason": payload.get("FailureReason") or None,
            "created_by": self._owner_json(owner),
            "can_stop": status in STOPPABLE and self.access.may_stop(owner),
            "page": "?" + urlencode({"view": "job", "backend": self.backend.value, "name": name}),
        })

    def _owner_json(self, owner: TaskInstanceRef | None) -> dict | None:
        if owner is None:
            return None
        return {"dag_id": owner.dag_id, "task_id": owner.task_id, "run_id": owner.run_id,
                "map_index": owner.map_index, "url": self.airflow_base + task_instance_path(owner)}


def task_instance_path(ref: TaskInstanceRef) -> str:
    """The Airflow 3 UI's path of a task instance (of the task, when the run is not known)."""
    path = f"/dags/{quote(ref.dag_id, safe='')}"
    if ref.run_id:
        path += f"/runs/{quote(ref.run_id, safe='')}"
    path += f"/tasks/{quote(ref.task_id, safe='')}"
    if ref.run_id and ref.map_index >= 0:
        path += f"/mapped/{ref.map_index}"
    return path


def _duration(payload: dict) -> float | None:
    """Seconds from the compile's start (or the job's creation) to its end, or to now while it runs."""
    start = _time(payload.get("CompilationStartTime")) or _time(payload.get("CreationTime"))
    if start is None:
        return None
    end = _time(payload.get("CompilationEndTime"))
    if end is None and payload.get("CompilationJobStatus") in TERMINAL_STATES:
        end = _time(payload.get("LastModifiedTime"))
    end = end or dt.datetime.now(dt.timezone.utc)
    return round(max(0.0, (end - start).total_seconds()), 3)


def _time(value: Any) -> dt.datetime | None:
    """A payload's time (a datetime, or ISO text once JSON-safe) as an aware datetime; None if unreadable."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    try:
        return parse_time("time", value) if isinstance(value, str) else None
    except ValueError:
        return None


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:]) if text else ""


def _refusal(name: str, owner: TaskInstanceRef | None) -> str:
    if owner is None:
        return (f"compilation job {name!r} was made outside Airflow: only administrators may stop it")
    return f"you may not stop compilation job {name!r}: stopping it needs edit permission on DAG {owner.dag_id!r}"
