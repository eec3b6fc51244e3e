"""The local backend's job store: an embedded SQLite database of compilation jobs.

Every job is kept with the fields of the SageMaker API (``DescribeCompilationJob`` and
``ListCompilationJobs`` answer in the API's shapes, key order and wording) plus a few private
runner fields (owner host, pid, lease, stop request).

Concurrency: the database is in WAL mode with a busy timeout; every call opens its own connection,
so one :class:`JobStore` may be shared by threads, and any number of processes may open the same
file. Every status transition is a conditional ``UPDATE ... WHERE status IN (...)`` inside a
``BEGIN IMMEDIATE`` transaction, so two processes can never both win a transition.

Dead runners: every ``describe``/``list`` (and ``request_stop``/``delete``) first looks at the
running jobs concerned; one whose runner process on this host no longer exists, or whose lease
ran out, is marked FAILED (STOPPED when a stop had been requested) instead of staying INPROGRESS
forever.

Nothing here imports Airflow.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import posixpath
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import (
    CompilationJobExists,
    CompilationJobNotFound,
    CompilationJobStateError,
    NeoError,
)
from airflow_neo.core.payload import to_utc_iso

SCHEMA_VERSION = 1
DEFAULT_REGION = "local"
DEFAULT_ACCOUNT = "000000000000"
DEFAULT_START_LEASE_SECONDS = 120
BUSY_TIMEOUT_MS = 60_000
MAX_FAILURE_REASON = 1024  # the API's FailureReason limit
DEFAULT_MAX_RESULTS = 100
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
_RUNNING = tuple(sorted(st.RUNNING_STATES))
_RUNNING_SQL = "(" + ",".join(f"'{s}'" for s in _RUNNING) + ")"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class InvalidListRequest(NeoError, ValueError):
    """A ListCompilationJobs request the API would reject (its ValidationException)."""

    code = "ValidationException"


class StoreSchemaError(NeoError):
    """The store file was written by a newer airflow-neo (unknown schema version)."""


_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE IF NOT EXISTS jobs (
            name                      TEXT PRIMARY KEY,
            arn                       TEXT NOT NULL,
            status                    TEXT NOT NULL,
            creation_us               INTEGER NOT NULL,
            last_modified_us          INTEGER NOT NULL,
            start_us                  INTEGER,
            end_us                    INTEGER,
            stopping_condition        TEXT NOT NULL,
            inference_image           TEXT,
            model_package_version_arn TEXT,
            failure_reason            TEXT NOT NULL DEFAULT '',
            s3_model_artifacts        TEXT,
            artifact_digest           TEXT,
            role_arn                  TEXT NOT NULL,
            input_config              TEXT,
            output_config             TEXT NOT NULL,
            vpc_config                TEXT,
            derived_data_input_config TEXT,
            tags                      TEXT NOT NULL DEFAULT '[]',
            target_device             TEXT,
            target_os                 TEXT,
            target_arch               TEXT,
            target_accelerator        TEXT,
            owner_host                TEXT,
            pid                       INTEGER,
            pid_start                 TEXT,
            pid_namespace             TEXT,
            lease_expires_us          INTEGER,
            stop_requested            INTEGER NOT NULL DEFAULT 0,
            compile_metadata          TEXT
        )
        """,
        "CREATE INDEX IF NOT EXISTS jobs_by_creation ON jobs (creation_us, name)",
        "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, creation_us, name)",
    ),
}


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


# --------------------------------------------------------------------------- the store


