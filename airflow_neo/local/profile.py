"""The profile of a local compile's artifact: latency, memory, time per kernel, and the source framework's baseline.

:func:`profile_build` runs in the compile child after the library is built and before the
artifact is written (before the verification, so that the load it times is the library's first in
the process). On the verification's inputs (:func:`airflow_neo.local.verify.inputs_for`) it records:

- ``input_shapes`` ({input: shape}) for an artifact with flexible inputs (DataInputConfig ranges):
  the size it was timed at, each range dim at its lower bound (the verification's sample inputs)
  unless the user's or the archive's ``.npz`` gives another size within the range;
- ``load_seconds`` (cold load), ``threads`` (the TVM runtime's thread count; None for tl2cgen) and
  the latency (``runs``, ``warmup_runs``, ``latency_ms``: p50/p90/p99/mean/min): one warm-up
  run, then timed runs for half of the budget (``[neo] profile_seconds``);
- ``top_kernels`` (the 10 most expensive calls of one run: ``name``, ``calls``, ``total_ms``,
  ``percent`` of that run), ``kernels_total_ms``, ``builtins_ms`` (the VM's own ``vm.builtin.*``
  calls) and ``profiled_run_ms``: TVM 0.27's wheel has no Relax VM profiler (no ``profile=True``),
  so the library is loaded a second time into a second VM whose ``set_instrument`` hook times each
  call (exclusive of nested calls; the hook's own Python overhead, about a microsecond per call,
  is included); the artifact's VM is left as it was. tl2cgen artifacts (XGBoost) have no kernels:
  ``kernels_skipped`` says so, as it does for any failure;
- ``rss_after_imports_mb`` and ``peak_rss_mb``: a fresh child process imports the runtime, loads
  the library and runs it once (:mod:`airflow_neo.local.profile_memory`); on failure
  ``peak_rss_skipped`` says why;
- ``baseline``: the source framework's runner (:func:`airflow_neo.local.references.reference_for`:
  onnxruntime for ONNX, torch eager for PYTORCH, xgboost, a TFLite interpreter) timed the same way
  in the other half of the budget: ``name``, ``threads``, ``runs``, ``warmup_runs``,
  ``latency_ms``, and its own ``rss_after_imports_mb``/``peak_rss_mb`` (or ``peak_rss_skipped``);
  ``{"skipped": <why>}`` when it cannot run here. It runs the framework's default session settings
  (onnxruntime: its default CPU session, whose thread pool would otherwise size itself), except
  that its thread count is pinned to the artifact's ``threads`` where the framework allows it
  (onnxruntime ``intra_op_num_threads``, ``torch.set_num_threads`` restored afterwards, xgboost
  ``nthread``, TFLite ``num_threads``), so that the ``speedup`` (the baseline's p50 / the
  artifact's p50; below 1: the artifact is slower) compares like with like; ``baseline.threads``
  is the count it ran with (None: the framework's default).

Invariants: bounded: the timed runs stop when their half of the budget is spent (each side has at
least one warm-up and one timed run, so a model slower than the budget takes about three runs);
the kernel profile takes one run; each peak-RSS child takes one load and one run plus its imports
and is killed after max(30 s, 5 x the budget) (``import tvm`` alone takes seconds, more than small
budgets). Never fails a job: a target this machine cannot run, a framework missing here, or a run
that raises gives ``{"skipped": <why>}`` (or ``baseline: {"skipped": ...}``, ``kernels_skipped``,
``peak_rss_skipped``). Nothing is imported at module level but the standard library.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["child_timeout", "kernel_profile", "latency", "profile_build", "summary"]

Log = Callable[[str], Any]

#: how many of the most expensive kernels the profile lists
TOP_KERNELS = 10


def profile_build(metadata: dict, library: Path, model_file: Path, model_dir: Path, seconds: float, *,
                  log: Log = print, user_inputs: tuple[Path, str] | None = None) -> dict | None:
    """The ``profile`` entry of ``metadata.json`` (None when ``seconds`` is 0), on the verification's
    inputs (``user_inputs``: the job's ``verify_inputs``, as :func:`~airflow_neo.local.verify.inputs_for` takes them)."""
    if not seconds or seconds <= 0:
        return None
    result: dict[str, Any] = {"budget_seconds": float(seconds)}
    inputs = _artifact_latency(result, metadata, library, model_dir, seconds / 2, user_inputs)
    if "skipped" not in result:
        from airflow_neo.local.profile_memory import peak_rss

        timeout = child_timeout(seconds)
        ordered = [inputs[spec["name"]] for spec in metadata["inputs"]]
        result.update(kernel_profile(metadata, library, ordered))
        result.update(peak_rss("artifact", metadata, library, model_file, inputs, timeout=timeout))
        result["baseline"] = _baseline(metadata, model_file, inputs, seconds / 2, result["threads"], timeout)
        baseline = result["baseline"].get("latency_ms")
        if baseline:
            result["speedup"] = round(baseline["p50"] / max(result["latency_ms"]["p50"], 1e-9), 3)
    log(summary(result))
    return result


def child_timeout(seconds: float) -> float:
    """How long a peak-RSS child may take: max(30 s, 5 x the budget)."""
    return max(30.0, 5.0 * seconds)


def _artifact_latency(result: dict, metadata: dict, library: Path, model_dir: Path, budget: float,
                      user_inputs: tuple[Path, str] | None = None) -> dict:
    """Fill ``result`` with the artifact's load time, threads and latency (or ``skipped``); the inputs."""
    from airflow_neo.local.errors import IncompatibleArtifactError
    from airflow_neo.local.references import NotVerifiable
    from airflow_neo.local.verify import inputs_for
    from airflow_neo.runtime import CompiledModel, check_host_compatible

    inputs: dict = {}
    try:
        check_host_compatible(metadata)
        inputs, result["inputs"] = inputs_for(metadata["inputs"], model_dir, user_inputs=user_inputs)
        if any(spec.get("ranges") for spec in metadata["inputs"]):
            result["input_shapes"] = {name: list(getattr(value, "shape", ())) for name, value in inputs.items()}
        started = time.perf_counter()
        model = CompiledModel(metadata, library)
        result["load_seconds"] = round(time.perf_counter() - started, 4)
        result["threads"] = _tvm_threads() if metadata.get("runtime") == "tvm-relax-vm" else None
        ordered = [inputs[name] for name in model.input_names]
        result.update(latency(lambda: model.run(ordered), budget))
    except (IncompatibleArtifactError, NotVerifiable) as err:
        result["skipped"] = str(err)
    except Exception as err:  # noqa: BLE001 - see the module docstring
        result["skipped"] = f"the artifact raised: {type(err).__name__}: {str(err)[:300]}"
    return inputs


def summary(result: dict) -> str:
    """One log line for a profile."""
    if result.get("skipped"):
        return f"profile: skipped: {result['skipped']}"
    ms = result["latency_ms"]
    line = (f"profile: p50 {ms['p50']:.3f} ms, p90 {ms['p90']:.3f} ms, p99 {ms['p99']:.3f} ms over {result['runs']} run(s), "
            f"{result['threads']} thread(s), load {result['load_seconds']:.3f} s")
    if result.get("input_shapes"):
        line += " at input shapes " + " ".join(f"{name}{shape}" for name, shape in result["input_shapes"].items())
    if "peak_rss_mb" in result:
        line += f", peak RSS {result['peak_rss_mb']:.0f} MB"
    if result.get("top_kernels"):
        top = result["top_kernels"][0]
        line += f"; top kernel {top['name']} {top['percent']:.1f}%"
    baseline = result.get("baseline") or {}
    if baseline.get("latency_ms"):
        line += f"; {baseline['name']} p50 {baseline['latency_ms']['p50']:.3f} ms: speedup {result['speedup']:.2f}x"
    elif baseline.get("skipped"):
        line += f"; baseline skipped: {baseline['skipped']}"
    return line


def latency(run: Callable[[], Any], budget: float) -> dict:
    """``run`` once to warm up, then timed until ``budget`` seconds are spent (at least once):
    ``{"runs", "warmup_runs", "latency_ms": {p50, p90, p99, mean, min}}``."""
    run()
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while not samples or time.perf_counter() < deadline:
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000.0)
    return {"runs": len(samples), "warmup_runs": 1, "latency_ms": _percentiles(samples)}


