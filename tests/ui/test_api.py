"""The UI plugin's API routes, through Airflow's own app and auth manager (tests/ui/conftest.py).

Jobs are recorded in a real local job store the way a runner records them (create, claim,
complete or fail); the completed one publishes the artifact of a real compile, with its
verification and profile. Permissions come from TeamAuthManager: the simple auth manager's roles,
and ``team-b*`` users confined to ``team_b*`` DAGs.
"""

from __future__ import annotations

import os
import socket

import pytest

from airflow_neo.core.attach import TASK_TAG_KEY, task_instance_tags
from airflow_neo.hooks.local import LocalNeoHook
from tests.support.requests import valid_request

RUN_ID = "manual__2026-12-02T08:00:00+00:00"
TEAM_A, TEAM_B = "team_a_models", "team_b_models"


def _tags(dag_id: str) -> list[dict]:
    return [{"Key": TASK_TAG_KEY, "Value": "x" * 32}, *task_instance_tags(dag_id, "compile", RUN_ID)]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> str:
    """The artifact of a real compile of a small CNN, with its verification and profile."""
    from airflow_neo.local.compiler import compile_model
    from tests.local import models

    folder = tmp_path_factory.mktemp("ui-artifact")
    case = models.onnx_cnn(folder / "model")
    request = models.make_request(case, target_platform={"Os": "LINUX", "Arch": "X86_64"})
    out = folder / "model-linux-x86_64.tar.gz"
    compile_model(request, str(case.archive), str(out), log=lambda line: None, profile_seconds=0.3)
    return out.as_uri()


@pytest.fixture(scope="module")
def jobs(ui_store, artifact) -> LocalNeoHook:
    """Jobs of team A (completed, failed, running), of team B (running) and one made outside Airflow."""
    hook = LocalNeoHook(store_path=ui_store)
    store = hook.store
    for name, dag_id in [("a-done", TEAM_A), ("a-failed", TEAM_A), ("a-running", TEAM_A),
                         ("b-running", TEAM_B), ("outside-running", None)]:
        store.create(valid_request(name, Tags=_tags(dag_id) if dag_id else []))
        store.mark_inprogress(name, socket.gethostname(), os.getpid(), 600)
    store.complete("a-done", artifact, "ab" * 32, '{"input0": [1, 3, 16, 16]}')
    store.fail("a-failed", "ClientError: OperatorNotImplemented: op type 'Foo' (node foo_1) is not supported")
    return hook


def _get(client, path: str, user: str | None, token_for, **params):
    headers = {"Authorization": f"Bearer {token_for(user)}"} if user else {}
    return client.get(f"/neo/api/{path}", params=params, headers=headers)


def _post(client, path: str, user: str | None, token_for):
    headers = {"Authorization": f"Bearer {token_for(user)}"} if user else {}
    return client.post(f"/neo/api/{path}", headers=headers)


def _names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [job["name"] for job in response.json()["jobs"]]


def test_every_route_refuses_an_anonymous_caller(airflow_app, jobs):
    for method, path in [("get", "backends"), ("get", "jobs"), ("get", "jobs/local/a-done"),
                         ("post", "jobs/local/a-running/stop"),
                         ("get", f"task-instance?dag_id={TEAM_A}&task_id=compile&run_id=r")]:
        response = getattr(airflow_app, method)(f"/neo/api/{path}")
        assert response.status_code == 401, (path, response.text)
    assert jobs.describe_compilation_job("a-running")["CompilationJobStatus"] == "INPROGRESS"


