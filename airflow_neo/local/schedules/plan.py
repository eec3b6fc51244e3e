"""Tile plans for reduction blocks: convolutions, matrix products and window pooling.

A *contraction* block is ``C[s...] = C[s...] + X[...] * Y[...]`` (conv1d/2d/3d in any layout,
grouped and depthwise conv, dense, matmul, batch_matmul); a *window* block is
``C[s...] = max|min|+(C[s...], X[...])`` (max/avg pooling). Both get the same register-blocked
plan; this module decides it without touching the schedule.

Invariants:

* ``vector`` is a spatial iter var the output is indexed by; each tile computes
  ``register_inner x vector_inner`` outputs in registers, ``vector_inner`` lanes wide.
  ``vector_inner`` and ``register_inner`` always divide their extents (no tail predicates).
* With a weight (the constant operand, ``layout_free_buffers``, or else a convolution's kernel:
  the operand read without a sliding window) the vector var is the weight's output-channel var
  (the spatial var indexing it), so each FMA loads one contiguous weight vector and broadcasts
  one data element. Depthwise convolutions (the data's channel index is the output channel),
  pooling and products of two activations vectorize the innermost output var with extent > 1
  instead (the output width, ``N`` of a matmul): the data are read along it.
* The register budget keeps ``register_inner * vectors + vectors + 2`` within the target's
  SIMD registers.
* Symbolic extents (DataInputConfig ranges): a spatial or reduction var whose extent is symbolic
  is never the vector, register or blocked reduction var; its loop stays whole (a symbolic
  spatial loop joins the parallel outer loops). A kernel with static extents gets exactly the
  plan it got before symbolic extents were allowed.
* ``name`` says which op class the rule recognised; it is what the report shows.
* :class:`~airflow_neo.local.configs.knobs.Knobs` given to :func:`make_plan` override the tile, the reduction blocking and
  the threading only where they fit this kernel (dividing extents, within the register budget);
  ``knobs_used`` says whether they did. :meth:`TilePlan.knobs` spells out what the plan uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import divisor_at_most, vector_split
from .facts import REDUCE, SPATIAL, BlockFacts, FuncFacts, linear_coefficient, mac_operands, used_vars, window_operand
from airflow_neo.local.configs.knobs import Knobs, Shape


@dataclass
class TilePlan:
    name: str  #: op class for the report: conv2d, conv2d-depthwise, dense, matmul, pool ...
    main: BlockFacts
    operands: list  #: the loads the block reads (TensorLoad)
    weight: object  #: the constant operand's load, or None
    vector: object  #: Iter vectorized
    vector_inner: int
    register: object  #: Iter register-blocked, or None
    register_inner: int
    dtype: str
    lanes: int = 1
    registers: int = 16
    reduce: object = None  #: the longest reduction Iter (what ``reduce_block`` blocks), or None
    reduce_block: int | None = None  #: block ``reduce`` by this; None: not blocked
    parallel_register: bool = False  #: force the register var's outer part into the parallel loop
    knobs_used: bool = False  #: knobs were given and fit

    def knobs(self) -> Knobs:
        return Knobs(self.vector_inner, self.register_inner, self.reduce_block, self.parallel_register)

    def shape(self) -> Shape:
        """What :func:`~airflow_neo.local.configs.knobs.candidates` needs (the default plan's knobs as ``default``)."""
        return Shape(
            vector_extent=int(self.vector.extent),
            register_extent=int(self.register.extent) if self.register is not None else None,
            reduce_extent=int(self.reduce.extent) if self.reduce is not None else None,
            lanes=self.lanes,
            registers=self.registers,
            default=self.knobs(),
        )


def _uses(load, var) -> bool:
    return any(v.same_as(var) for index in load.indices for v in used_vars(index))


def _output_order(main: BlockFacts) -> list:
    """Spatial iters in the order they index the output (innermost last)."""
    order = []
    for index in main.writes[0].indices:
        for var in used_vars(index):
            it = main.iter_of(var)
            if it is not None and it.kind == SPATIAL and it not in order:
                order.append(it)
    return order


def _sliding(main: BlockFacts, load) -> bool:
    """Does some index of ``load`` mix a spatial and a reduction var (a sliding window)?"""
    for index in load.indices:
        kinds = {main.iter_of(v).kind for v in used_vars(index) if main.iter_of(v) is not None}
        if SPATIAL in kinds and REDUCE in kinds:
            return True
    return False


def _wide(it) -> bool:
    """A static extent above 1: what a vector or register var needs (a symbolic extent, a
    DataInputConfig range, is never tiled: its loop stays whole, outside the tile)."""
    return it.extent is not None and it.extent > 1


def make_plan(facts: FuncFacts, main: BlockFacts, cpu, knobs: Knobs | None = None) -> TilePlan | None:
    if not main.trivial:
        return None  # symbolic extents (None) are fine: they are never tiled (see _wide)
    if len(main.writes) != 1 or any(it.kind not in (SPATIAL, REDUCE) for it in main.iters):
        return None
    pair = mac_operands(main)
    operands = list(pair) if pair else []
    if not operands:
        single = window_operand(main)
        if single is None or not _sliding(main, single):
            return None  # plain reductions (mean, sum, softmax parts) belong to the reduction rule
        operands = [single]
    out_order = _output_order(main)
    if len(out_order) != sum(1 for it in main.iters if it.kind == SPATIAL):
        return None  # the output is not indexed by plain spatial vars
    dtype = str(main.writes[0].buffer.dtype)
    weight = _weight(facts, main, operands)
    data = [ld for ld in operands if ld is not weight]
    channel = None
    if weight is not None:
        in_weight = [it for it in out_order if _uses(weight, it.var) and _wide(it)]
        channel = in_weight[-1] if in_weight else None
    name = _classify(main, operands, weight, data, channel)
    if channel is not None and not name.endswith("-depthwise"):
        vector = channel
    else:
        # depthwise conv, pooling, products of two activations: along the innermost output var
        # (data are read contiguously, or deinterleaved when strided; see contraction.py)
        wide = [it for it in out_order if _wide(it)]
        if not wide:
            return None
        vector = wide[-1]
    candidates = [
        it for it in out_order
        if it is not vector and _wide(it) and (weight is None or not _uses(weight, it.var))
        and any(_uses(ld, it.var) for ld in data)
    ]
    register = candidates[-1] if candidates else None
    lanes = cpu.lanes(dtype)
    vector_inner, register_inner = _tile(vector, register, lanes, cpu.vector_registers)
    reduce = max((it for it in main.iters if it.kind == REDUCE and it.extent is not None), key=lambda it: it.extent,
                 default=None)
    plan = TilePlan(name, main, operands, weight, vector, vector_inner, register, register_inner, dtype,
                    lanes=lanes, registers=cpu.vector_registers, reduce=reduce)
    if knobs is not None:
        _apply_knobs(plan, knobs)
    return plan


def _apply_knobs(plan: TilePlan, knobs: Knobs) -> None:
    """Override ``plan``'s choices with ``knobs`` if they all fit; otherwise leave it as it is."""
    vector_inner = knobs.vector_inner or plan.vector_inner
    register_inner = knobs.register_inner or plan.register_inner
    if plan.vector.extent % vector_inner:
        return
    if plan.register is None and register_inner != 1:
        return
    if plan.register is not None and plan.register.extent % register_inner:
        return
    block = knobs.reduce_block
    if block is not None and block > 1:
        if plan.reduce is None or plan.reduce.extent % block or block >= plan.reduce.extent:
            return
    if knobs.parallel_register and plan.register is None:
        return
    plan.vector_inner, plan.register_inner = vector_inner, register_inner
    plan.reduce_block = block if block and block > 1 else None
    plan.parallel_register = bool(knobs.parallel_register)
    plan.knobs_used = True


def _weight(facts: FuncFacts, main: BlockFacts, operands):
    """The constant operand, or else a convolution's kernel (read without a sliding window)."""
    if len(operands) != 2:
        return None
    constant = [ld for ld in operands if facts.is_layout_free(ld.source)]
    if len(constant) == 1:
        return constant[0]
    fixed = [ld for ld in operands if not _sliding(main, ld)]
    return fixed[0] if len(fixed) == 1 else None


def _tile(vector, register, lanes: int, registers: int) -> tuple[int, int]:
    """``(vector_inner, register_inner)`` within the register budget, both dividing their extents."""
    vector_inner = vector_split(vector.extent, lanes, 2 if register is not None else 4)
    if register is None:
        return vector_inner, 1
    vectors = -(-vector_inner // lanes)
    register_inner = divisor_at_most(register.extent, max(1, (registers - vectors - 2) // vectors))
    if register_inner < 3 and vector_inner > lanes:
        # a poor divisor (a prime extent): trade vector width for register rows
        vector_inner = vector_split(vector.extent, lanes, 1)
        vectors = -(-vector_inner // lanes)
        register_inner = divisor_at_most(register.extent, max(1, (registers - vectors - 2) // vectors))
    return vector_inner, register_inner


def _classify(main: BlockFacts, operands, weight, data, channel) -> str:
    spatial_dims = len(main.writes[0].indices) - 2
    if len(operands) == 1:
        return f"pool{max(spatial_dims, 1)}d"
    sliding = any(_sliding(main, ld) for ld in operands)
    if not sliding:
        shared = [it for it in main.iters if it.kind == SPATIAL and all(_uses(ld, it.var) for ld in operands)
                  and (it.extent is None or it.extent > 1)]
        if weight is not None and not shared:
            return "dense"
        return "batch-matmul" if shared else "matmul"
    conv = f"conv{max(spatial_dims, 1)}d"
    if channel is not None and any(_uses(ld, channel.var) for ld in data):
        indices = [index for ld in data for index in ld.indices if any(v.same_as(channel.var) for v in used_vars(index))]
        if indices and all(linear_coefficient(index, channel.var) == 1 for index in indices):
            return f"{conv}-depthwise"
        return f"{conv}-grouped"
    window = [it for it in main.iters if it.kind == REDUCE and any(_sliding_dim(main, ld, it.var) for ld in data)]
    if all(it.extent == 1 for it in window):  # (a symbolic window extent is None: not pointwise)
        return f"{conv}-pointwise"
    return conv


def _sliding_dim(main: BlockFacts, load, var) -> bool:
    for index in load.indices:
        names = used_vars(index)
        if any(v.same_as(var) for v in names) and any(
            main.iter_of(v) is not None and main.iter_of(v).kind == SPATIAL for v in names
        ):
            return True
    return False
