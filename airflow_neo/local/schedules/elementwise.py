"""Element-wise and injective kernels: fused adds, activations, transposes, reshapes, gathers.

Invariants:

* Applies only when every block of the function is spatial (no reduction at all).
* Intermediate blocks are inlined into the blocks that write the function's outputs (TIR refuses
  an inline that would change results, e.g. a block with two consumers reading different
  elements, and such a block simply stays a loop nest of its own).
* Each remaining root-level nest gets one parallel outer loop and a vectorized inner loop when its
  innermost extent allows (see :func:`~.common.schedule_spatial`).
"""

from __future__ import annotations

from .common import schedule_spatial, try_inline
from .facts import FuncFacts


def schedule_elementwise(sch, facts: FuncFacts, cpu) -> str | None:
    if not facts.blocks or not all(b.spatial_only for b in facts.blocks):
        return None
    outputs = [b for b in facts.blocks if any(facts.is_param(w.buffer) for w in b.writes)]
    inlined = 0
    for block in reversed(facts.blocks):
        if block in outputs:
            continue
        inlined += try_inline(sch, block.rv)
    remaining = sch.get_child_blocks(sch.get_sblock("root"))
    dtype = str(facts.blocks[-1].writes[0].buffer.dtype)
    vectorized = sum(schedule_spatial(sch, rv, cpu.lanes(dtype)) for rv in remaining)
    return f"{len(remaining)} loop nest(s), {inlined} block(s) inlined, {vectorized} parallel/vectorized"
