"""The report of one compilation job: what its artifact's verification and profile say, in brief.

:func:`build_report` turns a describe payload and the artifact's ``metadata.json`` (or None) into a
compact dict: the job, its status and target, the artifact, a ``verification`` summary, a
``profile`` summary and, for artifacts that cannot run here (CUDA, Core ML), ``device_code``: what
the compile checked of them. The compile operator pushes it to XCom (key ``neo_report``), logs it
(:func:`format_report`), attaches it to its outlet asset events and to an OpenLineage run facet;
the command line prints it. :func:`check_slowdown` is the operator's ``max_slowdown`` gate.

Invariants:

- pure: no Airflow, no TVM, no I/O; the same inputs give the same report;
- every key of the metadata entries is optional (artifacts written before a key existed lack it),
  and the profile's older keys ``onnxruntime``/``speedup_vs_onnxruntime`` are read when the newer
  ``baseline``/``speedup`` are absent;
- the report is JSON-safe and strict: strings, bools, None, finite numbers, lists and dicts
  (an infinite or NaN figure becomes the string ``"inf"``/``"nan"``);
- ``available`` is False, with ``reason``, when there is no metadata (a SageMaker job; a job that
  did not complete has no artifact: its ``artifact`` and ``digest`` are None whatever the payload
  says); ``verification`` and ``profile`` are then None;
- the gate fails closed: without figures to compare there is a problem that says why.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "REPORT_VERSION", "TOP_KERNELS", "build_report", "check_max_slowdown", "check_slowdown", "device_code_summary",
    "format_report",
]

#: the version of the report's shape
REPORT_VERSION = 1
#: how many of the profile's most expensive kernels the report keeps
TOP_KERNELS = 5

NO_PROFILE = ("the artifact carries no profile ([neo] profile_seconds was 0 when it was compiled: a compile-cache "
              "hit keeps the first compile's metadata; or the artifact predates profiling)")
NO_VERIFICATION = "the artifact carries no verification (verify_mode 'off', or the artifact predates verification)"


def build_report(payload: dict, metadata: dict | None, *, unavailable_reason: str | None = None) -> dict:
    """The report of the job of ``payload`` whose artifact's ``metadata.json`` is ``metadata``.

    :param unavailable_reason: why there is no metadata, when ``metadata`` is None (default: the
        job's status says it, or "no metadata").
    """
    output = payload.get("OutputConfig") or {}
    done = payload.get("CompilationJobStatus") == "COMPLETED"  # only a completed job has an artifact
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "job": payload.get("CompilationJobName"),
        "status": payload.get("CompilationJobStatus"),
        "failure_reason": payload.get("FailureReason") or None,
        "framework": (payload.get("InputConfig") or {}).get("Framework") or (metadata or {}).get("framework"),
        "target": target_of(output),
        "output_location": output.get("S3OutputLocation"),
        "artifact": ((payload.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or None) if done else None,
        "digest": ((payload.get("ModelDigests") or {}).get("ArtifactDigest") or None) if done else None,
        "available": isinstance(metadata, dict),
    }
    if not isinstance(metadata, dict):
        report["reason"] = unavailable_reason or _default_reason(report["status"])
        report["verification"] = report["profile"] = report["device_code"] = None
        return report
    report["verification"] = verification_summary(metadata.get("verification"))
    report["profile"] = profile_summary(metadata.get("profile"))
    report["device_code"] = device_code_summary(metadata)
    return report


def device_code_summary(metadata: dict) -> dict | None:
    """What an artifact that cannot run here holds, as its compile checked it: the CUDA cubin
    (architecture, kernels, NVRTC) or the Core ML model (type, precision, labels); None otherwise."""
    cuda, coreml = metadata.get("cuda"), metadata.get("coreml")
    if isinstance(cuda, dict):
        return {"kind": "cuda", "arch": cuda.get("arch"), "kernels": _number(cuda.get("kernels")),
                "float16_kernels": _number(cuda.get("float16_kernels")), "nvrtc": cuda.get("nvrtc"),
                "driver_note": cuda.get("driver_note")}
    if isinstance(coreml, dict):
        classifier = coreml.get("classifier") or {}
        return {"kind": "coreml", "model_type": coreml.get("model_type"),
                "precision": coreml.get("compute_precision"), "labels": _number(classifier.get("labels"))}
    return None


def _default_reason(status: str | None) -> str:
    if status and status != "COMPLETED":
        return f"the job is {status}: there is no artifact to report on"
    return "no metadata.json was read for the artifact"


def target_of(output_config: dict) -> str | None:
    """``TargetDevice``, or ``Os/Arch[/Accelerator]`` of ``TargetPlatform``."""
    if output_config.get("TargetDevice"):
        return str(output_config["TargetDevice"])
    platform = output_config.get("TargetPlatform") or {}
    parts = [platform.get(key) for key in ("Os", "Arch", "Accelerator") if platform.get(key)]
    return "/".join(str(part) for part in parts) or None


# ----------------------------------------------------------------------------- verification


def verification_summary(entry: Any) -> dict:
    """The verification in brief: mode, passed (True/False/None), reference, inputs, worst output."""
    if not isinstance(entry, dict):
        return {"passed": None, "not_verified": NO_VERIFICATION}
    outputs = [item for item in entry.get("outputs") or [] if isinstance(item, dict)]
    summary = {
        "mode": entry.get("mode"),
        "passed": entry.get("passed") if isinstance(entry.get("passed"), bool) else None,
        "reference": entry.get("reference"),
        "inputs": entry.get("inputs"),
        "outputs": len(outputs),
        "worst": _worst_output(outputs),
        "seconds": _number(entry.get("seconds")),
    }
    if entry.get("not_verified"):
        summary["not_verified"] = str(entry["not_verified"])
    if entry.get("emulated"):
        summary["emulated"] = str(entry["emulated"])
    sizes = [item for item in entry.get("shapes") or [] if isinstance(item, dict)]
    if sizes:  # a flexible-shape artifact, verified at several sizes
        summary["input_sizes"] = len(sizes)
    return summary


def _worst_output(outputs: list[dict]) -> dict | None:
    """The output furthest beyond (or closest to) its tolerance: a failed one first."""
    if not outputs:
        return None

    def badness(item: dict) -> tuple:
        diff, tolerance = _float(item.get("max_abs_diff")), _float(item.get("tolerance"))
        ratio = diff / max(tolerance, 1e-30) if diff is not None and tolerance is not None else -1.0
        return (item.get("passed") is False, ratio if not math.isnan(ratio) else math.inf)

    worst = max(outputs, key=badness)
    found = {"name": worst.get("name"), "passed": worst.get("passed")}
    for key in ("max_abs_diff", "max_rel_diff", "tolerance"):
        found[key] = _number(worst.get(key))
    if worst.get("problem"):
        found["problem"] = str(worst["problem"])
    return found


# ----------------------------------------------------------------------------- profile


def profile_summary(entry: Any) -> dict:
    """The profile in brief: latency, runs, threads, load time, peak RSS, top kernels, baseline, speedup."""
    if not isinstance(entry, dict):
        return {"skipped": NO_PROFILE}
    if entry.get("skipped"):
        return {"skipped": str(entry["skipped"])}
    latency = entry.get("latency_ms") or {}
    summary: dict[str, Any] = {f"{key}_ms": _number(latency.get(key)) for key in ("p50", "p90", "p99")}
    for key in ("runs", "threads", "load_seconds", "peak_rss_mb", "budget_seconds"):
        summary[key] = _number(entry.get(key))
    summary["top_kernels"] = [
        {key: (_number(kernel.get(key)) if key != "name" else kernel.get("name"))
         for key in ("name", "calls", "total_ms", "percent")}
        for kernel in (entry.get("top_kernels") or [])[:TOP_KERNELS] if isinstance(kernel, dict)
    ]
    summary["baseline"] = _baseline(entry)
    speedup = _float(entry["speedup"] if "speedup" in entry else entry.get("speedup_vs_onnxruntime"))
    base_p50, p50 = _float(summary["baseline"].get("p50_ms")), _float(summary["p50_ms"])
    if speedup is None and base_p50 is not None and p50 is not None:
        speedup = base_p50 / max(p50, 1e-9)
    summary["speedup"] = _number(speedup)
    summary["slowdown"] = _number(1.0 / speedup if speedup else (math.inf if speedup == 0 else None))
    return summary


def _baseline(entry: dict) -> dict:
    """``{"name", "p50_ms", "runs"}`` of the framework's baseline, or ``{"skipped": why}``."""
    if "baseline" in entry:
        baseline, name = entry.get("baseline"), None
    elif "onnxruntime" in entry:
        baseline, name = entry.get("onnxruntime"), "onnxruntime"
    else:
        return {"skipped": "the profile has no baseline"}
    if not isinstance(baseline, dict):
        return {"skipped": "the profile has no baseline"}
    if baseline.get("skipped"):
        return {"skipped": str(baseline["skipped"])}
    latency = baseline.get("latency_ms") or {}
    found = {"name": baseline.get("name") or name, "p50_ms": _number(latency.get("p50")), "runs": _number(baseline.get("runs"))}
    if found["p50_ms"] is None:
        return {"skipped": "the baseline has no latency"}
    return found


# ----------------------------------------------------------------------------- text and gate


def format_report(report: dict) -> str:
    """A few lines for people: the job, the verification, the profile."""
    lines = [f"Compilation job {report.get('job')} {report.get('status')}: {report.get('framework')} for "
             f"{report.get('target')}" + (f", artifact {report['artifact']}" if report.get("artifact") else "")]
    if not report.get("available"):
        lines.append(f"  no report: {report.get('reason')}")
        return "\n".join(lines)
    lines.append("  " + _verification_line(report.get("verification") or {}))
    if report.get("device_code"):
        lines.append("  " + _device_code_line(report["device_code"]))
    lines.append("  " + _profile_line(report.get("profile") or {}))
    kernels = (report.get("profile") or {}).get("top_kernels") or []
    if kernels:
        lines.append("  top kernels: " + "; ".join(
            f"{k.get('name')} {_fmt(k.get('percent'), '.1f')}%" for k in kernels))
    return "\n".join(lines)


def _verification_line(summary: dict) -> str:
    if summary.get("not_verified"):
        return f"verification: not verified: {summary['not_verified']}"
    verdict = {True: "passed", False: "FAILED", None: "no verdict"}[summary.get("passed")]
    if summary.get("emulated"):
        verdict += f" under emulation ({summary['emulated']})"
    line = f"verification ({summary.get('mode')}): {verdict} against {summary.get('reference')} on {summary.get('inputs')}"
    if summary.get("input_sizes"):
        line += f" at {summary['input_sizes']} input sizes"
    worst = summary.get("worst")
    if worst:
        detail = worst.get("problem") or (f"max abs diff {_fmt(worst.get('max_abs_diff'), '.3g')} vs tolerance "
                                          f"{_fmt(worst.get('tolerance'), '.3g')}")
        line += f"; worst of {summary.get('outputs')} output(s): {worst.get('name')}: {detail}"
    return line


def _device_code_line(code: dict) -> str:
    if code.get("kind") == "cuda":
        return (f"device code: {code.get('arch')} cubin, {code.get('kernels')} kernels ({code.get('float16_kernels')} in "
                f"half), NVRTC {code.get('nvrtc')}; TensorRT not used" + (f"; {code['driver_note']}" if code.get("driver_note") else ""))
    labels = f", {code['labels']} labels" if code.get("labels") else ""
    return f"device code: Core ML {code.get('model_type')} ({code.get('precision')}{labels})"


def _profile_line(summary: dict) -> str:
    if summary.get("skipped"):
        return f"profile: skipped: {summary['skipped']}"
    line = (f"profile: p50 {_fmt(summary.get('p50_ms'), '.3f')} ms, p90 {_fmt(summary.get('p90_ms'), '.3f')} ms, "
            f"p99 {_fmt(summary.get('p99_ms'), '.3f')} ms over {summary.get('runs')} run(s), "
            f"{summary.get('threads')} thread(s), load {_fmt(summary.get('load_seconds'), '.3f')} s")
    if summary.get("peak_rss_mb") is not None:
        line += f", peak RSS {_fmt(summary['peak_rss_mb'], '.0f')} MB"
    baseline = summary.get("baseline") or {}
    if baseline.get("skipped"):
        return line + f"; baseline skipped: {baseline['skipped']}"
    return line + (f"; {baseline.get('name')} p50 {_fmt(baseline.get('p50_ms'), '.3f')} ms: speedup "
                   f"{_fmt(summary.get('speedup'), '.3g')}x (slowdown {_fmt(summary.get('slowdown'), '.3g')}x)")


def check_max_slowdown(value: Any) -> float | None:
    """``max_slowdown`` as a float (None stays None); else a ValueError naming it, the value and what is allowed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"max_slowdown must be a finite number > 0 (1.0: never slower than the source framework's "
                         f"baseline; 2.0: at most twice as slow), or None for no gate; got {value!r}")
    return float(value)


def check_slowdown(report: dict, max_slowdown: float) -> str | None:
    """The problem with the job's speed against ``max_slowdown``, or None when it is within.

    Fails closed: a report without both latencies (SageMaker, a profile that was skipped or off,
    no baseline) is a problem that says why and what to do.
    """
    limit = check_max_slowdown(max_slowdown)
    job = report.get("job")
    advice = ("run the job on the local backend with [neo] profile_seconds > 0 on a worker that can run the "
              "target and the source framework, or drop max_slowdown")
    if not report.get("available"):
        return f"max_slowdown={limit:g}: job {job} has no figures to compare: {report.get('reason')}; {advice}"
    profile = report.get("profile") or {}
    if profile.get("skipped"):
        return f"max_slowdown={limit:g}: job {job} has no profile: {profile['skipped']}; {advice}"
    baseline = profile.get("baseline") or {}
    if baseline.get("skipped"):
        return f"max_slowdown={limit:g}: job {job} has no baseline to compare with: {baseline['skipped']}; {advice}"
    slowdown = _float(profile.get("slowdown"))
    if slowdown is None:
        return f"max_slowdown={limit:g}: job {job}'s profile has no speedup figure; {advice}"
    if slowdown <= limit:
        return None
    return (f"max_slowdown={limit:g}: job {job}'s artifact is {_fmt(slowdown, '.3g')}x slower than "
            f"{baseline.get('name')} (p50 {_fmt(profile.get('p50_ms'), '.3f')} ms vs {_fmt(baseline.get('p50_ms'), '.3f')} ms, "
            f"speedup {_fmt(profile.get('speedup'), '.3g')}x, {profile.get('threads')} thread(s)); tune it "
            "(tuning_trials) or raise max_slowdown")


# ----------------------------------------------------------------------------- numbers


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str) and value in ("inf", "-inf", "nan"):
            return float(value)
        return None
    return float(value)


def _number(value: Any) -> int | float | str | None:
    """A JSON-safe figure: ints stay ints, finite floats are rounded to 6 significant digits,
    non-finite floats become ``"inf"``/``"-inf"``/``"nan"``, anything else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    number = _float(value)
    if number is None:
        return None
    if not math.isfinite(number):
        return str(number)
    return float(f"{number:.6g}")


def _fmt(value: Any, spec: str) -> str:
    number = _float(value)
    return "?" if number is None else format(number, spec)
