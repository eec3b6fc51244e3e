"""Run aarch64 artifacts under QEMU user-mode emulation, to verify them on an x86-64 machine.

An ARM64 artifact compiled here (TargetDevice ``ml_c6g``, ``rasp4b``..., TargetPlatform
LINUX/ARM64) cannot be loaded by this machine's Python. :func:`run_emulated` runs it in an
aarch64 Python instead: ``qemu-aarch64 -L <root> -cpu neoverse-n1 <root>/usr/bin/python3.X``,
where the root is the one ``scripts/arm_root.sh`` builds (Debian arm64 python3 + the manylinux
aarch64 wheels of apache-tvm, apache-tvm-ffi, numpy and onnxruntime; a ``proc/cpuinfo`` of an
Arm Neoverse N1, the CPU qemu emulates)::

    outputs = run_emulated(metadata, library, {"input0": batch})   # list of numpy arrays

The guest loads the library with :class:`airflow_neo.runtime.CompiledModel` after
:func:`airflow_neo.runtime.check_host_compatible` against the emulated CPU (an artifact using
instructions a Neoverse N1 lacks, SVE for one, is refused instead of dying on SIGILL), runs it
on the inputs (handed over as an ``.npz``) and writes its outputs to an ``.npz`` read back here.

Which root: ``$AIRFLOW_NEO_ARM64_ROOT`` when set, else ``arm64-root`` in the script's cache
(``$AIRFLOW_NEO_CACHE``, else ``/var/cache/airflow-neo`` when writable, else
``~/.cache/airflow-neo``), used only when its stamp file ``.airflow-neo-arm64-root`` exists.
``$AIRFLOW_NEO_QEMU_CPU`` overrides the emulated CPU (it should match the root's cpuinfo).

What the guest imports: the directory that holds the ``airflow_neo`` package (a checkout, or a
virtualenv's site-packages) is *not* put on the guest's path, since site-packages holds this
machine's x86-64 numpy and TVM; a temporary directory holding only a link to the package is.
The guest imports only the package's pure modules and :mod:`airflow_neo.runtime` (Airflow is not
in the root). ``qemu-aarch64 -L`` makes every absolute path that exists in the root (``/lib``,
``/usr``, ``/proc/cpuinfo``) resolve inside it; other paths (the library, temporary files) are
this machine's.

Invariants: only Linux aarch64 artifacts are emulated, and only on an x86-64 host; armhf (ARMv7,
``rasp3b``, LINUX/ARM_EABIHF) is not: there is no TVM runtime for armv7 to be had (PyPI has no
armv7l wheel of apache-tvm or apache-tvm-ffi and apache-tvm has no sdist; Debian does not package
TVM), Android artifacts need Android's libc, and artifacts whose runtime the root lacks
(tl2cgen, for XGBoost) cannot load there. Everything that stops an emulated run from starting
raises :class:`EmulationUnavailable` saying why and how to fix it (no qemu-aarch64, no root:
``bash scripts/arm_root.sh``); everything that goes wrong once it started (the guest refuses the
artifact, raises, crashes or runs past ``timeout``: :data:`TIMEOUT_S` = 600 s by default, a fixed
bound rather than the job's remaining time, which the runner enforces on the whole compile
anyway) raises :class:`EmulationFailed` with the guest's output. The guest runs one TVM thread
unless ``TVM_NUM_THREADS`` says otherwise. Latency under qemu is not the device's: profiles skip
emulated targets. Only the standard library is imported at module level (numpy inside the
functions), so the guest can import this module too.

Cost (2-core x86-64, qemu 7.2): 15-20 s per run for a small model, nearly all of it the guest's
``import tvm``; :mod:`airflow_neo.local.verify` makes one run per compile.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = [
    "ArmRoot", "DEFAULT_CPU", "EmulationFailed", "EmulationUnavailable", "GuestFailed", "ROOT_ENV", "STAMP_NAME",
    "TIMEOUT_S", "default_root_path", "emulator_for", "find_qemu", "foreign", "find_root", "package_parent", "run_emulated",
]

ROOT_ENV = "AIRFLOW_NEO_ARM64_ROOT"
#: scripts/test.sh sets it to scripts/arm_root.sh's log when the build failed; its tail joins the reason
LOG_ENV = "AIRFLOW_NEO_ARM64_ROOT_LOG"
CPU_ENV = "AIRFLOW_NEO_QEMU_CPU"
STAMP_NAME = ".airflow-neo-arm64-root"
#: The emulated CPU: the one the root's proc/cpuinfo describes (AWS Graviton2's core).
DEFAULT_CPU = "neoverse-n1"
#: How long an emulated run may take (``import tvm`` alone takes 20-40 s under qemu).
TIMEOUT_S = 600.0
BUILD_HINT = "build it with `bash scripts/arm_root.sh` (from an airflow-neo source checkout)"
#: Host variables that would break or change the guest (its loader and Python read them too).
_DROPPED_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV")
#: The Python package each artifact runtime needs in the guest.
_RUNTIME_MODULES = {"tvm-relax-vm": "tvm", "tl2cgen": "tl2cgen"}
#: The guest's exit status when check_host_compatible refuses the artifact on the emulated CPU.
_REFUSED = 3


class EmulationUnavailable(RuntimeError):
    """No usable aarch64 root or qemu-aarch64 (or a target qemu cannot run); the message says why."""


class EmulationFailed(RuntimeError):
    """The emulated run started but gave no outputs (refused, raised, crashed, timed out)."""

    @property
    def reason(self) -> str:
        """The message, short enough for a report line."""
        return str(self)[:600]


class GuestFailed(EmulationFailed):
    """The guest Python exited non-zero (or was killed by a signal); the message holds its output."""

    def __init__(self, argv: Sequence[str], result: subprocess.CompletedProcess):
        self.result = result
        code = result.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        super().__init__(
            f"the emulated Python failed ({how}): {' '.join(argv[:6])} ...\n"
            f"--- stdout (end) ---\n{(result.stdout or '')[-3000:]}\n--- stderr (end) ---\n{(result.stderr or '')[-5000:]}"
        )

    @property
    def reason(self) -> str:
        """How it ended and the last lines of its stderr (a traceback's last line is the error)."""
        code = self.result.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        lines = [line for line in (self.result.stderr or "").splitlines() if line.strip()]
        return f"{how}: {' | '.join(lines[-3:])[-600:] or 'no output'}"


# ----------------------------------------------------------------------------- finding the emulator


def default_root_path() -> Path:
    """Where ``scripts/arm_root.sh`` caches the root on this machine (same rules as the script)."""
    if os.environ.get("AIRFLOW_NEO_CACHE"):
        cache = Path(os.environ["AIRFLOW_NEO_CACHE"])
    elif os.geteuid() == 0 or os.access("/var/cache/airflow-neo", os.W_OK):
        cache = Path("/var/cache/airflow-neo")
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "airflow-neo"
    return cache / "arm64-root"


def find_qemu() -> str | None:
    """The qemu-aarch64 (user mode) on PATH, or None."""
    return shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")


def _build_log_tail() -> str:
    log = os.environ.get(LOG_ENV)
    if not log:
        return ""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "; scripts/arm_root.sh said: " + " | ".join(line for line in lines[-6:] if line.strip())


def find_root(path: str | os.PathLike | None = None) -> ArmRoot:
    """The aarch64 root at ``path``, ``$AIRFLOW_NEO_ARM64_ROOT`` or the script's cache directory.

    :raises EmulationUnavailable: saying what is missing (qemu, the root, its Python).
    """
    given = path or os.environ.get(ROOT_ENV)
    root = Path(given) if given else default_root_path()
    qemu = find_qemu()
    if qemu is None:
        raise EmulationUnavailable(
            "qemu-aarch64 is not installed (Debian package qemu-user; scripts/arm_root.sh installs it as root)"
            + _build_log_tail()
        )
    if not (root / STAMP_NAME).is_file():
        where = f"${ROOT_ENV}={given}" if given else f"the default cache {root} (${ROOT_ENV} is not set)"
        raise EmulationUnavailable(f"no aarch64 root at {where}; {BUILD_HINT}" + _build_log_tail())
    pythons = [p for p in sorted((root / "usr" / "bin").glob("python3.[0-9]*"))
               if p.name.replace("python", "").replace(".", "").isdigit()]
    if not pythons:
        raise EmulationUnavailable(f"the aarch64 root {root} has no usr/bin/python3.X; rebuild it: {BUILD_HINT}")
    return ArmRoot(root, pythons[-1], qemu, os.environ.get(CPU_ENV) or DEFAULT_CPU)


def package_parent() -> Path:
    """The directory holding the ``airflow_neo`` package (a checkout, or site-packages)."""
    return Path(__file__).resolve().parents[2]


def _why_not_emulable(metadata: dict) -> str | None:
    """Why the artifact of ``metadata`` is no case for this module (None: it is)."""
    from airflow_neo.local.targets import host_arch

    target = metadata.get("target") or {}
    machine, os_name = target.get("machine"), target.get("os", "LINUX")
    if (target.get("tvm_target") or {}).get("kind") == "cuda":
        return "CUDA artifacts need an NVIDIA GPU; an emulated CPU cannot run their kernels"
    if machine == "armv7":
        return ("armv7 (hard-float) artifacts cannot be emulated here: there is no TVM runtime for armv7 to be had "
                "(PyPI has no armv7l wheel of apache-tvm or apache-tvm-ffi, and Debian does not package TVM)")
    if machine != "aarch64":
        return f"only aarch64 artifacts are emulated; this one is for {machine or 'an unknown CPU family'}"
    if os_name != "LINUX":
        return f"only Linux (glibc) aarch64 artifacts are emulated; this one is for {os_name}"
    if host_arch() != "x86_64":
        return f"emulation runs on x86-64 hosts only; this machine is {host_arch()}"
    return None


def foreign(metadata: dict) -> bool:
    """Whether the artifact of ``metadata`` is for another CPU family than this machine's (only
    then can emulation help: an artifact this machine's family refuses wants features it lacks)."""
    from airflow_neo.local.targets import host_arch

    return (metadata.get("target") or {}).get("machine") not in (None, host_arch())


def emulator_for(metadata: dict, root: str | os.PathLike | None = None) -> ArmRoot:
    """The emulator that can run the artifact described by ``metadata`` on this machine.

    :raises EmulationUnavailable: why it cannot (the target, qemu, the root).
    """
    why = _why_not_emulable(metadata)
    if why:
        raise EmulationUnavailable(why)
    found = find_root(root)
    runtime = metadata.get("runtime")
    module = _RUNTIME_MODULES.get(runtime, str(runtime))
    if not any(found.path.glob(f"usr/lib/python3*/*-packages/{module}")):
        raise EmulationUnavailable(f"the aarch64 root {found.path} has no {module}, the runtime of this artifact "
                                   f"({runtime}); scripts/arm_root.sh installs TVM's")
    return found


@dataclass(frozen=True)
class ArmRoot:
    """An aarch64 root and the qemu that runs its Python."""

    path: Path
    python: Path
    qemu: str
    cpu: str = DEFAULT_CPU

    @property
    def label(self) -> str:
        """How the emulator is named in reports: ``qemu-aarch64 -cpu neoverse-n1``."""
        return f"{Path(self.qemu).name} -cpu {self.cpu}"

    def command(self, *args: str) -> list[str]:
        """The argv running the guest Python with ``args``."""
        return [self.qemu, "-L", str(self.path), "-cpu", self.cpu, str(self.python), *args]

    def env(self, extra: dict[str, str] | None = None, *, pythonpath: Sequence[str | os.PathLike] = ()) -> dict:
        """This process's environment minus what would leak into the guest, ``pythonpath`` as PYTHONPATH."""
        env = {key: value for key, value in os.environ.items() if key not in _DROPPED_ENV}
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the root may be read-only; its .pyc are compiled ahead
        env.setdefault("LANG", "C.UTF-8")
        env.update(extra or {})
        return env

    def run_python(
        self,
        code: str | None = None,
        *,
        script: str | os.PathLike | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        pythonpath: Sequence[str | os.PathLike] = (),
        timeout: float = TIMEOUT_S,
        cwd: str | os.PathLike | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run ``code`` (``python -c``) or ``script`` in the guest; stdout and stderr are captured as text.

        :raises EmulationUnavailable: when qemu cannot start the guest (the message has its output).
        :raises EmulationFailed: when it runs past ``timeout`` seconds (it is killed).
        :raises GuestFailed: when ``check`` and the code exits non-zero (the message ends with its output).
        """
        if (code is None) == (script is None):
            raise ValueError("give exactly one of code and script")
        argv = self.command(*(["-c", code] if code is not None else [os.fspath(script)]), *args)
        try:
            result = subprocess.run(argv, env=self.env(env, pythonpath=pythonpath), cwd=cwd, capture_output=True,
                                    text=True, timeout=timeout, check=False)
        except FileNotFoundError as err:
            raise EmulationUnavailable(f"cannot start {self.qemu}: {err}") from err
        except subprocess.TimeoutExpired as err:
            raise EmulationFailed(f"the emulated Python ran past {timeout:.0f} s and was killed; "
                                  f"stderr (end): {_text(err.stderr)[-2000:]}") from err
        if result.returncode != 0 and result.stderr.lstrip().startswith(f"{Path(self.qemu).name}:"):
            # qemu itself refused to start the guest (e.g. no loader in the root).
            raise EmulationUnavailable(f"{' '.join(argv[:6])} failed: {result.stderr.strip()[-2000:]}")
        if check and result.returncode != 0:
            raise GuestFailed(argv, result)
        return result


def _text(data) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


# ----------------------------------------------------------------------------- running an artifact


def run_emulated(metadata: dict, library: str | os.PathLike, inputs: dict, *, root: ArmRoot | None = None,
                 timeout: float | None = None) -> list:
    """The outputs (numpy arrays, in order) of the library described by ``metadata`` on ``inputs``
    ({input name: array}), run in the emulated aarch64 Python.

    :param root: the emulator (default: :func:`emulator_for` ``(metadata)``).
    :param timeout: seconds before the guest is killed (default :data:`TIMEOUT_S`).
    :raises EmulationUnavailable: no emulator for this artifact here (the message says why and how).
    :raises EmulationFailed: the guest refused the artifact, raised, crashed or ran past ``timeout``.
    """
    import numpy as np

    root = root or emulator_for(metadata)
    with tempfile.TemporaryDirectory(prefix="airflow-neo-emulated-") as scratch:
        work = Path(scratch)
        (work / "path").mkdir()
        (work / "path" / "airflow_neo").symlink_to(package_parent() / "airflow_neo", target_is_directory=True)
        names = list(inputs)
        np.savez(work / "inputs.npz", **{f"in_{index}": np.asarray(inputs[name]) for index, name in enumerate(names)})
        request = {"metadata": metadata, "library": str(Path(library).resolve()), "names": names,
                   "inputs": str(work / "inputs.npz"), "outputs": str(work / "outputs.npz")}
        (work / "request.json").write_text(json.dumps(request, default=str))
        threads = {"TVM_NUM_THREADS": os.environ.get("TVM_NUM_THREADS", "1")}
        result = root.run_python(
            "from airflow_neo.local.emulation import guest_main; guest_main()", args=[str(work / "request.json")],
            env=threads, pythonpath=[work / "path"], timeout=TIMEOUT_S if timeout is None else timeout, cwd=work,
            check=False,
        )
        if result.returncode == _REFUSED:
            raise EmulationFailed(f"the emulated CPU ({root.cpu}) cannot run it: {result.stderr.strip()[-1000:]}")
        if result.returncode != 0:
            raise GuestFailed(root.command(), result)
        with np.load(work / "outputs.npz", allow_pickle=False) as data:
            return [data[f"out_{index}"] for index in range(len(data.files))]


def guest_main(argv: Sequence[str] | None = None) -> int:
    """In the guest: run the request named by ``argv[0]`` (see :func:`run_emulated`); exits the process."""
    import numpy as np

    from airflow_neo.local.errors import IncompatibleArtifactError
    from airflow_neo.runtime import CompiledModel, check_host_compatible

    request = json.loads(Path((sys.argv[1:] if argv is None else argv)[0]).read_text())
    metadata = request["metadata"]
    try:
        check_host_compatible(metadata)  # against the emulated CPU (the root's proc/cpuinfo)
    except IncompatibleArtifactError as err:
        print(err, file=sys.stderr)
        raise SystemExit(_REFUSED) from None
    with np.load(request["inputs"], allow_pickle=False) as data:
        inputs = {name: data[f"in_{index}"] for index, name in enumerate(request["names"])}
    outputs = CompiledModel(metadata, Path(request["library"])).run(inputs)
    np.savez(request["outputs"], **{f"out_{index}": np.asarray(out) for index, out in enumerate(outputs)})
    raise SystemExit(0)