class JobStore:
    """An embedded, multi-process-safe SQLite store of local compilation jobs.

    :param path: the database file; its parent directory is created.
    :param region: the region in the job ARNs.
    :param account: the account id in the job ARNs.
    :param host: this host's name for dead-runner detection (default ``socket.gethostname()``).
    :param clock: returns "now" as an aware datetime (tests); default the system clock, UTC.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        region: str = DEFAULT_REGION,
        account: str = DEFAULT_ACCOUNT,
        host: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ):
        self.path = Path(path).expanduser().absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.region = region
        self.account = account
        self.host = host or socket.gethostname()
        self._clock = clock
        self._pid_namespace = pid_namespace()
        self._init_schema()

    # ---------------------------------------------------------------- locations

    @property
    def root(self) -> Path:
        """The directory that holds the database, ``logs/`` and ``work/``."""
        return self.path.parent

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    def log_path(self, name: str) -> Path:
        """The job's log file: ``<store dir>/logs/<name>.log``."""
        return self.log_dir / f"{name}.log"

    def arn(self, name: str) -> str:
        return compilation_job_arn(name, self.region, self.account)

    # ---------------------------------------------------------------- plumbing

    def _now_us(self) -> int:
        now = self._clock() if self._clock else dt.datetime.now(dt.timezone.utc)
        return _dt_to_us(now)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    @contextlib.contextmanager
    def _write(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _init_schema(self) -> None:
        with self._connection() as conn:
            for attempt in range(100):
                try:
                    conn.execute("PRAGMA journal_mode=WAL").fetchone()
                    break
                except sqlite3.OperationalError as err:
                    if "locked" not in str(err) and "busy" not in str(err):
                        raise
                    time.sleep(min(0.01 * (attempt + 1), 0.25))
            if self._schema_version(conn) == SCHEMA_VERSION:
                return
            with self._write(conn):
                version = self._schema_version(conn)
                if version > SCHEMA_VERSION:
                    raise StoreSchemaError(
                        f"Job store {self.path} has schema version {version}; this airflow-neo knows up to "
                        f"{SCHEMA_VERSION}. Upgrade airflow-neo or use another store path."
                    )
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not exists:
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def schema_version(self) -> int:
        with self._connection() as conn:
            return self._schema_version(conn)

    @staticmethod
    def _not_found(name: str) -> CompilationJobNotFound:
        return CompilationJobNotFound(f"Could not find compilation job '{name}'.")

    def _status(self, conn: sqlite3.Connection, name: str) -> str:
        row = conn.execute("SELECT status FROM jobs WHERE name=?", (name,)).fetchone()
        if row is None:
            raise self._not_found(name)
        return row["status"]

    # ---------------------------------------------------------------- create

    def create(self, request: dict, *, lease_seconds: float = DEFAULT_START_LEASE_SECONDS) -> dict:
        """Record a new job in status STARTING; returns the API's ``{"CompilationJobArn": ...}``.

        The request is validated and normalized (local ``file://`` URIs and absolute paths allowed).
        A runner must mark the job INPROGRESS within ``lease_seconds``, or the job is marked FAILED.
        Raises :class:`CompilationJobExists` (the API's ResourceInUse) when the name is taken.
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
            "lease_expires_us": now + int(lease_seconds * 1_000_000),
        }
        columns = ", ".join(values)
        marks = ", ".join(f":{key}" for key in values)
        try:
            with self._connection() as conn, self._write(conn):
                conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", values)
        except sqlite3.IntegrityError:
            raise CompilationJobExists(
                f"Resource Already Exists: Compilation job with name {name} already exists. Choose a different name."
            ) from None
        return {"CompilationJobArn": arn}

    # ---------------------------------------------------------------- reads

    def describe(self, name: str) -> dict:
        """The DescribeCompilationJob response for ``name``: API key order, JSON-safe, absent fields omitted."""
        with self._connection() as conn:
            self._reap(conn, name)
            row = conn.execute("SELECT * FROM jobs WHERE name=?", (name,)).fetchone()
        if row is None:
            raise self._not_found(name)
        return _describe_shape(row)

    def exists(self, name: str) -> bool:
        with self._connection() as conn:
            return conn.execute("SELECT 1 FROM jobs WHERE name=?", (name,)).fetchone() is not None

    def get_request(self, name: str) -> dict:
        """The job's CreateCompilationJob request (normalized, with Tags) as it was stored."""
        with self._connection() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE name=?", (name,)).fetchone()
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
        with self._connection() as conn:
            row = conn.execute("SELECT compile_metadata FROM jobs WHERE name=?", (name,)).fetchone()
        if row is None:
            raise self._not_found(name)
        return json.loads(row[0]) if row[0] else None

    def runner_info(self, name: str) -> dict:
        """The private runner fields: owner_host, pid, lease_expires_at (ISO), stop_requested."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT owner_host, pid, lease_expires_us, stop_requested FROM jobs WHERE name=?", (name,)
            ).fetchone()
        if row is None:
            raise self._not_found(name)
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

        where: list[str] = []
        params: list[Any] = []
        for key, column, op in (
            ("CreationTimeAfter", "creation_us", ">"),
            ("CreationTimeBefore", "creation_us", "<"),
            ("LastModifiedTimeAfter", "last_modified_us", ">"),
            ("LastModifiedTimeBefore", "last_modified_us", "<"),
        ):
            if key in query:
                where.append(f"{column} {op} ?")
                params.append(_parse_time(query[key], key))
        contains = query.get("NameContains")
        if contains:
            if not isinstance(contains, str) or len(contains) > 63 or not _NAME_CONTAINS.fullmatch(contains):
                raise InvalidListRequest(
                    f"NameContains: got {contains!r}; must match [a-zA-Z0-9\\-]+ and be at most 63 characters"
                )
            where.append("instr(lower(name), lower(?)) > 0")
            params.append(contains)
        status_equals = query.get("StatusEquals")
        if status_equals is not None:
            if status_equals not in st.ALL_STATES:
                raise InvalidListRequest(f"StatusEquals: got {status_equals!r}; must be one of {sorted(st.ALL_STATES)}")
            where.append("status = ?")
            params.append(status_equals)

        key_columns = {"Name": ("name",), "CreationTime": ("creation_us", "name"), "Status": ("status", "creation_us", "name")}[
            sort_by
        ]
        direction = "ASC" if sort_order == "Ascending" else "DESC"
        fingerprint = _fingerprint(query)
        token = query.get("NextToken")
        if token:
            after = _decode_token(token, fingerprint, len(key_columns))
            row_value = "(" + ", ".join(key_columns) + ")"
            marks = "(" + ", ".join("?" for _ in key_columns) + ")"
            where.append(f"{row_value} {'>' if direction == 'ASC' else '<'} {marks}")
            params.extend(after)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY " + ", ".join(f"{c} {direction}" for c in key_columns) + " LIMIT ?"
        params.append(max_results + 1)

        with self._connection() as conn:
            self._reap(conn)
            rows = conn.execute(sql, params).fetchall()
        result: dict[str, Any] = {"CompilationJobSummaries": [_summary_shape(r) for r in rows[:max_results]]}
        if len(rows) > max_results:
            last = rows[max_results - 1]
            result["NextToken"] = _encode_token([last[c] for c in key_columns], fingerprint)
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
        token = process_start_token(pid) if local else None
        namespace = self._pid_namespace if local else None
        with self._connection() as conn, self._write(conn):
            cur = conn.execute(
                "UPDATE jobs SET status=?, owner_host=?, pid=?, pid_start=?, pid_namespace=?, lease_expires_us=?,"
                " start_us=?, last_modified_us=? WHERE name=? AND status=?",
                (st.INPROGRESS, owner_host, pid, token, namespace, now + int(lease_seconds * 1_000_000), now, now,
                 name, st.STARTING),
            )
            if cur.rowcount:
                return True
            self._status(conn, name)
            return False

    def renew_lease(self, name: str, lease_seconds: float) -> bool:
        """Extend a running job's lease; returns whether a stop has been requested.

        Raises CompilationJobStateError when the job is no longer running (for example it was
        marked FAILED because its lease ran out), CompilationJobNotFound when it is gone.
        """
        now = self._now_us()
        with self._connection() as conn, self._write(conn):
            cur = conn.execute(
                f"UPDATE jobs SET lease_expires_us=? WHERE name=? AND status IN {_RUNNING_SQL}",
                (now + int(lease_seconds * 1_000_000), name),
            )
            row = conn.execute("SELECT status, stop_requested FROM jobs WHERE name=?", (name,)).fetchone()
        if row is None:
            raise self._not_found(name)
        if not cur.rowcount:
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
        return self._transition(
            name,
            "status=?, s3_model_artifacts=?, artifact_digest=?, derived_data_input_config=?, compile_metadata=?,"
            " failure_reason='', end_us=?, last_modified_us=?, lease_expires_us=NULL",
            (st.COMPLETED, artifact_uri, digest, derived_data_input_config, _dumps(metadata), now, now),
            (st.INPROGRESS, st.STOPPING),
        )

    def fail(self, name: str, reason: str) -> bool:
        """A running job -> FAILED with ``reason`` (cut to the API's 1024 characters); False when not running."""
        now = self._now_us()
        return self._transition(
            name,
            "status=?, failure_reason=?, end_us=?, last_modified_us=?, lease_expires_us=NULL",
            (st.FAILED, _clip_reason(reason), now, now),
            _RUNNING,
        )

    def mark_stopped(self, name: str) -> bool:
        """A running job -> STOPPED; False when not running."""
        now = self._now_us()
        return self._transition(
            name,
            "status=?, end_us=?, last_modified_us=?, lease_expires_us=NULL",
            (st.STOPPED, now, now),
            _RUNNING,
        )

    def _transition(self, name: str, assignments: str, values: tuple, from_states: tuple[str, ...]) -> bool:
        marks = ",".join("?" for _ in from_states)
        with self._connection() as conn, self._write(conn):
            cur = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE name=? AND status IN ({marks})", (*values, name, *from_states)
            )
            if cur.rowcount:
                return True
            self._status(conn, name)
            return False

    def request_stop(self, name: str) -> None:
        """StopCompilationJob: STARTING/INPROGRESS -> STOPPING (the runner then stops and records STOPPED).

        Stopping a STOPPING job is a no-op. Raises CompilationJobNotFound for an unknown job and
        CompilationJobStateError (the API's ValidationException) for a COMPLETED/FAILED/STOPPED one.
        """
        now = self._now_us()
        with self._connection() as conn:
            self._reap(conn, name)
            with self._write(conn):
                status = self._status(conn, name)
                if status in st.TERMINAL_STATES:
                    raise CompilationJobStateError(
                        f"The request was rejected because the compilation job '{name}' is in status {status}; "
                        "only a STARTING or INPROGRESS job can be stopped."
                    )
                conn.execute(
                    f"UPDATE jobs SET stop_requested=1, status=?,"
                    f" last_modified_us=CASE WHEN status=? THEN last_modified_us ELSE ? END"
                    f" WHERE name=? AND status IN {_RUNNING_SQL}",
                    (st.STOPPING, st.STOPPING, now, name),
                )

    def delete(self, name: str) -> None:
        """DeleteCompilationJob: removes a COMPLETED/FAILED/STOPPED job (not its artifact or log).

        Raises CompilationJobNotFound, or CompilationJobStateError for a running job.
        """
        with self._connection() as conn:
            self._reap(conn, name)
            with self._write(conn):
                status = self._status(conn, name)
                if status not in st.TERMINAL_STATES:
                    raise CompilationJobStateError(
                        f"The request was rejected because the compilation job '{name}' is in status {status}; "
                        "only a COMPLETED, FAILED or STOPPED job can be deleted. Stop it first."
                    )
                conn.execute("DELETE FROM jobs WHERE name=?", (name,))

    # ---------------------------------------------------------------- dead runners

    def reap(self, name: str | None = None) -> list[str]:
        """Mark running jobs whose runner is gone FAILED (STOPPED if stopping); returns their names."""
        with self._connection() as conn:
            return self._reap(conn, name)

    def _reap(self, conn: sqlite3.Connection, name: str | None = None) -> list[str]:
        now = self._now_us()
        sql = (
            "SELECT name, status, owner_host, pid, pid_start, pid_namespace, lease_expires_us FROM jobs"
            f" WHERE status IN {_RUNNING_SQL} AND (owner_host=? OR lease_expires_us < ?)"
        )
        params: list[Any] = [self.host, now]
        if name is not None:
            sql += " AND name=?"
            params.append(name)
        reaped = []
        for row in conn.execute(sql, params).fetchall():
            reason = self._death_reason(row, now)
            if reason is None:
                continue
            new_status = st.STOPPED if row["status"] == st.STOPPING else st.FAILED
            with self._write(conn):
                cur = conn.execute(
                    "UPDATE jobs SET status=?, failure_reason=?, end_us=?, last_modified_us=?, lease_expires_us=NULL"
                    " WHERE name=? AND status=? AND pid IS ? AND lease_expires_us IS ?",
                    (
                        new_status,
                        "" if new_status == st.STOPPED else _clip_reason(reason),
                        now,
                        now,
                        row["name"],
                        row["status"],
                        row["pid"],
                        row["lease_expires_us"],
                    ),
                )
            if cur.rowcount:
                reaped.append(row["name"])
        return reaped

    def _death_reason(self, row: sqlite3.Row, now: int) -> str | None:
        pid, host = row["pid"], row["owner_host"]
        same_namespace = row["pid_namespace"] is None or row["pid_namespace"] == self._pid_namespace
        if pid is not None and host == self.host and same_namespace and not pid_alive(pid, row["pid_start"]):
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


def _describe_shape(row: sqlite3.Row) -> dict:
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


def _summary_shape(row: sqlite3.Row) -> dict:
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
