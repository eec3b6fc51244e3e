"""One store as this process sees it: its target, its engine and schema, its clock, and this machine's files.

:class:`StoreConnection` is the part of ``JobStore`` that is not about jobs: it resolves the
target (see ``engines.py``), shares the process's engine for it, makes sure the schema is current
(see ``schema.py``), knows the name this machine records as a job's owner, and where this machine
keeps job logs (``<root>/logs``) and compile work dirs (``<root>/work``). Logs and work dirs are
local files: on a store on a database server each machine has its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.local.store.engines import (
    default_work_root,
    engine_entry,
    mask_url,
    read_rows,
    store_url,
    write_transaction,
)
from airflow_neo.local.store.liveness import Reaper
from airflow_neo.local.store.naming import DEFAULT_ACCOUNT, DEFAULT_REGION, compilation_job_arn
from airflow_neo.local.store.schema import JOBS, ensure_schema, schema_version
from airflow_neo.local.store.times import dt_to_us

HOST_ENV = "AIRFLOW_NEO_HOST"  # overrides the host name recorded as a job's owner


class StoreConnection:
    """A store target opened in this process.

    :param target: a SQLite file path (its parent directory is created) or a SQLAlchemy URL
        (``postgresql://user:password@host:5432/db``, ``sqlite:////abs/path.sqlite``).
    :param work_dir: the directory for this machine's job logs (``logs/``) and compile work dirs
        (``work/``). Default: the SQLite file's directory, or ``$AIRFLOW_HOME/neo`` for a store
        on a database server.
    :param region: the region in the job ARNs.
    :param account: the account id in the job ARNs.
    :param host: the name this machine records as a job's owner and compares with for dead-runner
        detection (default ``$AIRFLOW_NEO_HOST``, else ``socket.gethostname()``). Give every machine
        (pod, container) sharing a store its own name.
    :param clock: returns "now" as an aware datetime (tests); default the system clock, UTC.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | URL,
        *,
        work_dir: str | os.PathLike[str] | None = None,
        region: str = DEFAULT_REGION,
        account: str = DEFAULT_ACCOUNT,
        host: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ):
        self.url = store_url(target)
        self.dialect = self.url.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        self.path: Path | None = Path(self.url.database) if self.is_sqlite else None
        if work_dir is not None:
            self._root = Path(work_dir).expanduser().absolute()
        elif self.path is not None:
            self._root = self.path.parent
        else:
            self._root = default_work_root()
        self.region = region
        self.account = account
        self.host = host or os.environ.get(HOST_ENV) or socket.gethostname()
        self._clock = clock
        self._entry: Any = None
        self._reaper_instance: Reaper | None = None
        if not self.is_missing:
            self._open()

    def _open(self) -> Any:
        """The engine entry, with the schema current; a missing SQLite file is created here, on first use."""
        if self._entry is None:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            entry = engine_entry(self.url)
            ensure_schema(entry, self.dialect, self.display_target)
            self._entry = entry
        return self._entry

    @property
    def is_missing(self) -> bool:
        """Whether this is a SQLite file that does not exist yet (reads answer from an empty store and create nothing)."""
        return self._entry is None and self.path is not None and not self.path.exists()

    @property
    def _engine(self) -> Any:
        return self._open().engine

    @property
    def _reaper(self) -> Reaper:
        if self._reaper_instance is None:
            self._reaper_instance = Reaper(self._engine, self.host)
        return self._reaper_instance

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_target!r})"

    # ---------------------------------------------------------------- the target

    @property
    def target(self) -> str:
        """What reopens this store in another process: the SQLite file path, or the full URL (with password)."""
        if self.path is not None:
            return str(self.path)
        return self.url.render_as_string(hide_password=False)

    @property
    def display_target(self) -> str:
        """The target for logs and messages (password hidden, also one in the query)."""
        return str(self.path) if self.path is not None else mask_url(self.url)

    @property
    def is_shared_database(self) -> bool:
        """Whether the jobs live on a database server (visible from other machines)."""
        return not self.is_sqlite

    def schema_version(self) -> int:
        with self._engine.connect() as conn:
            return schema_version(conn, self.is_sqlite)

    def arn(self, name: str) -> str:
        return compilation_job_arn(name, self.region, self.account)

    # ---------------------------------------------------------------- this machine's files

    @property
    def root(self) -> Path:
        """The directory that holds ``logs/`` and ``work/`` (and, for SQLite, usually the database)."""
        return self._root

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    def log_path(self, name: str) -> Path:
        """The job's log file: ``<root>/logs/<name>.log`` (on the machine that ran it)."""
        return self.log_dir / f"{name}.log"

    # ---------------------------------------------------------------- plumbing

    def _now_us(self) -> int:
        now = self._clock() if self._clock else dt.datetime.now(dt.timezone.utc)
        return dt_to_us(now)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, so writers queue instead of deadlocking)."""
        with write_transaction(self._engine) as conn:
            yield conn

    def _read(self, statement: Any) -> list[Mapping[str, Any]]:
        if self.is_missing:
            return []
        return read_rows(self._engine, statement)

    def _not_found(self, name: str) -> CompilationJobNotFound:
        """ResourceNotFound that says which store was searched (never its password)."""
        where = f"in the local job store {self.display_target}"
        if self.is_missing:
            where += " (no such file: no job was ever created there; is this the AIRFLOW_HOME or [neo] local_store the job was created with?)"
        return CompilationJobNotFound(f"Could not find compilation job '{name}' {where}.")

    def _row(self, name: str) -> Mapping[str, Any] | None:
        rows = self._read(sa.select(JOBS).where(JOBS.c.name == name))
        return rows[0] if rows else None

    # ---------------------------------------------------------------- dead runners

    def reap(self, name: str | None = None) -> list[str]:
        """Mark running jobs whose runner is gone FAILED (STOPPED if stopping); returns their names."""
        if self.is_missing:
            return []
        return self._reaper.reap(self._now_us(), name)

    def _reap_rows(self, rows: list[Mapping[str, Any]]) -> list[str]:
        return self._reaper.reap_rows(rows, self._now_us())
