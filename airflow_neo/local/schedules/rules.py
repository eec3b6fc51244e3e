"""The schedule rules, in the order they are tried, as dlight ``ScheduleRule`` objects.

Each rule's :meth:`Rule.schedule` returns an :class:`Outcome` (the schedule, the op class it
recognised and a short detail) or None when it does not apply. ``apply`` follows dlight's
protocol, so the rules also work inside ``tvm.s_tir.dlight.ApplyDefaultSchedule``.

Invariants:

* A rule works on its own fresh ``Schedule`` of the function; a rule that declines or raises
  leaves nothing behind, and the next rule starts again from the unscheduled function.
* Rules are tried most specific first: contraction (conv/matmul/pool), reduction, element-wise,
  then the generic parallel-only fallback.
* ``knobs`` (:class:`~airflow_neo.local.configs.knobs.Knobs`, from tuning or the shipped pack) only reach the contraction
  rule; the outcome's ``knobs`` is what the schedule used (None for the other rules), and
  ``shape`` what :func:`~airflow_neo.local.configs.knobs.candidates` needs to propose others.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir
from tvm.s_tir.dlight import ScheduleRule

from .contraction import apply_plan
from .cpu import cpu_info
from .elementwise import schedule_elementwise
from .facts import func_facts, mac_operands, window_operand
from .fallback import schedule_generic
from .plan import make_plan
from .reduction import schedule_reduction


@dataclass
class Outcome:
    schedule: object
    label: str  #: the op class the rule scheduled (conv2d, dense, softmax-like reduction, ...)
    detail: str
    knobs: object = None  #: the Knobs the schedule used (contraction rule only)
    knobs_applied: bool = False  #: the knobs given fit and were used
    shape: object = None  #: the plan's knobs.Shape (contraction rule only)


class Rule(ScheduleRule):
    name = "rule"

    def schedule(self, func, target, cpu, knobs=None) -> Outcome | None:
        raise NotImplementedError

    def apply(self, func, target, tunable):  # dlight protocol
        del tunable
        outcome = self.schedule(func, target, cpu_info(target))
        return None if outcome is None else outcome.schedule

    def is_target_available(self, target) -> bool:
        return target.kind.name == "llvm"


class ContractionRule(Rule):
    """conv1d/2d/3d (regular, pointwise, grouped, depthwise), dense, matmul, batch_matmul, pooling."""

    name = "contraction"

    def schedule(self, func, target, cpu, knobs=None):
        sch = s_tir.Schedule(func)
        facts = func_facts(sch, func)
        mains = [b for b in facts.blocks if mac_operands(b) is not None or window_operand(b) is not None]
        if len(mains) != 1:
            return None
        plan = make_plan(facts, mains[0], cpu)
        if plan is None:
            return None
        shape = plan.shape()
        if knobs is not None:
            plan = make_plan(facts, mains[0], cpu, knobs)
        detail = apply_plan(sch, facts, plan, cpu)
        return Outcome(sch, plan.name, detail, plan.knobs(), plan.knobs_used, shape)


class ReductionRule(Rule):
    """softmax, layer norm and other row reductions (TVM's dlight CPU reduction schedule)."""

    name = "reduction"

    def schedule(self, func, target, cpu, knobs=None):
        sch = s_tir.Schedule(func)
        facts = func_facts(sch, func)
        result = schedule_reduction(sch, facts, cpu, func, target)
        if result is None:
            return None
        return Outcome(result[0], "reduction", result[1])


class ElementwiseRule(Rule):
    name = "elementwise"

    def schedule(self, func, target, cpu, knobs=None):
        sch = s_tir.Schedule(func)
        detail = schedule_elementwise(sch, func_facts(sch, func), cpu)
        return None if detail is None else Outcome(sch, "elementwise", detail)


class GenericRule(Rule):
    """Parallel outer loops only; the log names the kernels that end here."""

    name = "generic"

    def schedule(self, func, target, cpu, knobs=None):
        sch = s_tir.Schedule(func)
        detail = schedule_generic(sch, func_facts(sch, func), cpu)
        return None if detail is None else Outcome(sch, "generic", detail)


DEFAULT_RULES = (ContractionRule(), ReductionRule(), ElementwiseRule(), GenericRule())
