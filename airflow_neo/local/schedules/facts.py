"""Read-only facts about a fused PrimFunc, as the schedule rules need them.

Invariants:

* Nothing here changes a schedule: every function only reads ``sch.get(...)``.
* A rule may rely on :func:`func_facts` only for the functions the zero pipeline produces: every
  block sits directly under the root block in its own perfect loop nest, one loop per block iter
  var, in iter-var order (``trivial``). A block that breaks this is reported as such and the rules
  leave it alone.
* Extents are Python ints when static, ``None`` when symbolic; rules that tile need static ones.
* The records compare by identity (``eq=False``): TIR variables must never be compared with
  ``==``, which builds an expression instead of answering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm_ffi
from tvm import tirx
from tvm.ir import prim
from tvm.ir.expr import Call, TensorLoad

SPATIAL, REDUCE, OTHER = "S", "R", "O"


@dataclass(eq=False)
class Access:
    """One buffer access of a block: the buffer and its index expressions."""

    buffer: object
    indices: list


@dataclass(eq=False)
class Iter:
    var: object
    kind: str  #: SPATIAL, REDUCE or OTHER
    extent: int | None


@dataclass(eq=False)
class BlockFacts:
    rv: object  #: the SBlockRV
    name: str
    iters: list[Iter]
    reads: list[Access]
    writes: list[Access]
    trivial: bool  #: one loop per iter var, in order, with the same extents
    has_init: bool
    store: object  #: the body when it is a single BufferStore, else None

    @property
    def kinds(self) -> str:
        return "".join(it.kind for it in self.iters)

    @property
    def spatial_only(self) -> bool:
        return all(it.kind == SPATIAL for it in self.iters)

    def iter_of(self, var) -> Iter | None:
        for it in self.iters:
            if it.var.same_as(var):
                return it
        return None


@dataclass(eq=False)
class FuncFacts:
    blocks: list[BlockFacts]
    params: list  #: the function's buffer parameters, in order
    layout_free: list = field(default_factory=list)  #: parameters bound to constants at every call
    outputs: list = field(default_factory=list)  #: parameters written by some block

    def is_param(self, buffer) -> bool:
        return any(buffer.same_as(p) for p in self.params)

    def is_layout_free(self, buffer) -> bool:
        return any(buffer.same_as(p) for p in self.layout_free)

    def producers(self, buffer) -> list[BlockFacts]:
        return [b for b in self.blocks if any(w.buffer.same_as(buffer) for w in b.writes)]


def used_vars(expr) -> list:
    found = []

    def visit(var):
        found.append(var)

    tvm_ffi.structural_walk(expr, (tirx.Var, visit), order="post")
    return found


def static_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def strip_cast(expr):
    while isinstance(expr, prim.expr.Cast):
        expr = expr.value
    return expr


def is_load(expr) -> bool:
    return isinstance(strip_cast(expr), TensorLoad)


def linear_coefficient(expr, var) -> int | None:
    """``a`` when ``expr == a * var + rest`` with ``rest`` free of ``var``; None when not linear."""
    from tvm import sym

    result = sym.detect_linear_equation(expr, [var])
    if len(result) != 2:
        return None
    return static_int(result[0])


def block_facts(sch, rv) -> BlockFacts:
    block = sch.get(rv)
    iters = []
    for iv in block.iter_vars:
        kind = {int(tirx.IterVar.DataPar): SPATIAL, int(tirx.IterVar.CommReduce): REDUCE}.get(int(iv.iter_type), OTHER)
        iters.append(Iter(iv.var, kind, static_int(iv.dom.extent)))
    reads = [Access(r.source, [rng.min for rng in r.region]) for r in block.reads]
    writes = [Access(w.source, [rng.min for rng in w.region]) for w in block.writes]
    store = block.body if hasattr(block.body, "value") and hasattr(block.body, "indices") else None
    if store is not None:
        # regions are conservative; the store and its loads give the exact indices
        writes = [Access(store.buffer, list(store.indices))]
        loads = _loads(store.value)
        exact = []
        for region in reads:
            matches = [ld for ld in loads if ld.source.same_as(region.buffer)]
            exact.append(Access(region.buffer, list(matches[0].indices)) if len(matches) == 1 else region)
        reads = exact
    loops = sch.get_loops(rv)
    extents = [static_int(sch.get(loop).extent) for loop in loops]
    trivial = len(loops) == len(iters) and all(e == it.extent for e, it in zip(extents, iters))
    return BlockFacts(rv, block.name_hint, iters, reads, writes, trivial, block.init is not None, store)


def _loads(expr) -> list:
    found = []

    def visit(node):
        found.append(node)

    tvm_ffi.structural_walk(expr, (TensorLoad, visit), order="post")
    return found


def func_facts(sch, func) -> FuncFacts:
    root = sch.get_sblock("root")
    blocks = [block_facts(sch, rv) for rv in sch.get_child_blocks(root)]
    params = list(func.params)
    free = []
    attr = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    for index in attr or ():
        index = static_int(index)
        if index is not None and 0 <= index < len(params):
            free.append(params[index])
    outputs = [p for p in params if any(w.buffer.same_as(p) for b in blocks for w in b.writes)]
    return FuncFacts(blocks, params, free, outputs)


def mac_operands(block: BlockFacts):
    """``(x, y)`` loads when the block is ``C[i] = C[i] + x * y`` with an init; else None."""
    if not block.has_init or block.store is None:
        return None
    value = block.store.value
    if not isinstance(value, prim.expr.Add):
        return None
    for acc, product in ((value.a, value.b), (value.b, value.a)):
        acc = strip_cast(acc)
        if not isinstance(acc, TensorLoad) or not acc.source.same_as(block.store.buffer):
            continue
        product = strip_cast(product)
        if isinstance(product, prim.expr.Mul) and is_load(product.a) and is_load(product.b):
            return strip_cast(product.a), strip_cast(product.b)
    return None


def window_operand(block: BlockFacts):
    """The single input load of ``C[i] = max|min|+(C[i], x)`` with an init; else None."""
    if not block.has_init or block.store is None:
        return None
    value = block.store.value
    if not isinstance(value, (prim.expr.Add, prim.expr.Max, prim.expr.Min)):
        return None
    for acc, other in ((value.a, value.b), (value.b, value.a)):
        acc, other = strip_cast(acc), strip_cast(other)
        if isinstance(acc, TensorLoad) and acc.source.same_as(block.store.buffer) and isinstance(other, TensorLoad):
            return other
    return None


def is_padding(sch, block: BlockFacts) -> bool:
    """A spatial block whose value is an ``if_then_else`` (topi's ``pad_temp``)."""
    if not block.spatial_only or block.store is None:
        return False
    found = []
    tvm_ffi.structural_walk(block.store.value, (Call, lambda call: found.append(call)), order="post")
    return any(str(getattr(call.op, "name", "")).endswith("if_then_else") for call in found)
