"""Verify an existing artifact on the machine that runs this: a smoke test on the deploy host.

:func:`verify_artifact` fetches a compiled artifact (``s3://``, ``file://`` or an absolute path),
checks that this host can run it, loads it with :mod:`airflow_neo.runtime` (the cold load is
timed), runs it on the inputs its compile recorded (``verification.npz``, see
:mod:`airflow_neo.local.verify`) or on the user's ``.npz`` at ``inputs_uri``, and compares the
outputs with the reference outputs recorded at compile time, within the same tolerances as the
compile's verification (:func:`~airflow_neo.local.verify.compare_outputs`, the recorded rule for
quantized graphs and the recorded ``verify_rtol`` unless ``rtol`` is given). Then it profiles the
artifact here (:func:`airflow_neo.local.profile.latency`: cold load, p50/p90/p99, threads; and
:func:`~airflow_neo.local.profile.kernel_profile`: the time per kernel of one run).

Without recorded outputs for the inputs used (the user's inputs differ from the record's, or the
artifact has no record: an older one, a verification that was off or not run, a record over its
size cap) the outputs are not compared: the run must give finite outputs of the shapes the
metadata declares (``passed`` None: not verified; False when they are not), and the report says
why nothing was compared (``not_compared``).

Invariants: the report is JSON-safe (artifact URI and BLAKE2b, metadata.json's BLAKE2b, the host,
``verification``, ``profile``). Under ``"gate"`` an output beyond its tolerance, a non-finite or
misshapen output, or an artifact that raises on its inputs raises
:class:`~airflow_neo.local.errors.AccuracyCheckError`, a host that cannot run the artifact
raises :class:`~airflow_neo.local.errors.IncompatibleArtifactError` (a deploy smoke test on the
wrong host must fail, not pass unverified) and a library that does not load raises
:class:`~airflow_neo.local.errors.ModelArchiveError`; under ``"report"`` those are in the report
(``passed`` False, or ``not_verified``).

The artifact never runs in this process. This process fetches the artifact (``s3://`` through the
caller's client), reads its metadata, checks the host (OS, architecture, CPU features: an
incompatible artifact is not even started), then runs the load, run, compare and profile in a
spawned ``python -m`` child (:mod:`airflow_neo.local.artifact_check`; not forked: TVM's thread
pool does not survive a fork) with local paths in and the JSON report out (a file), its log lines
passed on to ``log`` as they come. The child is killed (its whole process group) after
``timeout_seconds``. A child that dies by a signal or exits without a result raises, under the
gate, :class:`~airflow_neo.local.errors.ArtifactCheckCrashed` naming the signal (or exit code) and
its stderr (the first and last lines); one past its time limit raises
:class:`~airflow_neo.local.errors.ArtifactCheckTimedOut`; under ``"report"`` (and ``"off"``) the
report says ``not_verified: the check process crashed (...)`` (or ``did not finish ...``). An
exception in the child is raised here again as the same class of
:mod:`airflow_neo.local.errors` (or a builtin one) with the same message. Everything fetched or
extracted lives in a temporary directory removed on return. TVM is imported only in the child;
never Airflow.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from airflow_neo.local import errors
from airflow_neo.local.artifact_check import unrunnable
from airflow_neo.local.errors import (ArtifactCheckCrashed, ArtifactCheckTimedOut, IncompatibleArtifactError,
                                      ModelArchiveError, ModelInputError)
from airflow_neo.local.files import blake2b_file, split_s3_url
from airflow_neo.local.preflight import local_path
from airflow_neo.local.settings import check_verify, check_verify_inputs

__all__ = ["verify_artifact"]

Log = Callable[[str], Any]
METADATA_NAME = "metadata.json"
#: the check process's time limit (seconds) when the caller gives none
DEFAULT_TIMEOUT_SECONDS = 600.0
#: how much of the check process's stderr a crash's message quotes: its first and last lines, characters in all
STDERR_HEAD_LINES, STDERR_TAIL_LINES, STDERR_CHARS = 12, 4, 2000


def verify_artifact(artifact_uri: str, *, inputs_uri: str | None = None, mode: str = "gate", rtol: float | None = None,
                    profile_seconds: float | None = None, s3_client=None, log: Log = print,
                    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, allowed_paths=None) -> dict:
    """Check the artifact at ``artifact_uri`` on this machine; returns the report (see the module docstring).

    :param inputs_uri: a ``.npz`` of sample inputs (``s3://``, ``file://``, absolute path) to run
        instead of the recorded ones.
    :param mode: ``gate`` (failures raise), ``report`` or ``off`` (no verification, profile only).
    :param rtol: relative tolerance of float outputs; None: the one the compile used.
    :param profile_seconds: the latency profile's budget (0: none; None: ``[neo] profile_seconds``' default).
    :param s3_client: a boto3 S3 client, for ``s3://`` locations.
    :param timeout_seconds: the check process's time limit (load, run, compare and profile).
    :param allowed_paths: the roots a local ``artifact_uri``/``inputs_uri`` must lie under, symlinks
        resolved (:mod:`airflow_neo.local.confinement`; None: not confined).
    :raises AccuracyCheckError, IncompatibleArtifactError: under ``gate`` (see the module docstring).
    :raises ArtifactCheckCrashed, ArtifactCheckTimedOut: under ``gate``: the check process died or ran too long.
    :raises ModelArchiveError, ModelInputError: the artifact or the inputs cannot be fetched or read.
    """
    mode = check_verify(mode)
    check_verify_inputs(inputs_uri, name="inputs_uri")
    if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0):
        raise ValueError(f"rtol must be a number > 0 (or None: the compile's tolerance); got {rtol!r}")
    seconds = _profile_budget(profile_seconds)
    timeout = _timeout(timeout_seconds)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airflow-neo-verify-") as scratch:
        folder = Path(scratch)
        local = _fetch(artifact_uri, folder / "artifact.tar.gz", "artifact_uri", ModelArchiveError, s3_client,
                       allowed_paths)
        user = None
        if inputs_uri:
            user = _fetch(inputs_uri, folder / "inputs.npz", "inputs_uri", ModelInputError, s3_client, allowed_paths)
        metadata, metadata_digest, record = _read_artifact(local, artifact_uri, folder)
        report: dict[str, Any] = {
            "artifact": artifact_uri, "artifact_blake2b": blake2b_file(local), "metadata_blake2b": metadata_digest,
            "model": _model_facts(metadata), "host": host_facts(),
        }
        request = {"artifact": str(local), "metadata": metadata, "mode": mode, "rtol": rtol, "seconds": seconds,
                   "user": [str(user), inputs_uri] if user else None, "scratch": str(folder), **record}
        report.update(_check(request, timeout, log))
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _profile_budget(value: float | None) -> float:
    from airflow_neo.local import settings

    seconds = settings.DEFAULT_PROFILE_SECONDS if value is None else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"profile_seconds must be a number of seconds >= 0 (0: no profile); got {value!r}")
    return float(seconds)


def _timeout(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"timeout_seconds must be a number of seconds > 0; got {value!r}")
    return float(value)


def _fetch(uri: str, target: Path, name: str, error: type, s3_client, allowed_paths=None) -> Path:
    """The local file of ``uri`` (downloaded to ``target`` for ``s3://``; a local one resolved and
    confined to ``allowed_paths`` when given); ``error`` naming ``name`` otherwise."""
    if not isinstance(uri, str) or not uri:
        raise error(f"{name} must be an s3://, file:// URI or an absolute path; got {uri!r}")
    if uri.startswith("s3://"):
        if s3_client is None:
            raise error(f"{name} {uri}: reading s3:// needs an S3 client (an AWS connection)")
        bucket, key = split_s3_url(uri)
        try:
            s3_client.download_file(bucket, key, str(target))
        except Exception as err:  # noqa: BLE001 - botocore's errors, reported with the location
            raise error(f"{name} {uri}: could not download it: {type(err).__name__}: {err}") from None
        return target
    path = local_path(uri)
    if path is None:
        raise error(f"{name} {uri!r}: only s3://, file:// URIs and absolute paths are read")
    if allowed_paths is not None:
        from airflow_neo.local.confinement import PathNotAllowed, confine

        try:
            path = confine(name, uri, path, allowed_paths)
        except PathNotAllowed as err:
            raise error(str(err)) from None
    if not os.path.isfile(path):
        raise error(f"{name} {uri}: {path} does not exist or is not a file")
    return Path(path)


def _read_artifact(path: Path, uri: str, scratch: Path) -> tuple[dict, str, dict]:
    """metadata.json, its BLAKE2b and where the check process finds the verification record
    (``{"record": the .npz written to scratch, "record_label": its name for messages}``; empty without one)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            raw = _member(tar, METADATA_NAME)
            if raw is None:
                raise ModelArchiveError(f"artifact_uri {uri} has no {METADATA_NAME}; it is not an airflow-neo artifact")
            metadata = json.loads(raw.decode("utf-8"))
            name = (metadata.get("verification") or {}).get("record")
            data = _member(tar, name) if name else None
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise ModelArchiveError(f"artifact_uri {uri} is not a valid artifact (.tar.gz): {type(err).__name__}: {err}") from err
    record: dict = {}
    if data is not None:
        (scratch / "record.npz").write_bytes(data)
        record = {"record": str(scratch / "record.npz"), "record_label": f"{name} in {uri}"}
    return metadata, hashlib.blake2b(raw, digest_size=32).hexdigest(), record


