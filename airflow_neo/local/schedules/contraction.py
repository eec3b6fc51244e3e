"""The register-blocked schedule for convolutions, matrix products and pooling.

Given a :class:`~.plan.TilePlan`, one kernel becomes::

    parallel for (outer spatial vars, vector var outer part)     # fused into one loop
      for register var outer part
        for reduction vars                                       # ci, kh, kw / k / window
          unrolled for register var inner part                   # rows kept in registers
            vectorized for vector var inner part                 # one FMA per SIMD register
      epilogue (bias, activation, residual add) on the finished tile

With ``reduce_block`` (a knob) the longest reduction loop is split and its outer part moves above
the register var's outer part, so one block of the weight panel stays in cache while every row
block uses it; the epilogue then runs per parallel iteration, after the last reduction block.

Invariants:

* Operands indexed by the vector var are re-laid out so that var is innermost: constant weights by
  a folded copy (panel layout ``[vector outer, ..., vector inner]``), internal buffers such as
  ``pad_temp`` in place, other parameters by a per-call copy. An internal buffer read along the
  vector var with a stride ``s`` (stride-2 depthwise conv, pooling) is deinterleaved
  (``x -> (x % s, x // s)``) so its vector loads are contiguous. Operands not indexed by the
  vector var are broadcast (one scalar load per FMA row).
* The accumulator is an internal buffer whose tile is ``[register inner][vector inner]``
  contiguous (the output is cached first when the block wrote a parameter directly).
* Fused element-wise tails are inlined into one block that runs per tile, while the accumulator
  is hot; a tail that cannot follow the tile stays a separate parallel loop nest. So does a tail
  whose output shape differs from the accumulator's (a fused pad for the next layer): per tile,
  its elements that read no accumulator element (the border) would never be written.
* A padding producer stays materialized (inlining it would put a branch in the FMA loop); other
  spatial producers are inlined where TIR allows.
"""

from __future__ import annotations

from .common import (
    MIN_PARALLEL,
    MIN_PARALLEL_WORK,
    extent_of,
    is_preproc,
    pack_read,
    schedule_spatial,
    split_last,
    try_,
    try_inline,
)
from .facts import REDUCE, SPATIAL, FuncFacts, is_padding, linear_coefficient, used_vars
from .plan import TilePlan

#: epilogue loops longer than this stay loops (with reduction blocking the epilogue covers all rows)
MAX_UNROLL = 32


def apply_plan(sch, facts: FuncFacts, plan: TilePlan, cpu) -> str:
    """Schedule ``plan.main`` (and its producers/consumers) in ``sch``; returns a short detail."""
    main = plan.main.rv
    lanes = cpu.lanes(plan.dtype)
    _inline_producers(sch, facts, plan)
    packed = _pack_operands(sch, facts, plan)
    tail = _prepare_output(sch, facts, plan)
    anchor = _tile_loops(sch, plan)
    if tail is not None and not try_(sch.reverse_compute_at, tail, anchor, True):
        tail = None
    if tail is not None:
        loops = _loops_below(sch, tail, anchor)
        if loops and (extent_of(sch, loops[-1]) or 1) > 1:
            try_(sch.vectorize, loops[-1])
        for loop in loops[:-1]:
            # constant accumulator indices everywhere, so LLVM keeps the tile in registers
            if (extent_of(sch, loop) or 0) <= MAX_UNROLL:
                try_(sch.unroll, loop)
    tiled = sch.get(sch.get_loops(main)[0])
    for rv in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(rv)
        if not loops or sch.get(loops[0]).same_as(tiled) or is_preproc(sch, rv):
            continue
        if all(int(iv.iter_type) == 0 for iv in sch.get(rv).iter_vars) and sch.get(rv).init is None:
            schedule_spatial(sch, rv, lanes)
    detail = f"tile {plan.register_inner}x{plan.vector_inner}"
    if plan.reduce_block:
        detail += f", reduction blocked by {plan.reduce_block}"
    if plan.parallel_register:
        detail += ", rows in parallel"
    if packed:
        detail += ", packed " + ", ".join(packed)
    return detail


def _loops_below(sch, block, anchor) -> list:
    loops = sch.get_loops(block)
    target = sch.get(anchor)
    for position, loop in enumerate(loops):
        if sch.get(loop).same_as(target):
            return loops[position + 1 :]
    return []


def _inline_producers(sch, facts: FuncFacts, plan: TilePlan) -> None:
    main_index = next(i for i, b in enumerate(facts.blocks) if b is plan.main)
    for block in reversed(facts.blocks[:main_index]):
        if block.spatial_only and not is_padding(sch, block):
            try_inline(sch, block.rv)