def _percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
        return round(ordered[index], 4)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "mean": round(sum(ordered) / len(ordered), 4),
            "min": round(ordered[0], 4)}


def _tvm_threads() -> int | None:
    import tvm

    count = tvm.get_global_func("runtime.NumThreads", allow_missing=True)
    return int(count()) if count is not None else None


def _baseline(metadata: dict, model_file: Path, inputs: dict, budget: float, threads: int | None,
              timeout: float) -> dict:
    """The source framework's figures: name, threads, latency and peak RSS; ``{"skipped": <why>}``."""
    from airflow_neo.local.profile_memory import peak_rss
    from airflow_neo.local.references import NotVerifiable, reference_for

    framework = metadata.get("framework")
    try:
        reference = reference_for(framework, model_file, threads=threads, metadata=metadata)
        if reference.not_timeable:
            return {"skipped": f"{reference.name}: {reference.not_timeable}"}
        with _torch_threads(framework, threads) as torch_threads:
            figures = latency(lambda: reference.run(inputs), budget)
    except NotVerifiable as err:
        return {"skipped": str(err)}
    except Exception as err:  # noqa: BLE001 - see the module docstring
        return {"skipped": f"the baseline raised: {type(err).__name__}: {str(err)[:300]}"}
    found = {"name": reference.name, "threads": torch_threads or reference.threads, **figures}
    found.update(peak_rss("baseline", metadata, Path(), model_file, inputs, timeout=timeout, threads=threads))
    return found


