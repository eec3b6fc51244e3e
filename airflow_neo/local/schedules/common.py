"""Schedule helpers shared by the rules.

Invariants:

* Every helper either applies a transformation TIR accepts or leaves the schedule as it was:
  TIR checks legality itself (``ScheduleError``), and helpers named ``try_*`` swallow only that.
* ``schedule_spatial`` touches one root-level block nest: its loops are fused into one parallel
  outer loop and one vectorized inner loop only where the extents divide evenly, so no tail
  predicate ever lands inside a vectorized loop.
* ``pack_read`` marks a copy of a constant (``layout_free_buffers``) parameter as
  ``meta_schedule.layout_rewrite_preproc``; ``finish_module`` later splits those copies out of the
  kernel and folds them at compile time, so packing constants costs nothing per inference.
"""

from __future__ import annotations

from tvm import s_tir

#: fewest parallel iterations worth spreading over threads before an inner loop is fused in
MIN_PARALLEL = 16
#: stop fusing outer loops into the parallel loop past this many iterations
ENOUGH_PARALLEL = 256
#: loop nests doing less work than this (elements, or multiply-adds) stay on one thread: waking
#: the thread pool costs a few microseconds
MIN_PARALLEL_WORK = 16384
PREPROC = "meta_schedule.layout_rewrite_preproc"


def divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is ``<= limit`` (at least 1)."""
    for d in range(max(1, min(n, limit)), 0, -1):
        if n % d == 0:
            return d
    return 1


def vector_split(extent: int, lanes: int, max_vectors: int) -> int:
    """Inner extent for a vectorized loop of ``extent``: a multiple of ``lanes`` dividing it, the
    widest up to ``max_vectors`` registers; else the largest divisor up to ``lanes``."""
    for count in range(max_vectors, 0, -1):
        if extent % (lanes * count) == 0:
            return lanes * count
    return divisor_at_most(extent, lanes)


def extent_of(sch, loop) -> int | None:
    try:
        return int(sch.get(loop).extent)
    except (TypeError, ValueError):
        return None


def try_(fn, *args, **kwargs) -> bool:
    try:
        fn(*args, **kwargs)
        return True
    except (s_tir.ScheduleError, ValueError, RuntimeError):
        return False


def read_index(sch, block_rv, buffer) -> int | None:
    for index, region in enumerate(sch.get(block_rv).reads):
        if region.source.same_as(buffer):
            return index
    return None


def is_preproc(sch, block_rv) -> bool:
    return PREPROC in sch.get(block_rv).annotations


def schedule_spatial(sch, block_rv, lanes: int) -> bool:
    """Parallel outer loop and vectorized inner loop for a spatial block at the root."""
    loops = sch.get_loops(block_rv)
    extents = [extent_of(sch, loop) for loop in loops]
    if not loops or any(e is None for e in extents):
        return False
    work = 1
    for extent in extents:
        work *= extent
    done = False
    inner = loops[-1]
    if extents[-1] > 1:
        width = vector_split(extents[-1], lanes, 1)
        if width > 1 and width < extents[-1]:
            outer, vec = sch.split(inner, [None, width])
            done = try_(sch.vectorize, vec)
            loops = loops[:-1] + [outer]
            extents = extents[:-1] + [extents[-1] // width]
        elif width == extents[-1] and len(loops) > 1:
            done = try_(sch.vectorize, inner)
            loops, extents = loops[:-1], extents[:-1]
    count, total = 0, 1
    for extent in extents:
        if total >= ENOUGH_PARALLEL:
            break
        total *= extent
        count += 1
    if count and total > 1 and work >= MIN_PARALLEL_WORK:
        fused = sch.fuse(*loops[:count]) if count > 1 else loops[0]
        done = try_(sch.parallel, fused) or done
    return done


def try_inline(sch, block_rv) -> bool:
    return try_(sch.compute_inline, block_rv)


def pack_read(sch, block_rv, buffer, index_map, *, constant: bool, param: bool):
    """Give ``block_rv``'s read of ``buffer`` the layout ``index_map``; returns the copy block
    it had to add (None when the buffer itself was re-laid out)."""
    index = read_index(sch, block_rv, buffer)
    if index is None:
        raise ValueError("buffer not read by the block")
    copy = None
    if param:
        copy = sch.cache_read(block_rv, index, "global")
        index = read_index(sch, block_rv, sch.get(copy).writes[0].source)
    sch.transform_layout(block_rv, ("read", index), index_map)
    if copy is not None and constant:
        sch.annotate(copy, PREPROC, 1)
    return copy


def split_last(dim: int, width: int, *, to_front: bool):
    """Index map splitting ``dim`` by ``width``: the inner part becomes the last dimension, the outer
    part stays in place (``to_front=False``) or becomes the first dimension (a panel layout)."""

    def index_map(*index):
        outer, inner = index[dim] // width, index[dim] % width
        rest = list(index[:dim]) + list(index[dim + 1 :])
        if to_front:
            return (outer, *rest, inner)
        return (*index[:dim], outer, *index[dim + 1 :], inner)

    return index_map


def finish_module(mod):
    """Split constant-weight packing out of the scheduled kernels and fold it at compile time."""
    from tvm import relax

    mod = relax.transform.SplitLayoutRewritePreproc()(mod)
    mod = relax.transform.FoldConstant()(mod)
    # the folded packing kernels are no longer called: drop them (tvm.compile would build them)
    return relax.transform.DeadCodeElimination()(mod)
