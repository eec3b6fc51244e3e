"""The UI's SageMaker backend: jobs of the AWS connection ``[neo] ui_aws_conn_id``, listed, read
and stopped through the real NeoHook against a moto server (tests/support/moto_neo.py gives its
compilation jobs the service's lifecycle), with the same permission rules as local jobs."""

from __future__ import annotations

import json

import pytest

from airflow_neo.core.attach import task_instance_tags
from airflow_neo.hooks.neo import NeoHook
from tests.support import moto_neo
from tests.support.fixtures import aws_connection_json
from tests.support.requests import valid_request
from tests.ui.conftest import forget_hooks

RUN_ID = "scheduled__2026-12-01T00:00:00+00:00"


@pytest.fixture
def sagemaker_jobs(aws_conn_env, airflow_app, monkeypatch) -> NeoHook:
    """Three SageMaker jobs: team A's (running), team B's (failed) and one made outside Airflow."""
    monkeypatch.setenv("AIRFLOW__NEO__UI_AWS_CONN_ID", aws_conn_env)
    forget_hooks()
    hook = NeoHook(aws_conn_id=aws_conn_env)
    hook.create_compilation_job(valid_request("fail-sm-team-b", Tags=task_instance_tags("team_b_models", "compile", RUN_ID)))
    for _ in range(3):  # moto_neo: each describe moves a job one step (STARTING, INPROGRESS, terminal)
        hook.describe_compilation_job("fail-sm-team-b")
    moto_neo.set_transition("manual", times=10**6)  # the others stay STARTING however often the UI reads them
    hook.create_compilation_job(valid_request("sm-team-a", Tags=task_instance_tags("team_a_models", "compile", RUN_ID)))
    hook.create_compilation_job(valid_request("sm-outside"))
    yield hook
    moto_neo.unset_transition()
    forget_hooks()


def _get(client, path, user, token_for, **params):
    return client.get(f"/neo/api/{path}", params=params, headers={"Authorization": f"Bearer {token_for(user)}"})


def test_the_backends_route_offers_sagemaker_when_a_connection_is_set(airflow_app, token_for, sagemaker_jobs):
    body = _get(airflow_app, "backends", "viewer", token_for).json()
    assert [b["name"] for b in body["backends"]] == ["local", "sagemaker"]
    assert body["backends"][1]["label"] == "SageMaker (aws_neo_test, us-east-1)"
    assert body["user"] == "viewer"


def test_sagemaker_jobs_are_listed_with_the_apis_filters_and_permissions(airflow_app, token_for, sagemaker_jobs):
    page = _get(airflow_app, "jobs", "viewer", token_for, backend="sagemaker").json()
    by_name = {job["name"]: job for job in page["jobs"]}
    assert set(by_name) == {"sm-team-a", "fail-sm-team-b", "sm-outside"}
    assert by_name["fail-sm-team-b"]["status"] == "FAILED" and by_name["fail-sm-team-b"]["failure_reason"]
    assert by_name["sm-team-a"]["created_by"]["dag_id"] == "team_a_models"
    assert by_name["sm-outside"]["created_by"] is None
    failed = _get(airflow_app, "jobs", "viewer", token_for, backend="sagemaker", status="FAILED").json()
    assert [job["name"] for job in failed["jobs"]] == ["fail-sm-team-b"]
    team_b = _get(airflow_app, "jobs", "team-b-editor", token_for, backend="sagemaker").json()
    assert {job["name"] for job in team_b["jobs"]} == {"fail-sm-team-b", "sm-outside"} and team_b["hidden"] == 1


def test_a_sagemaker_jobs_page_links_the_console_and_says_why_there_is_no_report(airflow_app, token_for,
                                                                                 sagemaker_jobs):
    body = _get(airflow_app, "jobs/sagemaker/fail-sm-team-b", "viewer", token_for).json()
    assert body["console_url"] == ("https://console.aws.amazon.com/sagemaker/home?region=us-east-1"
                                   "#/compilation-jobs/fail-sm-team-b")
    assert body["report"]["available"] is False
    assert body["report"]["reason"] == "SageMaker Neo jobs carry no verification or profile"
    assert body["payload"]["CompilationJobArn"].endswith("compilation-job/fail-sm-team-b")


def test_an_editor_stops_a_running_sagemaker_job_of_their_dag(airflow_app, token_for, sagemaker_jobs):
    headers = {"Authorization": f"Bearer {token_for('editor')}"}
    refused = airflow_app.post("/neo/api/jobs/sagemaker/sm-outside/stop", headers=headers)
    assert refused.status_code == 403
    stopped = airflow_app.post("/neo/api/jobs/sagemaker/sm-team-a/stop", headers=headers)
    assert stopped.status_code == 202, stopped.text
    assert sagemaker_jobs.describe_compilation_job("sm-team-a")["CompilationJobStatus"] == "STOPPING"


def test_an_unreachable_service_is_a_502_that_says_why(airflow_app, token_for, aws_env, monkeypatch):
    connection = json.loads(aws_connection_json("http://127.0.0.1:9"))  # nothing listens on port 9
    monkeypatch.setenv("AIRFLOW_CONN_NEO_UI_DOWN", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__NEO__UI_AWS_CONN_ID", "neo_ui_down")
    forget_hooks()
    try:
        response = _get(airflow_app, "jobs", "viewer", token_for, backend="sagemaker")
    finally:
        forget_hooks()
    assert response.status_code == 502
    assert response.json()["detail"].startswith("the sagemaker backend failed: ")
    assert "127.0.0.1:9" in response.json()["detail"]
