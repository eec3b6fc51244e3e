"""Flexible input dimensions: a DataInputConfig range (``"1..8"``) compiled as a Relax symbolic shape.

A dimension that DataInputConfig gives as a range (:class:`airflow_neo.core.input_shapes.Range`)
is imported as a ``tir.Var``, so the whole model compiles to ONE artifact that runs at any size
in the range. This module holds what the frontends, the verification, the profile and the runtime
share about such dimensions; it imports neither TVM nor a framework at module level.

Invariants:

* an input with no range is a plain :class:`InputSpec`, exactly as before (its ``metadata.json``
  entry has no ``ranges`` key); an input with one is a :class:`FlexibleInputSpec`: ``shape`` has
  None at each range dim and ``ranges`` maps the dim's index (a string, as JSON keys are) to
  ``[lo, hi]``;
* a range is allowed only where the model leaves the dimension open (an ONNX ``dim_param`` or
  unknown dim; TorchScript, exported with that dim dynamic); a dim the model fixes is refused;
* one ``tir.Var`` per dimension name: the model's ``dim_param`` when it declares one (inputs that
  share it share the variable, so their ranges must agree), else ``<input>_dim<index>``; the Relax
  ``main`` carries ``tir_var_lower_bound``/``tir_var_upper_bound`` for each, so memory is planned
  for the upper bound, which makes a size above it unsafe: the runtime refuses sizes outside the
  range (:func:`check_ranges`);
* what cannot stay symbolic (an importer or legalization that needs a static size) is a
  :class:`~airflow_neo.local.errors.ModelInputError` naming the inputs, dims, ranges and the op,
  and suggesting a static size (:func:`refusal`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from airflow_neo.local.errors import ModelInputError
from airflow_neo.local.frontend_common import InputSpec

__all__ = [
    "FLEXIBLE_FRAMEWORKS", "FlexibleInputSpec", "check_extents", "check_ranges", "default_size", "dynamic_axes", "example_shape",
    "flexible_spec", "is_range", "parse_dims", "range_text", "refusal", "sample_shapes", "shape_entries",
    "static_at_lower_bound", "symbolic_shapes", "with_bounds",
]

#: frameworks whose importers keep a range symbolic (ONNX, and PyTorch TorchScript through its ONNX export)
FLEXIBLE_FRAMEWORKS = ("ONNX", "PYTORCH")
_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass
class FlexibleInputSpec(InputSpec):
    """An input with range dims: ``ranges`` {"<dim index>": [lo, hi]}; ``shape`` is None there."""

    ranges: dict = field(default_factory=dict)

    @property
    def shape_text(self) -> str:
        dims = []
        for index, dim in enumerate(self.shape or []):
            bounds = self.ranges.get(str(index))
            dims.append(f"{bounds[0]}..{bounds[1]}" if bounds else ("?" if dim is None else str(dim)))
        return "[" + ", ".join(dims) + "]"


def is_range(dim: Any) -> bool:
    """A parsed range dim (``Range`` of :mod:`airflow_neo.core.input_shapes`): it has ``lo`` and ``hi``."""
    return hasattr(dim, "lo") and hasattr(dim, "hi")


def range_text(dim) -> str:
    return f"{int(dim.lo)}..{int(dim.hi)}"


def parse_dims(name: str, shape) -> list | None:
    """``shape`` with its ``"lo..hi"`` strings parsed (:func:`airflow_neo.core.input_shapes.parse_input_entry`);
    None when it holds no range (the caller checks static shapes as before)."""
    if not isinstance(shape, list) or not any(isinstance(d, str) or is_range(d) for d in shape):
        return None
    if all(isinstance(d, int) or is_range(d) for d in shape):
        return list(shape)  # parsed already (a frontend handing shapes on)
    from airflow_neo.core.input_shapes import parse_input_entry

    try:
        return list(parse_input_entry(name, shape).dims)
    except ValueError as err:
        raise ModelInputError(str(err)) from err


def flexible_spec(spec: InputSpec, dims: list, framework: str, flexible_ok: bool) -> InputSpec:
    """The resolved input for parsed ``dims`` (ints and ranges) of the model's input ``spec``."""
    ranges = {str(i): [int(d.lo), int(d.hi)] for i, d in enumerate(dims) if is_range(d)}
    if not ranges:
        return InputSpec(spec.name, [int(d) for d in dims], spec.dtype)
    text = "[" + ", ".join(range_text(d) if is_range(d) else str(d) for d in dims) + "]"
    if not flexible_ok:
        what = "torch.export (.pt2) programs" if framework == "PYTORCH" else f"{framework} models"
        raise ModelInputError(
            f"DataInputConfig gives input {spec.name!r} the range shape {text}; ranges compile for "
            f"{' and '.join(FLEXIBLE_FRAMEWORKS)} (TorchScript) models only, not {what}: give a static shape"
        )
    for index, dim in enumerate(dims):
        if is_range(dim) and spec.shape is not None and spec.shape[index] is not None:
            raise ModelInputError(
                f"DataInputConfig gives input {spec.name!r} dimension {index} the range {range_text(dim)}, but the "
                f"model fixes that dimension at {spec.shape[index]} ({spec.describe()}); a range needs a dimension the "
                f"model leaves dynamic: give {spec.shape[index]} there, or re-export the model with that dimension dynamic"
            )
    shape = [None if is_range(d) else int(d) for d in dims]
    return FlexibleInputSpec(spec.name, shape, spec.dtype, ranges=ranges)


