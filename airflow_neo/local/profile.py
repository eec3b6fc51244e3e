"""The latency profile of a local compile's artifact, and of onnxruntime on the same model.

:func:`profile_build` runs in the compile child after the library is built and before the
artifact is written (before the verification, so that the load it times is the library's first in
the process): it loads the library (cold load time), runs it on the verification's inputs
(:func:`airflow_neo.local.verify.inputs_for`) once to warm up, then as many times as half the
budget (``[neo] profile_seconds``) allows, and reports p50/p90/p99 latency and the TVM runtime's
thread count. ONNX jobs get the same figures for onnxruntime (default session, CPU) in the other
half, and the speedup (onnxruntime's p50 / the artifact's p50).

Invariants: bounded: the timed runs stop when their half of the budget is spent (each side has at
least one warm-up and one timed run, so a model slower than the budget takes about three runs);
never fails a job: a target this machine cannot run, a framework missing here, or a run that
raises gives ``{"skipped": <why>}`` (or an ``onnxruntime`` entry with ``skipped``). Nothing is
imported at module level but the standard library.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["latency", "profile_build"]

Log = Callable[[str], Any]


def profile_build(metadata: dict, library: Path, model_file: Path, model_dir: Path, seconds: float, *,
                  log: Log = print) -> dict | None:
    """The ``profile`` entry of ``metadata.json`` (None when ``seconds`` is 0)."""
    if not seconds or seconds <= 0:
        return None
    from airflow_neo.local.errors import IncompatibleArtifactError
    from airflow_neo.local.references import NotVerifiable
    from airflow_neo.local.verify import inputs_for
    from airflow_neo.runtime import CompiledModel, check_host_compatible

    result: dict[str, Any] = {"budget_seconds": float(seconds)}
    try:
        check_host_compatible(metadata)
        inputs, result["inputs"] = inputs_for(metadata["inputs"], model_dir)
        started = time.perf_counter()
        model = CompiledModel(metadata, library)
        result["load_seconds"] = round(time.perf_counter() - started, 4)
        result["threads"] = _tvm_threads() if metadata.get("runtime") == "tvm-relax-vm" else None
        ordered = [inputs[name] for name in model.input_names]
        result.update(latency(lambda: model.run(ordered), seconds / 2))
    except (IncompatibleArtifactError, NotVerifiable) as err:
        result["skipped"] = str(err)
    except Exception as err:  # noqa: BLE001 - see the module docstring
        result["skipped"] = f"the artifact raised: {type(err).__name__}: {str(err)[:300]}"
    if "skipped" not in result and metadata.get("framework") == "ONNX":
        result["onnxruntime"] = _onnxruntime(model_file, inputs, seconds / 2)
        baseline = result["onnxruntime"].get("latency_ms")
        if baseline:
            result["speedup_vs_onnxruntime"] = round(baseline["p50"] / max(result["latency_ms"]["p50"], 1e-9), 3)
    log(summary(result))
    return result


def summary(result: dict) -> str:
    """One log line for a profile."""
    if result.get("skipped"):
        return f"profile: skipped: {result['skipped']}"
    ms = result["latency_ms"]
    line = (f"profile: p50 {ms['p50']:.3f} ms, p90 {ms['p90']:.3f} ms, p99 {ms['p99']:.3f} ms over {result['runs']} run(s), "
            f"{result['threads']} thread(s), load {result['load_seconds']:.3f} s")
    ort = result.get("onnxruntime") or {}
    if ort.get("latency_ms"):
        line += f"; onnxruntime p50 {ort['latency_ms']['p50']:.3f} ms: speedup {result['speedup_vs_onnxruntime']:.2f}x"
    elif ort.get("skipped"):
        line += f"; onnxruntime skipped: {ort['skipped']}"
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


def _onnxruntime(model_file: Path, inputs: dict, budget: float) -> dict:
    from airflow_neo.local.references import NotVerifiable, reference_for

    try:
        reference = reference_for("ONNX", model_file)
        return {"version": reference.name, **latency(lambda: reference.run(inputs), budget)}
    except NotVerifiable as err:
        return {"skipped": str(err)}
    except Exception as err:  # noqa: BLE001
        return {"skipped": f"onnxruntime raised: {type(err).__name__}: {str(err)[:300]}"}