def test_a_forged_token_is_refused(airflow_app, jobs):
    response = airflow_app.get("/neo/api/jobs", headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 403


def test_the_list_shows_each_user_the_jobs_the_auth_manager_lets_them_read(airflow_app, jobs, token_for):
    everything = {"a-done", "a-failed", "a-running", "b-running", "outside-running"}
    assert set(_names(_get(airflow_app, "jobs", "viewer", token_for))) == everything
    team_b = _get(airflow_app, "jobs", "team-b-editor", token_for)
    assert set(_names(team_b)) == {"b-running", "outside-running"}
    assert team_b.json()["hidden"] == 3
    # ... and cannot open team A's job by its name, nor learn that it exists
    response = _get(airflow_app, "jobs/local/a-failed", "team-b-editor", token_for)
    assert response.status_code == 404 and "OperatorNotImplemented" not in response.text


def test_a_summary_carries_what_the_list_shows(airflow_app, jobs, token_for):
    page = _get(airflow_app, "jobs", "editor", token_for, name_contains="a-")
    by_name = {job["name"]: job for job in page.json()["jobs"]}
    failed = by_name["a-failed"]
    assert failed["status"] == "FAILED" and failed["backend"] == "local"
    assert failed["failure_reason"].startswith("ClientError: OperatorNotImplemented")
    assert failed["framework"] == "ONNX" and failed["target"] == "ml_c5"
    assert failed["ended"] and failed["duration_seconds"] >= 0
    assert failed["created_by"] == {"dag_id": TEAM_A, "task_id": "compile", "run_id": RUN_ID, "map_index": -1,
                                    "url": f"/dags/{TEAM_A}/runs/manual__2026-12-02T08%3A00%3A00%2B00%3A00/tasks/compile"}
    assert failed["page"] == "?view=job&backend=local&name=a-failed"
    assert by_name["a-running"]["can_stop"] is True and failed["can_stop"] is False
    assert page.json()["running"] == 1


def test_filters_and_paging_are_the_apis_own(airflow_app, jobs, token_for):
    assert _names(_get(airflow_app, "jobs", "viewer", token_for, status="FAILED")) == ["a-failed"]
    assert _names(_get(airflow_app, "jobs", "viewer", token_for, name_contains="outside")) == ["outside-running"]
    first = _get(airflow_app, "jobs", "viewer", token_for, max_results=2, sort_by="Name", sort_order="Ascending")
    assert _names(first) == ["a-done", "a-failed"] and first.json()["next_token"]
    second = _get(airflow_app, "jobs", "viewer", token_for, max_results=2, sort_by="Name", sort_order="Ascending",
                  next_token=first.json()["next_token"])
    assert _names(second) == ["a-running", "b-running"]
    created = jobs.describe_compilation_job("a-done")["CreationTime"]
    assert _names(_get(airflow_app, "jobs", "viewer", token_for, created_before="2001-01-01")) == []
    later = _get(airflow_app, "jobs", "viewer", token_for, created_after="2001-01-01T00:00:00Z")
    assert "a-done" in _names(later) and created


@pytest.mark.parametrize(("params", "message"), [
    ({"status": "DONE"}, "status: got 'DONE'; must be one of"),
    ({"max_results": 0}, "max_results: got 0; must be 1 to 100"),
    ({"created_after": "yesterday"}, "created_after: got 'yesterday'; must be an ISO 8601 time"),
    ({"sort_by": "Size"}, "sort_by: got 'Size'; must be one of"),
    ({"backend": "sagemaker"}, "backend: got 'sagemaker'; must be one of ['local'] (set [neo] ui_aws_conn_id"),
])
def test_bad_query_values_are_refused_naming_the_field(airflow_app, jobs, token_for, params, message):
    response = _get(airflow_app, "jobs", "viewer", token_for, **params)
    assert response.status_code == 400 and message in response.json()["detail"], response.text


def test_a_completed_jobs_page_has_its_artifact_and_report(airflow_app, jobs, token_for, artifact):
    body = _get(airflow_app, "jobs/local/a-done", "viewer", token_for).json()
    assert body["job"]["status"] == "COMPLETED" and body["console_url"] is None
    assert body["payload"]["ModelArtifacts"]["S3ModelArtifacts"] == artifact
    report = body["report"]
    assert report["available"] is True and report["digest"] == "ab" * 32
    assert report["verification"]["passed"] is True and report["verification"]["reference"].startswith("onnxruntime")
    profile = report["profile"]
    assert profile["p50_ms"] > 0 and profile["speedup"] > 0 and profile["top_kernels"]
    assert all(kernel["total_ms"] >= 0 and kernel["name"] for kernel in profile["top_kernels"])


def test_a_running_job_has_no_report_yet(airflow_app, jobs, token_for):
    body = _get(airflow_app, "jobs/local/a-running", "viewer", token_for).json()
    assert body["report"] is None and body["job"]["status"] == "INPROGRESS"
    assert body["job"]["can_stop"] is False  # a viewer may not stop it


def test_unknown_job_is_404(airflow_app, jobs, token_for):
    response = _get(airflow_app, "jobs/local/no-such-job", "admin", token_for)
    assert response.status_code == 404 and "no-such-job" in response.json()["detail"]


def test_who_may_stop_which_job(airflow_app, jobs, token_for):
    refused = _post(airflow_app, "jobs/local/a-running/stop", "viewer", token_for)
    assert refused.status_code == 403 and "edit permission on DAG 'team_a_models'" in refused.json()["detail"]
    assert _post(airflow_app, "jobs/local/a-running/stop", "team-b-editor", token_for).status_code == 404
    outside = _post(airflow_app, "jobs/local/outside-running/stop", "editor", token_for)
    assert outside.status_code == 403 and "only administrators" in outside.json()["detail"]
    assert jobs.describe_compilation_job("a-running")["CompilationJobStatus"] == "INPROGRESS"
    assert jobs.describe_compilation_job("outside-running")["CompilationJobStatus"] == "INPROGRESS"

    stopped = _post(airflow_app, "jobs/local/b-running/stop", "team-b-editor", token_for)
    assert stopped.status_code == 202 and stopped.json()["status"] == "STOPPING"
    assert stopped.json()["created_by"]["dag_id"] == TEAM_B
    assert jobs.describe_compilation_job("b-running")["CompilationJobStatus"] == "STOPPING"
    assert _audit_entries("b-running") == [("team-b-editor", TEAM_B, "compile", RUN_ID)]
    assert _post(airflow_app, "jobs/local/outside-running/stop", "admin", token_for).status_code == 202
    assert _audit_entries("outside-running") == [("admin", None, None, None)]
    assert _audit_entries("a-running") == []  # refused stops change nothing and record nothing
    again = _post(airflow_app, "jobs/local/b-running/stop", "team-b-editor", token_for)
    assert again.status_code == 409 and "STOPPING" in again.json()["detail"]
    finished = _post(airflow_app, "jobs/local/a-done/stop", "editor", token_for)
    assert finished.status_code == 409 and "COMPLETED" in finished.json()["detail"]


def _audit_entries(job: str) -> list[tuple]:
    """(user, dag, task, run) of each audit-log entry of a UI stop of ``job``."""
    import json

    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_neo.ui.routes import STOP_AUDIT_EVENT

    with create_session() as session:
        rows = session.scalars(select(Log).where(Log.event == STOP_AUDIT_EVENT)).all()
        return [(row.owner, row.dag_id, row.task_id, row.run_id) for row in rows
                if json.loads(row.extra)["compilation_job_name"] == job]
