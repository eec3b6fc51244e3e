"""Job-store targets for the local-backend tests: SQLite always, PostgreSQL when configured.

``store_target`` is parametrized ``sqlite`` / ``postgres``. The PostgreSQL case runs when
``AIRFLOW_NEO_TEST_PG_URL`` holds a SQLAlchemy URL of a database the tests may create schemas in
(``scripts/postgres.sh start`` prints one; ``scripts/test.sh`` and ``.ci/run`` set it); it is skipped
otherwise, except under ``CI=true`` where ``test_ci_runs_the_postgres_store`` fails instead.

Every PostgreSQL test gets its own schema (``search_path`` in the URL), dropped afterwards, and
its own ``AIRFLOW_HOME``, so the logs and work dirs of a store on a database server (which live
under ``$AIRFLOW_HOME/neo``) are private to the test as well.

Also the store reads that only tests need: :func:`iter_all` (every summary, following NextToken)
and :func:`runner_info` (a job's private runner fields, read without the dead-runner check).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_neo.local.store import JobStore

PG_URL_ENV = "AIRFLOW_NEO_TEST_PG_URL"


def pg_url() -> str | None:
    return os.environ.get(PG_URL_ENV) or None


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (psycopg2/psycopg ``options``)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def _execute(url: str, statement: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def create_schema(url: str) -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    _execute(url, f'CREATE SCHEMA "{schema}"')
    return schema


def drop_schema(url: str, schema: str) -> None:
    _execute(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL with a fresh, private schema (skips when no server is configured)."""
    url = pg_url()
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set: no PostgreSQL server for the shared-store tests")
    schema = create_schema(url)
    try:
        yield with_search_path(url, schema)
    finally:
        drop_schema(url, schema)


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def store_target(request, store_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where a test's job store lives: a SQLite file under tmp_path, or a private PostgreSQL schema."""
    if store_kind == "sqlite":
        return str(tmp_path / "state" / "jobs.sqlite")
    home = tmp_path / "airflow-home"
    home.mkdir()
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    return request.getfixturevalue("pg_schema_url")


# ----------------------------------------------------------------------------- store reads for tests


def iter_all(store: JobStore, **filters: Any) -> Iterator[dict]:
    """Every CompilationJobSummary matching the filters, following NextToken."""
    while True:
        page = store.list(**filters)
        yield from page["CompilationJobSummaries"]
        if "NextToken" not in page:
            return
        filters = {**filters, "NextToken": page["NextToken"]}


def runner_info(store: JobStore, name: str) -> dict:
    """The job's private runner fields (owner_host, pid, lease_expires_at, stop_requested) as stored.

    Unlike ``store.get(name)``, a dead runner is not detected first: the fields are those the
    runner (or the last transition) wrote.
    """
    import sqlalchemy as sa

    from airflow_neo.core.exceptions import CompilationJobNotFound
    from airflow_neo.local.store import JOBS, JobRecord

    rows = store._read(sa.select(JOBS).where(JOBS.c.name == name))
    if not rows:
        raise CompilationJobNotFound(f"Could not find compilation job '{name}'.")
    return JobRecord.from_row(rows[0]).to_runner_info()
