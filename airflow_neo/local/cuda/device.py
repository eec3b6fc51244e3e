"""Make TVM's CUDA runtime usable on a machine with an NVIDIA GPU, or say why it is not.

TVM 0.27's wheel ships its CUDA runtime as a sidecar, ``libtvm_runtime_cuda.so``, loaded when
``tvm`` is imported, and only if its dependencies load: the driver (``libcuda.so.1``, from the
NVIDIA driver) and the CUDA runtime (``libcudart.so.13``). The wheel does not bring the latter; the
``cuda`` extra does (``nvidia-cuda-runtime`` puts it under ``nvidia/cu13/lib``), but not on the
loader's path. :func:`cuda_unavailable` preloads it globally and loads the sidecar if the import of
``tvm`` could not, then asks TVM for ``cuda(0)``.

Invariant: nothing here raises for a missing GPU; the reason comes back as text (None: usable).
"""

from __future__ import annotations

import ctypes
import glob
import os

__all__ = ["cuda_unavailable"]


def _preload_cudart() -> None:
    try:
        ctypes.CDLL("libcudart.so.13", mode=ctypes.RTLD_GLOBAL)
        return
    except OSError:
        pass
    try:
        import nvidia
    except ImportError:
        return
    for base in getattr(nvidia, "__path__", []):
        for path in sorted(glob.glob(os.path.join(base, "cu*", "lib", "libcudart.so.*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return
            except OSError:
                continue


def _load_tvm_cuda_runtime() -> str | None:
    from pathlib import Path

    from tvm.base import _LOADED_LIBS
    from tvm_ffi.libinfo import load_lib_ctypes

    if "tvm_runtime_cuda" in _LOADED_LIBS:
        return None
    runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
            package="tvm", target_name="tvm_runtime_cuda", extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL")
    except (OSError, FileNotFoundError, RuntimeError) as err:
        return f"TVM's CUDA runtime (libtvm_runtime_cuda.so) does not load: {str(err)[:300]}"
    return None


def cuda_unavailable() -> str | None:
    """Why this machine cannot run CUDA artifacts (no driver, no CUDA runtime, no device); None when it can."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "this machine has no CUDA driver (libcuda.so.1)"
    _preload_cudart()
    import tvm

    why = _load_tvm_cuda_runtime()
    if why:
        return why
    if not tvm.cuda(0).exist:
        return "TVM sees no CUDA device (cuda:0)"
    return None
