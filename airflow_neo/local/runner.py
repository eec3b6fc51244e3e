"""The local backend's supervisor: runs one recorded compilation job to its end.

``run_job`` marks the job INPROGRESS, fetches the input archive into a private work dir, compiles it
in a ``spawn`` child process (memory-capped with RLIMIT_AS, in its own process group, killed if the
supervisor dies), renews the job's lease and watches for a stop request and the job's
MaxRuntimeInSeconds while it waits, then publishes the artifact atomically and records COMPLETED,
or records FAILED/STOPPED with a clear reason. A crash of the compiler (a signal in the child) is a
FAILED job, never a dead supervisor.

``launch_detached`` starts ``python -m airflow_neo.local.runner`` in a new session so the compile
goes on after the launching task process exits (a deferred Airflow task).

Nothing here imports Airflow at module level (the ``--aws-conn-id`` path imports the Amazon
provider's S3Hook inside ``main``); TVM is imported only inside the compile child.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import CompilationJobNotFound, CompilationJobStateError, NeoError
from airflow_neo.local.files import atomic_copy, blake2b_file, split_s3_url
from airflow_neo.local.settings import CompileSettings
from airflow_neo.local.store import STORE_URL_ENV, JobStore, artifact_uri_for, is_store_url, open_store, store_url

log = logging.getLogger(__name__)

CompileFn = Callable[..., dict]
DEFAULT_COMPILE_FN = "airflow_neo.local.compiler:compile_model"
KILL_GRACE_SECONDS = 3.0
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- outcomes


class _Outcome(BaseException):
    """Internal: ends a run with a recorded status (BaseException so nothing swallows it)."""


class _Failed(_Outcome):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Stopped(_Outcome):
    pass


class _Lost(_Outcome):
    """The job is no longer ours (it was ended or deleted by someone else)."""


class _Terminated(BaseException):
    """The runner process received SIGTERM/SIGINT/SIGHUP (only installed by ``main``)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------- the compile child


def _resolve_compile_fn(compile_fn: CompileFn | str | None) -> CompileFn:
    if compile_fn is None:
        compile_fn = DEFAULT_COMPILE_FN
    if callable(compile_fn):
        return compile_fn
    module_name, _, attr = str(compile_fn).partition(":")
    if not attr:
        module_name, _, attr = module_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(70)


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return {"repr": repr(value)}


def _compile_child(conn, compile_fn, request, archive_path, artifact_path, memory_limit_bytes, parent_pid, env=None) -> None:
    """Entry point of the compile child (a ``spawn`` process): compile, report over ``conn``."""
    try:
        os.setpgid(0, 0)  # own process group: the supervisor kills the compiler's helpers too
    except OSError:
        pass
    _die_with_parent(parent_pid)
    lock = threading.Lock()

    def send(message: tuple) -> None:
        with lock:
            conn.send(message)

    def child_log(*parts: Any, **_: Any) -> None:
        try:
            send(("log", " ".join(str(p) for p in parts)))
        except Exception:
            pass

    try:
        if memory_limit_bytes:
            import resource

            limit = int(memory_limit_bytes)
            _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard if hard != resource.RLIM_INFINITY else limit))
        os.environ.update(env or {})  # the tuning budget and database (CompileSettings.child_env)
        fn = _resolve_compile_fn(compile_fn)
        metadata = fn(request, archive_path, artifact_path, log=child_log)
        send(("ok", _jsonable(metadata if metadata is not None else {})))
    except MemoryError as err:
        send(("error", "MemoryError", str(err), "", ""))
    except BaseException as err:  # noqa: BLE001 - every failure is reported to the supervisor
        try:
            tb = traceback.format_exc()
        except MemoryError:
            tb = ""
        kind = getattr(err, "kind", None) if isinstance(err, NeoError) else None
        send(("error", type(err).__name__, str(err), kind if isinstance(kind, str) else "", tb))
    finally:
        conn.close()


# --------------------------------------------------------------------------- the supervisor


