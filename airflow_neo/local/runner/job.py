"""One recorded compilation job, run to its end: fetch -> cache -> compile -> publish -> record.

Invariants:

* a job is run only after it took a compile slot of its host (:class:`.watch.SlotWait`: queued
  STARTING in creation order while ``max_concurrent_compiles`` jobs compile here, then one
  conditional STARTING -> INPROGRESS claim, so one runner per job); its lease is renewed while it
  waits and until the run ends (:mod:`.watch`);
* everything the job writes on this machine is inside its own work dir
  (``<work root>/work/<job>-XXXX``: input, compile, output), removed in ``finally`` whatever
  happens to the compile child; work dirs of runners that were killed are removed by the next run
  once their job no longer runs;
* the artifact is published only after the compile (or a cache hit) and before COMPLETED is
  recorded; if the job cannot be recorded COMPLETED, or fails after publishing, the artifact is
  removed again, so a location never holds an artifact of a job that did not complete;
* every ending is recorded exactly once (:mod:`.outcomes`), with the phase timings logged last;
  every FailureReason is in SageMaker Neo's form: a :class:`~.outcomes.Failed` carries its own, a
  signal to the runner or an unexpected supervisor error is a ``ServerError: ...``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.local.config import DEFAULT_LEASE_SECONDS, LocalJobConfig
from airflow_neo.local.errors import SERVER_ERROR, neo_reason
from airflow_neo.local.runner.child import CompileChild, CompileFn
from airflow_neo.local.runner.outcomes import Failed, Lost, Stopped, Terminated
from airflow_neo.local.runner.tiers import JobCache
from airflow_neo.local.runner.transfer import Transfer, s3_client_factory_for
from airflow_neo.local.runner.tuning_sync import TuningSync
from airflow_neo.local.runner.watch import JobWatch, SlotWait
from airflow_neo.local.settings import CompileSettings
from airflow_neo.local.store import JobStore, artifact_uri_for, open_store

__all__ = ["JobRun", "job_config", "run_job"]


class JobRun:
    """Runs the recorded job ``name`` once (see the module docstring).

    :param config: the job's config; its compile settings resolved against the store's directory.
    """

    def __init__(self, store: JobStore, name: str, logger: logging.Logger, *, config: LocalJobConfig,
                 compile_fn: CompileFn | str | None, s3_client_factory: Callable[[], Any] | None,
                 poll_interval: float):
        self.store, self.name, self.log, self.config = store, name, logger, config
        self.timings: dict[str, float] = {}
        self.transfer = Transfer(logger, s3_client_factory, allowed_paths=config.allowed_paths)
        self.child = CompileChild(compile_fn, config, logger, poll_interval)
        self.cache = JobCache(config.compile, self.child.compile_fn, self.transfer.s3_client, logger, self.timings)
        self.tuning = TuningSync(config.compile, self.transfer.s3_client, logger, self.timings)
        self.watch = JobWatch(store, name, lease_seconds=config.lease_seconds, poll_interval=poll_interval,
                              logger=logger)
        self.slot = SlotWait(store, name, limit=config.max_concurrent_compiles,
                             cluster_limit=config.max_concurrent_compiles_cluster,
                             lease_seconds=config.lease_seconds, poll_interval=poll_interval, logger=logger)

    def execute(self) -> str:
        store, name = self.store, self.name
        try:
            if not self.slot.take(os.getpid()):
                return self._not_runnable()
        except Terminated as term:  # while queued: nothing to clean up but the record
            self._record_terminated(term)
            raise
        self.log.info("job INPROGRESS (runner pid %s on %s)", os.getpid(), store.host)
        self.watch.start()
        store.work_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_work_dirs(store, self.log)
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=store.work_dir))
        published: str | None = None
        try:
            request = self._request()
            with self._phase("fetch"):
                archive = self.transfer.fetch(request.input_config["S3Uri"], workdir / "input")
            self.watch.check()
            artifact = workdir / "output" / "model.tar.gz"
            artifact.parent.mkdir()
            metadata = self._from_cache_or_compile(request, archive, artifact, workdir / "compile")
            self.watch.check()
            if not artifact.is_file():
                raise Failed(f"The compiler reported success but wrote no artifact (expected {artifact.name})")
            destination = artifact_uri_for(request.payload)
            with self._phase("publish"):
                digest = self.transfer.publish(artifact, destination, request.output_config.get("KmsKeyId"))
                published = destination
            self._record(request, destination, digest, metadata)
            return st.COMPLETED
        except Stopped:
            store.mark_stopped(name)
            self.log.info("job STOPPED on request; nothing published")
            return st.STOPPED
        except Failed as failure:
            self._unpublish(published)
            store.fail(name, failure.reason)
            self.log.error("job FAILED: %s", failure.reason)
            return st.FAILED
        except Lost as lost:
            status = current_status(store, name)
            self.log.warning("job is no longer ours (%s); leaving it %s", lost, status)
            return status
        except Terminated as term:
            self._record_terminated(term)
            raise
        except BaseException as err:
            reason = neo_reason(SERVER_ERROR, None, f"Compile worker error: {type(err).__name__}: {err}")
            self.log.exception("unexpected supervisor error")
            self._unpublish(published)
            store.fail(name, reason)
            if not isinstance(err, Exception):
                raise
            return st.FAILED
        finally:
            self.watch.halt()
            shutil.rmtree(workdir, ignore_errors=True)
            self.timings["total"] = self.watch.elapsed()
            self.log.info("phase timings: %s", ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items()))

    # ---------------------------------------------------------------- the steps

    def _record_terminated(self, term: Terminated) -> None:
        reason = neo_reason(SERVER_ERROR, None, f"Compile worker was terminated by signal "
                            f"{signal.Signals(term.signum).name} before the job ended")
        self.store.fail(self.name, reason)
        self.log.error("job FAILED: %s", reason)

    def _not_runnable(self) -> str:
        """The job could not be claimed: a stop asked before it started ends it STOPPED."""
        status = self.store.status(self.name)
        if status == st.STOPPING and self.store.mark_stopped(self.name):
            self.log.info("job was stopped before it started: STOPPED")
            return st.STOPPED
        self.log.info("job is %s; nothing to run", status)
        return status

    def _request(self) -> ValidatedRequest:
        """The stored request (validated when it was created, so only parsed here) and its time limit."""
        request = ValidatedRequest.from_normalized(self.store.get_request(self.name))
        self.watch.limit((request.payload.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds"))
        if "InputConfig" not in request.payload:
            raise Failed(
                "ModelPackageVersionArn is not supported by the local backend: give InputConfig with the "
                "model archive's S3Uri instead"
            )
        return request

    def _from_cache_or_compile(self, request: ValidatedRequest, archive: Path, artifact: Path, work: Path) -> dict:
        """The artifact's metadata: from the compile cache, else from a compile (then cached)."""
        self.tuning.pull()
        metadata, base = self.cache.lookup(request, archive, artifact)
        if metadata is not None:
            return metadata
        try:
            with self._phase("compile"):
                metadata = self.child.run(request, archive, artifact, work, self.watch.check)
        finally:
            self.tuning.push()  # records tuned before a failed build are kept too
        self.cache.store(base, artifact, metadata)
        return metadata

    def _record(self, request: ValidatedRequest, destination: str, digest: str, metadata: Any) -> None:
        derived = derived_data_input_config(metadata, request)
        if not self.store.complete(self.name, destination, digest, derived, metadata=metadata):
            self.transfer.unpublish(destination)
            raise Lost(f"job is {current_status(self.store, self.name)}")
        self.log.info("job COMPLETED: %s (BLAKE2b %s...)", destination, digest[:16])

    def _unpublish(self, published: str | None) -> None:
        if published:
            self.transfer.unpublish(published)

    def _phase(self, phase: str) -> _PhaseTimer:
        return _PhaseTimer(self, phase)