def _member(tar: tarfile.TarFile, name: str) -> bytes | None:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        return None
    return handle.read() if handle is not None else None


def _model_facts(metadata: dict) -> dict:
    target = metadata.get("target") or {}
    return {key: metadata.get(key) for key in ("framework", "runtime", "producer", "compiled_at", "inputs", "outputs")} | {
        "target": target.get("label") or target.get("source"), "machine": target.get("machine"),
    }


def host_facts() -> dict:
    """This machine: OS, architecture, Python, and the CPU's instruction-set flags the runtime checks."""
    from airflow_neo import runtime

    flags = runtime._host_cpu_flags() or set()  # noqa: SLF001 - the runtime's one reader of /proc/cpuinfo
    known = set(runtime._X86_FLAGS.values()) | set(runtime._AARCH64_FLAGS.values())  # noqa: SLF001
    return {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu_flags": sorted(flags & known)}




# ----------------------------------------------------------------------------- the check process

CHILD = "airflow_neo.local.artifact_check"


def _check(request: dict, timeout: float, log: Log) -> dict:
    """``{"verification": ..., "profile": ...}``: the host checked here, the artifact run in the check process."""
    from airflow_neo.runtime import check_host_compatible

    mode, seconds = request["mode"], request["seconds"]
    try:
        check_host_compatible(request["metadata"])
    except IncompatibleArtifactError as err:
        if mode == "gate":
            raise IncompatibleArtifactError(f"the artifact cannot run on this host: {err}") from err
        return unrunnable(str(err), mode, seconds, log)
    result, code, tail = _run_child(request, timeout, log)
    if result is not None and "report" in result:
        return result["report"]
    if result is not None:
        _raise_child_error(result["error"], log)
    failure, why = _timed_out(timeout, tail) if code is None else _crashed(code, tail)
    if mode == "gate":
        raise failure
    return unrunnable(why, mode, seconds, log)


def _run_child(request: dict, timeout: float, log: Log) -> tuple[dict | None, int | None, str]:
    """``(the child's result or None, its exit status or None past the timeout, its stderr shortened)``."""
    folder = Path(request["scratch"])
    result = folder / "result.json"
    path = folder / "request.json"
    path.write_text(json.dumps(dict(request, parent_pid=os.getpid(), result=str(result))))
    command = [sys.executable, "-X", "faulthandler", "-m", CHILD, str(path)]
    with open(folder / "stderr.txt", "w+b") as stderr:
        code = _supervise(command, stderr, timeout, log)
        tail = _tail(_ends(stderr))
    # a result written is the verdict, even if the process crashed while exiting afterwards
    return (json.loads(result.read_text()) if result.exists() else None), code, tail


def _child_env() -> dict:
    package_root = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))