class _Heartbeat(threading.Thread):
    """Renews the job's lease and notices stop requests while the supervisor works."""

    def __init__(self, store: JobStore, name: str, lease_seconds: float, interval: float, logger: logging.Logger):
        super().__init__(name=f"neo-heartbeat-{name}", daemon=True)
        self.store, self.job, self.lease_seconds, self.interval, self.logger = store, name, lease_seconds, interval, logger
        self.stop_requested = threading.Event()
        self.lost = threading.Event()
        self.lost_reason = ""
        self._halt = threading.Event()

    def beat(self) -> None:
        try:
            if self.store.renew_lease(self.job, self.lease_seconds):
                self.stop_requested.set()
        except (CompilationJobStateError, CompilationJobNotFound) as err:
            self.lost_reason = str(err)
            self.lost.set()
            self._halt.set()
        except Exception as err:  # a busy database must not kill the heartbeat
            self.logger.warning("lease renewal failed (will retry): %s", err)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.beat()

    def halt(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)


class _JobRun:
    def __init__(
        self,
        store: JobStore,
        name: str,
        logger: logging.Logger,
        *,
        compile_fn: CompileFn | str | None,
        s3_client_factory: Callable[[], Any] | None,
        memory_limit_bytes: int | None,
        poll_interval: float,
        lease_seconds: float,
        settings: CompileSettings | None = None,
    ):
        self.store, self.name, self.log = store, name, logger
        self.settings = settings or CompileSettings().resolved(store.root)
        self.compile_fn = compile_fn
        self.s3_client_factory = s3_client_factory
        self.memory_limit_bytes = int(memory_limit_bytes) if memory_limit_bytes else None
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self._s3 = None
        self.timings: dict[str, float] = {}
        self.heartbeat: _Heartbeat | None = None
        self.deadline: float | None = None
        self.max_runtime: int | None = None

    # ---------------------------------------------------------------- main flow

    def execute(self) -> str:
        store, name = self.store, self.name
        host, pid = store.host, os.getpid()
        if not store.mark_inprogress(name, host, pid, self.lease_seconds):
            status = store.describe(name)["CompilationJobStatus"]
            if status == st.STOPPING and store.mark_stopped(name):
                self.log.info("job was stopped before it started: STOPPED")
                return st.STOPPED
            self.log.info("job is %s; nothing to run", status)
            return status
        self.log.info("job INPROGRESS (runner pid %s on %s)", pid, host)
        started = time.monotonic()
        self.heartbeat = _Heartbeat(
            store, name, self.lease_seconds, max(0.05, min(self.poll_interval, self.lease_seconds / 3)), self.log
        )
        self.heartbeat.start()
        store.work_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_work_dirs(store, self.log)
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=store.work_dir))
        published: str | None = None
        try:
            request = store.get_request(name)
            self.max_runtime = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
            if self.max_runtime:
                self.deadline = started + float(self.max_runtime)
            if "InputConfig" not in request:
                raise _Failed(
                    "ModelPackageVersionArn is not supported by the local backend: give InputConfig with the "
                    "model archive's S3Uri instead"
                )
            with self._phase("fetch"):
                archive = self._fetch(request["InputConfig"]["S3Uri"], workdir / "input")
            self._check_interrupts()
            artifact = workdir / "output" / "model.tar.gz"
            artifact.parent.mkdir()
            self._sync_tuning("pull")
            metadata, cache_base = self._from_cache(request, archive, artifact)
            if metadata is None:
                try:
                    with self._phase("compile"):
                        metadata = self._compile(request, archive, artifact)
                finally:
                    self._sync_tuning("push")  # records tuned before a failed build are kept too
                self._to_cache(cache_base, artifact, metadata)
            self._check_interrupts()
            if not artifact.is_file():
                raise _Failed(f"The compiler reported success but wrote no artifact (expected {artifact.name})")
            destination = artifact_uri_for(request)
            with self._phase("publish"):
                digest = self._publish(artifact, destination, request["OutputConfig"].get("KmsKeyId"))
                published = destination
            derived = _derived_data_input_config(metadata, request)
            if not store.complete(name, destination, digest, derived, metadata=metadata):
                self._unpublish(destination)
                published = None
                raise _Lost(f"job is {store.describe(name)['CompilationJobStatus']}")
            self.log.info("job COMPLETED: %s (BLAKE2b %s...)", destination, digest[:16])
            return st.COMPLETED
        except _Stopped:
            store.mark_stopped(name)
            self.log.info("job STOPPED on request; nothing published")
            return st.STOPPED
        except _Failed as failure:
            if published:
                self._unpublish(published)
            store.fail(name, failure.reason)
            self.log.error("job FAILED: %s", failure.reason)
            return st.FAILED
        except _Lost as lost:
            status = _current_status(store, name)
            self.log.warning("job is no longer ours (%s); leaving it %s", lost, status)
            return status
        except _Terminated as term:
            reason = f"Compile worker was terminated by signal {signal.Signals(term.signum).name} before the job ended"
            store.fail(name, reason)
            self.log.error("job FAILED: %s", reason)
            raise
        except BaseException as err:
            reason = f"Compile worker error: {type(err).__name__}: {err}"
            self.log.exception("unexpected supervisor error")
            if published:
                self._unpublish(published)
            store.fail(name, reason)
            if not isinstance(err, Exception):
                raise
            return st.FAILED
        finally:
            self.heartbeat.halt()
            shutil.rmtree(workdir, ignore_errors=True)
            self.timings["total"] = time.monotonic() - started
            self.log.info("phase timings: %s", ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items()))

    # ---------------------------------------------------------------- helpers

    class _PhaseTimer:
        def __init__(self, run: _JobRun, phase: str):
            self.run, self.phase = run, phase

        def __enter__(self):
            self.start = time.monotonic()
            self.run.log.info("phase %s: started", self.phase)

        def __exit__(self, *exc):
            elapsed = time.monotonic() - self.start
            self.run.timings[self.phase] = elapsed
            self.run.log.info("phase %s: %s after %.2f s", self.phase, "failed" if exc[0] else "done", elapsed)

    def _phase(self, phase: str) -> _JobRun._PhaseTimer:
        return self._PhaseTimer(self, phase)

    def _timeout_reason(self) -> str:
        return (
            f"Compilation job exceeded MaxRuntimeInSeconds ({self.max_runtime} s) and was stopped; raise "
            "StoppingCondition.MaxRuntimeInSeconds if the model needs longer to compile"
        )

    def _check_interrupts(self) -> None:
        assert self.heartbeat is not None
        if self.heartbeat.lost.is_set():
            raise _Lost(self.heartbeat.lost_reason)
        if self.heartbeat.stop_requested.is_set():
            raise _Stopped()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _Failed(self._timeout_reason())

    def _s3_client(self):
        if self._s3 is None:
            if self.s3_client_factory is not None:
                self._s3 = self.s3_client_factory()
            else:
                import boto3

                self._s3 = boto3.client("s3")
        return self._s3

    # ---------------------------------------------------------------- fetch

    def _fetch(self, uri: str, into: Path) -> Path:
        into.mkdir(parents=True, exist_ok=True)
        if uri.startswith("s3://"):
            bucket, key = split_s3_url(uri)
            target = into / (Path(key).name or "model.tar.gz")
            try:
                self._s3_client().download_file(bucket, key, str(target))
            except Exception as err:
                raise _Failed(f"InputConfig.S3Uri: could not download {uri}: {_aws_error(err)}") from None
        elif uri.startswith(("https://", "http://")):
            raise _Failed(f"InputConfig.S3Uri: {uri}: the local backend reads s3://, file:// URIs and absolute paths only")
        else:
            source = Path(_local_path(uri))
            if not source.exists():
                raise _Failed(f"InputConfig.S3Uri: {uri} does not exist")
            if not source.is_file():
                raise _Failed(f"InputConfig.S3Uri: {uri} is not a file; it must point to a single .tar.gz model archive")
            target = into / source.name
            try:
                shutil.copyfile(source, target)
            except OSError as err:
                raise _Failed(f"InputConfig.S3Uri: could not read {uri}: {err}") from None
        self.log.info("fetched %s (%d bytes)", uri, target.stat().st_size)
        return target

    # ---------------------------------------------------------------- compile

    def _compile(self, request: dict, archive: Path, artifact: Path) -> dict:
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        compile_fn = self.compile_fn if self.compile_fn is not None else DEFAULT_COMPILE_FN
        proc = ctx.Process(
            target=_compile_child,
            args=(
                writer, compile_fn, request, str(archive), str(artifact), self.memory_limit_bytes, os.getpid(),
                self.settings.child_env(),
            ),
            name=f"neo-compile-{self.name}",
            daemon=False,
        )
        proc.start()
        writer.close()
        self.log.info(
            "compile child pid %s started%s",
            proc.pid,
            f" (memory limit {self.memory_limit_bytes} bytes)" if self.memory_limit_bytes else "",
        )
        result: tuple | None = None
        try:
            eof = False
            while result is None and not eof:
                try:
                    if reader.poll(self.poll_interval):
                        message = reader.recv()
                        if message[0] == "log":
                            self.log.info("[compiler] %s", message[1])
                        else:
                            result = message
                except (EOFError, OSError):
                    eof = True
                if result is None and not eof and not proc.is_alive():
                    # Drain what the child sent before it exited.
                    try:
                        while reader.poll(0):
                            message = reader.recv()
                            if message[0] == "log":
                                self.log.info("[compiler] %s", message[1])
                            else:
                                result = message
                    except (EOFError, OSError):
                        pass
                    eof = True
                if result is None:
                    self._check_interrupts()
            proc.join(timeout=10)
        finally:
            if proc.is_alive():
                _kill_process_tree(proc)
            proc.join()
            reader.close()
        if result is not None and result[0] == "ok":
            return result[1]
        if result is not None:
            _, cls_name, message, kind, tb = result
            if tb:
                self.log.info("compiler traceback:\n%s", tb.rstrip())
            if cls_name == "MemoryError":
                if self.memory_limit_bytes:
                    raise _Failed(
                        f"Compilation ran out of memory: the compile process exceeded its memory limit of "
                        f"{self.memory_limit_bytes} bytes ({self.memory_limit_bytes / 2**20:.0f} MiB). Raise the "
                        "memory limit or compile a smaller model"
                    )
                raise _Failed("Compilation ran out of memory (MemoryError in the compile process)")
            text = message or "(no message)"
            prefix = kind or cls_name
            raise _Failed(text if text.startswith(prefix) else f"{prefix}: {text}")
        code = proc.exitcode
        if code is not None and code < 0:
            try:
                sig_name = signal.Signals(-code).name
            except ValueError:
                sig_name = f"SIG{-code}"
            hint = ""
            if -code == signal.SIGKILL:
                hint = " (killed, possibly by the kernel's out-of-memory killer)"
            elif self.memory_limit_bytes and -code in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
                hint = f" (the compile process had a memory limit of {self.memory_limit_bytes} bytes)"
            raise _Failed(
                f"Compilation failed: internal compiler crash (signal {-code}: {sig_name}){hint}; the compile "
                "process died without reporting a result"
            )
        raise _Failed(f"Compilation failed: the compile process exited with code {code} without reporting a result")

    # ---------------------------------------------------------------- compile cache

    def _local_cache(self):
        from airflow_neo.local.cache import CompileCache

        return CompileCache(self.settings.cache_root, self.settings.cache_max_bytes, log=self.log.info,
                            tuning_root=self.settings.tuning_root)

    def _shared_cache(self):
        if not self.settings.cache_remote:
            return None
        from airflow_neo.local.shared import SharedCompileCache

        return SharedCompileCache(self.settings.cache_remote, self._s3_client(), log=self.log.info)

    def _from_cache(self, request: dict, archive: Path, artifact: Path) -> tuple[dict | None, str | None]:
        """``(metadata, base key)`` of a cached artifact copied to ``artifact``, or ``(None, base key)``."""
        if not self.settings.cache_enabled:
            return None, None
        from airflow_neo.local.cache import base_key, compiler_id

        started = time.monotonic()
        base = None
        try:
            cache = self._local_cache()
            base = base_key(
                blake2b_file(archive),
                request,
                compiler=compiler_id(self.compile_fn if self.compile_fn is not None else DEFAULT_COMPILE_FN),
                tuning_trials=self.settings.tuning_trials,
                tuning_database=self.settings.tuning_database,
            )
            hit, tier = cache.lookup(base, artifact), "local"
            if hit is not None:
                self._share_local_hit(base, hit.key, cache)
            elif self.settings.cache_remote:
                hit, tier = self._shared_cache().fetch(base, cache, artifact), self.settings.cache_remote
        except Exception as err:  # the cache must never fail a job
            self.log.warning("compile cache lookup failed (compiling instead): %s: %s", type(err).__name__, err)
            return None, base
        elapsed = time.monotonic() - started
        if hit is None:
            self.log.info("compile cache miss (%s...; %.2f s); compiling", base[:16], elapsed)
            return None, base
        self.timings["cache"] = elapsed
        self.log.info(
            "compile cache hit (%s): %s... (BLAKE2b %s..., compiled %s) in %.2f s; not compiling",
            tier, hit.key[:16], hit.digest[:16], hit.metadata.get("compiled_at", "earlier"), elapsed,
        )
        metadata = dict(hit.metadata)
        metadata["cache"] = {"hit": True, "key": hit.key, "tier": "local" if tier == "local" else "shared"}
        tuning = metadata.get("tuning")
        if isinstance(tuning, dict) and tuning.get("database"):  # where the records are on this machine
            metadata["tuning"] = {**tuning, "database": str(cache.database_dir(tuning["database"]))}
        return metadata, base

    def _share_local_hit(self, base: str, key: str, cache) -> None:
        """An entry only this machine has (compiled while S3 was out of reach) goes up now."""
        if not self.settings.cache_remote:
            return
        try:
            self._shared_cache().publish(base, key, cache)
        except Exception as err:
            self.log.warning("could not share the cached artifact: %s: %s", type(err).__name__, err)

    def _to_cache(self, base: str | None, artifact: Path, metadata: dict) -> None:
        if base is None or not artifact.is_file():
            return
        try:
            cache = self._local_cache()
            key = cache.store(base, artifact, metadata if isinstance(metadata, dict) else {})
            if key:
                self.log.info("stored in the compile cache: %s...", key[:16])
            shared = self._shared_cache() if key else None
            if shared is not None and not shared.publish(base, key, cache):
                self.log.info("compile cache: %s... was evicted at once; not shared", key[:16])
        except Exception as err:  # the cache must never fail a job
            self.log.warning("could not store the artifact in the compile cache: %s: %s", type(err).__name__, err)

    # ---------------------------------------------------------------- shared tuning records

    def _sync_tuning(self, direction: str) -> None:
        """Bring the shared tuning records into the local mirror ("pull"), or send the records this
        job tuned to S3 ("push"); a failure is logged and the job goes on with what it has."""
        url = self.settings.tuning_remote
        if not url:
            return
        from airflow_neo.local.shared import SharedTuningDatabase, prepare_mirror

        started = time.monotonic()
        try:
            prepare_mirror(self.settings.tuning_mirror, url)
            shared = SharedTuningDatabase(url, self.settings.tuning_mirror, self._s3_client(), log=self.log.warning)
            report = shared.pull() if direction == "pull" else shared.push()
        except Exception as err:
            self.log.warning(
                "tuning records: could not %s %s (%s: %s); going on with the local mirror %s",
                direction, url, type(err).__name__, err, self.settings.tuning_mirror,
            )
            return
        elapsed = time.monotonic() - started
        self.timings[f"tuning {direction}"] = elapsed
        self.log.info(
            "tuning records: %s %s in %.2f s (%s)", direction, url, elapsed,
            ", ".join(f"{key} {value}" for key, value in report.items()),
        )

    # ---------------------------------------------------------------- publish

    def _publish(self, artifact: Path, destination: str, kms_key_id: str | None) -> str:
        digest = blake2b_file(artifact)
        if destination.startswith("s3://"):
            bucket, key = split_s3_url(destination)
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else None
            try:
                # A PUT (or a completed multipart upload) appears in S3 all at once: never partial.
                self._s3_client().upload_file(str(artifact), bucket, key, ExtraArgs=extra)
            except Exception as err:
                raise _Failed(f"Could not upload the compiled model to {destination}: {_aws_error(err)}") from None
        elif destination.startswith(("https://", "http://")):
            raise _Failed(
                f"OutputConfig.S3OutputLocation: {destination}: the local backend writes to s3://, file:// URIs "
                "and absolute paths only"
            )
        else:
            target = Path(_local_path(destination))
            try:
                atomic_copy(artifact, target)
            except OSError as err:
                raise _Failed(f"Could not publish the compiled model to {destination}: {err}") from None
        self.log.info("published %s (%d bytes)", destination, artifact.stat().st_size)
        return digest

    def _unpublish(self, destination: str) -> None:
        try:
            if destination.startswith("s3://"):
                bucket, key = split_s3_url(destination)
                self._s3_client().delete_object(Bucket=bucket, Key=key)
            else:
                Path(_local_path(destination)).unlink(missing_ok=True)
            self.log.warning("removed %s: the job did not complete", destination)
        except Exception as err:  # best effort
            self.log.warning("could not remove %s: %s", destination, err)


