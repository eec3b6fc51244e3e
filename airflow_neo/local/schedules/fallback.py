"""The last resort for kernels no specific rule recognises: parallel outer loops only.

Invariants:

* Never changes what a loop computes or the order of a reduction: only the leading *spatial*
  loops of each root-level block nest are fused and marked parallel, which TIR allows only when
  iterations are independent.
* Reported as rule ``generic`` so the log names every kernel that got no op-specific schedule.
* A leading spatial loop with a symbolic extent (a DataInputConfig range) joins the fused parallel
  loop, counted as extent 1; kernels with static extents are scheduled as before.
"""

from __future__ import annotations

from .common import ENOUGH_PARALLEL, extent_of, try_
from .facts import SPATIAL, FuncFacts


def schedule_generic(sch, facts: FuncFacts, cpu) -> str | None:
    del cpu
    done = 0
    for block in facts.blocks:
        if not block.trivial:
            continue
        loops = sch.get_loops(block.rv)
        chosen, total, symbolic = [], 1, False
        for it, loop in zip(block.iters, loops):
            extent = extent_of(sch, loop)
            if extent is None and it.kind == SPATIAL and total < ENOUGH_PARALLEL:
                chosen.append(loop)  # a symbolic extent (a DataInputConfig range): any size, so it counts as 1
                symbolic = True
                continue
            if it.kind != SPATIAL or extent is None or total >= ENOUGH_PARALLEL:
                break
            chosen.append(loop)
            total *= extent
        if total <= 1 and not symbolic:
            continue
        fused = sch.fuse(*chosen) if len(chosen) > 1 else chosen[0]
        done += try_(sch.parallel, fused)
    if not done:
        return None
    return f"{done} loop nest(s) parallel, none vectorized"
