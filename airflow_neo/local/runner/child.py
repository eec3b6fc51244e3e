"""The compile child: one ``spawn`` process per compile, supervised by the runner.

Invariants:

* the child leads its own process group (the runner kills the compiler's helpers with it), asks
  Linux to SIGKILL it when the runner dies, and runs under RLIMIT_AS = the job's memory cap;
* everything the child needs arrives as arguments of its spawn target: the validated request,
  the paths, its work dir and the job's :class:`~airflow_neo.local.config.LocalJobConfig` (the
  compile function gets ``work_dir``, ``tuning_trials`` and ``tuning_database`` from it as
  arguments, and ``rpc_tracker``/``rpc_keys`` when a tracker is set, ``verify_inputs`` with
  ``verify_inputs_file``, the copy the runner fetched next to the archive, when the job gives
  sample inputs); the child reads no configuration from its environment;
* the child's scratch files stay inside the work dir the runner gave it (its temporary directory
  is ``<work dir>/tmp``); :meth:`CompileChild.run` removes that dir once the child is gone, and
  the job removes its whole work dir in ``finally`` whatever happens;
* it sends ``("log", line)`` messages, then exactly one ``("ok", metadata)`` or
  ``("error", class name, FailureReason, kind, traceback)`` (the reason already in Neo's form,
  :func:`~airflow_neo.local.errors.failure_reason`); :meth:`CompileChild.run` reads them in one
  loop, checks the job's interrupts between them, kills the child's process group when the job
  ends early, and turns every way the child can end into metadata or a
  :class:`~.outcomes.Failed` with a clear reason (a crash is a failed job, never a dead runner).
"""

from __future__ import annotations

import importlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_neo.core.exceptions import NeoError
from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.local.config import LocalJobConfig
from airflow_neo.local.errors import CLIENT_ERROR, SERVER_ERROR, failure_reason, is_neo_reason, neo_reason
from airflow_neo.local.runner.outcomes import Failed
from airflow_neo.local.runner.transfer import verify_inputs_copy

__all__ = ["DEFAULT_COMPILE_FN", "KILL_GRACE_SECONDS", "CompileChild", "CompileFn", "kill_process_tree"]

#: ``fn(request: ValidatedRequest, archive_path, artifact_path, *, log, work_dir, tuning_trials,
#: tuning_database) -> dict``: a picklable module-level function or a ``"module:function"`` string
CompileFn = Callable[..., dict]
DEFAULT_COMPILE_FN = "airflow_neo.local.compiler:compile_model"
KILL_GRACE_SECONDS = 3.0


def resolve_compile_fn(compile_fn: CompileFn | str | None) -> CompileFn:
    if compile_fn is None:
        compile_fn = DEFAULT_COMPILE_FN
    if callable(compile_fn):
        return compile_fn
    module_name, _, attr = str(compile_fn).partition(":")
    if not attr:
        module_name, _, attr = module_name.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


# --------------------------------------------------------------------------- in the child


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


def _cap_memory(limit_bytes: int | None) -> None:
    if not limit_bytes:
        return
    import resource

    limit = int(limit_bytes)
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard if hard != resource.RLIM_INFINITY else limit))


def _scratch_inside(work_dir: Path) -> None:
    """Temporary files of this process and its helpers (compilers, pools) go under ``work_dir``."""
    scratch = work_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = str(scratch)


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return {"repr": repr(value)}


def _verify_arguments(config: LocalJobConfig, archive_path: str) -> dict[str, Any]:
    """The compile function's verification arguments; with ``verify_inputs``, also the local copy
    the runner fetched (:func:`~.transfer.verify_inputs_copy`)."""
    arguments = config.compile.verify_arguments()
    if arguments.get("verify_inputs") and arguments.get("verify") != "off":
        arguments["verify_inputs_file"] = str(verify_inputs_copy(Path(archive_path)))
    else:
        arguments.pop("verify_inputs", None)
    return arguments


def _compile_child(conn, compile_fn, request: ValidatedRequest, archive_path: str, artifact_path: str,
                   work_dir: str, config: LocalJobConfig, parent_pid: int) -> None:
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
        _cap_memory(config.memory_limit_bytes)
        _scratch_inside(Path(work_dir))
        fn = resolve_compile_fn(compile_fn)
        metadata = fn(
            request, archive_path, artifact_path, log=child_log, work_dir=work_dir,
            tuning_trials=config.compile.tuning_trials, tuning_database=config.compile.tuning_root,
            **config.compile.rpc_arguments(),
            **config.compile.pack_arguments(),
            **_verify_arguments(config, archive_path),
        )
        send(("ok", _jsonable(metadata if metadata is not None else {})))
    except MemoryError as err:
        send(("error", "MemoryError", str(err), SERVER_ERROR, ""))
    except BaseException as err:  # noqa: BLE001 - every failure is reported to the supervisor
        try:
            tb = traceback.format_exc()
        except MemoryError:
            tb = ""
        kind = getattr(err, "kind", None) if isinstance(err, NeoError) else None
        send(("error", type(err).__name__, failure_reason(err), kind if isinstance(kind, str) else "", tb))
    finally:
        conn.close()


# --------------------------------------------------------------------------- in the runner


def kill_process_tree(proc) -> None:
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