class _PhaseTimer:
    """Logs a phase's start and end and keeps its duration in the run's timings."""

    def __init__(self, run: JobRun, phase: str):
        self.run, self.phase = run, phase

    def __enter__(self):
        self.start = time.monotonic()
        self.run.log.info("phase %s: started", self.phase)

    def __exit__(self, *exc):
        elapsed = time.monotonic() - self.start
        self.run.timings[self.phase] = elapsed
        self.run.log.info("phase %s: %s after %.2f s", self.phase, "failed" if exc[0] else "done", elapsed)


# --------------------------------------------------------------------------- helpers


def remove_stale_work_dirs(store: JobStore, logger: logging.Logger) -> None:
    """Remove work dirs left by runners that were killed (their job is no longer running or gone)."""
    try:
        entries = list(store.work_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        job, sep, _suffix = entry.name.rpartition("-")
        if not sep or not entry.is_dir():
            continue
        if current_status(store, job) in st.RUNNING_STATES:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("removed the stale work dir %s", entry.name)


def current_status(store: JobStore, name: str) -> str:
    try:
        return store.status(name)
    except CompilationJobNotFound:
        return "DELETED"


def derived_data_input_config(metadata: Any, request: ValidatedRequest) -> str | None:
    """DerivedDataInputConfig: what the compiler says it used, else the model's static input shapes
    (``metadata["inputs"]``), else the DataInputConfig the request gave."""
    value = None
    if isinstance(metadata, dict):
        for key in ("DerivedDataInputConfig", "derived_data_input_config"):
            if metadata.get(key) is not None:
                value = metadata[key]
                break
        if value is None:
            value = _static_input_shapes(metadata.get("inputs"))
        if value is None and metadata.get("data_input_config") is not None:
            value = metadata["data_input_config"]
    if value is None:
        value = request.input_config.get("DataInputConfig")
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _static_input_shapes(inputs: Any) -> dict | None:
    """``{name: shape}`` from the compiler's input specs when every input has a fully static shape."""
    if not isinstance(inputs, list) or not inputs:
        return None
    shapes = {}
    for spec in inputs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return None
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            return None
        shapes[spec["name"]] = shape
    return shapes


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


def _job_logger(store: JobStore, name: str) -> tuple[logging.Logger, list[logging.Handler]]:
    log_path = store.log_path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"airflow_neo.local.runner.job.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    formatter = _UTCFormatter(f"%(asctime)s.%(msecs)03dZ %(levelname)s [{name}] %(message)s", "%Y-%m-%dT%H:%M:%S")
    handlers: list[logging.Handler] = [logging.FileHandler(log_path, encoding="utf-8")]
    if not _stderr_is(log_path):
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger, handlers


def _stderr_is(path: Path) -> bool:
    """Whether stderr already writes to ``path`` (a detached runner), so lines are not doubled."""
    try:
        a, b = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# --------------------------------------------------------------------------- public API


def job_config(
    store_path: str | os.PathLike[str] | JobStore,
    config: LocalJobConfig | None,
    *,
    caller: str,
    memory_limit_bytes: int | None = None,
    lease_seconds: float | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    aws_conn_id: str | None = None,
    settings: CompileSettings | None = None,
) -> LocalJobConfig:
    """``config``, or (without one) a config made from the separate arguments of ``run_job`` and
    ``launch_detached``: no memory cap unless given, the default lease, default compile settings."""
    separate = (memory_limit_bytes, lease_seconds, work_dir, aws_conn_id, settings)
    if config is not None:
        if any(value is not None for value in separate):
            raise TypeError(f"{caller}: give either config or memory_limit_bytes/lease_seconds/work_dir/aws_conn_id/settings")
        return config
    return LocalJobConfig(
        store=str(store_path.target if isinstance(store_path, JobStore) else os.fspath(store_path)),
        work_dir=os.fspath(work_dir) if work_dir is not None else None,
        memory_limit_bytes=memory_limit_bytes,
        lease_seconds=lease_seconds or DEFAULT_LEASE_SECONDS,
        aws_conn_id=aws_conn_id,
        compile=settings if settings is not None else CompileSettings(),
    )


_OPEN_RETRY_SECONDS = 60.0


def _open_patiently(store_path: str | os.PathLike[str] | JobStore, config: LocalJobConfig) -> JobStore:
    """The job store, retrying for up to a minute while a database server has no connection slot
    left (its ``max_connections`` used up under load); any other error is raised at once."""
    deadline = time.monotonic() + _OPEN_RETRY_SECONDS
    pause = 0.2
    while True:
        try:
            return open_store(store_path, work_dir=config.work_dir)
        except sa.exc.OperationalError as err:
            full = any(text in str(err) for text in ("connection slots are reserved", "too many clients"))
            if not full or time.monotonic() + pause > deadline:
                raise
            first = (str(err).strip().splitlines() or [""])[0]
            print(f"job store not reachable yet (will retry): {first}", file=sys.stderr, flush=True)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def run_job(
    store_path: str | os.PathLike[str] | JobStore,
    name: str,
    *,
    config: LocalJobConfig | None = None,
    compile_fn: CompileFn | str | None = None,
    s3_client_factory: Callable[[], Any] | None = None,
    poll_interval: float = 0.5,
    memory_limit_bytes: int | None = None,
    lease_seconds: float | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    settings: CompileSettings | None = None,
) -> str:
    """Run the recorded job ``name`` to its end; returns its final status.

    :param store_path: the job store: a SQLite file path, a SQLAlchemy URL or a JobStore.
    :param config: the job's :class:`~airflow_neo.local.config.LocalJobConfig` (what the hook
        built; ``python -m airflow_neo.local.runner`` reads it from the environment). Without one,
        it is made from ``memory_limit_bytes``, ``lease_seconds``, ``work_dir`` and ``settings``
        (which may not be given with a config).
    :param compile_fn: ``compile_fn(request, archive_path, artifact_path, *, log, work_dir,
        tuning_trials, tuning_database) -> dict`` (``request`` a ValidatedRequest), a picklable
        module-level function or a ``"module:function"`` string; default
        ``airflow_neo.local.compiler.compile_model`` (imported in the compile child only).
    :param s3_client_factory: returns a boto3 S3 client, called at most once and only for s3://
        locations (default: from the config's ``aws_conn_id``, else ``boto3.client("s3")``).
    :param poll_interval: seconds between checks of the child, the stop flag and the time limit.
    :param memory_limit_bytes: RLIMIT_AS (address space) for the compile child; None for no cap.
    :param lease_seconds: the job's lease (default 30 s); renewed every ``min(poll_interval, lease / 3)``.
    :param work_dir: this machine's directory for job logs and work dirs (see JobStore).
    :param settings: tuning budget, tuning database and compile cache (default: CompileSettings());
        directories not given go next to the store's work directory.
    :raises CompilationJobNotFound: no such job.
    """
    config = job_config(store_path, config, caller="run_job", memory_limit_bytes=memory_limit_bytes,
                        lease_seconds=lease_seconds, work_dir=work_dir, settings=settings)
    store = _open_patiently(store_path, config)
    config = config.replace(compile=config.compile.resolved(store.root))
    logger, handlers = _job_logger(store, name)
    try:
        run = JobRun(
            store, name, logger, config=config, compile_fn=compile_fn,
            s3_client_factory=s3_client_factory or s3_client_factory_for(config.aws_conn_id),
            poll_interval=poll_interval,
        )
        return run.execute()
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()

