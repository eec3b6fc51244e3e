"""The tuning plan of one job (pure): which workloads get how many of the job's trials.

First one short round (:data:`FIRST_ROUND` trials) for each workload, biggest (FLOPs x
occurrences) first, so that no kernel is left untuned; the rest in rounds of :data:`ROUND` trials in
proportion to each workload's share of the model's estimated latency (occurrences x the faster of its
default schedule's and its best record's measured time), so the trials go where the time goes.

Invariants: a plan never grants more than the trials it is given; workloads whose search space ran
out, or that were tried and could never be measured, get no more. Nothing here imports TVM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FIRST_ROUND", "ROUND", "TaskInfo", "estimate_text", "first_round_plan", "latency_share_plan", "priority"]

#: trials of the first round given to every workload
FIRST_ROUND = 8
#: trials per later round (MetaSchedule's num_trials_per_iter)
ROUND = 16


@dataclass
class TaskInfo:
    """One tuning workload of the model."""

    key: str  #: structural hash (the database's workload key)
    name: str
    weight: int  #: occurrences in the model
    flops: float
    granted: int = 0  #: trials granted to it so far (ledger or records, the larger)
    best_secs: float | None = None  #: best measured time of its tuning records, if any
    default_secs: float | None = None  #: its default schedule's measured time, if measured
    exhausted: bool = False  #: its search space ran out in this job (it measured fewer than granted)

    @property
    def time_secs(self) -> float | None:
        """What the kernel costs now: the faster of its default schedule and its best record."""
        known = [secs for secs in (self.best_secs, self.default_secs) if secs is not None]
        return min(known) if known else None

    @property
    def worth_more_trials(self) -> bool:
        """Not exhausted, and not a kernel that was tried but could never be measured."""
        return not self.exhausted and not (self.granted > 0 and self.best_secs is None)


def priority(task: TaskInfo) -> float:
    return task.weight * max(task.flops, 1.0)


def first_round_plan(tasks: list[TaskInfo], remaining: int, first_round: int = FIRST_ROUND) -> dict[str, int]:
    """Trials that bring each workload up to one first round, biggest first, within ``remaining``."""
    plan: dict[str, int] = {}
    for task in sorted(tasks, key=priority, reverse=True):
        need = min(first_round - task.granted, remaining)
        if need > 0:
            plan[task.key] = need
            remaining -= need
        if remaining <= 0:
            break
    return plan


def latency_share_plan(tasks: list[TaskInfo], remaining: int, round_size: int = ROUND) -> dict[str, int]:
    """``remaining`` trials in whole rounds, in proportion to each workload's share of the
    estimated latency (weight x :attr:`~TaskInfo.time_secs`, the faster of the default schedule
    and the best record, so trials go where the default schedules are weakest; a workload not
    measured at all counts as the slowest). Workloads not :attr:`~TaskInfo.worth_more_trials` get none."""
    tasks = [task for task in tasks if task.worth_more_trials]
    if remaining <= 0 or not tasks:
        return {}
    known = [t.time_secs for t in tasks if t.time_secs is not None]
    fallback = max(known) if known else 1.0
    share = {t.key: t.weight * (t.time_secs if t.time_secs is not None else fallback) for t in tasks}
    total = sum(share.values()) or 1.0
    units = remaining // round_size
    plan: dict[str, int] = {}
    if units > 0:
        exact = {key: units * value / total for key, value in share.items()}
        given = {key: int(math.floor(value)) for key, value in exact.items()}
        left = units - sum(given.values())
        for key in sorted(exact, key=lambda k: exact[k] - given[k], reverse=True)[:left]:
            given[key] += 1
        plan = {key: n * round_size for key, n in given.items() if n > 0}
    leftover = remaining - sum(plan.values())
    if leftover > 0:
        top = max(share, key=share.get)
        plan[top] = plan.get(top, 0) + leftover
    return plan


def estimate_text(tasks: list[TaskInfo]) -> str:
    known = [task for task in tasks if task.best_secs is not None]
    if not known:
        return "no estimate yet"
    estimate = sum(task.weight * task.best_secs for task in known) * 1000
    if len(known) == len(tasks):
        return f"estimated latency {estimate:.2f} ms"
    return f"estimated latency >= {estimate:.2f} ms ({len(tasks) - len(known)} kernels not measured yet)"
