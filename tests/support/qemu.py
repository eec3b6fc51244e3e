"""Run Python code in an emulated aarch64 Python (QEMU user mode), to check ARM64 artifacts here.

The aarch64 root is built by ``scripts/arm_root.sh`` (Debian arm64 python3.11 + the manylinux
aarch64 wheels of apache-tvm, apache-tvm-ffi, numpy and onnxruntime). ``scripts/test.sh`` builds it
before pytest and exports its path as ``AIRFLOW_NEO_ARM64_ROOT`` (and, when the build failed, the
build log's path as ``AIRFLOW_NEO_ARM64_ROOT_LOG``)::

    root = qemu.find_root()            # ArmRoot, or raises EmulationUnavailable saying why
    result = root.run_python("import platform; print(platform.machine())")
    assert result.stdout.strip() == "aarch64"

The repository is put on the guest's ``PYTHONPATH``, so guest code imports ``airflow_neo`` (only
its pure modules and :mod:`airflow_neo.runtime`: Airflow is not in the root). ``qemu-aarch64 -L
<root>`` makes the guest's loader and every absolute path that exists in the root (``/lib``,
``/usr``, ``/etc/ld.so.cache``, ``/proc/cpuinfo``) resolve inside the root; other paths (the
repository, temporary directories) are this machine's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT_ENV = "AIRFLOW_NEO_ARM64_ROOT"
LOG_ENV = "AIRFLOW_NEO_ARM64_ROOT_LOG"
STAMP_NAME = ".airflow-neo-arm64-root"
#: The emulated CPU: the one the root's proc/cpuinfo describes (AWS Graviton2's core).
DEFAULT_CPU = "neoverse-n1"
#: Host variables that would break or change the guest (its loader and Python read them too).
_DROPPED_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV")

__all__ = ["ArmRoot", "EmulationUnavailable", "GuestFailed", "default_root_path", "find_root"]


class EmulationUnavailable(RuntimeError):
    """No usable aarch64 root or qemu-aarch64; the message says why and how to get one."""


class GuestFailed(RuntimeError):
    """The guest Python exited non-zero (or was killed by a signal); the message holds its output."""

    def __init__(self, argv: list[str], result: subprocess.CompletedProcess):
        self.result = result
        code = result.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        super().__init__(
            f"the emulated Python failed ({how}): {' '.join(argv[:6])} ...\n"
            f"--- stdout (end) ---\n{result.stdout[-3000:]}\n--- stderr (end) ---\n{result.stderr[-5000:]}"
        )


def default_root_path() -> Path:
    """Where ``scripts/arm_root.sh`` caches the root on this machine (same rules as the script)."""
    if os.environ.get("AIRFLOW_NEO_CACHE"):
        cache = Path(os.environ["AIRFLOW_NEO_CACHE"])
    elif os.geteuid() == 0 or os.access("/var/cache/airflow-neo", os.W_OK):
        cache = Path("/var/cache/airflow-neo")
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "airflow-neo"
    return cache / "arm64-root"


def _build_log_tail() -> str:
    log = os.environ.get(LOG_ENV)
    if not log:
        return ""
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "; scripts/arm_root.sh said: " + " | ".join(line for line in lines[-6:] if line.strip())


def find_qemu() -> str | None:
    return shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")


def find_root(path: str | os.PathLike | None = None) -> ArmRoot:
    """The aarch64 root at ``path``, ``$AIRFLOW_NEO_ARM64_ROOT`` or the script's cache directory.

    :raises EmulationUnavailable: saying what is missing (qemu, the root, its Python).
    """
    given = path or os.environ.get(ROOT_ENV)
    root = Path(given) if given else default_root_path()
    hint = "build it with `bash scripts/arm_root.sh` (scripts/test.sh does when run as root)"
    qemu = find_qemu()
    if qemu is None:
        raise EmulationUnavailable(
            "qemu-aarch64 is not installed (Debian package qemu-user; scripts/arm_root.sh installs it as root)"
            + _build_log_tail()
        )
    if not (root / STAMP_NAME).is_file():
        where = f"${ROOT_ENV}={given}" if given else f"the default cache {root} (${ROOT_ENV} is not set)"
        raise EmulationUnavailable(f"no aarch64 root at {where}; {hint}" + _build_log_tail())
    pythons = sorted((root / "usr" / "bin").glob("python3.[0-9]*"))
    pythons = [p for p in pythons if p.name.replace("python", "").replace(".", "").isdigit()]
    if not pythons:
        raise EmulationUnavailable(f"the aarch64 root {root} has no usr/bin/python3.X; rebuild it: {hint}")
    return ArmRoot(root, pythons[-1], qemu, os.environ.get("AIRFLOW_NEO_QEMU_CPU") or DEFAULT_CPU)


@dataclass(frozen=True)
class ArmRoot:
    """An aarch64 root and the qemu that runs its Python."""

    path: Path
    python: Path
    qemu: str
    cpu: str = DEFAULT_CPU

    def command(self, *args: str) -> list[str]:
        """The argv running the guest Python with ``args``."""
        return [self.qemu, "-L", str(self.path), "-cpu", self.cpu, str(self.python), *args]

    def env(self, extra: dict[str, str] | None = None, *, pythonpath: list[str | os.PathLike] | None = None) -> dict:
        """This process's environment minus what would leak into the guest, plus the repo on PYTHONPATH."""
        env = {key: value for key, value in os.environ.items() if key not in _DROPPED_ENV}
        paths = [str(REPO), *(str(p) for p in (pythonpath or []))]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the root may be read-only; its .pyc are compiled ahead
        env.setdefault("LANG", "C.UTF-8")
        env.update(extra or {})
        return env

    def run_python(
        self,
        code: str | None = None,
        *,
        script: str | os.PathLike | None = None,
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        timeout: float = 600,
        cwd: str | os.PathLike | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run ``code`` (``python -c``) or ``script`` in the guest; stdout and stderr are captured as text.

        :raises EmulationUnavailable: when qemu cannot start the guest (the message has its output).
        :raises GuestFailed: when ``check`` and the code exits non-zero (the message ends with its output).
        """
        if (code is None) == (script is None):
            raise ValueError("give exactly one of code and script")
        argv = self.command(*(["-c", code] if code is not None else [os.fspath(script)]), *args)
        try:
            result = subprocess.run(
                argv, env=self.env(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError as err:
            raise EmulationUnavailable(f"cannot start {self.qemu}: {err}") from err
        qemu_name = Path(self.qemu).name
        if result.returncode != 0 and result.stderr.lstrip().startswith(f"{qemu_name}:"):
            # qemu itself refused to start the guest (e.g. no loader in the root).
            raise EmulationUnavailable(f"{' '.join(argv[:6])} failed: {result.stderr.strip()[-2000:]}")
        if check and result.returncode != 0:
            raise GuestFailed(argv, result)
        return result


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.qemu CODE``: run CODE in the guest (a quick manual check)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        root = find_root()
    except EmulationUnavailable as err:
        print(err, file=sys.stderr)
        return 2
    result = root.run_python(args[0] if args else "import platform, sys; print(platform.machine(), sys.version)", check=False)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
