"""Store targets and database engines: where the jobs live and how this process connects to them.

A store *target* is one of:

* a file path (or ``file://`` URI, or ``sqlite:///path``): an embedded SQLite database, the
  default (``$AIRFLOW_HOME/neo/jobs.sqlite``), for one machine;
* a SQLAlchemy URL such as ``postgresql://user:password@host/db`` (or ``postgresql+psycopg2://``,
  ``postgresql+psycopg://``; Airflow's ``postgres://`` is read as ``postgresql://``): a database
  shared by many workers, the triggerer and the CLI.

In-memory SQLite is refused (runners are other processes). Messages never show a password:
:func:`mask_url` writes a URL with its password (also a ``password`` query parameter) as ``***``,
:func:`redact` scrubs it (and, for a URL that does not parse, every piece of its user info) from
an error's text.

Engines: one engine (connection pool) per database per process, shared by every ``JobStore`` on
it, at most :data:`MAX_CACHED_ENGINES` (least recently used first out). A forked child (Celery
prefork, LocalExecutor) forgets its parent's engines without closing their connections.

Concurrency: SQLite runs in WAL mode with a busy timeout and every write in ``BEGIN IMMEDIATE``
(:func:`write_transaction`), so writers queue instead of deadlocking; PostgreSQL runs at READ
COMMITTED.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from airflow_neo.core.exceptions import NeoError

STORE_URL_ENV = "AIRFLOW_NEO_STORE_URL"
BUSY_TIMEOUT_MS = 60_000
MAX_CACHED_ENGINES = 16
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class StoreConfigError(NeoError, ValueError):
    """A store target that is neither a file path nor a usable SQLAlchemy URL."""


# --------------------------------------------------------------------------- targets


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
            raise StoreConfigError(f"Job store {mask_url(text)!r} is not a valid SQLAlchemy URL: "
                                   f"{redact(str(err), text)}") from None
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


_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)([^&#]*)")
#: ``scheme://user:`` then the password up to the *last* ``@`` (a password may hold ``@`` and ``:``)
_USERINFO_PASSWORD = re.compile(r"://([^:/@?#]*):(.*)@")


def mask_url(url: str | URL) -> str:
    """``url`` for messages: its password, also a ``password`` query parameter, written ``***``."""
    if isinstance(url, URL):
        hidden = url.render_as_string(hide_password=True)
    else:
        hidden = _USERINFO_PASSWORD.sub(r"://\1:***@", str(url))
    return _QUERY_PASSWORD.sub(r"\1***", hidden)


_mask = mask_url


def _secrets_of(url: str | URL) -> list[str]:
    """The password of ``url`` (as given and URL-decoded) and of its query; for a string, also the
    pieces of its user info split at ``@``, ``:`` and ``/`` (what a parser's message may quote)."""
    found: list[str] = []
    if isinstance(url, URL):
        found += [url.password or ""] + [str(v) for k, v in url.query.items() if k.lower() == "password"]
    else:
        text = str(url)
        match = _USERINFO_PASSWORD.search(text)
        if match:
            found.append(match.group(2))
            found += re.split(r"[@:/]", match.group(2))
        found += [m.group(2) for m in _QUERY_PASSWORD.finditer(text)]
    import urllib.parse

    found += [urllib.parse.unquote(item) for item in found]
    return sorted({item for item in found if len(item) >= 3}, key=len, reverse=True)


def redact(text: str, url: str | URL) -> str:
    """``text`` (an error message) with every secret of ``url`` (:func:`_secrets_of`) written ``***``."""
    for secret in _secrets_of(url):
        text = text.replace(secret, "***")
    return text


def default_work_root() -> Path:
    """Where a store on a database server keeps this machine's logs and work dirs: ``$AIRFLOW_HOME/neo``."""
    home = os.environ.get("AIRFLOW_HOME") or "~/airflow"
    return Path(home).expanduser().absolute() / "neo"


# --------------------------------------------------------------------------- the engine cache


class _EngineEntry:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = threading.Lock()  # held while the schema is checked or migrated


_ENGINES: collections.OrderedDict[tuple[str, int], _EngineEntry] = collections.OrderedDict()
_ENGINES_LOCK = threading.Lock()


def engine_entry(url: URL) -> _EngineEntry:
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
            f"Job store {mask_url(url)}: the database driver is not installed ({err}). For PostgreSQL install "
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


# --------------------------------------------------------------------------- statements


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction (SQLite: BEGIN IMMEDIATE, so writers queue instead of deadlocking)."""
    with engine.connect() as conn:
        conn.execution_options(neo_write=True)
        with conn.begin():
            yield conn


def read_rows(engine: Engine, statement: Any) -> list[Mapping[str, Any]]:
    """The rows of one read statement, as mappings."""
    with engine.connect() as conn:
        return list(conn.execute(statement).mappings().all())


def enable_wal(engine: Engine) -> None:
    """Put a SQLite database in WAL mode (persistent), retrying while another process holds it."""
    for attempt in range(100):
        try:
            with engine.connect() as conn:
                conn.connection.dbapi_connection.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sa.exc.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            time.sleep(min(0.01 * (attempt + 1), 0.25))
