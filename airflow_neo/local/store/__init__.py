"""The local backend's job store: compilation jobs in SQLite (the default) or a shared database.

Every job is kept with the fields of the SageMaker API (``DescribeCompilationJob`` and
``ListCompilationJobs`` answer in the API's shapes, key order and wording) plus a few private
runner fields (owner host, pid, lease, stop request).

Where the jobs live (the store *target*, see :func:`open_store`):

* a file path (or ``sqlite:///path``): an embedded SQLite database, the default
  (``$AIRFLOW_HOME/neo/jobs.sqlite``), for one machine;
* a SQLAlchemy URL such as ``postgresql://user:password@host/db`` (or ``postgresql+psycopg2://``,
  ``postgresql+psycopg://``): a database shared by many workers, the triggerer and the CLI.

Both run the same SQLAlchemy Core statements on the same schema (tables ``neo_jobs`` and
``neo_meta``), versioned in ``neo_meta`` and created or migrated on first use (the schema-1
SQLite files of airflow-neo 0.1 are migrated in place).

Concurrency: SQLite runs in WAL mode with a busy timeout and every write in ``BEGIN IMMEDIATE``;
PostgreSQL runs at READ COMMITTED. On both, every status transition is one conditional
``UPDATE ... WHERE name = ? AND status IN (...)``, so two processes (or hosts) can never both win a
transition, and the job name is the primary key, so concurrent creates of one name leave one job.

Dead runners: a runner holds a *lease* on its job and renews it while it works. Every
``describe``/``list`` (and ``request_stop``/``delete``) first looks at the running jobs concerned;
one whose lease ran out is marked FAILED ("Compile worker lost: lease expired at ...") or STOPPED
when a stop had been requested, whichever host reads it. A runner on the reader's own machine (same
host name, boot and PID namespace) is also checked by process id, so a crash is seen at once
instead of when the lease runs out.

Nothing here imports Airflow.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import hashlib
import json
import os
import posixpath
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import (
    CompilationJobExists,
    CompilationJobNotFound,
    CompilationJobStateError,
    NeoError,
)
from airflow_neo.core.payload import to_utc_iso
from airflow_neo.local.store.records import JobRecord

SCHEMA_VERSION = 2
DEFAULT_REGION = "local"
DEFAULT_ACCOUNT = "000000000000"
DEFAULT_START_LEASE_SECONDS = 120
BUSY_TIMEOUT_MS = 60_000
MAX_FAILURE_REASON = 1024  # the API's FailureReason limit
DEFAULT_MAX_RESULTS = 100
MAX_CACHED_ENGINES = 16
STORE_URL_ENV = "AIRFLOW_NEO_STORE_URL"
HOST_ENV = "AIRFLOW_NEO_HOST"  # overrides the host name recorded as a job's owner
LIST_FILTERS = (
    "NextToken",
    "MaxResults",
    "CreationTimeAfter",
    "CreationTimeBefore",
    "LastModifiedTimeAfter",
    "LastModifiedTimeBefore",
    "NameContains",
    "StatusEquals",
    "SortBy",
    "SortOrder",
)
SORT_BY = ("Name", "CreationTime", "Status")
SORT_ORDER = ("Ascending", "Descending")
_NAME_CONTAINS = re.compile(r"[a-zA-Z0-9\-]+")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_RUNNING = tuple(sorted(st.RUNNING_STATES))
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_IN_CHUNK = 1000  # names per ``IN (...)`` in batched reads


class InvalidListRequest(NeoError, ValueError):
    """A ListCompilationJobs request the API would reject (its ValidationException)."""

    code = "ValidationException"


class StoreSchemaError(NeoError):
    """The store was written by a newer airflow-neo (unknown schema version)."""


class StoreConfigError(NeoError, ValueError):
    """A store target that is neither a file path nor a usable SQLAlchemy URL."""


# --------------------------------------------------------------------------- the schema

# Text compared and sorted byte by byte on every database (SQLite's BINARY; "C" on PostgreSQL,
# whose default collation would sort "Beta" after "alpha"), so Name/Status order and NextToken
# paging are the same everywhere.
_Key = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

METADATA = sa.MetaData()
JOBS = sa.Table(
    "neo_jobs",
    METADATA,
    sa.Column("name", _Key, primary_key=True),
    sa.Column("arn", sa.Text, nullable=False),
    sa.Column("status", _Key, nullable=False),
    sa.Column("creation_us", sa.BigInteger, nullable=False),
    sa.Column("last_modified_us", sa.BigInteger, nullable=False),
    sa.Column("start_us", sa.BigInteger),
    sa.Column("end_us", sa.BigInteger),
    sa.Column("stopping_condition", sa.Text, nullable=False),
    sa.Column("inference_image", sa.Text),
    sa.Column("model_package_version_arn", sa.Text),
    sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("s3_model_artifacts", sa.Text),
    sa.Column("artifact_digest", sa.Text),
    sa.Column("role_arn", sa.Text, nullable=False),
    sa.Column("input_config", sa.Text),
    sa.Column("output_config", sa.Text, nullable=False),
    sa.Column("vpc_config", sa.Text),
    sa.Column("derived_data_input_config", sa.Text),
    sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
    sa.Column("target_device", sa.Text),
    sa.Column("target_os", sa.Text),
    sa.Column("target_arch", sa.Text),
    sa.Column("target_accelerator", sa.Text),
    sa.Column("owner_host", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("pid_start", sa.Text),
    sa.Column("pid_namespace", sa.Text),
    sa.Column("lease_expires_us", sa.BigInteger),
    sa.Column("stop_requested", sa.Integer, nullable=False, server_default="0"),
    sa.Column("compile_metadata", sa.Text),
    sa.Column("owner_boot_id", sa.Text),  # schema 2
)
sa.Index("neo_jobs_by_creation", JOBS.c.creation_us, JOBS.c.name)
sa.Index("neo_jobs_by_status", JOBS.c.status, JOBS.c.creation_us, JOBS.c.name)
META = sa.Table(
    "neo_meta",
    METADATA,
    sa.Column("key", _Key, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def _create_latest(conn: Connection) -> int:
    METADATA.create_all(conn, checkfirst=True)
    return SCHEMA_VERSION


def _migrate_sqlite_v1(conn: Connection) -> int:
    """Schema 1 (airflow-neo 0.1, SQLite only: tables ``jobs``/``meta``) -> schema 2.

    Renames the tables to ``neo_jobs``/``neo_meta`` (safe to keep in a database shared with other
    applications), adds ``owner_boot_id`` and records version 2 in the old ``meta`` table too, so
    an older airflow-neo refuses the file instead of starting a second, empty job table.
    """
    conn.exec_driver_sql("ALTER TABLE jobs RENAME TO neo_jobs")
    conn.exec_driver_sql("ALTER TABLE neo_jobs ADD COLUMN owner_boot_id TEXT")
    conn.exec_driver_sql("DROP INDEX IF EXISTS jobs_by_creation")
    conn.exec_driver_sql("DROP INDEX IF EXISTS jobs_by_status")
    META.create(conn, checkfirst=True)
    for index in JOBS.indexes:  # under their new names
        index.create(conn, checkfirst=True)
    conn.exec_driver_sql("UPDATE meta SET value='2' WHERE key='schema_version'")
    return 2


# version found -> step that upgrades it (returns the version reached)
_MIGRATIONS: dict[int, Callable[[Connection], int]] = {0: _create_latest, 1: _migrate_sqlite_v1}
_PG_MIGRATION_LOCK = 0x4E454F5354  # pg_advisory_xact_lock key ("NEOST")


# --------------------------------------------------------------------------- store targets


def is_store_url(target: Any) -> bool:
    """Whether ``target`` is a SQLAlchemy URL (``postgresql://...``, ``sqlite:///...``), not a path."""
    return isinstance(target, (str, URL)) and (
        isinstance(target, URL) or (bool(_URL_SCHEME.match(target)) and not target.startswith("file://"))
    )


def store_url(target: str | os.PathLike[str] | URL) -> URL:
    """The SQLAlchemy URL of a store target: a path, ``file://`` URI or SQLAlchemy URL.

    ``postgres://`` (Airflow's connection URIs) is read as ``postgresql://``. In-memory SQLite is
    refused: runners are other processes.
    """
    if isinstance(target, URL):
        url = target
    elif is_store_url(target):
        text = str(target).strip()
        if text.startswith("postgres://"):
            text = "postgresql://" + text[len("postgres://") :]
        try:
            url = make_url(text)
        except Exception as err:  # noqa: BLE001 - sqlalchemy raises ArgumentError and friends
            raise StoreConfigError(f"Job store {_mask(text)!r} is not a valid SQLAlchemy URL: {err}") from None
    else:
        text = os.fspath(target)
        if not str(text).strip():
            raise StoreConfigError("Job store: got an empty path")
        if str(text).startswith("file://"):
            text = str(text)[len("file://") :]
        path = Path(text).expanduser().absolute()
        return URL.create("sqlite", database=str(path))
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise StoreConfigError(
                "Job store: an in-memory SQLite database cannot be shared with the runner processes; give a file path"
            )
        return url.set(database=str(Path(database).expanduser().absolute()))
    return url


def open_store(target: Any, **kwargs: Any) -> JobStore:
    """The job store at ``target``: a :class:`JobStore` (returned as is), a file path, or a SQLAlchemy URL.

    Keyword arguments go to :class:`JobStore` (``work_dir``, ``region``, ``account``, ``host``...).
    """
    if isinstance(target, JobStore):
        return target
    return JobStore(target, **kwargs)


def _mask(url: str | URL) -> str:
    """``url`` with its password hidden (for messages)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", str(url))


def default_work_root() -> Path:
    """Where a store on a database server keeps this machine's logs and work dirs: ``$AIRFLOW_HOME/neo``."""
    home = os.environ.get("AIRFLOW_HOME") or "~/airflow"
    return Path(home).expanduser().absolute() / "neo"


# --------------------------------------------------------------------------- engines


class _EngineEntry:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = threading.Lock()


_ENGINES: collections.OrderedDict[tuple[str, int], _EngineEntry] = collections.OrderedDict()
_ENGINES_LOCK = threading.Lock()


def _engine_entry(url: URL) -> _EngineEntry:
    """One engine (connection pool) per database per process, shared by every JobStore on it."""
    key = (url.render_as_string(hide_password=False), os.getpid())
    with _ENGINES_LOCK:
        entry = _ENGINES.get(key)
        if entry is not None:
            _ENGINES.move_to_end(key)
            return entry
        entry = _EngineEntry(_make_engine(url))
        _ENGINES[key] = entry
        while len(_ENGINES) > MAX_CACHED_ENGINES:
            _old_key, old = _ENGINES.popitem(last=False)
            old.engine.dispose()  # closes idle connections; a store still holding it gets a fresh pool
        return entry


def _make_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=4,
            max_overflow=16,
            pool_timeout=BUSY_TIMEOUT_MS / 1000,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):  # pragma: no cover - trivial
            dbapi_connection.isolation_level = None  # transactions are ours (BEGIN / BEGIN IMMEDIATE)
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("neo_write") else "BEGIN")

        return engine
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": 10, "application_name": "airflow-neo"}
    try:
        return sa.create_engine(
            url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800, connect_args=connect_args
        )
    except ModuleNotFoundError as err:
        raise StoreConfigError(
            f"Job store {_mask(url)}: the database driver is not installed ({err}). For PostgreSQL install "
            "psycopg2-binary (postgresql://, postgresql+psycopg2://) or psycopg[binary] (postgresql+psycopg://)."
        ) from None


