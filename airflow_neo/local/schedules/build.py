"""Build a fused module with the default schedules, never worse off than without them.

Invariants: every kernel that tuning left unscheduled gets a default schedule or is named in a
``WARNING`` log line; if the scheduled module fails to build, the module is built as it was (the
zero pipeline's loops) and the summary records the fallback, so a default schedule can make a
job slower than it could be but never fails it. The summary is JSON-able (``metadata.json``).
"""

from __future__ import annotations

from .apply import apply_default_schedules
from .rules import DEFAULT_RULES


def compile_with_default_schedules(mod, target, log=print, *, rules=DEFAULT_RULES, configs=None):
    """``tvm.compile`` of ``mod`` for ``target`` after :func:`apply_default_schedules` (with the
    knobs ``configs`` gives); returns ``(executable, summary)``."""
    import tvm

    scheduled, report = apply_default_schedules(mod, target, log=log, rules=rules, configs=configs)
    summary = schedules_summary(report)
    if report["unscheduled"]:
        shown = ", ".join(report["unscheduled"][:10]) + (" ..." if len(report["unscheduled"]) > 10 else "")
        log(f"WARNING: {len(report['unscheduled'])} kernel(s) have no schedule and run as serial loops: {shown}")
    try:
        return tvm.compile(scheduled, target=target), summary
    except Exception as err:  # noqa: BLE001 - the unscheduled module is the known-good fallback
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"
        log(f"WARNING: the default schedules did not build ({reason}); building without them (slower code)")
        summary["fallback"] = reason
        return tvm.compile(mod, target=target), summary


def schedules_summary(report: dict) -> dict:
    """What ``metadata.json`` says of the schedules: how each kernel was scheduled, and the counts."""
    return {
        "cpu": report["cpu"],
        "counts": report["counts"],
        "kernels": {entry["kernel"]: entry["rule"] or "none" for entry in report["kernels"]},
        "sources": report["sources"],
        "keys": {entry["kernel"]: entry["key"] for entry in report["kernels"]},
        "origin": {entry["kernel"]: entry["source"] for entry in report["kernels"]},
        "knobs": {e["kernel"]: e["knobs"] for e in report["kernels"] if e["knobs"]},
        "unscheduled": report["unscheduled"],
        "seconds": report["seconds"],
    }
