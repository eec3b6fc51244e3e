"""Knobs: the few numbers a contraction schedule leaves open, and the candidates worth measuring.

The register-blocked schedule (:mod:`airflow_neo.local.schedules.contraction`) is a template; :func:`~airflow_neo.local.schedules.plan.make_plan`
fills it from the shapes and the CPU. :class:`Knobs` overrides those choices for one kernel. The
knobs of a kernel's fastest measured candidate are what the tuning tier and the shipped pack keep
(like AutoTVM's TopHub configs: a few integers per workload, not a schedule trace).

Invariants:

* A knob that does not fit the kernel it is applied to (a width that does not divide the loop
  extent, a register block larger than the loop) is ignored, never an error: records travel
  between TVM versions and model variants, and the default plan is always valid.
* :func:`candidates` is deterministic and ordered most promising first, the default plan first,
  then single changes taking turns between the tile, reduction blocking and threading;
  a tuner that can afford ``n`` candidates takes the first ``n``, and a later run with a larger
  budget takes the next ones (nothing measured twice).
* Pure data: no TVM import (the plan passes plain integers in).
"""

from __future__ import annotations

from dataclasses import dataclass

_FIELDS = ("vector_inner", "register_inner", "reduce_block", "parallel_register")
#: reduction block sizes tried (elements of the blocked reduction loop kept hot in cache)
REDUCE_BLOCKS = (32, 64, 128, 256)
MAX_CANDIDATES = 24


@dataclass(frozen=True)
class Knobs:
    """The open choices of one contraction schedule; None: the plan's own choice."""

    vector_inner: int | None = None  #: elements computed per tile along the vectorized var
    register_inner: int | None = None  #: rows per tile along the register-blocked var
    reduce_block: int | None = None  #: block the longest reduction loop by this (1: do not block)
    parallel_register: bool | None = None  #: also spread the register-blocked var over threads

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in _FIELDS if getattr(self, name) is not None}

    @classmethod
    def from_dict(cls, data) -> Knobs:
        """Knobs from stored JSON; unknown keys and wrong types raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"knobs must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown knobs {unknown}; allowed: {list(_FIELDS)}")
        values = {}
        for name in ("vector_inner", "register_inner", "reduce_block"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"knob {name}={value!r}: a positive integer is required")
            values[name] = value
        parallel = data.get("parallel_register")
        if parallel is not None and not isinstance(parallel, bool):
            raise ValueError(f"knob parallel_register={parallel!r}: true or false is required")
        return cls(**values, parallel_register=parallel)

    def text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items()) or "plan defaults"


@dataclass(frozen=True)
class Shape:
    """What :func:`candidates` needs to know of a plan (plain integers)."""

    vector_extent: int
    register_extent: int | None  #: None: no register-blocked var
    reduce_extent: int | None  #: the longest reduction loop; None: none
    lanes: int
    registers: int
    default: Knobs  #: the plan's own choice, fully spelled out


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _register_fits(register_inner: int, vector_inner: int, shape: Shape) -> bool:
    vectors = -(-vector_inner // shape.lanes)
    return register_inner * vectors + vectors + 2 <= shape.registers


def candidates(shape: Shape, limit: int = MAX_CANDIDATES) -> list[Knobs]:
    """Knobs worth measuring for a plan of ``shape``, the default first, at most ``limit``."""
    default = shape.default
    widths = [shape.lanes * k for k in (1, 2, 3, 4) if shape.vector_extent % (shape.lanes * k) == 0]
    widths = widths or [default.vector_inner]
    tiles: list[tuple[int, int]] = []
    for width in widths:
        if shape.register_extent is None:
            tiles.append((width, 1))
            continue
        fitting = [d for d in _divisors(shape.register_extent) if _register_fits(d, width, shape)]
        for rows in sorted(fitting, reverse=True)[:3]:
            tiles.append((width, rows))
    blocks: list[int | None] = [None]
    if shape.reduce_extent and shape.reduce_extent > min(REDUCE_BLOCKS):
        for size in REDUCE_BLOCKS:
            fitting = [d for d in _divisors(shape.reduce_extent) if size // 2 < d <= size and d < shape.reduce_extent]
            if fitting:
                blocks.append(max(fitting))
    parallels: list[bool | None] = [None]
    if shape.register_extent and not default.parallel_register:
        parallels.append(True)
    out: list[Knobs] = [default]
    seen = {default}

    def add(knobs: Knobs) -> None:
        if knobs not in seen:
            seen.add(knobs)
            out.append(knobs)

    base = (default.vector_inner, default.register_inner)
    ordered_tiles = sorted(set(tiles), key=lambda t: (abs(t[0] - base[0]) + abs(t[1] - (base[1] or 1)), t))
    singles = [
        [Knobs(width, rows, default.reduce_block, default.parallel_register) for width, rows in ordered_tiles],
        [Knobs(default.vector_inner, default.register_inner, block, default.parallel_register) for block in blocks[1:]],
        [Knobs(default.vector_inner, default.register_inner, default.reduce_block, p) for p in parallels[1:]],
    ]
    # one change at a time first, taking turns between tile, reduction blocking and threading
    # (a small budget sees each kind), then tiles with blocking
    for position in range(max(len(kind) for kind in singles)):
        for kind in singles:
            if position < len(kind):
                add(kind[position])
    for width, rows in ordered_tiles:
        for block in blocks[1:]:
            add(Knobs(width, rows, block, default.parallel_register))
    return out[: max(1, limit)]
