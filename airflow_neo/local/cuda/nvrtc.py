"""NVIDIA's runtime compiler (NVRTC), called through ctypes: CUDA C++ source in, a cubin for one
``sm_XX`` out. No GPU and no CUDA driver are needed.

Where NVRTC comes from: the PyPI packages of the ``cuda`` extra (``nvidia-cuda-nvrtc`` puts
``libnvrtc.so.13`` under ``nvidia/cu13/lib``, ``nvidia-cuda-nvrtc-cu12`` puts ``libnvrtc.so.12``
under ``nvidia/cuda_nvrtc/lib``), a CUDA toolkit under ``$CUDA_PATH`` or ``/usr/local/cuda``, or a
library named by ``$AIRFLOW_NEO_NVRTC``. Each NVRTC knows a fixed list of architectures (CUDA 13:
sm_75 and newer; CUDA 12: sm_50 and newer), so :func:`nvrtc_for` picks, among the libraries found,
the **oldest** version that compiles for the asked architecture: a cubin from an older toolkit
loads on more drivers.

The headers TVM's generated code includes (``cuda/std/cstdint`` and ``cuda/std/type_traits`` from
CCCL, ``cuda_fp16.h``) come from ``nvidia-cuda-cccl`` and ``nvidia-cuda-runtime`` (or the toolkit).
Invariant: nothing here imports TVM; a failed compile raises :class:`CompilationError` with NVRTC's
log.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from airflow_neo.local.errors import CompilationError, UnsupportedTargetError

__all__ = ["ARCH_PATTERN", "Nvrtc", "NvrtcMissing", "compile_cubin", "found_nvrtcs", "header_dirs", "nvrtc_for"]

#: ``sm_XX`` or ``sm_XXX``, optionally with the ``a``/``f`` suffix of arch-specific features.
ARCH_PATTERN = re.compile(r"^sm_(\d{2,3})([af]?)$")
INSTALL_HINT = "pip install 'airflow-neo[cuda]' (nvidia-cuda-nvrtc, nvidia-cuda-nvrtc-cu12, nvidia-cuda-runtime, nvidia-cuda-cccl)"


class NvrtcMissing(CompilationError):
    """No NVRTC library (or none for the asked architecture) is installed."""


@dataclass(frozen=True)
class Nvrtc:
    """One NVRTC library: its file, version and the architectures it compiles for."""

    path: str
    version: tuple[int, int]
    archs: tuple[int, ...] = field(default=())

    @property
    def version_text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    def supports(self, arch: str) -> bool:
        return arch_number(arch) in self.archs


def arch_number(arch: str) -> int:
    """``sm_75`` -> 75; UnsupportedTargetError for anything that is not ``sm_XX``."""
    match = ARCH_PATTERN.match(str(arch))
    if not match:
        raise UnsupportedTargetError(
            f"CompilerOptions gpu-code {arch!r} is not a CUDA architecture; give sm_XX, e.g. 'sm_75' (T4), "
            "'sm_72' (Jetson Xavier), 'sm_53' (Jetson Nano)"
        )
    return int(match.group(1))


def _site_nvidia_dirs() -> list[Path]:
    try:
        import nvidia  # the namespace package of NVIDIA's PyPI wheels
    except ImportError:
        return []
    return [Path(entry) for entry in getattr(nvidia, "__path__", [])]


def _candidate_libraries() -> list[str]:
    candidates: list[str] = []
    if os.environ.get("AIRFLOW_NEO_NVRTC"):
        candidates.append(os.environ["AIRFLOW_NEO_NVRTC"])
    for base in _site_nvidia_dirs():
        candidates += sorted(glob.glob(str(base / "cu*" / "lib" / "libnvrtc.so.*")))
        candidates += sorted(glob.glob(str(base / "cuda_nvrtc" / "lib" / "libnvrtc.so.*")))
    for root in [os.environ.get("CUDA_PATH"), "/usr/local/cuda"]:
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "lib*", "libnvrtc.so.*")))
    seen, result = set(), []
    for path in candidates:
        name = os.path.basename(path)
        if ".alt." in name or "builtins" in name or not re.match(r"^libnvrtc\.so\.\d+$", name):
            continue
        real = os.path.realpath(path)
        if real not in seen and os.path.isfile(real):
            seen.add(real)
            result.append(path)
    return result


@functools.lru_cache(maxsize=None)
def _probe(path: str) -> Nvrtc | None:
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
        return None
    count = ctypes.c_int()
    archs: tuple[int, ...] = ()
    if hasattr(lib, "nvrtcGetNumSupportedArchs") and lib.nvrtcGetNumSupportedArchs(ctypes.byref(count)) == 0:
        values = (ctypes.c_int * count.value)()
        if lib.nvrtcGetSupportedArchs(values) == 0:
            archs = tuple(values)
    return Nvrtc(path, (major.value, minor.value), archs)


def found_nvrtcs() -> list[Nvrtc]:
    """Every NVRTC library that loads here, oldest version first."""
    found = [probe for probe in (_probe(path) for path in _candidate_libraries()) if probe is not None]
    return sorted(found, key=lambda item: item.version)


def nvrtc_for(arch: str) -> Nvrtc:
    """The oldest NVRTC here that compiles for ``arch``. NvrtcMissing (an installation problem) when
    there is none at all; UnsupportedTargetError naming the versions here when none knows ``arch``."""
    number = arch_number(arch)
    found = found_nvrtcs()
    for candidate in found:
        if number in candidate.archs:
            return candidate
    if not found:
        raise NvrtcMissing(f"compiling CUDA code needs NVRTC and none is installed; {INSTALL_HINT}")
    have = "; ".join(f"NVRTC {item.version_text} (sm_{min(item.archs)} to sm_{max(item.archs)})" for item in found if item.archs)
    raise UnsupportedTargetError(
        f"no installed NVRTC compiles for {arch}: {have}. CUDA 12 starts at sm_50 and CUDA 13 at sm_75; "
        f"older GPUs (Kepler sm_3x) need CUDA 11, which the cuda extra does not install"
    )


def header_dirs() -> list[str]:
    """Include directories holding ``cuda/std/cstdint`` (CCCL) and ``cuda_fp16.h``."""
    dirs: list[str] = []
    for base in _site_nvidia_dirs():
        for include in sorted(glob.glob(str(base / "cu*" / "include"))) + [str(base / "cuda_runtime" / "include")]:
            if os.path.isdir(include):
                dirs.append(include)
                if os.path.isdir(os.path.join(include, "cccl")):
                    dirs.append(os.path.join(include, "cccl"))
        cccl = base / "cuda_cccl" / "include"
        if cccl.is_dir():
            dirs.append(str(cccl))
    for root in [os.environ.get("CUDA_PATH"), "/usr/local/cuda"]:
        if root and os.path.isdir(os.path.join(root, "include")):
            dirs.append(os.path.join(root, "include"))
            for extra in glob.glob(os.path.join(root, "targets", "*", "include", "cccl")):
                dirs.append(extra)
    return list(dict.fromkeys(dirs))


def _has_cccl(dirs: list[str]) -> bool:
    return any(os.path.isfile(os.path.join(path, "cuda", "std", "cstdint")) for path in dirs)


def compile_cubin(source: str, arch: str, nvrtc: Nvrtc | None = None, *, fast_math: bool = True) -> bytes:
    """``source`` compiled by NVRTC to a cubin for ``arch`` (``sm_XX``)."""
    nvrtc = nvrtc or nvrtc_for(arch)
    includes = header_dirs()
    if not _has_cccl(includes):
        raise NvrtcMissing(f"NVRTC needs the CUDA C++ headers (CCCL's cuda/std/cstdint) and none were found; {INSTALL_HINT}")
    lib = ctypes.CDLL(nvrtc.path)
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    program = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), source.encode("utf-8"), b"tvm_kernels.cu", 0, None, None),
           "nvrtcCreateProgram")
    try:
        options = [f"--gpu-architecture={arch}", "-default-device", "--device-int128"]
        options += [f"-I{path}" for path in includes]
        options += ["-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__"]
        if fast_math:
            options.append("--use_fast_math")
        encoded = [option.encode("utf-8") for option in options]
        array = (ctypes.c_char_p * len(encoded))(*encoded)
        status = lib.nvrtcCompileProgram(program, len(encoded), array)
        if status != 0:
            raise CompilationError(
                f"NVRTC {nvrtc.version_text} could not compile the CUDA kernels for {arch}: "
                f"{lib.nvrtcGetErrorString(status).decode()}\n{_program_log(lib, program)[-3000:]}"
            )
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetCUBINSize(program, ctypes.byref(size)), "nvrtcGetCUBINSize")
        buffer = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetCUBIN(program, buffer), "nvrtcGetCUBIN")
        return buffer.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


def _program_log(lib, program) -> str:
    size = ctypes.c_size_t()
    if lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)) != 0 or size.value <= 1:
        return ""
    buffer = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(program, buffer)
    return buffer.value.decode("utf-8", errors="replace")


def _check(lib, status: int, call: str) -> None:
    if status != 0:
        raise CompilationError(f"NVRTC {call} failed: {lib.nvrtcGetErrorString(status).decode()}")