@contextlib.contextmanager
def _torch_threads(framework: str | None, threads: int | None) -> Iterator[int | None]:
    """For PYTORCH with a thread count: torch's (process-wide) count set to it, restored after; yields it."""
    if framework != "PYTORCH" or not threads:
        yield None
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def kernel_profile(metadata: dict, library: Path, arrays: list) -> dict:
    """``top_kernels``, ``kernels_total_ms``, ``builtins_ms``, ``profiled_run_ms`` of one run of the
    library in a second VM (the module docstring says how); ``{"kernels_skipped": <why>}`` else."""
    runtime = metadata.get("runtime")
    if runtime != "tvm-relax-vm":
        return {"kernels_skipped": f"per-kernel times need TVM's Relax VM; this artifact's runtime is {runtime} "
                                   "(tl2cgen compiles the whole tree model into one C function)"}
    try:
        import tvm
        from tvm import relax

        machine = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        timer = _CallTimer()
        machine.set_instrument(timer)
        args = [tvm.runtime.tensor(array) for array in arrays]
        started = time.perf_counter()
        machine[metadata.get("entry_function") or "main"](*args)
        return timer.report((time.perf_counter() - started) * 1000.0)
    except Exception as err:  # noqa: BLE001 - see the module docstring
        return {"kernels_skipped": f"the kernel profile raised: {type(err).__name__}: {str(err)[:300]}"}


class _CallTimer:
    """A Relax VM instrument: the exclusive time (ms) and count of each called function, by name."""

    def __init__(self) -> None:
        self.calls: dict[str, list] = {}
        self._open: list[list[float]] = []  # [started, time spent in nested calls]

    def __call__(self, func, name: str, before_run: bool, ret_value, *args) -> int:
        now = time.perf_counter()
        if before_run:
            self._open.append([now, 0.0])
            return 0
        started, nested = self._open.pop()
        spent = now - started
        if self._open:
            self._open[-1][1] += spent
        entry = self.calls.setdefault(str(name), [0, 0.0])
        entry[0] += 1
        entry[1] += (spent - nested) * 1000.0
        return 0

    def report(self, run_ms: float) -> dict:
        kernels = {name: v for name, v in self.calls.items() if not name.startswith("vm.builtin.")}
        builtins_ms = sum(v[1] for name, v in self.calls.items() if name not in kernels)
        ranked = sorted(kernels.items(), key=lambda item: (-item[1][1], item[0]))[:TOP_KERNELS]
        return {
            "top_kernels": [{"name": name, "calls": calls, "total_ms": _sig(total),
                             "percent": _sig(100.0 * total / max(run_ms, 1e-9))} for name, (calls, total) in ranked],
            "kernels_total_ms": _sig(sum(v[1] for v in kernels.values())),
            "builtins_ms": _sig(builtins_ms),
            "profiled_run_ms": _sig(run_ms),
        }


def _sig(value: float) -> float:
    """Four significant digits (a small positive stays positive)."""
    return float(f"{value:.4g}")
