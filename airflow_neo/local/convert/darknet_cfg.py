"""DarkNet's model files read without DarkNet: the ``.cfg`` sections, each layer's output shape and
the float32 arrays of the ``.weights`` file.

Invariants:

- :func:`parse_cfg` keeps DarkNet's reading rules: ``#`` and ``;`` start a comment line, all
  whitespace is dropped, ``key=value`` lines belong to the last ``[section]``; the first section is
  ``[net]`` (or ``[network]``); layers are numbered from 0 after it, as ``route``/``shortcut``
  indices count them; every section remembers its line for error messages;
- :func:`layer_shapes` follows DarkNet's size arithmetic (integer division, ``pad=1`` meaning
  ``size/2``, maxpool's default padding ``size-1``); a layer whose inputs do not fit raises
  :class:`ShapeMismatch`, which the caller turns into the error of its cause (a broken cfg or a
  DataInputConfig shape the layers cannot take);
- :func:`read_weights` consumes the ``.weights`` file in DarkNet's order and raises
  :class:`~airflow_neo.local.errors.ModelArchiveError` unless the file holds exactly the floats the
  cfg needs (it names both counts); nothing here imports onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from airflow_neo.local.errors import ModelArchiveError, OperatorAttributeValueNotValidError

__all__ = ["Layer", "Shape", "ShapeMismatch", "layer_shapes", "parse_cfg", "read_weights", "weight_arrays"]

NET_SECTIONS = ("net", "network")


class ShapeMismatch(ValueError):
    """A layer cannot take the shapes it gets; ``layer`` is the layer at fault."""

    def __init__(self, layer: "Layer", message: str):
        super().__init__(f"{layer.where}: {message}")
        self.layer = layer


@dataclass
class Layer:
    """One ``[section]`` of a cfg: its type, its layer index (-1 for ``[net]``), its line and options."""

    type: str
    index: int
    line: int
    source: str
    options: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        at = "[net]" if self.index < 0 else f"layer {self.index} [{self.type}]"
        return f"{at} (line {self.line} of {self.source})"

    def text(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def int(self, key: str, default: int | None = None) -> int:
        return self._number(key, default, int)

    def float(self, key: str, default: float | None = None) -> float:
        return self._number(key, default, float)

    def ints(self, key: str) -> list[int]:
        raw = self.options.get(key, "")
        try:
            return [int(part) for part in raw.split(",") if part != ""]
        except ValueError:
            raise self.invalid(key, "a comma-separated list of integers") from None

    def invalid(self, key: str, allowed: str) -> OperatorAttributeValueNotValidError:
        return OperatorAttributeValueNotValidError(
            f"{self.where}: {key}={self.options.get(key)!r} is not valid; allowed: {allowed}", [self.type])

    def _number(self, key, default, kind):
        raw = self.options.get(key)
        if raw is None:
            if default is None:
                raise OperatorAttributeValueNotValidError(f"{self.where} needs {key}=", [self.type])
            return default
        try:
            return kind(float(raw)) if kind is int and "." in raw else kind(raw)
        except ValueError:
            raise self.invalid(key, "an integer" if kind is int else "a number") from None


def parse_cfg(text: str, source: str) -> tuple[Layer, list[Layer]]:
    """The ``[net]`` section and the layers of a cfg's text (``source`` names the file in errors)."""
    sections: list[Layer] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ModelArchiveError(f"line {number} of {source}: {raw.strip()!r} is not a [section] header")
            sections.append(Layer(line[1:-1], len(sections) - 1, number, source))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options[key] = value
        else:
            raise ModelArchiveError(
                f"line {number} of {source}: {raw.strip()!r} is neither a [section] header nor key=value "
                "inside a section; is this a DarkNet .cfg?")
    if not sections or sections[0].type not in NET_SECTIONS:
        first = f"[{sections[0].type}]" if sections else "no section"
        raise ModelArchiveError(f"{source} must start with a [net] section (DarkNet .cfg); it starts with {first}")
    if len(sections) == 1:
        raise ModelArchiveError(f"{source} has a [net] section but no layers")
    return sections[0], sections[1:]


@dataclass(frozen=True)
class Shape:
    """A layer output's channels, height and width (batch excluded); ``flat``: a connected layer's
    ``(N, C)`` output rather than ``(N, C, H, W)``."""

    c: int
    h: int
    w: int
    flat: bool = False

    @property
    def size(self) -> int:
        return self.c * self.h * self.w