def _supervise(command: list[str], stderr, timeout: float, log: Log) -> int | None:
    """Run ``command`` in a new session, passing its stdout lines to ``log``; its exit status
    (negative: the signal that ended it), or None when it ran past ``timeout`` (then it is killed)."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=_child_env(),
                            start_new_session=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), name="neo-verify-stdout", daemon=True)
    reader.start()
    try:
        code = _wait(proc, lines, time.monotonic() + timeout, log)
    finally:
        _kill_group(proc)
        reader.join(5)
    if not reader.is_alive():  # closing a pipe that the reader blocks on would block too
        proc.stdout.close()
    _forward(lines, log)
    return code


def _pump(stream, lines: queue.Queue) -> None:
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
    lines.put(None)


def _wait(proc: subprocess.Popen, lines: queue.Queue, deadline: float, log: Log) -> int | None:
    """Log the child's lines until its stdout closes or it exits; its exit status, None past ``deadline``."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            line = lines.get(timeout=min(left, 0.25))
        except queue.Empty:
            if proc.poll() is not None:
                return proc.returncode
            continue
        if line is None:
            break
        log(line)
    try:
        return proc.wait(max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        return None


def _forward(lines: queue.Queue, log: Log) -> None:
    """Log the lines the child wrote that :func:`_wait` did not."""
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return
        if line is not None:
            log(line)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it leads its own session: whatever it started goes too); reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _ends(handle, size: int = 2**16) -> bytes:
    """The first and last ``size`` bytes of the open file ``handle`` (all of it when smaller)."""
    length = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    if length <= 2 * size:
        return handle.read()
    head = handle.read(size)
    handle.seek(length - size)
    return head + b"\n...\n" + handle.read()


