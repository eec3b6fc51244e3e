"""What a default schedule needs to know about the CPU a kernel is built for.

Invariants:

* Everything is read from the TVM target (``mtriple``, ``mcpu``, ``mattr``) through LLVM's own
  feature tables (``llvm_get_cpu_features``), never from the machine running the compile, so a
  cross build (AArch64 from x86, AVX-512 from an AVX2 host) gets the *target's* vector width.
* ``llvm_get_vector_width`` is not used: TVM 0.27 answers 512 bits for every x86 CPU, AVX2 ones
  included.
* Unknown or non-LLVM targets get a conservative 128-bit, 16-register description: schedules built
  from it are correct everywhere, only less wide.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CpuInfo:
    """Vector width and register file of one target CPU."""

    arch: str  #: "x86", "aarch64", "arm" or "other"
    vector_bits: int  #: width of one SIMD register (128, 256 or 512)
    vector_registers: int  #: SIMD registers the register blocking may plan with
    fma: bool  #: fused multiply-add available

    def lanes(self, dtype: str) -> int:
        """Elements of ``dtype`` in one SIMD register (at least 1)."""
        bits = _dtype_bits(dtype)
        return max(1, self.vector_bits // bits)

    def describe(self) -> str:
        return f"{self.arch}, {self.vector_bits}-bit vectors, {self.vector_registers} vector registers"


def _dtype_bits(dtype: str) -> int:
    import tvm

    return int(tvm.DataType(str(dtype)).bits) or 32


def cpu_info(target) -> CpuInfo:
    """The :class:`CpuInfo` of a TVM ``target`` (a ``tvm.target.Target``, a dict or a tag)."""
    from tvm.target import Target
    from tvm.target import codegen

    target = target if isinstance(target, Target) else Target(target)
    if target.kind.name != "llvm":
        return CpuInfo("other", 128, 16, False)
    triple = str(target.attrs.get("mtriple") or codegen.llvm_get_system_triple())
    try:
        features = {str(name) for name in codegen.llvm_get_cpu_features(target)}
    except Exception:  # noqa: BLE001 - an LLVM without the query: stay conservative
        features = set()
    if triple.startswith(("x86_64", "i386", "i486", "i586", "i686", "x86")):
        if "avx512f" in features:
            return CpuInfo("x86", 512, 32, True)
        if "avx" in features:
            return CpuInfo("x86", 256, 16, "fma" in features)
        return CpuInfo("x86", 128, 16 if triple.startswith("x86_64") else 8, False)
    if triple.startswith(("aarch64", "arm64")):
        return CpuInfo("aarch64", 128, 32, True)
    if triple.startswith(("arm", "thumb")):
        neon = "neon" in features or any("neon" in str(f) for f in (target.attrs.get("mattr") or ()))
        return CpuInfo("arm", 128 if neon else 64, 16, "vfp4" in features)
    return CpuInfo("other", 128, 32, True)
