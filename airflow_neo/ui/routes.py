"""The JSON API of the UI (mounted at ``/neo/api``): backends, jobs list, a job, stop, a task
instance's jobs. Every route depends on :func:`page_access`: no token answers 401, a user the
auth manager does not let open the page answers 403; the job routes then ask per job.

Handlers are plain functions (FastAPI runs them in its thread pool: the hooks block).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from airflow_neo.core.attach import TaskInstanceRef
from airflow_neo.ui import backends
from airflow_neo.ui.access import RESOURCE_NAME, JobAccess
from airflow_neo.ui.jobs import JobsView, backend_errors
from airflow_neo.ui.query import DEFAULT_PAGE, ListQuery

router = APIRouter()

#: the XCom key under which the compile operator records the name of the job it made
JOB_NAME_XCOM_KEY = "compilation_job_name"
#: the event of Airflow's audit log that a stop from the UI records (the user is its owner)
STOP_AUDIT_EVENT = "neo.stop_compilation_job"


def _user_dependency():
    from airflow.api_fastapi.core_api.security import get_user

    return get_user


def page_access(user=Depends(_user_dependency())) -> JobAccess:  # noqa: B008 (FastAPI's idiom)
    from airflow.api_fastapi.app import get_auth_manager

    access = JobAccess(get_auth_manager(), user)
    if not access.may_open_page():
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may not open {RESOURCE_NAME}")
    return access


Access = Annotated[JobAccess, Depends(page_access)]


def _view(backend: str | None, access: JobAccess) -> JobsView:
    chosen = backends.chosen(backend)
    with backend_errors(chosen):
        hook = backends.hook_for(chosen)
    return JobsView(chosen, hook, access, airflow_base=_airflow_base())


@router.get("/backends")
def list_backends(access: Access) -> dict:
    return {"backends": backends.describe(), "default": backends.default_backend().value, "user": access.user_name}


@router.get("/jobs")
def list_jobs(
    access: Access,
    backend: str | None = None,
    status_: Annotated[str | None, Query(alias="status")] = None,
    name_contains: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    max_results: int = DEFAULT_PAGE,
    next_token: str | None = None,
    sort_by: str = "CreationTime",
    sort_order: str = "Descending",
) -> dict:
    query = ListQuery(status=status_ or None, name_contains=name_contains or None, created_after=created_after,
                      created_before=created_before, max_results=max_results, next_token=next_token or None,
                      sort_by=sort_by, sort_order=sort_order)
    view = _view(backend, access)
    with backend_errors(view.backend):
        return view.page(query)


@router.get("/jobs/{backend}/{name}")
def get_job(backend: str, name: str, access: Access) -> dict:
    view = _view(backend, access)
    with backend_errors(view.backend):
        return view.detail(name)


@router.post("/jobs/{backend}/{name}/stop", status_code=status.HTTP_202_ACCEPTED)
def stop_job(backend: str, name: str, access: Access) -> dict:
    view = _view(backend, access)
    with backend_errors(view.backend):
        stopped = view.stop(name)
    _audit_stop(access, view.backend.value, stopped)
    return stopped


@router.get("/task-instance")
def task_instance_jobs(access: Access, dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> dict:
    """The jobs a task instance created (named in its XCom), on every backend the UI serves."""
    ref = TaskInstanceRef(dag_id, task_id, run_id, map_index)
    if not access.may_read(ref):
        return {"jobs": []}
    names = _job_names_of(ref)
    jobs: list[dict] = []
    for backend in backends.configured():
        with backend_errors(backend):
            view = JobsView(backend, backends.hook_for(backend), access, _airflow_base())
            jobs += view.created_by_task_instance(ref, names)
    return {"jobs": sorted(jobs, key=lambda job: str(job.get("created")), reverse=True)}


def _audit_stop(access: JobAccess, backend: str, stopped: dict) -> None:
    """Record the stop in Airflow's audit log (on the creating task instance's DAG, when there is one)."""
    import json
    import logging

    from airflow.models.log import Log
    from airflow.utils.session import create_session

    owner = stopped.get("created_by") or {}
    extra = json.dumps({"backend": backend, "compilation_job_name": stopped["name"], "via": "airflow-neo UI"})
    entry = Log(event=STOP_AUDIT_EVENT, owner=access.user_name, extra=extra, dag_id=owner.get("dag_id"),
                task_id=owner.get("task_id"), run_id=owner.get("run_id"), map_index=owner.get("map_index"))
    try:
        with create_session() as session:
            session.add(entry)
    except Exception:  # the job is already stopping: a full audit table must not turn that into an error
        logging.getLogger(__name__).exception("Could not record the stop of %s in the audit log", stopped["name"])


def _job_names_of(ref: TaskInstanceRef) -> list[str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(run_id=ref.run_id, key=JOB_NAME_XCOM_KEY, dag_ids=ref.dag_id, task_ids=ref.task_id,
                               map_indexes=ref.map_index)
    with create_session() as session:
        values = [XComModel.deserialize_value(row) for row in session.scalars(query)]
    return [value for value in values if isinstance(value, str) and value]


def _airflow_base() -> str:
    """The path under which Airflow's UI is served (``[api] base_url``), for links to task instances."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
