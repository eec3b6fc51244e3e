"""The job store's schema: tables ``neo_jobs`` and ``neo_meta``, its version and its migrations.

SQLite and PostgreSQL run the same SQLAlchemy Core statements on the same schema. The schema
version is kept in ``neo_meta`` (key ``schema_version``); a store is created or migrated on first
use by the steps of :data:`MIGRATIONS` (version found -> step that upgrades it), under one write
transaction and, on PostgreSQL, an advisory lock, so concurrent first users migrate it once. The
schema-1 SQLite files of airflow-neo 0.1 (tables ``jobs``/``meta``) are migrated in place. A store
written by a newer airflow-neo (a higher version) is refused with :class:`StoreSchemaError`, never
downgraded. Schema 3 adds the compile-slot columns (``slot_host``, ``slot_state``: see ``slots.py``).

Text keys compare and sort byte by byte on every database (SQLite's BINARY; "C" on PostgreSQL,
whose default collation would sort "Beta" after "alpha"), so Name/Status order and NextToken
paging are the same everywhere. The job name is the primary key: concurrent creates of one name
leave one job. Times are integer microseconds since the epoch (see ``times.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from airflow_neo.core.exceptions import NeoError
from airflow_neo.local.store.engines import _EngineEntry, enable_wal, write_transaction

SCHEMA_VERSION = 3
_PG_MIGRATION_LOCK = 0x4E454F5354  # pg_advisory_xact_lock key ("NEOST")


class StoreSchemaError(NeoError):
    """The store was written by a newer airflow-neo (unknown schema version)."""


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
    sa.Column("slot_host", sa.Text),  # schema 3: the host whose compile slots the job queues for / holds
    sa.Column("slot_state", sa.Text),  # schema 3: None, "queued" or "held" (see slots.py)
)
sa.Index("neo_jobs_by_creation", JOBS.c.creation_us, JOBS.c.name)
sa.Index("neo_jobs_by_status", JOBS.c.status, JOBS.c.creation_us, JOBS.c.name)
_SLOT_INDEX = sa.Index("neo_jobs_by_slot", JOBS.c.slot_host, JOBS.c.slot_state, JOBS.c.creation_us, JOBS.c.name)
META = sa.Table(
    "neo_meta",
    METADATA,
    sa.Column("key", _Key, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


# --------------------------------------------------------------------------- migrations


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
    for index in JOBS.indexes:  # under their new names (the schema-3 index comes with its columns)
        if index is not _SLOT_INDEX:
            index.create(conn, checkfirst=True)
    conn.exec_driver_sql("UPDATE meta SET value='2' WHERE key='schema_version'")
    return 2


def _migrate_v2(conn: Connection) -> int:
    """Schema 2 -> 3: the compile-slot columns and their index (existing jobs hold no slot)."""
    for column in ("slot_host", "slot_state"):
        conn.exec_driver_sql(f"ALTER TABLE neo_jobs ADD COLUMN {column} TEXT")
    _SLOT_INDEX.create(conn, checkfirst=True)
    return 3


# version found -> step that upgrades it (returns the version reached)
MIGRATIONS: dict[int, Callable[[Connection], int]] = {0: _create_latest, 1: _migrate_sqlite_v1, 2: _migrate_v2}


def ensure_schema(entry: _EngineEntry, dialect: str, display_target: str) -> None:
    """Create or migrate the store's schema to :data:`SCHEMA_VERSION` (once per engine when current).

    Raises :class:`StoreSchemaError` for a store of a newer airflow-neo.
    """
    engine = entry.engine
    is_sqlite = dialect == "sqlite"
    with entry.lock:
        if is_sqlite:
            enable_wal(engine)
        try:
            version = _fast_schema_version(engine)
        except sa.exc.DBAPIError:
            version = -1  # no neo_meta table yet (or unreadable): decide under the migration lock
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise _too_new(display_target, version)
        with write_transaction(engine) as conn:
            if dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            version = schema_version(conn, is_sqlite)
            if version > SCHEMA_VERSION:
                raise _too_new(display_target, version)
            while version < SCHEMA_VERSION:
                version = MIGRATIONS[version](conn)
            _set_version(conn, SCHEMA_VERSION)


def schema_version(conn: Connection, is_sqlite: bool) -> int:
    """The schema version of the store on ``conn`` (0: no store yet)."""
    inspector = sa.inspect(conn)
    if inspector.has_table("neo_meta"):
        value = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
        return int(value) if value is not None else 0
    if is_sqlite and inspector.has_table("meta"):  # schema 1 (airflow-neo 0.1)
        value = conn.exec_driver_sql("SELECT value FROM meta WHERE key='schema_version'").scalar()
        return int(value) if value is not None else 0
    return 0


def _fast_schema_version(engine: sa.engine.Engine) -> int:
    with engine.connect() as conn:
        value = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
    return int(value) if value is not None else 0


def _set_version(conn: Connection, version: int) -> None:
    updated = conn.execute(sa.update(META).where(META.c.key == "schema_version").values(value=str(version))).rowcount
    if not updated:
        conn.execute(sa.insert(META).values(key="schema_version", value=str(version)))


def _too_new(display_target: str, version: int) -> StoreSchemaError:
    return StoreSchemaError(
        f"Job store {display_target} has schema version {version}; this airflow-neo knows up to "
        f"{SCHEMA_VERSION}. Upgrade airflow-neo or use another store."
    )
