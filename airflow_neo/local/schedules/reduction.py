"""Row reductions: softmax, layer/RMS/group norm, mean/sum over trailing axes, global pooling.

The schedule is TVM's own CPU rule (``tvm.s_tir.dlight.cpu.Reduction``): the leading spatial axes
(batch, rows) become one parallel loop, every block is computed per row under it, element-wise
blocks are vectorized along the row and reductions are split to the vector width and unrolled.

Invariants:

* Applies only to functions with at least one reduction block and no multiply-accumulate or
  sliding-window block (those belong to :mod:`.contraction`).
* The dlight rule decides applicability itself (all blocks share their leading spatial axes, the
  last block is element-wise); when it declines, the kernel falls through to the next rule.
* The vector width is our :class:`~.cpu.CpuInfo`'s, not LLVM's (which TVM 0.27 misreports for
  AVX2 CPUs): the target handed to dlight is wrapped accordingly.
"""

from __future__ import annotations

from .facts import REDUCE, FuncFacts, mac_operands


def schedule_reduction(sch, facts: FuncFacts, cpu, func, target) -> tuple[object, str] | None:
    """A new schedule (dlight returns its own) and a detail, or None."""
    if not any(REDUCE in b.kinds for b in facts.blocks):
        return None
    if any(mac_operands(b) is not None for b in facts.blocks):
        return None
    from tvm.s_tir.dlight.cpu import reduction as dlight_reduction

    original = dlight_reduction.llvm_get_vector_width
    dlight_reduction.llvm_get_vector_width = lambda _target: cpu.vector_bits
    try:
        result = dlight_reduction.Reduction().apply(func, target, False)
    finally:
        dlight_reduction.llvm_get_vector_width = original
    if result is None:
        return None
    if isinstance(result, list):
        result = result[0]
    rows = [b for b in facts.blocks if REDUCE in b.kinds]
    return result, f"{len(rows)} reduction block(s) per row, rows parallel"
