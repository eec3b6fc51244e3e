"""Build a Relax module for an NVIDIA GPU: TVM's CUDA pipeline with its default GPU schedules
(DLight: Matmul, GEMV, Reduction, GeneralReduction, Fallback), kernels compiled ahead of time to a
cubin by NVRTC, linked into one ``model.so`` for the host CPU (x86-64, or aarch64 for Jetson boards,
cross-compiled like the other ARM targets).

TensorRT is not used: ``trt-ver`` is recorded, nothing is built with it. No GPU is needed here.
Invariant: the exported library's CUDA module is a ``cubin`` for exactly the target's ``sm_XX``
(:func:`export` checks it with :mod:`airflow_neo.local.cuda.inspect` before returning).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from airflow_neo.local.cuda.blob import CudaModule, ImportBlob
from airflow_neo.local.cuda.nvrtc import Nvrtc, compile_cubin, nvrtc_for
from airflow_neo.local.errors import CompilationError

__all__ = ["BLOB_SYMBOL", "build", "export"]

BLOB_SYMBOL = "__tvm_ffi__library_bin"
Log = Callable[[str], Any]


def build(mod, tvm_target, log: Log = print):
    """The Relax VM executable of ``mod`` for ``tvm_target`` (kind ``cuda`` with an LLVM host)."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cuda.pipeline import get_default_pipeline

    mod = relax.transform.DecomposeOpsForInference()(mod)
    log(f"schedules: DLight default GPU schedules for {tvm_target.attrs.get('arch')} (no tuning for CUDA targets)")
    return tvm.compile(mod, target=tvm_target, relax_pipeline=get_default_pipeline(tvm_target))


def export(executable, library: Path, compiler: str, arch: str, log: Log = print) -> dict:
    """Link ``executable`` into ``library`` with its kernels as a cubin for ``arch``; the report:
    NVRTC version, cubin size, kernel names."""
    from tvm.support import cc

    nvrtc = nvrtc_for(arch)
    report: dict = {}

    def pack_imports(module, is_system_lib, prefix, workspace_dir):
        if is_system_lib:
            raise CompilationError("CUDA artifacts are shared libraries; a system library cannot be packed")
        report.update(_compiled_blob(module, arch, nvrtc, Path(workspace_dir), log))
        return report.pop("assembly")

    fcompile = cc.cross_compiler(compiler, options=[])
    try:
        executable.export_library(str(library), fcompile=fcompile, fpack_imports=pack_imports)
    except RuntimeError as err:
        raise CompilationError(f"linking the CUDA library with {compiler} failed: {str(err)[-1500:]}") from err
    from airflow_neo.local.cuda.inspect import inspect_library

    found = inspect_library(library)
    if found.arch != arch:
        raise CompilationError(f"the library's cubin is for {found.arch}, not the asked {arch}")
    report["kernels"] = len(found.kernels)
    return report


def _compiled_blob(module, arch: str, nvrtc: Nvrtc, workspace: Path, log: Log) -> dict:
    import time

    import tvm_ffi

    raw = bytes(tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")(module).numpy().tobytes())
    blob = ImportBlob.from_bytes(raw)
    cuda = blob.find("cuda")
    if not cuda:
        raise CompilationError("the build produced no CUDA module: nothing of the model runs on the GPU")
    report = {"nvrtc": nvrtc.version_text, "nvrtc_library": os.path.basename(nvrtc.path), "cubin_bytes": 0}
    for index in cuda:
        device = CudaModule.from_payload(blob.modules[index].payload)
        if device.fmt != "cuda":
            raise CompilationError(f"expected the CUDA module as source (format 'cuda'); TVM gave {device.fmt!r}")
        started = time.monotonic()
        cubin = compile_cubin(device.code.decode("utf-8"), arch, nvrtc)
        log(f"NVRTC {nvrtc.version_text}: {len(device.kernels)} kernels -> {arch} cubin "
            f"({len(cubin)} bytes) in {time.monotonic() - started:.2f} s")
        blob.modules[index].payload = device.with_code("cubin", cubin).to_payload()
        report["cubin_bytes"] += len(cubin)
        report["float16_kernels"] = report.get("float16_kernels", 0) + _float16_kernels(device.code.decode("utf-8"))
    data_file = workspace / "devc.bin"
    data_file.write_bytes(blob.to_bytes())
    assembly = workspace / "devc.S"
    assembly.write_text(_assembly(data_file))
    report["assembly"] = str(assembly)
    return report


def _float16_kernels(source: str) -> int:
    """How many kernels of the CUDA source compute on ``half`` values."""
    uses_half: dict[str, bool] = {}
    for piece in source.split('extern "C" __global__')[1:]:  # declarations, then definitions
        match = re.match(r"\s*void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(", piece)
        if match:
            uses_half[match.group(1)] = uses_half.get(match.group(1), False) or "half" in piece
    return sum(uses_half.values())


def _assembly(data_file: Path) -> str:
    """GNU assembler source defining the blob symbol from the file's bytes (x86-64 and ARM alike)."""
    return (
        "\t.section .rodata\n"
        f"\t.global {BLOB_SYMBOL}\n"
        f"\t.type {BLOB_SYMBOL}, %object\n"
        "\t.balign 8\n"
        f"{BLOB_SYMBOL}:\n"
        f"\t.incbin \"{data_file}\"\n"
        f"\t.size {BLOB_SYMBOL}, .-{BLOB_SYMBOL}\n"
        "\t.section .note.GNU-stack,\"\",%progbits\n"
    )
