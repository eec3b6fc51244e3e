"""Run Python code in an emulated aarch64 Python (QEMU user mode), to check ARM64 artifacts here.

A thin layer over the product's :mod:`airflow_neo.local.emulation` (which finds ``qemu-aarch64``
and the aarch64 root built by ``scripts/arm_root.sh``): the tests' guests get the repository on
their ``PYTHONPATH`` (so they import ``airflow_neo`` from the checkout, and ``tests`` if they
need it). ``scripts/test.sh`` builds the root before pytest and exports its path as
``AIRFLOW_NEO_ARM64_ROOT`` (and, when the build failed, the build log's path as
``AIRFLOW_NEO_ARM64_ROOT_LOG``)::

    root = qemu.find_root()            # ArmRoot, or raises EmulationUnavailable saying why
    result = root.run_python("import platform; print(platform.machine())")
    assert result.stdout.strip() == "aarch64"

Guest code imports only the pure modules of ``airflow_neo`` and :mod:`airflow_neo.runtime`
(Airflow is not in the root).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airflow_neo.local import emulation
from airflow_neo.local.emulation import (
    DEFAULT_CPU,
    LOG_ENV,
    ROOT_ENV,
    STAMP_NAME,
    EmulationFailed,
    EmulationUnavailable,
    GuestFailed,
    default_root_path,
    find_qemu,
)

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "DEFAULT_CPU", "LOG_ENV", "REPO", "ROOT_ENV", "STAMP_NAME", "ArmRoot", "EmulationFailed", "EmulationUnavailable",
    "GuestFailed", "default_root_path", "find_qemu", "find_root",
]


class ArmRoot(emulation.ArmRoot):
    """:class:`airflow_neo.local.emulation.ArmRoot` with the repository first on the guest's PYTHONPATH."""

    def env(self, extra: dict[str, str] | None = None, *, pythonpath=()) -> dict:
        return super().env(extra, pythonpath=[REPO, *pythonpath])


def find_root(path: str | os.PathLike | None = None) -> ArmRoot:
    """:func:`airflow_neo.local.emulation.find_root`, as this module's :class:`ArmRoot`.

    :raises EmulationUnavailable: saying what is missing (qemu, the root, its Python).
    """
    found = emulation.find_root(path)
    return ArmRoot(found.path, found.python, found.qemu, found.cpu)


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
