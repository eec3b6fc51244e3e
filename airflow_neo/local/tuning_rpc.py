"""Tuning candidates measured on devices registered with a TVM RPC tracker (``[neo] rpc_tracker``).

A target named in ``[neo] rpc_keys`` is measured on the tracker's devices of its key instead of
this machine: the worker builds each candidate (cross-compiling where the target is another CPU
family) and links it into a shared library with the target's C compiler, and MetaSchedule's
``RPCRunner`` asks the tracker for a free device of the key, uploads the library, and times it
there. The default-schedule baselines (:mod:`airflow_neo.local.tuning_baseline`) go the same way,
so a record is compared with the default schedule on the device that will run the artifact.

Invariants:

* RPC never fails a compile: :func:`probe` checks, before anything is measured, that the tracker
  answers, that a server of the key is registered, and that one becomes free within
  :data:`DEVICE_WAIT_S`, and otherwise returns the reason (tuning is then skipped, as for a target
  that cannot be measured here; the records already in the database still apply). A device that
  drops out later fails only the candidates it was measuring.
* Every wait is bounded: connecting to the tracker (:data:`CONNECT_TIMEOUT_S`), waiting for a
  free device (:data:`DEVICE_WAIT_S`), one measuring session (:data:`SESSION_TIMEOUT_S`, enforced by
  the server, which ends a longer session).
* A board needs only TVM's runtime and its RPC server (``python -m tvm.exec.rpc_server --tracker
  HOST:PORT --key KEY``), no C compiler: what it is sent is already a shared library for it.

Runs inside the compile child; TVM is imported inside functions only.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from airflow_neo.local.settings import parse_rpc_keys, parse_rpc_tracker

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEVICE_WAIT_S",
    "SESSION_TIMEOUT_S",
    "RpcDevice",
    "create_session",
    "device_for",
    "link_shared",
    "linking_builder",
    "make_runner",
    "probe",
    "register_tensor_intrinsics",
]

#: seconds to reach the tracker and read its summary
CONNECT_TIMEOUT_S = 10.0
#: seconds to wait for a free device of the key (the probe, and each measuring session)
DEVICE_WAIT_S = 60.0
#: seconds one measuring session may take on the device (upload, load, time the candidate)
SESSION_TIMEOUT_S = 120
#: at most this many candidates are measured at once (one per registered device of the key)
MAX_PARALLEL_DEVICES = 4
#: workers of a process linking candidates with the C compiler
LINK_THREADS = 4


@dataclass(frozen=True)
class RpcDevice:
    """The devices of one tracker key that measure one target."""

    host: str
    port: int
    key: str
    servers: int = 0  #: servers of the key registered with the tracker (set by :func:`probe`)
    threads: int | None = None  #: the TVM runtime's thread count on a device (set by :func:`probe`)

    @property
    def tracker(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        """``rpc <key> via tracker <host:port>`` and what the probe found."""
        found = []
        if self.servers:
            found.append(f"{self.servers} device{'s' if self.servers != 1 else ''}")
        if self.threads:
            found.append(f"{self.threads} threads")
        return f"rpc {self.key} via tracker {self.tracker}" + (f" ({', '.join(found)})" if found else "")


def device_for(label: str, rpc_tracker: str | None, rpc_keys: Any) -> RpcDevice | None:
    """The devices that measure the target ``label`` (``rasp4b``, ``linux-arm64``), or None."""
    if not rpc_tracker:
        return None
    key = parse_rpc_keys(rpc_keys).get(label)
    if key is None:
        return None
    host, port = parse_rpc_tracker(rpc_tracker)
    return RpcDevice(host, port, key)


# --------------------------------------------------------------------------------------------
# the tracker


def _within(seconds: float, fn: Callable[[], Any], on_timeout: Callable[[], Any] | None = None) -> Any:
    """``fn()`` in a daemon thread; TimeoutError when it takes longer than ``seconds``
    (``on_timeout`` then runs, e.g. to close the socket the thread waits on)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box["error"] = err

    thread = threading.Thread(target=run, name="neo-rpc", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if on_timeout is not None:
            try:
                on_timeout()
            except Exception:  # noqa: BLE001
                pass
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _tracker(host: str, port: int):
    """A :class:`tvm.rpc.TrackerSession`, once the address takes connections (a refused or
    unreachable address raises at once instead of TVM's minute of retries)."""
    from tvm import rpc

    socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    return _within(CONNECT_TIMEOUT_S, lambda: rpc.connect_tracker(host, port))


def _abandon(tracker) -> None:
    """End a tracker connection that another thread waits on. A plain ``close`` from this thread
    leaves the connection open until that thread's ``recv`` returns, so the tracker keeps the
    pending request and later hands it a free device that nobody connects to (the server then sits
    idle until it re-registers, about 8 s); ``shutdown`` ends it now, and the tracker drops it."""
    sock = getattr(tracker, "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    tracker.close()


def _request(tracker, key: str, wait: float, session_timeout: float):
    """A session on a free device of ``key``; TimeoutError when none is free within ``wait``."""
    return _within(
        wait,
        lambda: tracker.request(key, priority=1, session_timeout=session_timeout, max_retry=1),
        on_timeout=lambda: _abandon(tracker),
    )


def _registered(summary: dict) -> dict[str, int]:
    """``{key: servers registered}`` from a tracker summary."""
    counts: dict[str, int] = {}
    for item in summary.get("server_info") or []:
        kind, _, key = str(item.get("key", "")).partition(":")
        if kind == "server" and key:
            counts[key] = counts.get(key, 0) + 1
    return counts


def probe(device: RpcDevice, log: Callable[[str], Any]) -> tuple[RpcDevice, str | None]:
    """``(device with what was found, None)`` when a device of its key is reachable and free within
    :data:`DEVICE_WAIT_S`; else ``(device, why not)``, for the job log and the tuning report."""
    where = f"the RPC tracker {device.tracker} ([neo] rpc_tracker)"
    try:
        tracker = _tracker(device.host, device.port)
        registered = _registered(_within(CONNECT_TIMEOUT_S, tracker.summary))
    except (OSError, TimeoutError, RuntimeError) as err:
        text = getattr(err, "strerror", None) or str(err) or type(err).__name__
        return device, f"{where} is unreachable ({text}), so schedules for this target cannot be measured"
    servers = registered.get(device.key, 0)
    if not servers:
        known = ", ".join(f"{key} ({n})" for key, n in sorted(registered.items())) or "none"
        return device, (
            f"no RPC server with key {device.key!r} ([neo] rpc_keys) is registered with {where} "
            f"(keys there: {known}), so schedules for this target cannot be measured"
        )
    device = replace(device, servers=servers)
    try:
        session = _request(tracker, device.key, DEVICE_WAIT_S, SESSION_TIMEOUT_S)
    except TimeoutError:
        return device, (
            f"no device with key {device.key!r} of {where} became free within {DEVICE_WAIT_S:.0f} s "
            f"({servers} registered, all busy), so schedules for this target cannot be measured now"
        )
    except (OSError, RuntimeError) as err:
        return device, f"{where} gave no session on a {device.key!r} device ({str(err).strip()[-300:]})"
    finally:
        tracker.close()
    try:
        threads = int(session.get_function("runtime.NumThreads")())
    except Exception:  # noqa: BLE001 - informative only
        threads = None
    finally:
        del session  # ends the session: the device is free for the measurements
    device = replace(device, threads=threads)
    log(f"tuning: measuring on the devices of key {device.key!r} through {where}: {device.describe()}")
    return device, None


# --------------------------------------------------------------------------------------------
# building for the device and measuring there


def register_tensor_intrinsics(triple: str) -> None:
    """Register the tensor intrinsics of the target's CPU family (Arm or x86), which MetaSchedule's
    schedule rules for that family name; the tuning session registers only this machine's."""
    import importlib

    arch = triple.split("-", 1)[0].lower()
    family = "arm_cpu" if arch.startswith(("arm", "aarch64", "thumb")) else "x86" if arch in ("x86_64", "i686", "i386") else None
    if family:
        importlib.import_module(f"tvm.s_tir.tensor_intrin.{family}")


def link_shared(archive: str, compiler: str) -> str:
    """Link the object files of a tar ``archive`` (MetaSchedule's build artifact) into a shared
    library next to it with ``compiler``; returns the library's path."""
    from tvm.support import cc, tar

    directory = os.path.dirname(archive)
    objects_dir = os.path.join(directory, "objects")
    os.makedirs(objects_dir, exist_ok=True)
    tar.untar(archive, objects_dir)
    objects = sorted(os.path.join(objects_dir, name) for name in os.listdir(objects_dir))
    library = os.path.splitext(archive)[0] + ".so"
    # a fresh fcompile per link: tvm's cross_compiler appends to its option list in place
    cc.cross_compiler(compiler, options=[])(library, objects)
    return library


def linking_builder(inner, compiler: str):
    """A MetaSchedule builder whose artifacts are ``inner``'s linked into shared libraries with
    ``compiler`` (the target's C compiler: a cross compiler for another CPU family)."""
    from concurrent.futures import ThreadPoolExecutor

    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder

    @derived_object
    class LinkingBuilder(PyBuilder):
        """Builds with ``inner`` (object files in a tar), then links each into a ``.so``."""

        def __init__(self, inner, compiler: str):
            super().__init__()
            self.inner = inner
            self.compiler = compiler

        def _link(self, result):
            if result.error_msg or not result.artifact_path:
                return result
            try:
                return BuilderResult(link_shared(str(result.artifact_path), self.compiler), None)
            except Exception as err:  # noqa: BLE001 - a candidate that does not link is a failed build
                return BuilderResult(None, f"linking with {self.compiler} failed: {str(err).strip()[-500:]}")

        def build(self, build_inputs):
            results = list(self.inner.build(build_inputs))
            if len(results) <= 1:
                return [self._link(result) for result in results]
            with ThreadPoolExecutor(max_workers=min(LINK_THREADS, len(results))) as pool:
                return list(pool.map(self._link, results))

        def close(self):
            self.inner.close()

    return LinkingBuilder(inner, compiler)


def create_session(rpc_config):
    """MetaSchedule's ``f_create_session`` (runs in the runner's worker process): a session on a
    free device of the key, waiting at most :data:`DEVICE_WAIT_S` for one (TVM's waits forever)."""
    tracker = _tracker(rpc_config.tracker_host, int(rpc_config.tracker_port))
    try:
        return _request(tracker, rpc_config.tracker_key, DEVICE_WAIT_S, rpc_config.session_timeout_sec)
    except TimeoutError:
        raise RuntimeError(
            f"no device with key {rpc_config.tracker_key!r} became free within {DEVICE_WAIT_S:.0f} s"
        ) from None
    finally:
        tracker.close()


def make_runner(device: RpcDevice, evaluator_config):
    """MetaSchedule's ``RPCRunner`` measuring on ``device`` (one candidate per registered device at once)."""
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.RPCConfig(
        tracker_host=device.host,
        tracker_port=device.port,
        tracker_key=device.key,
        session_timeout_sec=SESSION_TIMEOUT_S,
    )
    return ms.runner.RPCRunner(
        config,
        evaluator_config,
        f_create_session=create_session,
        max_workers=max(1, min(device.servers, MAX_PARALLEL_DEVICES)),
    )
