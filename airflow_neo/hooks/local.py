"""Hook for compilation jobs run by the local backend: compiled in the worker with Apache TVM."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow_neo.core.backends import Backend
from airflow_neo.hooks.base import CompilationJobHook

if TYPE_CHECKING:
    from airflow_neo.core.validation import ValidatedRequest
    from airflow_neo.hooks.params import NeoConnectionParams
    from airflow_neo.local.config import LocalJobConfig


def local_job_config(
    *,
    store: str | None = None,
    work_dir: str | None = None,
    memory_limit_bytes: int | None = None,
    aws_conn_id: str | None = None,
) -> LocalJobConfig:
    """The local backend's configuration, read from ``[neo]`` once; the arguments given win.

    * ``store``: ``[neo] local_store_conn_id`` (an Airflow connection to a PostgreSQL database,
      shared by every worker and the triggerer), else ``[neo] local_store`` (a SQLite file path
      or a SQLAlchemy URL), else ``$AIRFLOW_HOME/neo/jobs.sqlite``;
    * ``work_dir``: ``[neo] local_work_dir``, this machine's directory for job logs and compile
      work dirs (empty: next to a SQLite store's file, or ``$AIRFLOW_HOME/neo`` for a store on a
      database server);
    * ``memory_limit_bytes``: ``[neo] local_memory_limit_mb`` (0: no cap; empty: derived so that
      slots x cap fits the host's memory, at most 8192 MiB: :mod:`airflow_neo.local.slots`);
    * ``max_concurrent_compiles``: ``[neo] local_max_concurrent_compiles`` (0 or empty:
      ``min(cpus, memory // cap)``, at least 1); ``max_concurrent_compiles_cluster``:
      ``[neo] local_max_concurrent_compiles_cluster`` (0: no cluster-wide cap);
    * ``lease_seconds``: ``[neo] local_lease_seconds`` (0: 30);
    * ``allowed_paths``: ``[neo] local_allowed_paths`` (see :func:`allowed_paths_option`);
    * ``compile``: ``[neo] tuning_trials``, ``tuning_database``, ``cache_dir``, ``cache_max_bytes``,
      ``rpc_tracker``, ``rpc_keys``, ``tuning_pack``, ``verify``, ``verify_rtol``, ``profile_seconds``.
    """
    from airflow.sdk.configuration import conf

    from airflow_neo.local.config import DEFAULT_LEASE_SECONDS, LocalJobConfig
    from airflow_neo.local.slots import resolve_slots_and_cap
    from airflow_neo.local.settings import (
        DEFAULT_CACHE_MAX_BYTES,
        DEFAULT_PROFILE_SECONDS,
        DEFAULT_TUNING_TRIALS,
        DEFAULT_VERIFY,
        CompileSettings,
    )

    def text(option: str) -> str | None:
        value = (conf.get("neo", option, fallback="") or "").strip()
        return value or None

    def path(option: str) -> str | None:
        value = text(option)
        return os.path.expanduser(value) if value else None

    if store is None:
        conn_id = text("local_store_conn_id")
        if conn_id:
            store = store_url_for_connection(conn_id)
        else:
            home = os.environ.get("AIRFLOW_HOME") or conf.get("core", "airflow_home", fallback="~/airflow")
            store = path("local_store") or str(Path(os.path.expanduser(home)) / "neo" / "jobs.sqlite")
    cap_given = bool(memory_limit_bytes) or text("local_memory_limit_mb") is not None
    if not memory_limit_bytes and cap_given:
        mb = _count_option("local_memory_limit_mb", text("local_memory_limit_mb"))
        memory_limit_bytes = mb * 1024 * 1024 if mb > 0 else None
    slots, memory_limit_bytes = resolve_slots_and_cap(
        _count_option("local_max_concurrent_compiles", text("local_max_concurrent_compiles")) or None,
        memory_limit_bytes, cap_given=cap_given)
    lease = conf.getfloat("neo", "local_lease_seconds", fallback=0.0)
    return LocalJobConfig(
        store=store,
        work_dir=work_dir or path("local_work_dir"),
        memory_limit_bytes=memory_limit_bytes,
        lease_seconds=lease if lease > 0 else DEFAULT_LEASE_SECONDS,
        aws_conn_id=aws_conn_id,
        max_concurrent_compiles=slots,
        max_concurrent_compiles_cluster=_count_option(
            "local_max_concurrent_compiles_cluster", text("local_max_concurrent_compiles_cluster")),
        allowed_paths=allowed_paths_option(),
        compile=CompileSettings(
            tuning_trials=conf.getint("neo", "tuning_trials", fallback=DEFAULT_TUNING_TRIALS),
            tuning_database=path("tuning_database"),
            cache_dir=path("cache_dir"),
            cache_max_bytes=conf.getint("neo", "cache_max_bytes", fallback=DEFAULT_CACHE_MAX_BYTES),
            rpc_tracker=text("rpc_tracker"),
            rpc_keys=text("rpc_keys"),
            tuning_pack=conf.getboolean("neo", "tuning_pack", fallback=True),
            verify=text("verify") or DEFAULT_VERIFY,
            verify_rtol=_float_option("verify_rtol", text("verify_rtol")),
            profile_seconds=_float_option("profile_seconds", text("profile_seconds")) if text("profile_seconds")
            else DEFAULT_PROFILE_SECONDS,
        ),
    )


def allowed_paths_option() -> tuple[str, ...]:
    """``[neo] local_allowed_paths``: the roots a local job's ``file://`` and absolute paths must lie
    under (:mod:`airflow_neo.local.confinement`). Empty: ``$AIRFLOW_HOME`` and the system temp
    dir; ``*``: every path; else comma-separated absolute directories."""
    from airflow.sdk.configuration import conf

    from airflow_neo.local.confinement import parse_allowed_paths

    home = os.environ.get("AIRFLOW_HOME") or conf.get("core", "airflow_home", fallback="~/airflow")
    return parse_allowed_paths(conf.get("neo", "local_allowed_paths", fallback=""), airflow_home=home)


def _count_option(option: str, value: str | None) -> int:
    """``[neo] option`` as a whole number >= 0 (0 when empty); else a ValueError naming it and the value."""
    if value is None:
        return 0
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise ValueError(f"[neo] {option} must be a whole number >= 0; got {value!r}")
    return number


def _float_option(option: str, value: str | None) -> float | None:
    """``[neo] option`` as a float (None when empty); else a ValueError naming it and the value."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"[neo] {option} must be a number (or empty); got {value!r}") from None


STORE_CONN_TYPES = {"postgres": "postgresql", "postgresql": "postgresql"}
_PG_QUERY_KEYS = (
    "sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "options", "connect_timeout", "application_name",
    "target_session_attrs", "keepalives", "keepalives_idle",
)


def store_url_for_connection(conn_id: str) -> str:
    """The SQLAlchemy URL (password included) of the job store behind an Airflow connection.

    A Postgres connection (``conn_type`` ``postgres``): host, port, login, password, and the
    database in ``schema``; libpq options (``sslmode``, ``sslrootcert``, ``options``...) from the
    extra. The driver is psycopg2 when installed, else psycopg 3. An extra ``sqlalchemy_url``
    (any connection type) is used as it is.
    """
    from sqlalchemy.engine import URL

    from airflow_neo.local.store import StoreConfigError

    connection = BaseHook.get_connection(conn_id)
    extra = connection.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    conn_type = (connection.conn_type or "").lower()
    if conn_type not in STORE_CONN_TYPES:
        raise StoreConfigError(
            f"[neo] local_store_conn_id: connection {conn_id!r} is of type {conn_type!r}; the job store needs a "
            "Postgres connection (or a sqlalchemy_url in the connection's extra)"
        )
    url = URL.create(
        f"postgresql+{_postgres_driver()}",
        username=connection.login or None,
        password=connection.password or None,
        host=connection.host or None,
        port=int(connection.port) if connection.port else None,
        database=connection.schema or None,
        query={key: str(extra[key]) for key in _PG_QUERY_KEYS if extra.get(key) not in (None, "")},
    )
    return url.render_as_string(hide_password=False)


def _postgres_driver() -> str:
    import importlib.util

    if importlib.util.find_spec("psycopg2") is not None:
        return "psycopg2"
    if importlib.util.find_spec("psycopg") is not None:
        return "psycopg"
    return "psycopg2"  # the store then says which package to install


class LocalNeoHook(CompilationJobHook, BaseHook):
    """
    Compilation jobs compiled on this worker with Apache TVM, recorded in a local job store.

    The methods of :class:`~airflow_neo.hooks.base.CompilationJobHook`, with the same return
    shapes as :class:`~airflow_neo.hooks.neo.NeoHook`. Each job runs in
    a detached runner process (so it goes on while a deferrable task waits in the triggerer),
    which compiles in a child process with the job's MaxRuntimeInSeconds and a memory cap.

    :param aws_conn_id: AWS connection used for ``s3://`` input and output locations.
    :param region_name: region of that connection.
    :param verify: SSL verification for S3.
    :param botocore_config: botocore config for S3.
    :param store_path: the job store: a SQLite file path or a SQLAlchemy URL (default: see
        :func:`local_job_config`, i.e. ``[neo] local_store_conn_id`` or ``[neo] local_store``).
    :param work_dir: this machine's directory for job logs and work dirs (default
        ``[neo] local_work_dir``).
    :param memory_limit_bytes: address-space cap of the compile process (default
        ``[neo] local_memory_limit_mb``).
    """

    hook_name = "SageMaker Neo (local TVM backend)"
    backend = Backend.LOCAL
    allow_local_uris = True

    @classmethod
    def check_backend(cls, request: ValidatedRequest) -> None:
        """What the local backend surely cannot do is refused before anything is recorded.

        An unsupported framework or target, a model file that does not exist, a
        ModelPackageVersionArn (:mod:`airflow_neo.local.preflight`; cheap, no TVM); a local path
        outside ``[neo] local_allowed_paths``.
        """
        from airflow_neo.local.preflight import check_local_request

        check_local_request(request, allowed_paths_option())

    def __init__(
        self,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        store_path: str | None = None,
        memory_limit_bytes: int | None = None,
        work_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config
        self.store_path = store_path
        self.memory_limit_bytes = memory_limit_bytes
        self.work_dir = work_dir

    @classmethod
    def from_connection_params(cls, params: NeoConnectionParams) -> LocalNeoHook:
        return cls(
            aws_conn_id=params.aws_conn_id,
            region_name=params.region_name,
            verify=params.verify,
            botocore_config=params.botocore_config,
            store_path=params.local_store,
        )

    @cached_property
    def store(self):
        """The job store, opened once (also when the triggers' polling first asks from several threads)."""
        from airflow_neo.local.store import open_store

        with _STORE_OPEN_LOCK:
            if "store" in self.__dict__:  # opened by another thread meanwhile
                return self.__dict__["store"]
            return open_store(self.job_config.store, work_dir=self.job_config.work_dir)

    @cached_property
    def job_config(self) -> LocalJobConfig:
        """This hook's :class:`~airflow_neo.local.config.LocalJobConfig`: its arguments over the
        ``[neo]`` options, read once (see :func:`local_job_config`)."""
        return local_job_config(store=self.store_path, work_dir=self.work_dir, memory_limit_bytes=self.memory_limit_bytes)

    def create_compilation_job(self, request: dict | ValidatedRequest, *, tuning_trials: int | None = None,
                               verify_mode: str | None = None, verify_inputs: str | None = None) -> dict:
        """Validate, record the job (STARTING) and start its runner; return the create response.

        Raises InvalidCompilationRequest, with nothing recorded, for a bad request and for what
        the local backend knows it cannot do (framework, target, a missing model file: see
        :mod:`airflow_neo.local.preflight`).

        :param tuning_trials: MetaSchedule trials the model may get (default ``[neo] tuning_trials``;
            0: no tuning, records already in the tuning database are still applied). See
            :mod:`airflow_neo.local.tuning`.
        :param verify_mode: ``"gate"``, ``"report"`` or ``"off"`` (default ``[neo] verify``): the check of
            the artifact against the source framework (:mod:`airflow_neo.local.verify`).
        :param verify_inputs: the URI of an ``.npz`` of sample inputs the verification runs on
            (``s3://``, ``file://`` or an absolute path); default: the archive's ``.npz``, else random inputs.
        """
        import dataclasses

        from airflow_neo.local.runner import launch_detached

        config = self.job_config.with_tuning_trials(tuning_trials)
        if verify_mode is not None:
            config = config.replace(compile=dataclasses.replace(config.compile, verify=verify_mode))
        if verify_inputs is not None:
            config = config.replace(compile=dataclasses.replace(config.compile, verify_inputs=verify_inputs))
        request = self.validate(request)
        from airflow_neo.local.preflight import check_local_paths

        check_local_paths(request, config.allowed_paths, verify_inputs=config.compile.verify_inputs)
        name = request.name
        uses_s3 = _uses_s3(request.payload) or str(verify_inputs or "").startswith("s3://")
        if uses_s3:
            config = config.replace(aws_conn_id=self.aws_conn_id)
        self.store.create(request)
        try:
            pid = launch_detached(self.store, name, config=config, env=self._connection_env() if uses_s3 else None)
        except Exception as err:
            from airflow_neo.local.errors import SERVER_ERROR, neo_reason

            self.store.fail(name, neo_reason(SERVER_ERROR, None, f"Could not start the local compile runner: {err}"))
            raise
        self.log.info("Compilation job %s started locally (runner pid %s, log %s)", name, pid, self.store.log_path(name))
        return {"CompilationJobArn": self.store.arn(name)}

    def _connection_env(self) -> dict[str, str]:
        """The AWS connection, handed to the detached runner as an ``AIRFLOW_CONN_*`` variable.

        A runner is not a task process, so it cannot ask the task supervisor for connections;
        the task resolves the connection (from any secrets backend) and passes it on.
        """
        if not self.aws_conn_id:
            return {}
        connection = self.get_connection(self.aws_conn_id)
        extra = dict(connection.extra_dejson)
        if self.region_name:
            extra["region_name"] = self.region_name
        if self.verify is not None:
            extra["verify"] = self.verify
        if self.botocore_config:
            extra["config_kwargs"] = self.botocore_config
        payload = json.loads(connection.as_json())
        payload["extra"] = json.dumps(extra)
        return {f"AIRFLOW_CONN_{self.aws_conn_id.upper()}": json.dumps(payload)}

    def describe_compilation_job(self, name: str) -> dict:
        return self.store.describe(name)

    def describe_compilation_jobs(self, names: Iterable[str]) -> dict[str, dict]:
        """Every job of ``names`` in one store query (a missing job has no entry)."""
        return self.store.describe_many(names)

    def list_compilation_jobs_page(self, **kwargs: Any) -> dict:
        """One ListCompilationJobs page of the job store (``NextToken``/``MaxResults`` honoured)."""
        return self.store.list(**kwargs)

    def stop_compilation_job(self, name: str) -> None:
        self.log.info("Stopping compilation job %s", name)
        self.store.request_stop(name)

    def delete_compilation_job(self, name: str) -> None:
        self.log.info("Deleting compilation job %s", name)
        self.store.delete(name)

    def list_compilation_job_tags(self, name: str) -> list[dict]:
        return self.store.tags(name)

    async def adescribe_compilation_job(self, name: str) -> dict:
        return await asyncio.to_thread(self.describe_compilation_job, name)

    async def astop_compilation_job(self, name: str) -> None:
        await asyncio.to_thread(self.stop_compilation_job, name)

    def compilation_report(self, name: str, *, payload: dict | None = None) -> dict:
        """The job's report from its artifact's ``metadata.json`` (verification and profile).

        An ``s3://`` artifact is read through this hook's AWS connection. A job that did not
        complete, or whose metadata cannot be read, gets a report with ``available`` False and
        the reason (never an exception: the report must not change the task's outcome).
        """
        from airflow_neo.core.report import build_report
        from airflow_neo.core.status import COMPLETED

        payload = payload if payload is not None else self.describe_compilation_job(name)
        artifact = (payload.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if payload.get("CompilationJobStatus") != COMPLETED or not artifact:
            return build_report(payload, None)
        from airflow_neo.runtime import read_metadata

        try:
            metadata = read_metadata(artifact, s3_client=self._s3_client() if artifact.startswith("s3://") else None)
        except Exception as err:  # noqa: BLE001 - see the docstring
            return build_report(payload, None, unavailable_reason=f"could not read metadata.json of {artifact}: "
                                                                  f"{type(err).__name__}: {err}")
        return build_report(payload, metadata)

    def _s3_client(self):
        """A boto3 S3 client from this hook's AWS connection (region, verify, botocore config)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                      config=self.botocore_config).get_conn()

    def job_log(self, name: str) -> str:
        """The runner's log of the job (progress and phase timings)."""
        path = self.store.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""


_STORE_OPEN_LOCK = threading.Lock()


def _uses_s3(request: dict) -> bool:
    uris = [(request.get("InputConfig") or {}).get("S3Uri", ""), request["OutputConfig"]["S3OutputLocation"]]
    return any(uri.startswith(("s3://", "https://")) for uri in uris)