def conv_padding(layer: Layer) -> int:
    size = layer.int("size", 1)
    return size // 2 if layer.int("pad", 0) else layer.int("padding", 0)


def pool_geometry(layer: Layer) -> tuple[int, int, int]:
    """(size, stride, total padding) of a maxpool, with DarkNet's defaults."""
    stride = layer.int("stride", 1)
    size = layer.int("size", stride)
    return size, stride, layer.int("padding", size - 1)


def route_sources(layer: Layer) -> list[int]:
    """The absolute layer indices a route reads (``layers=`` negative: relative to the route)."""
    found = [index if index >= 0 else layer.index + index for index in layer.ints("layers")]
    if not found:
        raise layer.invalid("layers", "one or more earlier layer indices")
    for index in found:
        if not 0 <= index < layer.index:
            raise layer.invalid("layers", f"earlier layers only (0..{layer.index - 1}, or -1..-{layer.index})")
    return found


def shortcut_source(layer: Layer) -> int:
    index = layer.int("from")
    index = index if index >= 0 else layer.index + index
    if not 0 <= index < layer.index:
        raise layer.invalid("from", f"an earlier layer (0..{layer.index - 1}, or -1..-{layer.index})")
    return index


def route_groups(layer: Layer) -> tuple[int, int]:
    groups, group_id = layer.int("groups", 1), layer.int("group_id", 0)
    if groups < 1:
        raise layer.invalid("groups", "an integer >= 1")
    if not 0 <= group_id < groups:
        raise layer.invalid("group_id", f"0..{groups - 1} (groups={groups})")
    return groups, group_id


def layer_shapes(layers: list[Layer], first: Shape) -> list[Shape]:
    """Each layer's output shape for an input of shape ``first``."""
    shapes: list[Shape] = []
    for layer in layers:
        shapes.append(_shape_of(layer, shapes[-1] if shapes else first, shapes))
    return shapes


def _positive(layer: Layer, shape: Shape) -> Shape:
    if min(shape.c, shape.h, shape.w) < 1:
        raise ShapeMismatch(layer, f"its output would be {shape.c}x{shape.h}x{shape.w} (CxHxW): the input is too small")
    return shape