def _tail(data: bytes) -> str:
    """What the child wrote to stderr, shortened to its first and last lines where it is long: a
    native backtrace (TVM prints one on SIGSEGV) starts at the crash and ends in Python's main."""
    lines = data.decode("utf-8", "replace").strip().splitlines()
    if len(lines) > STDERR_HEAD_LINES + STDERR_TAIL_LINES + 1:
        skipped = len(lines) - STDERR_HEAD_LINES - STDERR_TAIL_LINES
        lines = lines[:STDERR_HEAD_LINES] + [f"... ({skipped} lines)"] + lines[-STDERR_TAIL_LINES:]
    text = "\n".join(lines)
    return text if len(text) <= STDERR_CHARS else text[:STDERR_CHARS] + " ..."


def _crashed(code: int, tail: str) -> tuple[ArtifactCheckCrashed, str]:
    """The error (under the gate) and the report's reason of a child that died by signal ``-code``
    or exited with ``code`` without a result."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"SIG{-code}"
        what = f"signal {-code}: {name}"
        if -code == signal.SIGKILL:
            what += "; killed, possibly by the kernel's out-of-memory killer"
    else:
        what = f"exit code {code} without a result"
    stderr = f"; its stderr:\n{tail}" if tail else "; it wrote nothing to stderr"
    return (ArtifactCheckCrashed(f"the artifact's library crashed the check process ({what}); do not deploy it until "
                                 f"it loads and runs on this host{stderr}"),
            f"the check process crashed ({what}){stderr}")


def _timed_out(timeout: float, tail: str) -> tuple[ArtifactCheckTimedOut, str]:
    """The error (under the gate) and the report's reason of a child killed after ``timeout`` seconds."""
    stderr = f"; its stderr:\n{tail}" if tail else ""
    return (ArtifactCheckTimedOut(f"the check process did not finish within {timeout:g} s (timeout_seconds) and was "
                                  f"killed: loading, running or profiling the artifact hung or is that slow on this "
                                  f"host{stderr}"),
            f"the check process did not finish within {timeout:g} s (killed){stderr}")


def _raise_child_error(error: dict, log: Log) -> None:
    """Raise the child's exception again: the same class of :mod:`airflow_neo.local.errors` (or a
    builtin one) with the same message; another class as a RuntimeError naming it."""
    module, name, message = error.get("module"), error.get("class"), error.get("message") or ""
    cls = _error_class(module, name)
    if cls is None:
        log(f"the check process raised:\n{(error.get('traceback') or '').rstrip()}")
        raise RuntimeError(f"the check process raised {module}.{name}: {message}")
    err = cls(message)
    for attribute in ("kind", "neo_class"):
        if isinstance(err, errors.LocalCompilationError) and error.get(attribute) is not None:
            setattr(err, attribute, error[attribute])
    raise err


def _error_class(module: str | None, name: str | None) -> type | None:
    if module == errors.__name__:
        cls = getattr(errors, name or "", None)
        return cls if isinstance(cls, type) and issubclass(cls, errors.LocalCompilationError) else None
    if module == "builtins":
        cls = getattr(builtins, name or "", None)
        return cls if isinstance(cls, type) and issubclass(cls, Exception) else None
    return None
