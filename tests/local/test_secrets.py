"""The job store's password never reaches what a user sees.

Each way a store URL travels is provoked with a recognizable password: a store that cannot be
reached (a closed port), a wrong password on the real PostgreSQL server (``scripts/postgres.sh``),
URLs that do not parse or name a missing driver, and the right password through a whole job (the
CLI with a failing compile, the operator with a real compile through ``[neo] local_store_conn_id``).
What is checked: exceptions with their whole traceback, the CLI's stdout and stderr (``--debug``
on), the task's log records, XCom, FailureReason, the job log and the runner's own stderr.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from airflow_neo.cli import main
from airflow_neo.local.config import LocalJobConfig
from airflow_neo.local.store import JobStore
from airflow_neo.local.store.engines import mask_url, redact
from airflow_neo.samples import write_sample_archive
from tests.local.test_runner import _write_tar_gz
from tests.support.context import make_context
from tests.support.requests import ROLE_ARN
from tests.support.stores import pg_url

SECRET = "Wr0ng-S3cret-4711"
CLOSED = "postgresql+psycopg2://neo:Wr0ng-S3cret-4711@127.0.0.1:1/neo_test"


def _with(url: str, **parts) -> str:
    return make_url(url).set(**parts).render_as_string(hide_password=False)


def _everything(err: BaseException) -> str:
    return "".join(traceback.format_exception(err))


def _pg() -> str:
    url = pg_url()
    if not url:
        pytest.skip("AIRFLOW_NEO_TEST_PG_URL is not set: no PostgreSQL server")
    return url


def _password(url: str) -> str:
    password = make_url(url).password
    assert password and len(password) >= 8, "the test server's password must be recognizable"
    return password


def _request(name: str, archive: Path, out: Path) -> dict:
    return {
        "CompilationJobName": name,
        "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": archive.as_uri(), "Framework": "ONNX",
                        "DataInputConfig": json.dumps({"data": [1, 3, 32, 32]})},
        "OutputConfig": {"S3OutputLocation": out.as_uri(), "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    """Logs and work dirs of a store on a database server live under $AIRFLOW_HOME/neo."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    for name in ("AIRFLOW__NEO__DEFAULT_BACKEND", "AIRFLOW__NEO__LOCAL_STORE", "AIRFLOW__NEO__LOCAL_STORE_CONN_ID"):
        monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------------------------- the store's own errors


@pytest.mark.parametrize("url", [
    CLOSED,
    "postgresql+nodriver://neo:Wr0ng-S3cret-4711@127.0.0.1:1/neo_test",
    "postgresql://neo:Wr0ng-S3cret-4711@127.0.0.1:port/neo_test",
    "postgresql://neo:p@ss:Wr0ng-S3cret-4711@127.0.0.1/neo_test",  # '@' and ':' in the password
    "postgresql://neo@127.0.0.1:1/neo_test?password=Wr0ng-S3cret-4711",
    "postgresql+psycopg2://neo:Wr0ng%2DS3cret%2D4711@127.0.0.1:1/neo_test",
], ids=["closed-port", "no-driver", "unparsable", "at-in-password", "query-password", "url-encoded"])
def test_store_errors_never_show_the_password(url):
    with pytest.raises(Exception) as err:
        JobStore(url).describe("any")
    assert SECRET not in _everything(err.value)


def test_a_wrong_password_on_the_real_server(tmp_path):
    url = _with(_pg(), password=SECRET)
    with pytest.raises(Exception) as err:
        JobStore(url).describe("any")
    text = _everything(err.value)
    assert "password authentication failed" in text and SECRET not in text


def test_masking_helpers():
    assert mask_url("postgresql://neo:a@b:c@h:5/db") == "postgresql://neo:***@h:5/db"
    assert mask_url(make_url(f"postgresql://neo@h/db?password={SECRET}&sslmode=require")) == \
        "postgresql://neo@h/db?password=***&sslmode=require"
    assert redact(f"invalid literal for int(): '{SECRET}@h'", f"postgresql://neo:x@{SECRET}@h/db") == \
        "invalid literal for int(): '***@h'"
    config = LocalJobConfig(store=_with(CLOSED, port=5432))
    assert SECRET not in repr(config) and SECRET not in str(config) and "neo:***@127.0.0.1:5432" in repr(config)
    assert SECRET in config.to_json()  # the runner needs it: it travels in the environment, not on a command line


# ----------------------------------------------------------------------------- the CLI