# --------------------------------------------------------------------------- module helpers


def _remove_stale_work_dirs(store: JobStore, logger: logging.Logger) -> None:
    """Remove work dirs left by runners that were killed (their job is no longer running or gone)."""
    try:
        entries = list(store.work_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        job, sep, _suffix = entry.name.rpartition("-")
        if not sep or not entry.is_dir():
            continue
        if _current_status(store, job) in st.RUNNING_STATES:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("removed the stale work dir %s", entry.name)


def _current_status(store: JobStore, name: str) -> str:
    try:
        return store.describe(name)["CompilationJobStatus"]
    except CompilationJobNotFound:
        return "DELETED"


def _derived_data_input_config(metadata: Any, request: dict) -> str | None:
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
        value = (request.get("InputConfig") or {}).get("DataInputConfig")
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


def _local_path(uri: str) -> str:
    if uri.startswith("file://"):
        parsed = urllib.parse.urlparse(uri)
        path = urllib.parse.unquote(parsed.path)
        if parsed.netloc and parsed.netloc != "localhost":
            path = f"/{parsed.netloc}{path}"
        return path
    return uri


def _aws_error(err: Exception) -> str:
    response = getattr(err, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', type(err).__name__)}: {error.get('Message', str(err))}"
    return f"{type(err).__name__}: {err}"


def _kill_process_tree(proc) -> None:
    """SIGTERM then SIGKILL the compile child's process group (it leads its own group)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, 10.0)):
        for kill in (os.killpg, os.kill):
            try:
                kill(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        proc.join(wait)
        if not proc.is_alive():
            break
    try:  # helpers the compiler left in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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


def run_job(
    store_path: str | os.PathLike[str] | JobStore,
    name: str,
    *,
    compile_fn: CompileFn | str | None = None,
    s3_client_factory: Callable[[], Any] | None = None,
    memory_limit_bytes: int | None = None,
    poll_interval: float = 0.5,
    lease_seconds: float = 30,
    work_dir: str | os.PathLike[str] | None = None,
    settings: CompileSettings | None = None,
) -> str:
    """Run the recorded job ``name`` to its end; returns its final status.

    :param store_path: the job store: a SQLite file path, a SQLAlchemy URL or a JobStore.
    :param compile_fn: ``compile_fn(request, archive_path, artifact_path, *, log) -> dict``, a
        picklable module-level function or a ``"module:function"`` string; default
        ``airflow_neo.local.compiler.compile_model`` (imported in the compile child only).
    :param s3_client_factory: returns a boto3 S3 client, called at most once and only for s3:// URIs
        (default ``boto3.client("s3")``).
    :param memory_limit_bytes: RLIMIT_AS (address space) for the compile child; None for no cap.
    :param poll_interval: seconds between checks of the child, the stop flag and the time limit.
    :param lease_seconds: the job's lease; renewed every ``min(poll_interval, lease_seconds / 3)``.
    :param work_dir: this machine's directory for job logs and work dirs (see JobStore).
    :param settings: tuning budget, tuning database and compile cache (default: from the
        ``AIRFLOW_NEO_*`` environment variables the hook sets, see
        :class:`~airflow_neo.local.settings.CompileSettings`); directories not given go next to
        the store's work directory.
    :raises CompilationJobNotFound: no such job.
    """
    store = open_store(store_path, work_dir=work_dir)
    settings = (settings if settings is not None else CompileSettings.from_env()).resolved(store.root)
    logger, handlers = _job_logger(store, name)
    try:
        run = _JobRun(
            store,
            name,
            logger,
            compile_fn=compile_fn,
            s3_client_factory=s3_client_factory,
            memory_limit_bytes=memory_limit_bytes,
            poll_interval=poll_interval,
            lease_seconds=lease_seconds,
            settings=settings,
        )
        return run.execute()
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def runner_command(
    store_path: str | os.PathLike[str],
    name: str,
    *,
    aws_conn_id: str | None = None,
    memory_limit_bytes: int | None = None,
    compile_fn: str | None = None,
    lease_seconds: float | None = None,
    python: str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The command line that ``launch_detached`` runs.

    A store URL with a password is not put on the command line (where ``ps`` shows it): the
    command says ``--store-from-env`` and the caller puts the URL in ``$AIRFLOW_NEO_STORE_URL``.
    """
    target = str(store_path)
    if is_store_url(target) and store_url(target).password:
        store_args = ["--store-from-env"]
    else:
        store_args = ["--store", target]
    command = [python or sys.executable, "-m", "airflow_neo.local.runner", *store_args, "--job", name]
    if work_dir:
        command += ["--work-dir", str(work_dir)]
    if aws_conn_id:
        command += ["--aws-conn-id", aws_conn_id]
    if memory_limit_bytes:
        command += ["--memory-limit", str(int(memory_limit_bytes))]
    if compile_fn:
        command += ["--compile-fn", compile_fn]
    if lease_seconds:
        command += ["--lease-seconds", str(lease_seconds)]
    return command


def launch_detached(
    store_path: str | os.PathLike[str] | JobStore,
    name: str,
    *,
    aws_conn_id: str | None = None,
    memory_limit_bytes: int | None = None,
    env: dict[str, str] | None = None,
    compile_fn: str | None = None,
    lease_seconds: float | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Start ``python -m airflow_neo.local.runner`` for job ``name`` in a new session; returns its pid.

    The runner outlives the calling process; its stdout/stderr go to the job's log file
    (``<store root>/logs/<name>.log``). ``env`` entries are added to (override) this process's
    environment. ``compile_fn`` is a ``"module:function"`` string (default: the TVM compiler).
    ``store_path`` is a SQLite file, a SQLAlchemy URL (a shared database) or a JobStore.
    """
    store = open_store(store_path, work_dir=work_dir)
    log_path = store.log_path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ)
    child_env.update(env or {})
    if store.is_shared_database:
        child_env[STORE_URL_ENV] = store.target
    root = _package_root()
    existing = child_env.get("PYTHONPATH", "")
    if root not in existing.split(os.pathsep):
        child_env["PYTHONPATH"] = root + (os.pathsep + existing if existing else "")
    command = runner_command(
        store.target, name, aws_conn_id=aws_conn_id, memory_limit_bytes=memory_limit_bytes,
        compile_fn=compile_fn, lease_seconds=lease_seconds,
        work_dir=store.root,
    )
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=child_env,
            cwd=str(store.root),
        )
    # Reap it if this process lives longer than the runner, so it never lingers as a zombie.
    threading.Thread(target=proc.wait, name=f"neo-reap-{proc.pid}", daemon=True).start()
    return proc.pid


def _s3_factory_for(aws_conn_id: str | None) -> Callable[[], Any]:
    if aws_conn_id:

        def from_connection():
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            return S3Hook(aws_conn_id=aws_conn_id).get_conn()

        return from_connection

    def default_client():
        import boto3

        return boto3.client("s3")

    return default_client


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_neo.local.runner --store PATH|URL --job NAME [--work-dir DIR] [--aws-conn-id ID] [--memory-limit BYTES]``.

    Exit status: 0 when the job ended COMPLETED, 1 when it ended FAILED or STOPPED (or was no longer
    runnable), 2 for a usage error or an unknown job, 143/130/129 when killed by SIGTERM/SIGINT/SIGHUP.
    """
    parser = argparse.ArgumentParser(prog="python -m airflow_neo.local.runner", description=main.__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--store", help="the job store: a SQLite file or a SQLAlchemy URL")
    where.add_argument(
        "--store-from-env", action="store_true", help=f"read the job store's URL from ${STORE_URL_ENV}"
    )
    parser.add_argument("--work-dir", default=None, help="directory for job logs and work dirs (default: the store's)")
    parser.add_argument("--job", required=True, help="the compilation job name")
    parser.add_argument("--aws-conn-id", default=None, help="Airflow AWS connection for s3:// URIs (default: boto3's)")
    parser.add_argument("--memory-limit", type=int, default=None, help="RLIMIT_AS of the compile process, in bytes")
    parser.add_argument("--compile-fn", default=None, help="module:function to compile with (default: the TVM compiler)")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--lease-seconds", type=float, default=30)
    args = parser.parse_args(argv)

    def on_signal(signum, _frame):
        raise _Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        target = os.environ.get(STORE_URL_ENV, "") if args.store_from_env else args.store
        if not target:
            print(f"airflow_neo.local.runner: --store-from-env but ${STORE_URL_ENV} is empty", file=sys.stderr)
            return 2
        final = run_job(
            target,
            args.job,
            work_dir=args.work_dir,
            compile_fn=args.compile_fn,
            s3_client_factory=_s3_factory_for(args.aws_conn_id),
            memory_limit_bytes=args.memory_limit,
            poll_interval=args.poll_interval,
            lease_seconds=args.lease_seconds,
        )
    except CompilationJobNotFound as err:
        print(f"airflow_neo.local.runner: {err}", file=sys.stderr)
        return 2
    except _Terminated as term:
        return 128 + term.signum
    return 0 if final == st.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
