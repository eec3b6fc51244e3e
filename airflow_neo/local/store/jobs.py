"""The jobs in a store: create, read, list, and every status transition.

Every job is kept with the fields of the SageMaker API plus a few private runner fields (owner
host, pid, lease, stop request). Reads return typed :class:`JobRecord`\\ s (``get``, ``status``);
the API's payloads (``describe``, ``describe_many``, ``list``) are shaped from records in
``records.py`` only.

Status transitions: STARTING -> INPROGRESS (a runner picked the job up) -> COMPLETED | FAILED |
STOPPED, with STOPPING in between when a stop is requested. Every transition is one conditional
``UPDATE ... WHERE name = ? AND status IN (...)``, so two processes (or hosts) can never both win
one; a transition that lost returns False (or raises CompilationJobNotFound when the job is gone).

A runner may first queue its STARTING job for a compile slot of its host (``slots.py``).

Reads, ``request_stop`` and ``delete`` first end the jobs concerned whose runner is gone (see
``liveness.py``), so nobody sees a dead job as running.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import CompilationJobExists, CompilationJobNotFound, CompilationJobStateError
from airflow_neo.local.store.connection import StoreConnection
from airflow_neo.local.store.listing import ListQuery
from airflow_neo.local.store.liveness import RUNNING
from airflow_neo.local.store.records import JobRecord, clip_reason, dumps_or_none, new_job_row
from airflow_neo.local.store.schema import JOBS
from airflow_neo.local.store.slots import QUEUED

if TYPE_CHECKING:
    from airflow_neo.core.validation import ValidatedRequest

DEFAULT_START_LEASE_SECONDS = 120
_IN_CHUNK = 1000  # names per ``IN (...)`` in batched reads


class JobStore(StoreConnection):
    """A multi-process (and, on a database server, multi-host) store of local compilation jobs.

    Opened on a file path or SQLAlchemy URL; see :class:`StoreConnection` for the parameters.
    """

    # ---------------------------------------------------------------- create

    def create(self, request: ValidatedRequest | dict, *, lease_seconds: float = DEFAULT_START_LEASE_SECONDS) -> dict:
        """Record a new job in status STARTING; returns the API's ``{"CompilationJobArn": ...}``.

        ``request`` is a :class:`ValidatedRequest` (taken as it is) or a plain dict, validated and
        normalized here (local ``file://`` URIs and absolute paths allowed). A runner must mark the
        job INPROGRESS within ``lease_seconds``, or the job is marked FAILED. Raises
        :class:`CompilationJobExists` (the API's ResourceInUse) when the name is taken, also when
        another process or host creates the same name at the same moment.
        """
        from airflow_neo.core.validation import validate_request

        req = validate_request(request, allow_local_uris=True).payload
        name = req["CompilationJobName"]
        now = self._now_us()
        arn = self.arn(name)
        values = new_job_row(req, arn=arn, now_us=now, lease_expires_us=now + int(lease_seconds * 1_000_000))
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
        """The job ``name`` as a typed :class:`JobRecord` (a dead runner is detected first).

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
        """The job's status (CompilationJobStatus), as :meth:`get` sees it; raises CompilationJobNotFound."""
        return self.get(name).status

    def describe(self, name: str) -> dict:
        """The DescribeCompilationJob response for ``name``: API key order, JSON-safe, absent fields omitted."""
        return self.get(name).to_describe()

    def describe_many(self, names: Iterable[str]) -> dict[str, dict]:
        """DescribeCompilationJob for many jobs in one query per 1,000 names: ``{name: payload}``.

        Names that do not exist are left out. Dead runners are detected as in :meth:`describe`.
        """
        wanted = list(dict.fromkeys(names))
        rows = self._rows_named(wanted)
        rows.update(self._rows_named(self._reap_rows(list(rows.values()))))
        return {name: JobRecord.from_row(rows[name]).to_describe() for name in wanted if name in rows}

    def _rows_named(self, names: list[str]) -> dict[str, Mapping[str, Any]]:
        rows: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(names), _IN_CHUNK):
            for row in self._read(sa.select(JOBS).where(JOBS.c.name.in_(names[start : start + _IN_CHUNK]))):
                rows[row["name"]] = row
        return rows

    def exists(self, name: str) -> bool:
        return bool(self._read(sa.select(JOBS.c.name).where(JOBS.c.name == name)))

    def get_request(self, name: str) -> dict:
        """The job's CreateCompilationJob request (normalized, with Tags) as it was stored."""
        row = self._row(name)
        if row is None:
            raise self._not_found(name)
        return JobRecord.from_row(row).to_request()

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

    def list(self, **filters: Any) -> dict:
        """ListCompilationJobs: the API's filters, sorting and NextToken paging.

        Accepted keyword arguments: CreationTimeAfter, CreationTimeBefore, LastModifiedTimeAfter,
        LastModifiedTimeBefore (datetimes, ISO-8601 strings or epoch seconds; strict comparisons),
        NameContains (case-insensitive), StatusEquals, SortBy (Name|CreationTime|Status, default
        CreationTime), SortOrder (Ascending|Descending, default Descending), MaxResults (1-100,
        default 100), NextToken. Returns ``{"CompilationJobSummaries": [...]}`` plus ``"NextToken"``
        when more results remain. Raises :class:`InvalidListRequest` for bad arguments.
        """
        query = ListQuery.parse(filters)
        self.reap()
        return query.page(self._read(query.statement()))

    # ---------------------------------------------------------------- transitions

    def mark_inprogress(self, name: str, owner_host: str, pid: int, lease_seconds: float) -> bool:
        """STARTING -> INPROGRESS, recording the runner (host, pid) and its lease.

        Returns False (and changes nothing) when the job is not STARTING any more (a stop was
        requested, or it was already picked up or ended). Raises CompilationJobNotFound.
        """
        now = self._now_us()
        values = {
            "status": st.INPROGRESS,
            "owner_host": owner_host,
            "pid": pid,
            **self._reaper.runner_fields(owner_host, pid),
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
                .where(JOBS.c.name == name, JOBS.c.status.in_(RUNNING))
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
        self, name: str, artifact_uri: str, digest: str, derived_data_input_config: str | None, *, metadata: dict | None = None
    ) -> bool:
        """INPROGRESS/STOPPING -> COMPLETED with the published artifact; False when no longer running."""
        now = self._now_us()
        values = {
            "status": st.COMPLETED,
            "s3_model_artifacts": artifact_uri,
            "artifact_digest": digest,
            "derived_data_input_config": derived_data_input_config,
            "compile_metadata": dumps_or_none(metadata),
            "failure_reason": "",
            "end_us": now,
            "last_modified_us": now,
            "lease_expires_us": None,
        }
        return self._transition(name, values, (st.INPROGRESS, st.STOPPING))

    def fail(self, name: str, reason: str) -> bool:
        """A running job -> FAILED with ``reason`` (cut to the API's 1024 characters); False when not running."""
        now = self._now_us()
        values = {"status": st.FAILED, "failure_reason": clip_reason(reason), "end_us": now, "last_modified_us": now, "lease_expires_us": None}
        return self._transition(name, values, RUNNING)

    def mark_stopped(self, name: str) -> bool:
        """A running job -> STOPPED; False when not running."""
        now = self._now_us()
        values = {"status": st.STOPPED, "end_us": now, "last_modified_us": now, "lease_expires_us": None}
        return self._transition(name, values, RUNNING)

    def _existing_status(self, conn: Connection, name: str) -> str:
        status = _status(conn, name)
        if status is None:
            raise self._not_found(name)
        return status

    def _write_existing(self, name: str):
        """A write transaction on a job that must exist; a missing SQLite store is not created for it."""
        if self.is_missing:
            raise self._not_found(name)
        return self._write()

    def _transition(self, name: str, values: dict[str, Any], from_states: tuple[str, ...]) -> bool:
        with self._write_existing(name) as conn:
            changed = conn.execute(
                sa.update(JOBS).where(JOBS.c.name == name, JOBS.c.status.in_(from_states)).values(**values)
            ).rowcount
            if changed:
                return True
            self._existing_status(conn, name)
            return False

    def request_stop(self, name: str) -> None:
        """StopCompilationJob: STARTING/INPROGRESS -> STOPPING (the runner then stops and records STOPPED).

        The request is recorded in the store; the runner that owns the job sees it at its next
        lease renewal, wherever it runs. Stopping a STOPPING job is a no-op. Raises
        CompilationJobNotFound for an unknown job and CompilationJobStateError (the API's
        ValidationException) for a COMPLETED/FAILED/STOPPED one. A job queued for a compile slot
        (``slots.py``) has nothing to stop: it is STOPPED at once and never takes its slot.
        """
        self.reap(name)
        now = self._now_us()
        with self._write_existing(name) as conn:
            status = self._existing_status(conn, name)
            if status in st.TERMINAL_STATES:
                raise CompilationJobStateError(
                    f"The request was rejected because the compilation job '{name}' is in status {status}; "
                    "only a STARTING or INPROGRESS job can be stopped."
                )
            if conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.name == name, JOBS.c.status == st.STARTING, JOBS.c.slot_state == QUEUED)
                .values(stop_requested=1, status=st.STOPPED, end_us=now, last_modified_us=now, lease_expires_us=None)
            ).rowcount:
                return
            conn.execute(
                sa.update(JOBS)
                .where(JOBS.c.name == name, JOBS.c.status.in_(RUNNING))
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
        self.reap(name)
        with self._write_existing(name) as conn:
            status = self._existing_status(conn, name)
            if status not in st.TERMINAL_STATES:
                raise CompilationJobStateError(
                    f"The request was rejected because the compilation job '{name}' is in status {status}; "
                    "only a COMPLETED, FAILED or STOPPED job can be deleted. Stop it first."
                )
            conn.execute(sa.delete(JOBS).where(JOBS.c.name == name))


def open_store(target: Any, **kwargs: Any) -> JobStore:
    """The job store at ``target``: a :class:`JobStore` (returned as is), a file path, or a SQLAlchemy URL.

    Keyword arguments go to :class:`JobStore` (``work_dir``, ``region``, ``account``, ``host``...).
    """
    if isinstance(target, JobStore):
        return target
    return JobStore(target, **kwargs)


def _status(conn: Connection, name: str) -> str | None:
    return conn.execute(sa.select(JOBS.c.status).where(JOBS.c.name == name)).scalar()