def _forget_engines_after_fork() -> None:
    # A forked child (Celery prefork, LocalExecutor) must not use or close its parent's connections.
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()  # another thread may have held it at the fork
    for entry in list(_ENGINES.values()):
        entry.lock = threading.Lock()
        try:
            entry.engine.dispose(close=False)
        except Exception:  # noqa: BLE001
            pass
    _ENGINES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_engines_after_fork)


# --------------------------------------------------------------------------- naming helpers


def compilation_job_arn(name: str, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:sagemaker:{region}:{account}:compilation-job/{name}"


def target_label(output_config: dict) -> str:
    """``TargetDevice`` as given, or ``{os}-{arch}`` in lower case for a ``TargetPlatform``."""
    if output_config.get("TargetDevice"):
        return str(output_config["TargetDevice"])
    platform = output_config.get("TargetPlatform") or {}
    return f"{platform.get('Os', 'unknown')}-{platform.get('Arch', 'unknown')}".lower()


def archive_stem(uri: str) -> str:
    """The input archive's file name without ``.tar.gz`` (or ``.tgz``, or its last suffix)."""
    base = posixpath.basename(uri.rstrip("/")) or "model"
    for suffix in (".tar.gz", ".tgz"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    stem, _ext = posixpath.splitext(base)
    return stem or base


def artifact_uri_for(request: dict) -> str:
    """Where the compiled artifact goes: ``{S3OutputLocation}/{archive-stem}-{target-label}.tar.gz``.

    The stem is the job name when the request has no InputConfig (a ModelPackageVersionArn job).
    """
    output = request["OutputConfig"]
    location = str(output["S3OutputLocation"]).rstrip("/")
    input_uri = (request.get("InputConfig") or {}).get("S3Uri")
    stem = archive_stem(input_uri) if input_uri else request["CompilationJobName"]
    return f"{location}/{stem}-{target_label(output)}.tar.gz"


# --------------------------------------------------------------------------- time helpers


def _dt_to_us(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _us_to_dt(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _us_to_iso(us: int | None) -> str | None:
    return None if us is None else to_utc_iso(_us_to_dt(us))


def _parse_time(value: Any, field: str) -> int:
    """Microseconds since the epoch for a datetime, an ISO-8601 string or epoch seconds."""
    if isinstance(value, dt.datetime):
        return _dt_to_us(value)
    if isinstance(value, dt.date):
        return _dt_to_us(dt.datetime(value.year, value.month, value.day))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(round(value * 1_000_000))
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            return _dt_to_us(dt.datetime.fromisoformat(text))
        except ValueError:
            pass
    raise InvalidListRequest(f"{field}: got {value!r}; must be a datetime, an ISO-8601 string or epoch seconds")


# --------------------------------------------------------------------------- process helpers


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) from /proc, or None where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return ("X", "") if os.path.isdir("/proc/self") else None
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def process_start_token(pid: int) -> str | None:
    """An identifier of the process's start (so a reused pid is not taken for the same process)."""
    info = _proc_stat(pid)
    return info[1] if info and info[1] else None


def pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[4026531836]``) where /proc shows it, else None.

    Two containers can share a host name (host networking) but not their pids: a pid is only
    checked for liveness from the same namespace.
    """
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def pid_alive(pid: int, start_token: str | None = None) -> bool:
    """Whether process ``pid`` on this host is alive (zombies and reused pids count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    info = _proc_stat(pid)
    if info is None:
        return True
    state, started = info
    if state in ("Z", "X", "x"):
        return False
    if start_token and started and started != start_token:
        return False
    return True


def boot_id() -> str | None:
    """This machine's boot id (Linux), so a pid is only checked on the kernel that issued it."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


# --------------------------------------------------------------------------- the store


class JobStore:
    """A multi-process (and, on a database server, multi-host) store of local compilation jobs.

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
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
        self._pid_namespace = pid_namespace()
        self._boot_id = boot_id()
        self._entry = _engine_entry(self.url)
        self._engine = self._entry.engine
        self._init_schema()

    def __repr__(self) -> str:
        return f"JobStore({self.display_target!r})"

    # ---------------------------------------------------------------- locations

    @property
    def target(self) -> str:
        """What reopens this store in another process: the SQLite file path, or the full URL (with password)."""
        if self.path is not None:
            return str(self.path)
        return self.url.render_as_string(hide_password=False)

    @property
    def display_target(self) -> str:
        """The target for logs and messages (password hidden)."""
        return str(self.path) if self.path is not None else self.url.render_as_string(hide_password=True)

    @property
    def is_shared_database(self) -> bool:
        """Whether the jobs live on a database server (visible from other machines)."""
        return not self.is_sqlite

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

    def arn(self, name: str) -> str:
        return compilation_job_arn(name, self.region, self.account)

    # ---------------------------------------------------------------- plumbing

    def _now_us(self) -> int:
        now = self._clock() if self._clock else dt.datetime.now(dt.timezone.utc)
        return _dt_to_us(now)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, so writers queue instead of deadlocking)."""
        with self._engine.connect() as conn:
            conn.execution_options(neo_write=True)
            with conn.begin():
                yield conn

    def _read(self, statement: Any) -> list[Mapping[str, Any]]:
        with self._engine.connect() as conn:
            return list(conn.execute(statement).mappings().all())

    def _row(self, name: str) -> Mapping[str, Any] | None:
        rows = self._read(sa.select(JOBS).where(JOBS.c.name == name))
        return rows[0] if rows else None

    def _init_schema(self) -> None:
        with self._entry.lock:
            if self.is_sqlite:
                self._enable_wal()
            try:
                version = self._fast_schema_version()
            except sa.exc.DBAPIError:
                version = -1  # no neo_meta table yet (or unreadable): decide under the migration lock
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise self._too_new(version)
            with self._write() as conn:
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
                version = self._schema_version(conn)
                if version > SCHEMA_VERSION:
                    raise self._too_new(version)
                while version < SCHEMA_VERSION:
                    version = _MIGRATIONS[version](conn)
                self._set_version(conn, SCHEMA_VERSION)

    def _enable_wal(self) -> None:
        assert self.path is not None
        for attempt in range(100):
            try:
                with self._engine.connect() as conn:
                    conn.connection.dbapi_connection.execute("PRAGMA journal_mode=WAL").fetchone()
                return
            except sa.exc.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise
                time.sleep(min(0.01 * (attempt + 1), 0.25))

    def _too_new(self, version: int) -> StoreSchemaError:
        return StoreSchemaError(
            f"Job store {self.display_target} has schema version {version}; this airflow-neo knows up to "
            f"{SCHEMA_VERSION}. Upgrade airflow-neo or use another store."
        )

    def _fast_schema_version(self) -> int:
        with self._engine.connect() as conn:
            value = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
        return int(value) if value is not None else 0

    def _schema_version(self, conn: Connection) -> int:
        inspector = sa.inspect(conn)
        if inspector.has_table("neo_meta"):
            value = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
            return int(value) if value is not None else 0
        if self.is_sqlite and inspector.has_table("meta"):  # schema 1 (airflow-neo 0.1)
            value = conn.exec_driver_sql("SELECT value FROM meta WHERE key='schema_version'").scalar()
            return int(value) if value is not None else 0
        return 0

    @staticmethod
    def _set_version(conn: Connection, version: int) -> None:
        updated = conn.execute(
            sa.update(META).where(META.c.key == "schema_version").values(value=str(version))
        ).rowcount
        if not updated:
            conn.execute(sa.insert(META).values(key="schema_version", value=str(version)))

    def schema_version(self) -> int:
        with self._engine.connect() as conn:
            return self._schema_version(conn)

    @staticmethod
    def _not_found(name: str) -> CompilationJobNotFound:
        return CompilationJobNotFound(f"Could not find compilation job '{name}'.")

    @staticmethod
    def _status(conn: Connection, name: str) -> str:
        status = conn.execute(sa.select(JOBS.c.status).where(JOBS.c.name == name)).scalar()
        if status is None:
            raise JobStore._not_found(name)
        return status

    # ---------------------------------------------------------------- create

    def create(self, request: dict, *, lease_seconds: float = DEFAULT_START_LEASE_SECONDS) -> dict:
        """Record a new job in status STARTING; returns the API's ``{"CompilationJobArn": ...}``.

        The request is validated and normalized (local ``file://`` URIs and absolute paths allowed).
        A runner must mark the job INPROGRESS within ``lease_seconds``, or the job is marked FAILED.
        Raises :class:`CompilationJobExists` (the API's ResourceInUse) when the name is taken, also
        when another process or host creates the same name at the same moment.
        """
        from airflow_neo.core.validation import normalize_request

        req = normalize_request(request, allow_local_uris=True)
        name = req["CompilationJobName"]
        output = req["OutputConfig"]
        platform = output.get("TargetPlatform") or {}
        now = self._now_us()
        arn = self.arn(name)
        values = {
            "name": name,
            "arn": arn,
            "status": st.STARTING,
            "creation_us": now,
            "last_modified_us": now,
            "stopping_condition": json.dumps(req["StoppingCondition"]),
            "model_package_version_arn": req.get("ModelPackageVersionArn"),
            "s3_model_artifacts": artifact_uri_for(req),
            "role_arn": req["RoleArn"],
            "input_config": _dumps(req.get("InputConfig")),
            "output_config": json.dumps(output),
            "vpc_config": _dumps(req.get("VpcConfig")),
            "tags": json.dumps(req.get("Tags") or []),
            "target_device": output.get("TargetDevice"),
            "target_os": platform.get("Os"),
            "target_arch": platform.get("Arch"),
            "target_accelerator": platform.get("Accelerator"),
            "failure_reason": "",
            "stop_requested": 0,
            "lease_expires_us": now + int(lease_seconds * 1_000_000),
        }
        try:
            with self._write() as conn:
                conn.execute(sa.insert(JOBS).values(**values))
        except sa.exc.IntegrityError:
            if not self.exists(name):
                raise
            raise CompilationJobExists(
                f"Resource Already Exists: Compilation job with name {name} already exists. Choose a different name."
            ) from None
        return {"CompilationJobArn": arn}

    # ---------------------------------------------------------------- reads

    def get(self, name: str) -> JobRecord:
        """The job ``name`` as a typed :class:`JobRecord` (a dead runner is detected first, as in describe).

        Raises CompilationJobNotFound.
        """
        row = self._row(name)
        if row is None:
            raise self._not_found(name)
        if self._reap_rows([row]):
            row = self._row(name)
            if row is None:
                raise self._not_found(name)
        return JobRecord.from_row(row)

    def status(self, name: str) -> str:
        """The job's status (CompilationJobStatus); raises CompilationJobNotFound."""
        return self.get(name).status

    def describe(self, name: str) -> dict:
        """The DescribeCompilationJob response for ``name``: API key order, JSON-safe, absent fields omitted."""
        return self.get(name).to_describe()

    def describe_many(self, names: Iterable[str]) -> dict[str, dict]:
        """DescribeCompilationJob for many jobs in one query per 1,000 names: ``{name: payload}``.

        Names that do not exist are left out. Dead runners are detected as in :meth:`describe`.
        """
        wanted = list(dict.fromkeys(names))
        rows: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            for row in self._read(sa.select(JOBS).where(JOBS.c.name.in_(chunk))):
                rows[row["name"]] = row
        reaped = self._reap_rows(list(rows.values()))
        for start in range(0, len(reaped), _IN_CHUNK):
            for row in self._read(sa.select(JOBS).where(JOBS.c.name.in_(reaped[start : start + _IN_CHUNK]))):
                rows[row["name"]] = row
        return {name: _describe_shape(rows[name]) for name in wanted if name in rows}

    def exists(self, name: str) -> bool:
        return bool(self._read(sa.select(JOBS.c.name).where(JOBS.c.name == name)))

    def get_request(self, name: str) -> dict:
        """The job's CreateCompilationJob request (normalized, with Tags) as it was stored."""
        row = self._row(name)
        if row is None:
            raise self._not_found(name)
        request: dict[str, Any] = {"CompilationJobName": row["name"], "RoleArn": row["role_arn"]}
        if row["model_package_version_arn"]:
            request["ModelPackageVersionArn"] = row["model_package_version_arn"]
        if row["input_config"]:
            request["InputConfig"] = json.loads(row["input_config"])
        request["OutputConfig"] = json.loads(row["output_config"])
        if row["vpc_config"]:
            request["VpcConfig"] = json.loads(row["vpc_config"])
        request["StoppingCondition"] = json.loads(row["stopping_condition"])
        tags = json.loads(row["tags"])
        if tags:
            request["Tags"] = tags
        return request

    def tags(self, name: str) -> list[dict]:
        """The job's Tags (what ListTags would return for its ARN)."""
        return self.get_request(name).get("Tags", [])

    def compile_metadata(self, name: str) -> dict | None:
        """The metadata the compiler returned for a COMPLETED job (None otherwise)."""
        rows = self._read(sa.select(JOBS.c.compile_metadata).where(JOBS.c.name == name))
        if not rows:
            raise self._not_found(name)
        value = rows[0]["compile_metadata"]
        return json.loads(value) if value else None

    def runner_info(self, name: str) -> dict:
        """The private runner fields: owner_host, pid, lease_expires_at (ISO), stop_requested."""
        rows = self._read(
            sa.select(JOBS.c.owner_host, JOBS.c.pid, JOBS.c.lease_expires_us, JOBS.c.stop_requested).where(
                JOBS.c.name == name
            )
        )
        if not rows:
            raise self._not_found(name)
        row = rows[0]
        return {
            "owner_host": row["owner_host"],
            "pid": row["pid"],
            "lease_expires_at": _us_to_iso(row["lease_expires_us"]),
            "stop_requested": bool(row["stop_requested"]),
        }

    def list(self, **filters: Any) -> dict:
        """ListCompilationJobs: the API's filters, sorting and NextToken paging.

        Accepted keyword arguments: CreationTimeAfter, CreationTimeBefore, LastModifiedTimeAfter,
        LastModifiedTimeBefore (datetimes, ISO-8601 strings or epoch seconds; strict comparisons),
        NameContains (case-insensitive), StatusEquals, SortBy (Name|CreationTime|Status, default
        CreationTime), SortOrder (Ascending|Descending, default Descending), MaxResults (1-100,
        default 100), NextToken. Returns ``{"CompilationJobSummaries": [...]}`` plus ``"NextToken"``
        when more results remain. Raises :class:`InvalidListRequest` for bad arguments.
        """
        unknown = sorted(set(filters) - set(LIST_FILTERS))
        if unknown:
            raise InvalidListRequest(f"Unknown ListCompilationJobs parameter(s) {unknown}; allowed: {list(LIST_FILTERS)}")
        query = {k: v for k, v in filters.items() if v is not None}
        sort_by = query.get("SortBy", "CreationTime")
        sort_order = query.get("SortOrder", "Descending")
        if sort_by not in SORT_BY:
            raise InvalidListRequest(f"SortBy: got {sort_by!r}; must be one of {list(SORT_BY)}")
        if sort_order not in SORT_ORDER:
            raise InvalidListRequest(f"SortOrder: got {sort_order!r}; must be one of {list(SORT_ORDER)}")
        max_results = query.get("MaxResults", DEFAULT_MAX_RESULTS)
        if isinstance(max_results, str) and max_results.strip().isdigit():
            max_results = int(max_results)
        if isinstance(max_results, bool) or not isinstance(max_results, int) or not 1 <= max_results <= 100:
            raise InvalidListRequest(f"MaxResults: got {max_results!r}; must be an integer in range 1..100")

        where: list[Any] = []
        for key, column, greater in (
            ("CreationTimeAfter", JOBS.c.creation_us, True),
            ("CreationTimeBefore", JOBS.c.creation_us, False),
            ("LastModifiedTimeAfter", JOBS.c.last_modified_us, True),
            ("LastModifiedTimeBefore", JOBS.c.last_modified_us, False),
        ):
            if key in query:
                value = _parse_time(query[key], key)
                where.append(column > value if greater else column < value)
        contains = query.get("NameContains")
        if contains:
            if not isinstance(contains, str) or len(contains) > 63 or not _NAME_CONTAINS.fullmatch(contains):
                raise InvalidListRequest(
                    f"NameContains: got {contains!r}; must match [a-zA-Z0-9\\-]+ and be at most 63 characters"
                )
            where.append(sa.func.lower(JOBS.c.name).contains(contains.lower(), autoescape=True))
        status_equals = query.get("StatusEquals")
        if status_equals is not None:
            if status_equals not in st.ALL_STATES:
                raise InvalidListRequest(f"StatusEquals: got {status_equals!r}; must be one of {sorted(st.ALL_STATES)}")
            where.append(JOBS.c.status == status_equals)

        key_names = {"Name": ("name",), "CreationTime": ("creation_us", "name"), "Status": ("status", "creation_us", "name")}[
            sort_by
        ]
        key_columns = [JOBS.c[k] for k in key_names]
        ascending = sort_order == "Ascending"
        fingerprint = _fingerprint(query)
        token = query.get("NextToken")
        if token:
            after = _decode_token(token, fingerprint, len(key_columns))
            bound = sa.tuple_(*(sa.literal(v, type_=c.type) for v, c in zip(after, key_columns)))
            row_value = sa.tuple_(*key_columns)
            where.append(row_value > bound if ascending else row_value < bound)
        statement = (
            sa.select(JOBS)
            .where(*where)
            .order_by(*(c.asc() if ascending else c.desc() for c in key_columns))
            .limit(max_results + 1)
        )
        self._reap()
        rows = self._read(statement)
        result: dict[str, Any] = {"CompilationJobSummaries": [_summary_shape(r) for r in rows[:max_results]]}
        if len(rows) > max_results:
            last = rows[max_results - 1]
            result["NextToken"] = _encode_token([last[k] for k in key_names], fingerprint)
        return result

    def iter_all(self, **filters: Any) -> Iterator[dict]:
        """Every summary matching the filters, following NextToken."""
        while True:
            page = self.list(**filters)
            yield from page["CompilationJobSummaries"]
            if "NextToken" not in page:
                return
            filters = {**filters, "NextToken": page["NextToken"]}

    # ---------------------------------------------------------------- transitions

    def mark_inprogress(self, name: str, owner_host: str, pid: int, lease_seconds: float) -> bool:
        """STARTING -> INPROGRESS, recording the runner (host, pid) and its lease.

        Returns False (and changes nothing) when the job is not STARTING any more (a stop was
        requested, or it was already picked up or ended). Raises CompilationJobNotFound.
        """
        now = self._now_us()
        local = owner_host == self.host
        values = {
            "status": st.INPROGRESS,
            "owner_host": owner_host,
            "pid": pid,
            "pid_start": process_start_token(pid) if local else None,
            "pid_namespace": self._pid_namespace if local else None,
            "owner_boot_id": self._boot_id if local else None,
            "lease_expires_us": now + int(lease_seconds * 1_000_000),
            "start_us": now,
            "last_modified_us": now,
        }
        return self._transition(name, values, (st.STARTING,))

    def renew_lease(self, name: str, lease_seconds: float) -> bool:
        """Extend a running job's lease; returns whether a stop has been requested.

        Raises CompilationJobStateError when the job is no longer running (for example it was
        marked FAILED because its lease ran out), CompilationJobNotFound when it is gone.
        """
        now = self._now_us()
        with self._write() as conn:
            renewed = conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.name == name, JOBS.c.status.in_(_RUNNING))
                .values(lease_expires_us=now + int(lease_seconds * 1_000_000))
            ).rowcount
            row = conn.execute(sa.select(JOBS.c.status, JOBS.c.stop_requested).where(JOBS.c.name == name)).mappings().first()
        if row is None:
            raise self._not_found(name)
        if not renewed:
            raise CompilationJobStateError(
                f"Compilation job '{name}' is {row['status']}; its lease can no longer be renewed."
            )
        return bool(row["stop_requested"]) or row["status"] == st.STOPPING

    def complete(
        self,
        name: str,
        artifact_uri: str,
        digest: str,
        derived_data_input_config: str | None,
        *,
        metadata: dict | None = None,
    ) -> bool:
        """INPROGRESS/STOPPING -> COMPLETED with the published artifact; False when no longer running."""
        now = self._now_us()
        values = {
            "status": st.COMPLETED,
            "s3_model_artifacts": artifact_uri,
            "artifact_digest": digest,
            "derived_data_input_config": derived_data_input_config,
            "compile_metadata": _dumps(metadata),
            "failure_reason": "",
            "end_us": now,
            "last_modified_us": now,
            "lease_expires_us": None,
        }
        return self._transition(name, values, (st.INPROGRESS, st.STOPPING))

    def fail(self, name: str, reason: str) -> bool:
        """A running job -> FAILED with ``reason`` (cut to the API's 1024 characters); False when not running."""
        now = self._now_us()
        values = {
            "status": st.FAILED,
            "failure_reason": _clip_reason(reason),
            "end_us": now,
            "last_modified_us": now,
            "lease_expires_us": None,
        }
        return self._transition(name, values, _RUNNING)

    def mark_stopped(self, name: str) -> bool:
        """A running job -> STOPPED; False when not running."""
        now = self._now_us()
        values = {"status": st.STOPPED, "end_us": now, "last_modified_us": now, "lease_expires_us": None}
        return self._transition(name, values, _RUNNING)

    def _transition(self, name: str, values: dict[str, Any], from_states: tuple[str, ...]) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                sa.update(JOBS).where(JOBS.c.name == name, JOBS.c.status.in_(from_states)).values(**values)
            ).rowcount
            if changed:
                return True
            self._status(conn, name)
            return False

    def request_stop(self, name: str) -> None:
        """StopCompilationJob: STARTING/INPROGRESS -> STOPPING (the runner then stops and records STOPPED).

        The request is recorded in the store; the runner that owns the job sees it at its next
        lease renewal, wherever it runs. Stopping a STOPPING job is a no-op. Raises
        CompilationJobNotFound for an unknown job and CompilationJobStateError (the API's
        ValidationException) for a COMPLETED/FAILED/STOPPED one.
        """
        self._reap(name)
        now = self._now_us()
        with self._write() as conn:
            status = self._status(conn, name)
            if status in st.TERMINAL_STATES:
                raise CompilationJobStateError(
                    f"The request was rejected because the compilation job '{name}' is in status {status}; "
                    "only a STARTING or INPROGRESS job can be stopped."
                )
            conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.name == name, JOBS.c.status.in_(_RUNNING))
                .values(
                    stop_requested=1,
                    status=st.STOPPING,
                    last_modified_us=sa.case((JOBS.c.status == st.STOPPING, JOBS.c.last_modified_us), else_=now),
                )
            )

    def delete(self, name: str) -> None:
        """DeleteCompilationJob: removes a COMPLETED/FAILED/STOPPED job (not its artifact or log).

        Raises CompilationJobNotFound, or CompilationJobStateError for a running job.
        """
        self._reap(name)
        with self._write() as conn:
            status = self._status(conn, name)
            if status not in st.TERMINAL_STATES:
                raise CompilationJobStateError(
                    f"The request was rejected because the compilation job '{name}' is in status {status}; "
                    "only a COMPLETED, FAILED or STOPPED job can be deleted. Stop it first."
                )
            conn.execute(sa.delete(JOBS).where(JOBS.c.name == name))

    # ---------------------------------------------------------------- dead runners

    def reap(self, name: str | None = None) -> list[str]:
        """Mark running jobs whose runner is gone FAILED (STOPPED if stopping); returns their names."""
        return self._reap(name)

    def _reap(self, name: str | None = None) -> list[str]:
        now = self._now_us()
        statement = sa.select(JOBS).where(
            JOBS.c.status.in_(_RUNNING), sa.or_(JOBS.c.owner_host == self.host, JOBS.c.lease_expires_us < now)
        )
        if name is not None:
            statement = statement.where(JOBS.c.name == name)
        return self._reap_rows(self._read(statement), now)

    def _reap_rows(self, rows: Iterable[Mapping[str, Any]], now: int | None = None) -> list[str]:
        """Record the end of the jobs among ``rows`` whose runner is gone; returns their names."""
        now = self._now_us() if now is None else now
        reaped = []
        for row in rows:
            if row["status"] not in st.RUNNING_STATES:
                continue
            reason = self._death_reason(row, now)
            if reason is None:
                continue
            new_status = st.STOPPED if row["status"] == st.STOPPING else st.FAILED
            with self._write() as conn:
                changed = conn.execute(
                    sa.update(JOBS)
                    .where(
                        JOBS.c.name == row["name"],
                        JOBS.c.status == row["status"],
                        JOBS.c.pid.is_not_distinct_from(row["pid"]),
                        JOBS.c.lease_expires_us.is_not_distinct_from(row["lease_expires_us"]),
                    )
                    .values(
                        status=new_status,
                        failure_reason="" if new_status == st.STOPPED else _clip_reason(reason),
                        end_us=now,
                        last_modified_us=now,
                        lease_expires_us=None,
                    )
                ).rowcount
            if changed:
                reaped.append(row["name"])
        return reaped

    def _same_pid_space(self, row: Mapping[str, Any]) -> bool:
        """Whether the runner's pid means something here: same host name, kernel boot and PID namespace.

        Another machine (or a container sharing our host name, or this machine before a reboot)
        is left to the lease.
        """
        if row["owner_host"] != self.host:
            return False
        recorded_boot = row.get("owner_boot_id")
        if recorded_boot is not None and recorded_boot != self._boot_id:
            return False
        recorded_ns = row["pid_namespace"]
        return recorded_ns is None or recorded_ns == self._pid_namespace

    def _death_reason(self, row: Mapping[str, Any], now: int) -> str | None:
        pid, host = row["pid"], row["owner_host"]
        if pid is not None and self._same_pid_space(row) and not pid_alive(pid, row["pid_start"]):
            return f"Compile worker lost: process {pid} on host {host} exited without recording a result"
        lease = row["lease_expires_us"]
        if lease is not None and lease < now:
            if pid is None:
                return (
                    f"Compile worker lost: no runner picked up the job before its start lease expired at "
                    f"{_us_to_iso(lease)}"
                )
            return (
                f"Compile worker lost: lease expired at {_us_to_iso(lease)} "
                f"(process {pid} on host {host} stopped renewing it)"
            )
        return None


