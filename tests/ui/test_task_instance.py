"""A real DAG run's compile task, seen from the UI: its job names the task instance that created
it, and the task instance's tab finds the job (through the XCom the operator pushed).

The DAG runs with ``airflow dags test`` against the test metadata database that the in-process
Airflow app reads (tests/ui/conftest.py), compiling the sample CNN into this module's job store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.ui.conftest import REPO, airflow_ui_env

DAG_ID = "team_a_ui_compile"
DAG = '''
import pendulum
from airflow.sdk import dag
from airflow_neo.operators.neo import NeoCompilationOperator

@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def compile_for_ui():
    NeoCompilationOperator(
        task_id="compile",
        backend="local",
        check_interval=1,
        config={{
            "CompilationJobName": "ui-ti-sample",
            "RoleArn": "arn:aws:iam::000000000000:role/local",
            "InputConfig": {{"S3Uri": "{archive}", "Framework": "ONNX", "DataInputConfig": {{"data": [1, 3, 32, 32]}}}},
            "OutputConfig": {{"S3OutputLocation": "{output}", "TargetPlatform": {{"Os": "LINUX", "Arch": "X86_64"}}}},
            "StoppingCondition": {{"MaxRuntimeInSeconds": 900}},
        }},
    )

compile_for_ui()
'''


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory, migrated_db, ui_store) -> str:
    """Run the DAG once; return its run id."""
    from airflow_neo.samples import write_sample_archive

    folder = tmp_path_factory.mktemp("ui-dag")
    archive = write_sample_archive(folder / "models" / "model.tar.gz")
    dags = folder / "dags"
    dags.mkdir()
    (dags / "ui_compile.py").write_text(textwrap.dedent(DAG.format(
        dag_id=DAG_ID, archive=archive.as_uri(), output=(folder / "artifacts").as_uri())))
    env = {**os.environ, **airflow_ui_env(), "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "PYTHONPATH": str(REPO),
           "AIRFLOW__NEO__LOCAL_STORE": ui_store}
    airflow = str(Path(sys.executable).with_name("airflow"))
    done = subprocess.run([airflow, "dags", "test", DAG_ID], env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "state=success" in output, output[-6000:]
    from airflow.models.dagrun import DagRun

    runs = DagRun.find(dag_id=DAG_ID)
    assert len(runs) == 1
    return runs[0].run_id


def test_the_task_instance_tab_finds_the_job_its_task_created(airflow_app, token_for, dag_run):
    headers = {"Authorization": f"Bearer {token_for('viewer')}"}
    params = {"dag_id": DAG_ID, "task_id": "compile", "run_id": dag_run, "map_index": -1}
    body = airflow_app.get("/neo/api/task-instance", params=params, headers=headers).json()
    assert [job["name"] for job in body["jobs"]] == ["ui-ti-sample"]
    job = body["jobs"][0]
    assert job["status"] == "COMPLETED"
    assert job["created_by"] == {
        "dag_id": DAG_ID, "task_id": "compile", "run_id": dag_run, "map_index": -1,
        "url": f"/dags/{DAG_ID}/runs/{quote(dag_run, safe='')}/tasks/compile",
    }
    # another task instance of the same DAG created nothing
    other = airflow_app.get("/neo/api/task-instance", params={**params, "task_id": "other"}, headers=headers)
    assert other.json() == {"jobs": []}


def test_another_teams_user_gets_nothing_for_that_task_instance(airflow_app, token_for, dag_run):
    headers = {"Authorization": f"Bearer {token_for('team-b-editor')}"}
    params = {"dag_id": DAG_ID, "task_id": "compile", "run_id": dag_run}
    assert airflow_app.get("/neo/api/task-instance", params=params, headers=headers).json() == {"jobs": []}