# --------------------------------------------------------------------------------------------
# TorchScript: the ONNX export with the range dims dynamic


def example_shape(spec: InputSpec) -> list[int]:
    """A concrete shape to trace ``spec`` with: each range dim at 2 where the range allows (a size
    of 1 invites an exporter to specialise broadcasting), else at its lower bound."""
    ranges = getattr(spec, "ranges", None) or {}
    return [min(ranges[str(i)][1], max(ranges[str(i)][0], 2)) if str(i) in ranges else int(d)
            for i, d in enumerate(spec.shape)]


def dynamic_axes(specs: list[InputSpec]) -> dict:
    """``torch.onnx.export``'s ``dynamic_axes`` for the range dims of ``specs``: inputs whose range is
    the same at the same index share one name (a batch or sequence length), so one size."""
    axes = {}
    for spec in specs:
        ranges = getattr(spec, "ranges", None) or {}
        if ranges:
            axes[spec.name] = {int(i): f"dim{i}_{lo}_{hi}" for i, (lo, hi) in ranges.items()}
    return axes


def shape_entries(spec: InputSpec) -> list:
    """``spec``'s shape with a ``Range`` at each range dim (what :func:`parse_dims` takes back)."""
    from airflow_neo.core.input_shapes import Range

    ranges = getattr(spec, "ranges", None) or {}
    return [Range(*ranges[str(i)]) if str(i) in ranges else d for i, d in enumerate(spec.shape)]


# --------------------------------------------------------------------------------------------
# TVM: symbolic shapes and their bounds


def symbolic_shapes(specs: list[InputSpec], dim_names: dict[str, list]) -> tuple[dict, dict]:
    """``({input: [int | tir.Var]}, {var name: (lo, hi)})`` for the resolved ``specs``;
    ``dim_names`` {input: [the model's dim_param or None per dim]} makes inputs share a variable."""
    from tvm import tirx

    variables: dict[str, Any] = {}
    bounds: dict[str, tuple[int, int]] = {}
    owners: dict[str, str] = {}
    shapes = {}
    for spec in specs:
        ranges = getattr(spec, "ranges", None) or {}
        dims = []
        declared = dim_names.get(spec.name) or []
        for index, dim in enumerate(spec.shape):
            bound = ranges.get(str(index))
            if bound is None:
                dims.append(dim)
                continue
            given = declared[index] if index < len(declared) else None
            name = _NAME.sub("_", given) if given else f"{_NAME.sub('_', spec.name)}_dim{index}"
            if name in bounds and bounds[name] != tuple(bound):
                raise ModelInputError(
                    f"DataInputConfig gives {spec.name!r} dimension {index} the range {bound[0]}..{bound[1]} and "
                    f"{owners[name]} the range {bounds[name][0]}..{bounds[name][1]}, but the model names both "
                    f"dimensions {given!r} (one size): give both the same range"
                )
            if name not in variables:
                variables[name] = tirx.Var(name, "int64")
                bounds[name], owners[name] = tuple(bound), f"{spec.name!r} dimension {index}"
            dims.append(variables[name])
        shapes[spec.name] = dims
    return shapes, bounds


def with_bounds(mod, bounds: dict):
    """``mod`` with its ``main`` carrying ``tir_var_lower_bound``/``tir_var_upper_bound`` for ``bounds``."""
    if not bounds:
        return mod
    main = mod["main"]
    main = main.with_attr("tir_var_lower_bound", {name: lo for name, (lo, _) in bounds.items()})
    main = main.with_attr("tir_var_upper_bound", {name: hi for name, (_, hi) in bounds.items()})
    mod["main"] = main
    return mod


