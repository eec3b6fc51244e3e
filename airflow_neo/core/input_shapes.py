"""Typed records for the entries of Neo's DataInputConfig (pure: no TVM, framework or Airflow import).

Neo's DataInputConfig is a JSON object keyed by input name, or (PyTorch only) a list taken in the
model's input order. Each entry is either

* a plain shape: a list of dimensions, ``[1, 3, 224, 224]``; a dimension is a positive integer or
  a range string ``"lo..hi"`` of positive integers with ``lo <= hi`` (``"1..10"``), parsed into
  :class:`Range`; or
* Core ML's object form: ``{"shape": ..., "default_shape": [...], "type": "Image"|"Tensor",
  "bias": [...], "scale": float}``, where ``shape`` is one plain shape (ranges allowed) or a list
  of static shapes of one rank (enumerated shapes).

Invariants of a parsed :class:`InputShape`:

* exactly one of ``dims`` and ``enumerated`` is set; enumerated shapes are static, distinct, of one
  rank, and there are at least two of them (a one-shape list reads as that static shape);
* ``default_shape`` (when set) is static, has the entry's rank, lies within every range and is one
  of the enumerated shapes;
* ``bias`` and ``scale`` are set only for ``input_type == "Image"``; ``bias`` has 1 or 3 numbers.

Every malformed entry raises :class:`ValueError` naming the input, the value and the allowed form.
Whether the object form is allowed at all (Core ML only) is the caller's rule, not this module's:
:attr:`InputShape.object_form` says which form an entry was given in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Union

__all__ = [
    "IMAGE",
    "INPUT_TYPES",
    "OBJECT_KEYS",
    "TENSOR",
    "Dim",
    "InputShape",
    "Range",
    "parse_data_input",
    "parse_dim",
    "parse_input_entry",
]

IMAGE = "Image"
TENSOR = "Tensor"
INPUT_TYPES = (IMAGE, TENSOR)
OBJECT_KEYS = ("shape", "default_shape", "type", "bias", "scale")

_RANGE_TEXT = re.compile(r"\s*([0-9]+)\s*\.\.\s*([0-9]+)\s*")
DIM_FORM = "a positive integer or a range 'lo..hi' of positive integers with lo <= hi (e.g. '1..10')"
SHAPE_FORM = "a non-empty list of dimensions, e.g. [1, 3, 224, 224] or ['1..10', 3, 224, 224]"
OBJECT_FORM = (
    '{"shape": [..] or [[..], [..]] (enumerated), "default_shape": [..], "type": "Image"|"Tensor", '
    '"bias": [b, b, b], "scale": s}'
)


@dataclass(frozen=True)
class Range:
    """A flexible dimension: any size from ``lo`` to ``hi``, both included (Neo's ``"lo..hi"``)."""

    lo: int
    hi: int

    def __post_init__(self):
        for value in (self.lo, self.hi):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Range bounds must be positive integers; got {self.lo!r}..{self.hi!r}")
        if self.lo > self.hi:
            raise ValueError(f"Range lower bound {self.lo} is above its upper bound {self.hi}")

    def __contains__(self, size: object) -> bool:
        return isinstance(size, int) and not isinstance(size, bool) and self.lo <= size <= self.hi

    def __str__(self) -> str:
        return f"{self.lo}..{self.hi}"


Dim = Union[int, Range]


@dataclass(frozen=True)
class InputShape:
    """One parsed DataInputConfig entry.

    :param name: the input's name; for the list form (PyTorch), ``input0``, ``input1``, ... and
        ``positional`` is True.
    :param dims: the shape, each dimension an int or a :class:`Range`; None for enumerated shapes.
    :param enumerated: the enumerated static shapes (Core ML), else None.
    :param default_shape: the static default shape Core ML uses (object form), else None.
    :param input_type: ``"Tensor"`` or ``"Image"`` (object form; plain shapes are Tensors).
    :param bias: per-channel bias of an Image input (1 or 3 numbers), else None.
    :param scale: scale of an Image input, else None. Core ML computes ``scale * x + bias``.
    :param positional: whether the entry came from the list form (matched by position).
    :param object_form: whether the entry was given in Core ML's object form.
    """

    name: str
    dims: tuple[Dim, ...] | None
    enumerated: tuple[tuple[int, ...], ...] | None = None
    default_shape: tuple[int, ...] | None = None
    input_type: str = TENSOR
    bias: tuple[float, ...] | None = None
    scale: float | None = None
    positional: bool = False
    object_form: bool = False

    @property
    def is_static(self) -> bool:
        """One fixed shape: no range and no enumeration."""
        return self.dims is not None and not self.has_range

    @property
    def has_range(self) -> bool:
        return self.dims is not None and any(isinstance(dim, Range) for dim in self.dims)

    @property
    def rank(self) -> int:
        return len(self.dims) if self.dims is not None else len(self.enumerated[0])

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape as ints when static, else None."""
        return tuple(self.dims) if self.is_static else None

    @property
    def representative_shape(self) -> tuple[int, ...]:
        """One concrete shape of this input: the default shape, else the static shape, else the
        first enumerated shape, else each range's lower bound."""
        if self.default_shape is not None:
            return self.default_shape
        if self.enumerated is not None:
            return self.enumerated[0]
        return tuple(dim.lo if isinstance(dim, Range) else dim for dim in self.dims)

    def shape_text(self) -> str:
        """``[1, 3, 1..10, 224]`` or ``[[1, 3, 224, 224], [1, 3, 160, 160]]`` (enumerated)."""
        if self.enumerated is not None:
            return "[" + ", ".join(_dims_text(shape) for shape in self.enumerated) + "]"
        return _dims_text(self.dims)


def _dims_text(dims) -> str:
    return "[" + ", ".join(str(dim) for dim in dims) + "]"


def parse_dim(name: str, index: int, value: Any) -> Dim:
    """One dimension of input ``name``: a positive int, or a :class:`Range` from ``"lo..hi"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value > 0:
            return value
    elif isinstance(value, str):
        match = _RANGE_TEXT.fullmatch(value)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if 0 < lo <= hi:
                return Range(lo, hi)
    raise ValueError(f"DataInputConfig input {name!r}: dimension {index} is {value!r}; a dimension is {DIM_FORM}")


def _parse_dims(name: str, value: Any, what: str = "shape") -> tuple[Dim, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"DataInputConfig input {name!r}: {what} is {value!r}; it must be {SHAPE_FORM}")
    return tuple(parse_dim(name, i, dim) for i, dim in enumerate(value))


def _parse_static(name: str, value: Any, what: str) -> tuple[int, ...]:
    dims = _parse_dims(name, value, what)
    if any(isinstance(dim, Range) for dim in dims):
        raise ValueError(f"DataInputConfig input {name!r}: {what} {value!r} must be static: positive integers, no ranges")
    return dims


def _is_shape_list(value: Any) -> bool:
    """A list of shapes (enumerated), as opposed to a list of dimensions."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, (list, tuple)) for item in value)


def parse_input_entry(name: str, value: Any, *, positional: bool = False) -> InputShape:
    """Parse one DataInputConfig entry (a plain shape or Core ML's object form) of input ``name``."""
    if isinstance(value, dict):
        return _parse_object(name, value, positional)
    if isinstance(value, (list, tuple)):
        return InputShape(name, _parse_dims(name, value), positional=positional)
    raise ValueError(
        f"DataInputConfig input {name!r} is {value!r}; an entry is {SHAPE_FORM}, or Core ML's object form {OBJECT_FORM}"
    )


def _parse_object(name: str, value: dict, positional: bool) -> InputShape:
    unknown = sorted(str(key) for key in value if key not in OBJECT_KEYS)
    if unknown:
        raise ValueError(f"DataInputConfig input {name!r} has unknown keys {unknown}; allowed: {list(OBJECT_KEYS)}")
    if "shape" not in value:
        raise ValueError(f"DataInputConfig input {name!r} has no 'shape'; the object form is {OBJECT_FORM}")
    dims, enumerated = _parse_object_shape(name, value["shape"])
    rank = len(dims) if dims is not None else len(enumerated[0])
    default = None
    if value.get("default_shape") is not None:
        default = _parse_static(name, value["default_shape"], "default_shape")
        _check_default(name, default, dims, enumerated, rank)
    input_type = value.get("type", TENSOR)
    if input_type not in INPUT_TYPES:
        raise ValueError(f"DataInputConfig input {name!r}: type is {input_type!r}; allowed: {list(INPUT_TYPES)}")
    bias, scale = _parse_preprocessing(name, value, input_type)
    return InputShape(name, dims, enumerated, default, input_type, bias, scale, positional, object_form=True)


def _parse_object_shape(name: str, shape: Any):
    if not _is_shape_list(shape):
        return _parse_dims(name, shape), None
    shapes = tuple(_parse_static(name, item, f"enumerated shape {i}") for i, item in enumerate(shape))
    if len(shapes) == 1:
        return shapes[0], None
    ranks = sorted({len(item) for item in shapes})
    if len(ranks) > 1:
        raise ValueError(f"DataInputConfig input {name!r}: the enumerated shapes {shape!r} have ranks {ranks}; they must share one rank")
    if len(set(shapes)) != len(shapes):
        raise ValueError(f"DataInputConfig input {name!r}: the enumerated shapes {shape!r} repeat a shape; list each once")
    return None, shapes


def _check_default(name, default, dims, enumerated, rank) -> None:
    if len(default) != rank:
        raise ValueError(f"DataInputConfig input {name!r}: default_shape {list(default)} has rank {len(default)}, the shape has rank {rank}")
    if enumerated is not None:
        if default not in enumerated:
            raise ValueError(
                f"DataInputConfig input {name!r}: default_shape {list(default)} is not one of the enumerated shapes "
                f"{[list(item) for item in enumerated]}"
            )
        return
    for i, (size, dim) in enumerate(zip(default, dims)):
        if (isinstance(dim, Range) and size not in dim) or (isinstance(dim, int) and size != dim):
            raise ValueError(
                f"DataInputConfig input {name!r}: default_shape {list(default)} does not fit the shape "
                f"{_dims_text(dims)} (dimension {i}: {size} is not in {dim})"
            )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_preprocessing(name: str, value: dict, input_type: str):
    given = [key for key in ("bias", "scale") if value.get(key) is not None]
    if input_type != IMAGE:
        if given:
            raise ValueError(f"DataInputConfig input {name!r}: {given} apply to Image inputs only; add \"type\": \"Image\" or drop them")
        return None, None
    bias = value.get("bias")
    if bias is not None:
        items = list(bias) if isinstance(bias, (list, tuple)) else [bias]
        if len(items) not in (1, 3) or not all(_number(item) for item in items):
            raise ValueError(f"DataInputConfig input {name!r}: bias is {bias!r}; it must be 1 (grayscale) or 3 (RGB) numbers")
        bias = tuple(float(item) for item in items)
    scale = value.get("scale")
    if scale is not None:
        if not _number(scale) or scale == 0:
            raise ValueError(f"DataInputConfig input {name!r}: scale is {scale!r}; it must be a non-zero number")
        scale = float(scale)
    return bias, scale


def parse_data_input(config: Any) -> list[InputShape]:
    """Every entry of a parsed DataInputConfig, in the order given.

    A dict is keyed by input name; a list (Neo's PyTorch list form) names its entries ``input0``,
    ``input1``, ... with ``positional`` set; each item of the list is an entry (a flat list of
    dimensions is refused, as Neo's form is ``[[1, 3, 224, 224]]``). Which frameworks may use the
    list form is the caller's rule.
    """
    if isinstance(config, dict):
        if not config:
            raise ValueError("DataInputConfig is empty; give at least one input, e.g. {\"input0\": [1, 3, 224, 224]}")
        return [parse_input_entry(str(name), value) for name, value in config.items()]
    if isinstance(config, (list, tuple)):
        if not config:
            raise ValueError("DataInputConfig is an empty list; give at least one shape, e.g. [[1, 3, 224, 224]]")
        flat = [item for item in config if not isinstance(item, (list, tuple, dict))]
        if flat:
            raise ValueError(
                f"DataInputConfig list form {config!r} holds {flat[0]!r}; the list form is a list of entries, "
                f"one per input, e.g. [[1, 3, 224, 224]] or [{{\"shape\": [1, 3, 224, 224]}}]"
            )
        return [parse_input_entry(f"input{i}", item, positional=True) for i, item in enumerate(config)]
    raise ValueError(
        f"DataInputConfig is {config!r}; it must be an object {{\"name\": shape, ...}} or (PyTorch) a list of shapes"
    )