# --------------------------------------------------------------------------- shapes


def _describe_shape(row: Mapping[str, Any]) -> dict:
    out: dict[str, Any] = {
        "CompilationJobName": row["name"],
        "CompilationJobArn": row["arn"],
        "CompilationJobStatus": row["status"],
    }
    if row["start_us"] is not None:
        out["CompilationStartTime"] = _us_to_iso(row["start_us"])
    if row["end_us"] is not None:
        out["CompilationEndTime"] = _us_to_iso(row["end_us"])
    out["StoppingCondition"] = json.loads(row["stopping_condition"])
    if row["inference_image"]:
        out["InferenceImage"] = row["inference_image"]
    if row["model_package_version_arn"]:
        out["ModelPackageVersionArn"] = row["model_package_version_arn"]
    out["CreationTime"] = _us_to_iso(row["creation_us"])
    out["LastModifiedTime"] = _us_to_iso(row["last_modified_us"])
    out["FailureReason"] = row["failure_reason"] or ""
    out["ModelArtifacts"] = {"S3ModelArtifacts": row["s3_model_artifacts"]}
    if row["artifact_digest"]:
        out["ModelDigests"] = {"ArtifactDigest": row["artifact_digest"]}
    out["RoleArn"] = row["role_arn"]
    if row["input_config"]:
        out["InputConfig"] = json.loads(row["input_config"])
    out["OutputConfig"] = json.loads(row["output_config"])
    if row["vpc_config"]:
        out["VpcConfig"] = json.loads(row["vpc_config"])
    if row["derived_data_input_config"]:
        out["DerivedInformation"] = {"DerivedDataInputConfig": row["derived_data_input_config"]}
    return out