def _cli(capsys, store: str, *args: str) -> tuple[int, str]:
    code = main([*args, "--backend", "local", "--local-store", store, "--debug"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _cli_create(capsys, store: str, request: dict) -> tuple[int, str]:
    return _cli(capsys, store, "create-compilation-job", "--cli-input-json", json.dumps(request))


@pytest.mark.parametrize("where", ["closed-port", "wrong-password"])
def test_the_cli_never_shows_the_password_of_a_store_it_cannot_use(capsys, tmp_path, where):
    store = CLOSED if where == "closed-port" else _with(_pg(), password=SECRET)
    archive = write_sample_archive(tmp_path / "model.tar.gz")
    for args in (("list-compilation-jobs",), ("describe-compilation-job", "--compilation-job-name", "nope"),
                 ("stop-compilation-job", "--compilation-job-name", "nope")):
        code, seen = _cli(capsys, store, *args)
        assert code != 0 and seen.strip(), args
        assert SECRET not in seen, args
    code, seen = _cli_create(capsys, store, _request("never", archive, tmp_path / "out"))
    assert code != 0 and SECRET not in seen


def test_a_failing_job_on_the_real_store_shows_no_password(capsys, tmp_path, pg_schema_url):
    """The right password: create through the CLI, a compile that fails (a model that is not ONNX),
    the waiter's failure, describe, the FailureReason and the job log."""
    password = _password(pg_schema_url)
    archive = tmp_path / "broken.tar.gz"
    _write_tar_gz(str(archive), {"model.onnx": b"this is not an ONNX model" * 10})
    code, seen = _cli_create(capsys, pg_schema_url, _request("broken", archive, tmp_path / "out"))
    assert code == 0, seen
    waited, waited_seen = _cli(capsys, pg_schema_url, "wait", "compilation-job-completed",
                               "--compilation-job-name", "broken", "--delay", "0.5")
    described, described_seen = _cli(capsys, pg_schema_url, "describe-compilation-job",
                                     "--compilation-job-name", "broken")
    listed, listed_seen = _cli(capsys, pg_schema_url, "list-compilation-jobs")
    assert waited != 0 and described == 0 and listed == 0
    job = json.loads(described_seen[: described_seen.rindex("}") + 1][described_seen.index("{"):])
    assert job["CompilationJobStatus"] == "FAILED" and job["FailureReason"].startswith("ClientError")
    log = JobStore(pg_schema_url).log_path("broken").read_text()
    assert "job FAILED" in log
    for text in (seen, waited_seen, described_seen, listed_seen, job["FailureReason"], log):
        assert password not in text


# ----------------------------------------------------------------------------- the runner's own stderr


@pytest.mark.parametrize("how", ["store-url-env", "job-config-env"])
def test_a_runner_that_cannot_reach_its_store_shows_no_password(how):
    env = {**os.environ}
    if how == "store-url-env":
        env["AIRFLOW_NEO_STORE_URL"] = CLOSED
        args = ["--store-from-env"]
    else:
        env.update(LocalJobConfig(store=CLOSED).to_env())
        args = []
    result = subprocess.run([sys.executable, "-m", "airflow_neo.local.runner", *args, "--job", "j1"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0 and "127.0.0.1" in result.stderr
    assert SECRET not in result.stdout + result.stderr


# ----------------------------------------------------------------------------- the operator and the task log


def _store_connection(monkeypatch, url: str) -> None:
    parsed = make_url(url)
    extra = {key: value for key, value in parsed.query.items()}
    connection = {"conn_type": "postgres", "host": parsed.host, "port": parsed.port, "login": parsed.username,
                  "password": parsed.password, "schema": parsed.database, "extra": json.dumps(extra)}
    monkeypatch.setenv("AIRFLOW_CONN_NEO_JOB_STORE", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_STORE_CONN_ID", "neo_job_store")


def _operator(request: dict):
    from airflow_neo.operators.neo import NeoCompilationOperator

    return NeoCompilationOperator(task_id="compile", backend="local", config=request, aws_conn_id=None,
                                  deferrable=False, check_interval=0.5)


def test_the_operator_with_a_wrong_password_shows_none(monkeypatch, caplog, tmp_path):
    _store_connection(monkeypatch, _with(_pg(), password=SECRET))
    archive = write_sample_archive(tmp_path / "model.tar.gz")
    context = make_context()
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as err:
        _operator(_request("wrong-pw", archive, tmp_path / "out")).execute(context)
    assert SECRET not in _everything(err.value)
    assert SECRET not in caplog.text and SECRET not in json.dumps(context["ti"].xcoms, default=str)


def test_a_real_compile_through_the_store_connection_shows_no_password(monkeypatch, caplog, capsys, tmp_path,
                                                                          pg_schema_url):
    password = _password(pg_schema_url)
    _store_connection(monkeypatch, pg_schema_url)
    archive = write_sample_archive(tmp_path / "model.tar.gz")
    context = make_context()
    with caplog.at_level(logging.DEBUG):
        payload = _operator(_request("right-pw", archive, tmp_path / "out")).execute(context)
    assert payload["CompilationJobStatus"] == "COMPLETED"
    log = JobStore(pg_schema_url).log_path("right-pw").read_text()
    captured = capsys.readouterr()
    for text in (caplog.text, json.dumps(context["ti"].xcoms, default=str), json.dumps(payload, default=str), log,
                 captured.out + captured.err):
        assert password not in text