def _pack_operands(sch, facts: FuncFacts, plan: TilePlan) -> list[str]:
    packed = []
    var = plan.vector.var
    for load in plan.operands:
        dims = [d for d, index in enumerate(load.indices) if any(v.same_as(var) for v in used_vars(index))]
        if len(dims) != 1:
            continue  # not indexed by the vector var: a broadcast
        dim = dims[0]
        extent = int(load.source.shape[dim])
        stride = linear_coefficient(load.indices[dim], var)
        if stride is not None and stride > 1:
            if dim == len(load.indices) - 1 and extent % stride == 0 and facts.producers(load.source):
                # a strided window (stride-2 depthwise conv or pooling): deinterleave the padded
                # input once so the vector loads become contiguous
                index_map = _deinterleave(dim, stride)
                if try_(pack_read, sch, plan.main.rv, load.source, index_map, constant=False, param=False):
                    packed.append(f"{load.source.name} (deinterleaved by {stride})")
            continue
        if stride != 1:
            continue
        if extent % plan.vector_inner:
            continue
        constant = facts.is_layout_free(load.source)
        last = dim == len(load.indices) - 1
        if last and not constant:
            continue  # already contiguous along the vector var
        param = facts.is_param(load.source)
        buffer = load.source
        if not param and not facts.producers(buffer):
            continue
        index_map = split_last(dim, plan.vector_inner, to_front=constant)
        if try_(pack_read, sch, plan.main.rv, buffer, index_map, constant=constant, param=param):
            packed.append(f"{buffer.name}{' (folded)' if constant else ''}")
    return packed


def _deinterleave(dim: int, stride: int):
    def index_map(*index):
        return (*index[:dim], index[dim] % stride, index[dim] // stride, *index[dim + 1 :])

    return index_map


def _prepare_output(sch, facts: FuncFacts, plan: TilePlan):
    """Make the accumulator an internal, tile-contiguous buffer; return the tail block or None."""
    main = plan.main.rv
    out = plan.main.writes[0]
    if facts.is_param(out.buffer):
        sch.cache_write(main, 0, "global")
    dims = [d for d, index in enumerate(out.indices) if any(v.same_as(plan.vector.var) for v in used_vars(index))]
    if len(dims) == 1 and dims[0] != len(out.indices) - 1:
        try_(sch.transform_layout, main, ("write", 0), split_last(dims[0], plan.vector_inner, to_front=False))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    position = [i for i, rv in enumerate(blocks) if sch.get(rv).same_as(sch.get(main))][0]
    after = blocks[position + 1 :]
    for rv in after[:-1]:
        try_inline(sch, rv)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    position = [i for i, rv in enumerate(blocks) if sch.get(rv).same_as(sch.get(main))][0]
    after = blocks[position + 1 :]
    if len(after) != 1:
        return None
    written = sch.get(main).writes[0].source
    if not any(r.source.same_as(written) for r in sch.get(after[0]).reads):
        return None
    if not _same_shape(sch.get(after[0]).writes[0].source.shape, out.buffer.shape):
        # a tail with another output shape (a pad for the next layer, a slice): some of its
        # elements read no accumulator element, and computing it per tile would never write them
        return None
    return after[0]


def _same_shape(a, b) -> bool:
    try:
        return len(a) == len(b) and all(int(x) == int(y) for x, y in zip(a, b))
    except (TypeError, ValueError):
        return _same_symbolic_shape(a, b)


def _same_symbolic_shape(a, b) -> bool:
    """Shapes with symbolic dims (DataInputConfig ranges): the same expression in each dim."""
    import tvm_ffi

    return len(a) == len(b) and all(tvm_ffi.structural_equal(x, y) for x, y in zip(a, b))


def _tile_loops(sch, plan: TilePlan):
    """Split, reorder, parallelize, vectorize; returns the loop the tail goes under."""
    main = plan.main.rv
    loops = sch.get_loops(main)
    iters = plan.main.iters
    outer, reduce = [], []
    vector_inner_loop = register_outer = register_inner_loop = reduce_outer = None
    for it, loop in zip(iters, loops):
        if it is plan.vector:
            vo, vector_inner_loop = sch.split(loop, [None, plan.vector_inner])
            outer.append(vo)
        elif it is plan.register:
            register_outer, register_inner_loop = sch.split(loop, [None, plan.register_inner])
        elif it.kind == REDUCE:
            if plan.reduce_block and it is plan.reduce:
                reduce_outer, loop = sch.split(loop, [None, plan.reduce_block])
            reduce.append(loop)
        elif it.kind == SPATIAL:
            outer.append(loop)
    total = 1
    for loop in outer:
        total *= extent_of(sch, loop) or 1
    register_in_parallel = register_outer is not None and (plan.parallel_register or total < MIN_PARALLEL)
    fuse = list(outer) + ([register_outer] if register_in_parallel else [])
    order = list(fuse) + ([reduce_outer] if reduce_outer is not None else [])
    if register_outer is not None and not register_in_parallel:
        order.append(register_outer)
    order += reduce + ([register_inner_loop] if register_inner_loop is not None else []) + [vector_inner_loop]
    sch.reorder(*order)
    fused = sch.fuse(*fuse) if len(fuse) > 1 else fuse[0]
    work = 1
    for it in iters:
        work *= it.extent if it.extent is not None else MIN_PARALLEL_WORK  # symbolic: parallel at any size
    if work >= MIN_PARALLEL_WORK:
        try_(sch.parallel, fused)
    if register_inner_loop is not None and plan.register_inner > 1:
        sch.unroll(register_inner_loop)
    sch.vectorize(vector_inner_loop)
    first_reduce = reduce_outer if reduce_outer is not None else (reduce[0] if reduce else None)
    if first_reduce is not None:
        init = sch.decompose_reduction(main, first_reduce)
        init_loops = sch.get_loops(init)
        if init_loops:
            try_(sch.vectorize, init_loops[-1])
    if register_outer is not None and not register_in_parallel and reduce_outer is None:
        return register_outer
    return fused