def _summary_shape(row: Mapping[str, Any]) -> dict:
    out: dict[str, Any] = {
        "CompilationJobName": row["name"],
        "CompilationJobArn": row["arn"],
        "CreationTime": _us_to_iso(row["creation_us"]),
    }
    if row["start_us"] is not None:
        out["CompilationStartTime"] = _us_to_iso(row["start_us"])
    if row["end_us"] is not None:
        out["CompilationEndTime"] = _us_to_iso(row["end_us"])
    for column, key in (
        ("target_device", "CompilationTargetDevice"),
        ("target_os", "CompilationTargetPlatformOs"),
        ("target_arch", "CompilationTargetPlatformArch"),
        ("target_accelerator", "CompilationTargetPlatformAccelerator"),
    ):
        if row[column]:
            out[key] = row[column]
    out["LastModifiedTime"] = _us_to_iso(row["last_modified_us"])
    out["CompilationJobStatus"] = row["status"]
    return out


# --------------------------------------------------------------------------- small helpers


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _clip_reason(reason: str) -> str:
    reason = str(reason)
    if len(reason) <= MAX_FAILURE_REASON:
        return reason
    return reason[: MAX_FAILURE_REASON - 3] + "..."


def _fingerprint(query: dict) -> str:
    basis = {k: (str(v) if not isinstance(v, (int, str)) else v) for k, v in query.items() if k not in ("NextToken", "MaxResults")}
    basis.setdefault("SortBy", "CreationTime")
    basis.setdefault("SortOrder", "Descending")
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _encode_token(after: list, fingerprint: str) -> str:
    raw = json.dumps({"v": 1, "a": after, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: Any, fingerprint: str, size: int) -> list:
    try:
        text = str(token)
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        after = data["a"]
        valid = data.get("v") == 1 and isinstance(after, list) and len(after) == size
    except (ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise InvalidListRequest("Invalid pagination token: NextToken was not issued by ListCompilationJobs on this store.")
    if data.get("f") != fingerprint:
        raise InvalidListRequest(
            "Invalid pagination token: use NextToken with the same filters and sort order as the request that returned it."
        )
    return after
