"""The local backend's job store: compilation jobs in SQLite (the default) or a shared database.

Every job is kept with the fields of the SageMaker API (``DescribeCompilationJob`` and
``ListCompilationJobs`` answer in the API's shapes, key order and wording) plus a few private
runner fields (owner host, pid, lease, stop request).

The parts, each with the invariants it keeps in its own docstring:

* ``engines.py``: store targets (a file path for SQLite, or a SQLAlchemy URL such as
  ``postgresql://user:password@host/db`` for a database shared by many workers, the triggerer and
  the CLI), the per-process engine cache and fork handling, SQLite's WAL mode and
  ``BEGIN IMMEDIATE`` writes;
* ``schema.py``: tables ``neo_jobs`` and ``neo_meta``, the schema version and its migrations
  (the schema-1 SQLite files of airflow-neo 0.1 are migrated in place);
* ``records.py``: :class:`JobRecord`, one job typed, and its shaping into the API's payloads
  (the one place where payloads are made);
* ``listing.py``: ListCompilationJobs argument checks, filters and keyset paging (NextToken);
* ``liveness.py``: runner liveness (pid, process start, PID namespace, boot id, leases) and the
  reap of jobs whose runner is gone;
* ``naming.py``: job ARNs and artifact locations;
* ``connection.py`` and ``jobs.py``: :class:`JobStore` (a :class:`StoreConnection` plus the
  jobs: create, get/status/describe, list, and the conditional-UPDATE status transitions).

Nothing here imports Airflow. Everything importable from ``airflow_neo.local.store`` before it
became a package still is.
"""

from __future__ import annotations

from airflow_neo.local.store.connection import HOST_ENV, StoreConnection
from airflow_neo.local.store.engines import (
    BUSY_TIMEOUT_MS,
    MAX_CACHED_ENGINES,
    STORE_URL_ENV,
    StoreConfigError,
    default_work_root,
    is_store_url,
    store_url,
)
from airflow_neo.local.store.jobs import DEFAULT_START_LEASE_SECONDS, JobStore, open_store
from airflow_neo.local.store.listing import (
    DEFAULT_MAX_RESULTS,
    LIST_FILTERS,
    SORT_BY,
    SORT_ORDER,
    InvalidListRequest,
    ListQuery,
)
from airflow_neo.local.store.liveness import boot_id, pid_alive, pid_namespace, process_start_token
from airflow_neo.local.store.naming import (
    DEFAULT_ACCOUNT,
    DEFAULT_REGION,
    archive_stem,
    artifact_uri_for,
    compilation_job_arn,
    target_label,
)
from airflow_neo.local.store.records import MAX_FAILURE_REASON, JobRecord
from airflow_neo.local.store.schema import JOBS, META, METADATA, SCHEMA_VERSION, StoreSchemaError
from airflow_neo.local.store.slots import QueueState, SlotQueue

__all__ = [
    "BUSY_TIMEOUT_MS",
    "DEFAULT_ACCOUNT",
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_REGION",
    "DEFAULT_START_LEASE_SECONDS",
    "HOST_ENV",
    "JOBS",
    "LIST_FILTERS",
    "MAX_CACHED_ENGINES",
    "MAX_FAILURE_REASON",
    "META",
    "METADATA",
    "SCHEMA_VERSION",
    "SORT_BY",
    "SORT_ORDER",
    "STORE_URL_ENV",
    "InvalidListRequest",
    "JobRecord",
    "JobStore",
    "ListQuery",
    "QueueState",
    "SlotQueue",
    "StoreConfigError",
    "StoreConnection",
    "StoreSchemaError",
    "archive_stem",
    "artifact_uri_for",
    "boot_id",
    "compilation_job_arn",
    "default_work_root",
    "is_store_url",
    "open_store",
    "pid_alive",
    "pid_namespace",
    "process_start_token",
    "store_url",
    "target_label",
]
