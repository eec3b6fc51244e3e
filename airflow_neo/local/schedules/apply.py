"""``apply_default_schedules``: give every unscheduled kernel of a fused module a CPU schedule.

Invariants:

* Input: a Relax module after ``relax.get_pipeline("zero")`` (and after tuning, if any) for an
  ``llvm`` target. Kernels that carry ``tirx.is_scheduled`` (tuned ones, or anything scheduled
  before) are left exactly as they are.
* A rule that raises is recorded in the report and the next rule is tried; a kernel no rule
  takes stays as the zero pipeline left it (serial loops), still correct, and is named in the log.
* Constant weights packed by a schedule are split out and folded into new constants here
  (``SplitLayoutRewritePreproc`` + ``FoldConstant``): the returned module needs no extra step.
* Deterministic: no sampling, no measurement; the same module and target give the same result.
* ``configs`` (:class:`ConfigSource`, e.g. the tuning tier over the shipped pack) may give a kernel
  :class:`~airflow_neo.local.configs.knobs.Knobs`, looked up by its workload key (:func:`kernel_key`, MetaSchedule's
  workload hash). Each report entry says where its schedule came from: ``source`` is ``record``
  (a MetaSchedule tuning record, scheduled before), the config source's label (``tuned`` /
  ``pack``) when its knobs fit, ``default`` for the rule's own plan, ``none`` when no rule took it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Protocol

from .cpu import cpu_info
from .rules import DEFAULT_RULES


class ConfigSource(Protocol):
    """Where knobs come from: ``lookup(key)`` -> ``(Knobs, label)`` or None."""

    def lookup(self, key: str): ...


def kernel_key(func) -> str:
    """The workload key of a kernel: MetaSchedule's (the structural hash of ``{"main": func}``)."""
    import tvm
    import tvm_ffi

    return str(tvm_ffi.structural_hash(tvm.IRModule({"main": func.with_attr("global_symbol", "main")})))

SCHEDULED_ATTRS = ("tirx.is_scheduled", "tir.is_scheduled")


def _already_scheduled(func) -> bool:
    attrs = func.attrs
    if attrs is None:
        return False
    for key in SCHEDULED_ATTRS:
        if key in attrs:
            try:
                return bool(int(attrs[key]))
            except (TypeError, ValueError):
                return bool(attrs[key])
    return False


def apply_default_schedules(mod, target, log=print, *, rules=DEFAULT_RULES, configs: ConfigSource | None = None):
    """Schedule ``mod``'s unscheduled PrimFuncs for ``target``; returns ``(mod, report)``.

    :param mod: the fused Relax ``IRModule`` (after the zero pipeline / tuning).
    :param target: the ``tvm.target.Target`` (or its dict) the module is compiled for.
    :param log: called with one-line progress messages.
    :param configs: knobs per kernel (tuned or shipped); None: every kernel gets its rule's plan.
    :return: the scheduled module (weights repacked and folded) and a JSON-able report:
        ``kernels`` (one entry per PrimFunc: ``kernel``, ``key``, ``rule`` or None, ``source``,
        ``knobs``, ``detail``, ``errors``), ``counts`` per rule, ``unscheduled`` and ``generic`` kernel names,
        ``cpu``, ``seconds``.
    """
    import tvm
    from tvm import relax, tirx

    started = time.monotonic()
    target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    cpu = cpu_info(target)
    if not any(isinstance(f, tirx.PrimFunc) and "layout_free_buffers" in (f.attrs or {}) for _, f in mod.functions_items()):
        # which kernel parameters are constants at every call (tuning has done this already;
        # the pass renames the kernels, so it runs once)
        with tvm.transform.PassContext(), target:
            mod = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    kernels = []
    updates = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        entry = {"kernel": gvar.name_hint, "key": kernel_key(func), "rule": None, "source": "none",
                 "knobs": None, "detail": "", "errors": []}
        kernels.append(entry)
        if _already_scheduled(func):
            entry["rule"], entry["source"] = "already-scheduled", "record"
            continue
        found = configs.lookup(entry["key"]) if configs is not None else None
        for rule in rules:
            try:
                outcome = rule.schedule(func, target, cpu, knobs=found[0]) if found else rule.schedule(func, target, cpu)
            except Exception as err:  # noqa: BLE001 - a failing rule must not fail the compile
                entry["errors"].append(f"{rule.name}: {type(err).__name__}: {_first_line(err)}")
                continue
            if outcome is None:
                continue
            updates[gvar] = outcome.schedule.mod["main"].with_attr("tirx.is_scheduled", True)
            entry["rule"], entry["detail"] = outcome.label, outcome.detail
            knobs_fit = found is not None and getattr(outcome, "knobs_applied", False)
            entry["source"] = found[1] if knobs_fit else "default"
            if getattr(outcome, "knobs", None) is not None:
                entry["knobs"] = outcome.knobs.to_dict()
            break
    for gvar, func in updates.items():
        mod[gvar] = func
    if updates:
        from .common import finish_module

        with target:
            mod = finish_module(mod)
    counts = Counter(entry["rule"] or "none" for entry in kernels)
    sources = Counter(entry["source"] for entry in kernels)
    report = {
        "sources": dict(sorted(sources.items())),
        "cpu": cpu.describe(),
        "kernels": kernels,
        "counts": dict(sorted(counts.items())),
        "unscheduled": [e["kernel"] for e in kernels if e["rule"] is None],
        "generic": [e["kernel"] for e in kernels if e["rule"] == "generic"],
        "seconds": round(time.monotonic() - started, 3),
    }
    summary = ", ".join(f"{rule} {count}" for rule, count in report["counts"].items())
    origin = ", ".join(f"{source} {count}" for source, count in report["sources"].items())
    log(f"default schedules: {len(updates)} of {len(kernels)} kernels scheduled ({cpu.describe()}): {summary}; "
        f"{report['seconds']:.2f} s; schedules from: {origin}")
    for entry in kernels:
        if entry["rule"] is None:
            why = "; ".join(entry["errors"]) or "no rule matched"
            log(f"default schedules: {entry['kernel']} left unscheduled ({why})")
        elif entry["rule"] == "generic":
            log(f"default schedules: {entry['kernel']} has no specific rule: {entry['detail']}")
    return mod, report


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines() or [""])[0][:300]
