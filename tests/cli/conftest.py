"""Fixtures of the command-line tests: run ``main([...])`` in-process, a private local job store."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from airflow_neo.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def _clean_neo_env(monkeypatch):
    """No default backend or store from the developer's environment."""
    for name in (
        "AIRFLOW__NEO__DEFAULT_BACKEND",
        "AIRFLOW__NEO__LOCAL_STORE",
        "AIRFLOW__NEO__LOCAL_STORE_CONN_ID",
        "AIRFLOW__NEO__LOCAL_WORK_DIR",
        "AIRFLOW_CONN_AIRFLOW_NEO_CLI",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cli(capsys):
    """``cli("describe-compilation-job", ...)`` -> Result(code, out, err)."""

    def run(*args: str) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def store_path(tmp_path) -> str:
    return str(tmp_path / "store" / "jobs.sqlite")


@pytest.fixture
def store(store_path):
    from airflow_neo.local.store import JobStore

    return JobStore(store_path)


@pytest.fixture
def local(cli, store_path):
    """The CLI on the local backend and the test's store."""

    def run(*args: str) -> Result:
        return cli(*args, "--backend", "local", "--local-store", store_path)

    return run


@pytest.fixture(scope="session")
def shared_botocore_loader():
    """One botocore data loader for every client of the session (test speed only).

    Each command builds a new boto3 session, which parses the multi-megabyte SageMaker model
    again (~0.5 s). Sharing the loader is what one long-lived botocore session does anyway.
    """
    import botocore.loaders
    import botocore.session

    loader = botocore.loaders.create_loader()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session, "create_loader", lambda *args, **kwargs: loader)
        yield loader
