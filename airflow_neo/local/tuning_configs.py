"""Config tuning: measure a few knob sets of each contraction kernel's default schedule, keep the fastest.

The first thing tuning spends its budget on (before MetaSchedule's search), because it starts
from the default schedules: each candidate is the default plan with its tile, reduction blocking
or threading changed (:func:`~airflow_neo.local.configs.knobs.candidates`), so the best of them is
never slower than the default as measured, and a few trials per kernel find most of what there is.

Invariants:

* One candidate measured = one trial of the job's budget (counted in the database's ledger like
  search trials, so a repeat compile or another worker sharing the ledger does not spend it
  again). The default plan is always measured
  first (it is the record's ``default_secs``); the shipped pack's knobs, when it has the workload,
  second. Knob sets already tried for a workload (the store's ``tried``) are never measured again,
  so a repeat compile spends nothing and a larger budget measures the next candidates.
* Kernels are visited by priority (calls x FLOPs), in rounds: first up to :data:`FIRST_ROUND`
  candidates each, then the rest of each kernel's candidates while the budget lasts.
* Measured like tuning candidates and baselines (``tuning_baseline.measure_modules``, the session's
  builder and runner), so records, configs and baselines compare.
* Results go to the target database's :class:`~airflow_neo.local.configs.JsonConfigStore` (merged
  under its lock); nothing is written when nothing was measured.

Runs in the compile child (TVM imported inside functions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_neo.local import tuning_baseline
from airflow_neo.local.configs import ConfigRecord, JsonConfigStore
from airflow_neo.local.configs.knobs import MAX_CANDIDATES, Knobs, candidates

__all__ = ["FIRST_ROUND", "tune_configs", "with_shipped"]

FIRST_ROUND = 6


def with_shipped(listed: list[Knobs], shipped: Knobs | None) -> list[Knobs]:
    """``listed`` (the default plan first) with the pack's knobs second, once; the default stays first."""
    if shipped is None or shipped == listed[0]:
        return listed
    return [listed[0], shipped, *(k for k in listed[1:] if k != shipped)]


def _plan_of(func, target, cpu):
    """``(rule, outcome)`` of the contraction rule on ``func``, or None when it does not take it."""
    from airflow_neo.local.schedules.rules import ContractionRule

    rule = ContractionRule()
    try:
        outcome = rule.schedule(func, target, cpu)
    except Exception:  # noqa: BLE001 - a kernel the rule cannot take has no knobs to tune
        return None
    return None if outcome is None or outcome.shape is None else (rule, outcome)


def tune_configs(
    kernels: list[tuple[str, str, Any, float]],
    target,
    builder,
    runner,
    store: JsonConfigStore,
    budget: int,
    log: Callable[[str], Any],
    *,
    pack=None,
    cap: int = MAX_CANDIDATES,
) -> dict[str, int]:
    """Measure knob candidates of ``kernels`` (``(key, name, PrimFunc, priority)``) within ``budget``.

    :param pack: a store whose record of a workload adds its knobs as the second candidate.
    :param cap: candidates per kernel in total (those measured before included).
    :return: the trials spent per workload (candidates measured, failed builds included).
    """
    from airflow_neo.local.schedules.cpu import cpu_info

    cpu = cpu_info(target)
    queue = []
    for key, name, func, weight in sorted(kernels, key=lambda k: -k[3]):
        found = _plan_of(func, target, cpu)
        if found is None:
            continue
        rule, outcome = found
        shipped = pack.get(key) if pack is not None else None
        listed = with_shipped(candidates(outcome.shape, MAX_CANDIDATES), shipped.knobs if shipped else None)
        record = store.get(key)
        tried = {Knobs.from_dict(t) for t in (record.tried if record else []) if isinstance(t, dict)}
        queue.append((key, name, func, rule, [k for k in listed if k not in tried], len(tried)))
    spent: dict[str, int] = {}
    for limit in (min(FIRST_ROUND, cap), cap):
        updates = []
        for index, (key, name, func, rule, todo, done) in enumerate(queue):
            take = max(0, min(limit - done, len(todo), budget - sum(spent.values())))
            if take <= 0:
                continue
            batch, queue[index] = todo[:take], (key, name, func, rule, todo[take:], done + take)
            updates.append(_measure(key, name, func, rule, batch, target, cpu, builder, runner, store, log))
            spent[key] = spent.get(key, 0) + take
        store.merge([u for u in updates if u is not None])
        if sum(spent.values()) >= budget:
            break
    return spent


def _measure(key, name, func, rule, batch: list[Knobs], target, cpu, builder, runner, store, log) -> ConfigRecord | None:
    mods = {}
    for knobs in batch:
        try:
            outcome = rule.schedule(func, target, cpu, knobs=knobs)
        except Exception as err:  # noqa: BLE001 - a candidate that does not schedule is skipped
            log(f"tuning: {name} knobs {knobs.text()} did not schedule: {type(err).__name__}")
            continue
        if outcome is not None and (outcome.knobs_applied or knobs == outcome.knobs):
            mods[knobs] = outcome.schedule.mod
    secs = tuning_baseline.measure_modules(mods, target, builder, runner, log, names={k: f"{name} ({k.text()})" for k in mods},
                                           what="candidate")
    record = store.get(key)
    default_secs = record.default_secs if record else None
    default = batch[0] if record is None else None  # the plan's own knobs lead the first batch
    if default is not None and default in secs:
        default_secs = secs[default]
    timed = [(value, knobs) for knobs, value in secs.items() if value is not None]
    best = min(timed, key=lambda t: t[0]) if timed else (None, batch[0])
    if record is not None and record.secs is not None and (best[0] is None or record.secs <= best[0]):
        best = (record.secs, record.knobs)
    tried = [k.to_dict() for k in batch]
    gain = f", {default_secs / best[0]:.2f}x the default plan" if best[0] and default_secs else ""
    log(f"tuning [configs] {name}: {len(batch)} candidates, best {best[1].text()}"
        + (f" {best[0] * 1000:.3f} ms" if best[0] else "") + gain)
    return ConfigRecord(key, best[1], best[0], default_secs, name, tried)