def _shape_of(layer: Layer, previous: Shape, shapes: list[Shape]) -> Shape:
    kind = layer.type
    if kind == "convolutional":
        size, stride, groups, filters = layer.int("size", 1), layer.int("stride", 1), layer.int("groups", 1), layer.int("filters")
        if min(size, stride, groups, filters) < 1:
            raise layer.invalid("size/stride/groups/filters", "positive integers")
        if previous.c % groups or filters % groups:
            raise ShapeMismatch(layer, f"groups={groups} must divide its {previous.c} input channels and filters={filters}")
        pad = conv_padding(layer)
        return _positive(layer, Shape(filters, (previous.h + 2 * pad - size) // stride + 1,
                                      (previous.w + 2 * pad - size) // stride + 1))
    if kind == "maxpool":
        size, stride, padding = pool_geometry(layer)
        if min(size, stride) < 1 or padding < 0:
            raise layer.invalid("size/stride/padding", "size and stride >= 1, padding >= 0")
        return _positive(layer, Shape(previous.c, (previous.h + padding - size) // stride + 1,
                                      (previous.w + padding - size) // stride + 1))
    if kind == "avgpool":
        return Shape(previous.c, 1, 1)
    if kind == "connected":
        return Shape(layer.int("output", 1), 1, 1, flat=True)
    if kind in ("softmax", "dropout", "cost", "yolo", "region"):
        return previous
    if kind == "upsample":
        stride = layer.int("stride", 2)
        if stride < 1:
            raise layer.invalid("stride", "an integer >= 1 (downsampling upsample layers are not supported)")
        return Shape(previous.c, previous.h * stride, previous.w * stride)
    if kind == "reorg":
        stride = layer.int("stride", 2)
        if previous.h % stride or previous.w % stride:
            raise ShapeMismatch(layer, f"stride={stride} must divide its input's {previous.h}x{previous.w} (HxW)")
        return Shape(previous.c * stride * stride, previous.h // stride, previous.w // stride)
    if kind == "route":
        return _route_shape(layer, shapes)
    if kind == "shortcut":
        other = shapes[shortcut_source(layer)]
        if (other.c, other.h, other.w) != (previous.c, previous.h, previous.w):
            raise ShapeMismatch(layer, f"adds layer {shortcut_source(layer)}'s {other.c}x{other.h}x{other.w} to "
                                       f"{previous.c}x{previous.h}x{previous.w}; only equal shapes are supported")
        return previous
    return previous  # unsupported types are reported by the builder, with all of them at once


def _route_shape(layer: Layer, shapes: list[Shape]) -> Shape:
    groups, _ = route_groups(layer)
    sources = [shapes[index] for index in route_sources(layer)]
    sizes = {(shape.h, shape.w) for shape in sources}
    if len(sizes) != 1:
        raise ShapeMismatch(layer, "concatenates outputs of different heights/widths: "
                                   + ", ".join(f"{s.c}x{s.h}x{s.w}" for s in sources))
    for shape in sources:
        if shape.c % groups:
            raise ShapeMismatch(layer, f"groups={groups} must divide each input's channels ({shape.c})")
    h, w = sizes.pop()
    return Shape(sum(shape.c // groups for shape in sources), h, w, flat=sources[0].flat and len(sources) == 1 and groups == 1)


# ----------------------------------------------------------------------------- .weights


def weight_arrays(layer: Layer, previous: Shape) -> list[tuple[str, int]]:
    """The arrays ``layer`` reads from the .weights file, in DarkNet's order: ``(name, float count)``."""
    bn = layer.int("batch_normalize", 0) == 1
    if layer.type == "convolutional":
        filters, size, groups = layer.int("filters"), layer.int("size", 1), layer.int("groups", 1)
        kernel = [("weights", filters * (previous.c // groups) * size * size)]
        norm = [("scales", filters), ("rolling_mean", filters), ("rolling_variance", filters)] if bn else []
        return [("biases", filters)] + norm + kernel
    if layer.type == "connected":
        outputs = layer.int("output", 1)
        norm = [("scales", outputs), ("rolling_mean", outputs), ("rolling_variance", outputs)] if bn else []
        return [("biases", outputs), ("weights", outputs * previous.size)] + norm
    return []


@dataclass
class Weights:
    """The parsed ``.weights``: its header and each layer's arrays (``{index: {name: array}}``)."""

    version: tuple[int, int, int]
    seen: int
    transposed: bool
    arrays: dict


def read_weights(path: Path, layers: list[Layer], inputs: list[Shape], listing: str) -> Weights:
    """The arrays of each layer with weights; ``inputs[i]`` is layer i's input shape at the cfg's size.

    Raises ModelArchiveError when the file is shorter or longer than the cfg needs (``listing``
    names what the archive holds)."""
    import numpy as np

    data = path.read_bytes()
    if len(data) < 16:
        raise ModelArchiveError(f"{path.name} holds {len(data)} bytes: too short for a DarkNet .weights header "
                                f"(16 or 20 bytes); the archive holds {listing}")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    wide = major * 10 + minor >= 2
    header = 20 if wide else 16
    seen = int(np.frombuffer(data, "<i8" if wide else "<i4", 1, 12)[0])
    needed = [(layer, name, count) for layer, shape in zip(layers, inputs) for name, count in weight_arrays(layer, shape)]
    expected = sum(count for _, _, count in needed)
    actual, extra = divmod(len(data) - header, 4)
    if actual != expected or extra:
        raise ModelArchiveError(
            f"{path.name} holds {actual} float32 values" + (f" and {extra} stray bytes" if extra else "")
            + f" after its {header}-byte header (version {major}.{minor}.{revision}); {_cfg_name(layers)} needs "
            f"{expected} ({_too(actual, expected)}); the archive holds {listing}")
    floats = np.frombuffer(data, "<f4", expected, header)
    arrays: dict = {}
    offset = 0
    for layer, name, count in needed:
        arrays.setdefault(layer.index, {})[name] = floats[offset:offset + count]
        offset += count
    return Weights((major, minor, revision), seen, major > 1000 or minor > 1000, arrays)


def _cfg_name(layers: list[Layer]) -> str:
    return layers[0].source if layers else "the cfg"


def _too(actual: int, expected: int) -> str:
    if actual < expected:
        return f"{expected - actual} too few: truncated, or the weights of another cfg"
    return f"{actual - expected} left over: the weights of another cfg"
