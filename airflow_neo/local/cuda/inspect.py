"""Check a CUDA artifact's structure without a GPU and without loading it: the library's packed
imports hold a Relax VM executable and a CUDA module whose code is a cubin for the asked ``sm_XX``,
and every kernel the function table names is defined in that cubin.

This is what CI can check on a machine with no NVIDIA GPU; running the artifact needs one
(``airflow_neo.runtime`` loads it on ``cuda:0`` there).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from airflow_neo.local.cuda.blob import BlobFormatError, CudaModule, ImportBlob
from airflow_neo.local.cuda.elf import ElfError, ElfFile, cubin_arch

__all__ = ["CudaArtifactError", "CudaLibrary", "inspect_library"]

_BLOB_SYMBOL = "__tvm_ffi__library_bin"


class CudaArtifactError(ValueError):
    """The library is not a well-formed CUDA artifact; the message says what is missing."""


@dataclass(frozen=True)
class CudaLibrary:
    arch: str  #: the cubin's architecture, e.g. sm_75
    fmt: str  #: the device code's format (always "cubin" for an artifact of this backend)
    kernels: tuple[str, ...]
    cubin_bytes: int
    host_machine: int  #: ELF e_machine of model.so (62: x86-64, 183: aarch64)
    modules: tuple[str, ...]  #: the packed modules' type keys

    def as_dict(self) -> dict:
        return asdict(self)


def inspect_library(library: str | Path) -> CudaLibrary:
    """The CUDA structure of ``library``; CudaArtifactError naming the first thing that is wrong."""
    try:
        host = ElfFile(Path(library).read_bytes())
        blob = ImportBlob.from_bytes(host.symbol_bytes(_BLOB_SYMBOL))
    except (ElfError, BlobFormatError) as err:
        raise CudaArtifactError(f"{Path(library).name}: no readable TVM module blob ({err})") from err
    keys = tuple(module.key for module in blob.modules)
    if "relax.VMExecutable" not in keys:
        raise CudaArtifactError(f"{Path(library).name}: no Relax VM executable among the packed modules {keys}")
    found = blob.find("cuda")
    if len(found) != 1:
        raise CudaArtifactError(f"{Path(library).name}: expected one CUDA module, found {len(found)} in {keys}")
    try:
        device = CudaModule.from_payload(blob.modules[found[0]].payload)
    except BlobFormatError as err:
        raise CudaArtifactError(f"{Path(library).name}: unreadable CUDA module ({err})") from err
    if device.fmt != "cubin":
        raise CudaArtifactError(f"{Path(library).name}: the CUDA module holds {device.fmt!r}, not a compiled cubin")
    try:
        cubin = ElfFile(device.code)
        arch = cubin_arch(cubin)
    except ElfError as err:
        raise CudaArtifactError(f"{Path(library).name}: the CUDA module's code is not a cubin ({err})") from err
    missing = sorted(set(device.kernels) - set(cubin.functions()))
    if missing:
        raise CudaArtifactError(f"{Path(library).name}: kernels named by the function table but absent from the cubin: {missing}")
    return CudaLibrary(arch, device.fmt, tuple(device.kernels), len(device.code), host.machine, keys)