def check_extents(mod, bounds: dict, specs: list[InputSpec]) -> None:
    """ModelInputError where a tensor of ``mod``'s ``main`` has a dimension below 1 with every range
    at its lower bound (or every one at its upper bound): sizes the model cannot take (a 3x3
    convolution without padding on a 1-pixel image), which the artifact would run unchecked."""
    import tvm
    from tvm import relax, tirx

    for pick, label in ((0, "lower"), (1, "upper")):
        values = {name: bound[pick] for name, bound in bounds.items()}
        analyzer, bound_vars, bad = tvm.sym.Analyzer(), set(), []

        def visit(expr, values=values, analyzer=analyzer, bound_vars=bound_vars, bad=bad) -> None:
            ty = getattr(expr, "ty", None) if isinstance(expr, relax.Call) else None
            if bad or not isinstance(ty, relax.TensorType) or not hasattr(getattr(ty, "shape", None), "values"):
                return
            for dim in ty.shape.values:
                if isinstance(dim, tirx.IntImm):
                    continue
                free = [v for v in tirx.analysis.undefined_vars(dim) if v.name in values]
                if not free:
                    continue
                for var in free:
                    if var.name not in bound_vars:
                        analyzer.bind(var, tirx.IntImm("int64", values[var.name]))  # symbolic_shapes makes int64 vars
                        bound_vars.add(var.name)
                size = analyzer.simplify(dim)
                if isinstance(size, tirx.IntImm) and size.value < 1:
                    op = expr.op.name if isinstance(expr.op, tvm.ir.Op) else str(getattr(expr.op, "name_hint", expr.op))
                    bad.append((op, dim, size.value))
                    return

        relax.analysis.post_order_visit(mod["main"].body, visit)
        if bad:
            op, dim, size = bad[0]
            dim = re.sub(r"T\.int64\((-?\d+)\)", r"\1", str(dim))
            sizes = "; ".join(f"input {spec.name!r} dimension {i} at {bound[pick]}"
                              for spec in specs for i, bound in sorted((getattr(spec, "ranges", None) or {}).items()))
            raise ModelInputError(
                f"flexible input shapes: with each range at its {label} bound ({sizes}) the model computes a tensor "
                f"dimension {dim} = {size} in {op}, so it cannot take that size: narrow the range in DataInputConfig "
                f"to sizes the model takes, or give a static size"
            )


def static_at_lower_bound(specs: list[InputSpec]) -> dict:
    """{input: static shape} with each range dim at its lower bound (a static import to compare with)."""
    shapes = {}
    for spec in specs:
        ranges = getattr(spec, "ranges", None) or {}
        shapes[spec.name] = [ranges[str(i)][0] if str(i) in ranges else d for i, d in enumerate(spec.shape)]
    return shapes


def refusal(err: BaseException, specs: list[InputSpec], stage: str) -> ModelInputError:
    """The ModelInputError for a symbolic import or legalization that failed where the static one works:
    the range inputs and dims, the op (:func:`airflow_neo.local.diagnose.locate`) and TVM's first line."""
    from airflow_neo.local.diagnose import locate

    flexible = [spec for spec in specs if getattr(spec, "ranges", None)]
    dims = "; ".join(
        f"input {spec.name!r} dimension {index} ({lo}..{hi})"
        for spec in flexible for index, (lo, hi) in sorted(spec.ranges.items())
    )
    try:
        diagnosis = locate(err)
    except Exception:  # noqa: BLE001 - naming the node is best effort
        diagnosis = None
    node = diagnosis.node if diagnosis is not None else None
    where = f"at {node.describe()}" if node is not None else (f"in op {_op_of(err)}" if _op_of(err) else "")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    what = f"{type(err).__name__}: {lines[0][:300] if lines else ''}"
    example = {spec.name: [lo for _, (lo, _hi) in sorted(spec.ranges.items())][:1] for spec in flexible}
    first = next(iter(example.items()))
    return ModelInputError(
        f"flexible input shapes: {dims} cannot stay symbolic: TVM's {stage} failed {where} with that size "
        f"unknown ({what}), while the same model {_VERBS.get(stage, stage)} with static sizes. Give a static size for that dimension "
        f"in DataInputConfig (e.g. {first[1][0]} for {first[0]!r}), or compile one artifact per size"
    )


_VERBS = {"import": "imports", "legalization": "legalizes"}


def _op_of(err: BaseException) -> str | None:
    match = re.search(r"\b(relax\.[A-Za-z0-9_.]+)", str(err))
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------
# metadata: sizes to run at, and the runtime's check


def _bounds_of(spec: dict) -> dict[int, tuple[int, int]]:
    return {int(index): (int(lo), int(hi)) for index, (lo, hi) in (spec.get("ranges") or {}).items()}


def default_size(spec: dict, index: int) -> int:
    """The size a range dim takes by default (the profile's, random samples'): its lower bound."""
    return _bounds_of(spec)[index][0]


def sample_shapes(specs: list[dict]) -> list[dict[str, list[int]]]:
    """The input shapes a flexible artifact is verified at: every range dim at its lower bound, at
    the midpoint and at its upper bound (duplicates dropped; [] when no input has a range)."""
    if not any(spec.get("ranges") for spec in specs):
        return []
    found: list[dict] = []
    for pick in (lambda lo, hi: lo, lambda lo, hi: (lo + hi) // 2, lambda lo, hi: hi):
        shapes = {}
        for spec in specs:
            bounds = _bounds_of(spec)
            shapes[spec["name"]] = [
                pick(*bounds[i]) if i in bounds else (1 if d is None else int(d))
                for i, d in enumerate(spec.get("shape") or [])
            ]
        if shapes not in found:
            found.append(shapes)
    return found


def check_ranges(spec: dict, shape) -> None:
    """ModelInputError naming the input, dim, size and range where ``shape`` leaves a range of ``spec``."""
    for index, (lo, hi) in sorted(_bounds_of(spec).items()):
        if index < len(shape) and not lo <= int(shape[index]) <= hi:
            raise ModelInputError(
                f"input {spec['name']!r} dimension {index} is {int(shape[index])}, outside the range {lo}..{hi} the "
                f"model was compiled for (shape {list(shape)}); recompile with a range that covers it"
            )
