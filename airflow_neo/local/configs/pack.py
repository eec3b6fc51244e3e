"""``PackStore``: the tuning pack shipped with the package (read-only), keyed by CPU family.

The pack (:data:`PACK_FILE`, built by ``scripts/build_tuning_pack.py``) holds, per CPU family and
workload hash, the knobs of the fastest candidate measured on a machine of that family, with the
TVM version the workload hashes came from and the provenance of each run.

Invariants:

* A record applies only to a target of the same :func:`cpu_family` (ISA family and vector width:
  ``x86-avx2`` knobs never reach an AVX-512 or an ARM target) and only under the TVM
  ``major.minor`` the pack was built with (workload hashes change with TVM's lowering).
* Knobs that do not fit a kernel are ignored by the schedule (see ``configs.knobs``), so a stale
  or foreign record can cost speed, never correctness.
* :func:`pack_digest` is the BLAKE2b of the pack file: the compile cache's key includes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from .base import ConfigRecord, ConfigStore
from .file import parse_records

PACK_FILE = Path(__file__).resolve().parent / "pack.json"
PACK_FORMAT = 1


def cpu_family(arch: str, vector_bits: int, fma: bool) -> str:
    """The family a pack record is keyed by, from a ``schedules.cpu.CpuInfo``'s fields."""
    if arch == "x86":
        return {512: "x86-avx512", 256: "x86-avx2" if fma else "x86-avx"}.get(vector_bits, "x86-sse")
    if arch == "aarch64":
        return "aarch64-neon"
    if arch == "arm":
        return "armv7-neon" if vector_bits >= 128 else "armv7"
    return f"{arch}-{vector_bits}"


def tvm_series(version: str | None) -> str:
    """``"0.27"`` from ``"0.27.0.post1"``."""
    parts = str(version or "").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else str(version or "")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, OSError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == PACK_FORMAT else {}


def pack_digest(path: str | Path = PACK_FILE) -> str:
    try:
        return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()
    except OSError:
        return "none"


class PackStore(ConfigStore):
    label = "pack"

    def __init__(self, family: str, tvm_version: str | None, path: str | Path = PACK_FILE, *, empty: bool = False):
        self.family = family
        self.path = Path(path)
        data = {} if empty else _load(str(self.path))
        self.usable = bool(data) and tvm_series(data.get("tvm")) == tvm_series(tvm_version)
        families = data.get("families") or {}
        self._records = parse_records(families.get(family)) if self.usable else {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> ConfigRecord | None:
        return self._records.get(key)
