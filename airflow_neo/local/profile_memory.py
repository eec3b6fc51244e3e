"""Peak resident memory of loading and running an artifact (or its source framework) once, in a fresh process.

:func:`peak_rss` writes the inputs to a temporary ``.npz`` and a small request to a JSON file,
then runs ``python -m airflow_neo.local.profile_memory <request.json>`` (``sys.executable``): the
child imports the runtime (TVM's Relax VM or tl2cgen; for the baseline, the framework), records
its resident set (``rss_after_imports_mb``), loads the library (or the reference runner of
:func:`airflow_neo.local.references.reference_for`), runs it once on the inputs and prints its
peak resident set as ``peak_rss_mb`` (``VmHWM``; see :func:`_peak_mb`): what a deploy
host needs to load and run the model in a process of its own (imports included: ``import tvm``
alone holds ~400 MB where torch is installed, since TVM imports it).

Invariants: bounded: the child is killed after ``timeout`` seconds; never raises: any failure (a
timeout, a crash, a child that printed no figures) gives ``{"peak_rss_skipped": <why>}`` and no
``peak_rss_mb``. The parent imports only the standard library and numpy (to write the inputs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["peak_rss"]

#: the framework module imported before ``rss_after_imports_mb`` is read, per job framework
_FRAMEWORK_MODULES = {
    "ONNX": ("onnxruntime",),
    "PYTORCH": ("torch",),
    "XGBOOST": ("xgboost",),
    "TFLITE": ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite"),
}


def peak_rss(kind: str, metadata: dict, library: Path, model_file: Path, inputs: dict, *, timeout: float,
             threads: int | None = None) -> dict:
    """``{"rss_after_imports_mb", "peak_rss_mb"}`` of a fresh process that loads and runs once the
    artifact (``kind="artifact"``) or the framework's reference runner (``kind="baseline"``, pinned
    to ``threads`` where the framework allows it); ``{"peak_rss_skipped": <why>}`` on any failure."""
    try:
        with tempfile.TemporaryDirectory(prefix="airflow-neo-rss-") as temporary:
            request = _write_request(Path(temporary), kind, metadata, library, model_file, inputs, threads)
            return _run_child(request, timeout)
    except Exception as err:  # noqa: BLE001 - see the module docstring
        return {"peak_rss_skipped": f"{type(err).__name__}: {str(err)[:300]}"}


def _write_request(folder: Path, kind: str, metadata: dict, library: Path, model_file: Path, inputs: dict,
                   threads: int | None) -> Path:
    import numpy as np

    names = list(inputs)
    np.savez(folder / "inputs.npz", *[np.asarray(inputs[name]) for name in names])
    request = {"kind": kind, "metadata": metadata, "library": str(library), "model_file": str(model_file),
               "names": names, "inputs": str(folder / "inputs.npz"), "threads": threads}
    path = folder / "request.json"
    path.write_text(json.dumps(request))
    return path


def _run_child(request: Path, timeout: float) -> dict:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run([sys.executable, "-m", "airflow_neo.local.profile_memory", str(request)],
                              capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"peak_rss_skipped": f"the child process took longer than {timeout:g} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [""])[-1][:300]
        return {"peak_rss_skipped": f"the child process exited with {done.returncode}: {tail}"}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- the child


def _rss_mb() -> float:
    """The resident set now (``VmRSS``; where there is no ``/proc``, the peak so far)."""
    return _proc_status_mb("VmRSS") or _peak_mb()


def _peak_mb() -> float:
    """The peak resident set of this process: ``VmHWM`` of ``/proc/self/status`` on Linux, else
    ``getrusage(RUSAGE_SELF).ru_maxrss``. Not ``ru_maxrss`` on Linux: execve carries the parent's
    peak into it (the kernel folds the old address space's high-water mark into the process's
    maxrss), so a child of a 500 MB compile process would report 500 MB."""
    found = _proc_status_mb("VmHWM")
    if found:
        return found
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of ``/proc/self/status`` in MiB; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _import_runtime(kind: str, metadata: dict) -> None:
    import importlib

    if kind == "artifact":
        modules = ("tvm.relax",) if metadata.get("runtime") == "tvm-relax-vm" else ("tl2cgen",)
        for module in modules:
            importlib.import_module(module)
        return
    for module in _FRAMEWORK_MODULES.get(metadata.get("framework"), ()):
        try:
            importlib.import_module(module)
            return
        except ImportError:
            continue


def _load(kind: str, request: dict):
    """A function that runs the model once on ``{input name: array}``."""
    metadata = request["metadata"]
    if kind == "artifact":
        from airflow_neo.runtime import CompiledModel

        model = CompiledModel(metadata, Path(request["library"]))
        return model.run
    from airflow_neo.local.references import reference_for

    return reference_for(metadata["framework"], Path(request["model_file"]), threads=request.get("threads"),
                         metadata=metadata).run


def child(request_path: str) -> dict:
    """Import, record the RSS, load, run once, record the peak."""
    import numpy as np

    request = json.loads(Path(request_path).read_text())
    _import_runtime(request["kind"], request["metadata"])
    after_imports = _rss_mb()
    with np.load(request["inputs"], allow_pickle=False) as data:
        inputs = {name: data[f"arr_{index}"] for index, name in enumerate(request["names"])}
    _load(request["kind"], request)(inputs)
    return {"rss_after_imports_mb": after_imports, "peak_rss_mb": _peak_mb()}


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1])), flush=True)