class CompileChild:
    """Runs compiles in child processes for one job (see the module docstring).

    :param compile_fn: the compile function or its ``"module:function"`` (None: the TVM compiler).
    :param config: the job's config, resolved (its compile settings name this machine's directories).
    :param log: the job's logger; the child's lines are logged as ``[compiler] ...``.
    :param poll_interval: seconds between checks of the job's interrupts while the child works.
    """

    def __init__(self, compile_fn: CompileFn | str | None, config: LocalJobConfig, log: logging.Logger,
                 poll_interval: float):
        self.compile_fn = compile_fn if compile_fn is not None else DEFAULT_COMPILE_FN
        self.config = config
        self.log = log
        self.poll_interval = poll_interval

    @property
    def memory_limit_bytes(self) -> int | None:
        return self.config.memory_limit_bytes

    def run(self, request: ValidatedRequest, archive: Path, artifact: Path, work_dir: Path,
            check: Callable[[], None]) -> dict:
        """Compile in a child; returns its metadata. ``check`` runs between the child's messages
        and may raise an outcome, which kills the child."""
        ctx = multiprocessing.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        work_dir.mkdir(parents=True, exist_ok=True)
        proc = ctx.Process(
            target=_compile_child,
            args=(writer, self.compile_fn, request, str(archive), str(artifact), str(work_dir), self.config, os.getpid()),
            name=f"neo-compile-{request.name}",
            daemon=False,
        )
        proc.start()
        writer.close()
        limit = self.memory_limit_bytes
        self.log.info("compile child pid %s started%s", proc.pid, f" (memory limit {limit} bytes)" if limit else "")
        try:
            result = self._receive(reader, proc, check)
            proc.join(timeout=10)
        finally:
            if proc.is_alive():
                kill_process_tree(proc)
            proc.join()
            reader.close()
            shutil.rmtree(work_dir, ignore_errors=True)  # the extracted model is not needed any more
        return self._outcome(result, proc.exitcode)

    def _receive(self, reader, proc, check: Callable[[], None]) -> tuple | None:
        """The child's result message, its log lines logged as they come; None when it ended
        without one. Once the child has exited, what it sent before is read to the end."""
        exited = drained = False
        while not drained:
            try:
                if reader.poll(0 if exited else self.poll_interval):
                    message = reader.recv()
                    if message[0] != "log":
                        return message
                    self.log.info("[compiler] %s", message[1])
                elif exited:
                    drained = True
                else:
                    exited = not proc.is_alive()
            except (EOFError, OSError):
                drained = True
            if drained or not exited:
                check()
        return None

    def _outcome(self, result: tuple | None, code: int | None) -> dict:
        """The metadata of an ``ok`` result; every other ending raises Failed with its reason, in
        Neo's form: the child's own reason (:func:`~airflow_neo.local.errors.failure_reason`), or a
        ``ServerError`` for a child that ran out of memory, crashed or exited without a result."""
        if result is not None and result[0] == "ok":
            return result[1]
        limit = self.memory_limit_bytes
        if result is not None:
            _, cls_name, message, kind, tb = result
            if tb:
                self.log.info("compiler traceback:\n%s", tb.rstrip())
            if cls_name == "MemoryError":
                raise Failed(self._memory_reason(limit))
            if is_neo_reason(message or ""):
                raise Failed(message)
            text = message or "(no message)"
            if kind in (CLIENT_ERROR, SERVER_ERROR):
                raise Failed(neo_reason(kind, None, text))
            raise Failed(neo_reason(SERVER_ERROR, None, text if text.startswith(cls_name) else f"{cls_name}: {text}"))
        if code is not None and code < 0:
            raise Failed(self._signal_reason(-code, limit))
        raise Failed(neo_reason(
            SERVER_ERROR, None,
            f"Compilation failed: the compile process exited with code {code} without reporting a result; "
            "the job log holds its last lines. Retry the job; if it fails again, report it with the model",
        ))

    @staticmethod
    def _memory_reason(limit: int | None) -> str:
        if limit:
            return neo_reason(
                SERVER_ERROR, None,
                f"Compilation ran out of memory: the compile process exceeded its memory limit of {limit} bytes "
                f"({limit / 2**20:.0f} MiB). Raise [neo] local_memory_limit_mb or compile a smaller model",
            )
        return neo_reason(
            SERVER_ERROR, None,
            "Compilation ran out of memory (MemoryError in the compile process). Give the worker more memory or "
            "compile a smaller model",
        )

    @staticmethod
    def _signal_reason(signum: int, limit: int | None) -> str:
        try:
            sig_name = signal.Signals(signum).name
        except ValueError:
            sig_name = f"SIG{signum}"
        hint = ""
        advice = "Retry the job; if it crashes again, report it with the model (the job log holds the last phase)"
        if signum == signal.SIGKILL:
            hint = " (killed, possibly by the kernel's out-of-memory killer)"
            advice = ("Give the worker more memory, or set [neo] local_memory_limit_mb below what the machine has "
                      "so that the compile fails with a clear out-of-memory reason")
        elif limit and signum in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            hint = f" (the compile process had a memory limit of {limit} bytes)"
            advice = "Raise [neo] local_memory_limit_mb and retry; if it crashes again, report it with the model"
        return neo_reason(
            SERVER_ERROR, None,
            f"Compilation failed: internal compiler crash (signal {signum}: {sig_name}){hint}; the compile process "
            f"died without reporting a result. {advice}",
        )
