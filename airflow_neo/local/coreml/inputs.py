"""DataInputConfig entries (:class:`~airflow_neo.core.input_shapes.InputShape`) as coremltools input
types, matched to the model's own inputs.

Shapes are in the model's own layout: NCHW for PyTorch, NHWC for TensorFlow and Keras (Neo's Core ML
examples: ``[1, 3, 224, 224]`` for PyTorch, ``[1, 224, 224, 3]`` for ``input_1``). A range
dimension becomes ``ct.RangeDim(lo, hi, default)``, enumerated shapes ``ct.EnumeratedShapes``;
the default is ``default_shape`` where given, else each range's lower bound / the first shape.
An ``Image`` entry becomes ``ct.ImageType`` (RGB for 3 channels, GRAYSCALE for 1) whose
preprocessing Core ML applies as ``scale * pixel + bias`` per channel, as Neo documents it.

Invariants: :func:`match_entries` returns one entry per model input, named as the Core ML input
will be, or raises :class:`~airflow_neo.local.errors.ModelInputError` naming the input, what the
model declares and what was given. coremltools is passed in (``ct``), never imported here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from airflow_neo.core.input_shapes import IMAGE, InputShape, Range, parse_data_input
from airflow_neo.local.errors import ModelInputError

__all__ = ["ModelInput", "channel_axis", "ct_input", "match_entries", "parse_entries"]


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """An input the model declares: its name and shape (None dims: dynamic; None: unknown)."""

    name: str
    shape: tuple[int | None, ...] | None = None

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name} (shape not declared)"
        return f"{self.name} [" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


def parse_entries(data_input) -> list[InputShape]:
    """DataInputConfig parsed; a malformed entry is a ModelInputError (the request was validated
    before, so this only fires for a job built without validation)."""
    if data_input is None or data_input == {} or data_input == []:
        return []
    try:
        return parse_data_input(data_input)
    except ValueError as err:
        raise ModelInputError(str(err)) from err


def _inputs_text(model_inputs: list[ModelInput]) -> str:
    return "; ".join(item.describe() for item in model_inputs) or "none"


def match_entries(framework: str, entries: list[InputShape], model_inputs: list[ModelInput], *, positional_ok: bool) -> list[InputShape]:
    """Pair each model input with its DataInputConfig entry, in the model's input order.

    Entries named after the model's inputs match by name; list-form entries (and, where
    ``positional_ok``, a dict none of whose names are the model's: Neo's ``input0``, ``input1``
    for PyTorch) match by position and take the model's input names. A model input without an
    entry keeps its declared shape, which must then be static.
    """
    names = [item.name for item in model_inputs]
    by_position = entries and (all(e.positional for e in entries) or (positional_ok and not {e.name for e in entries} & set(names)))
    if by_position:
        if len(entries) != len(model_inputs):
            raise ModelInputError(
                f"DataInputConfig gives {len(entries)} input(s) but the {framework} model takes {len(model_inputs)}: "
                f"{_inputs_text(model_inputs)}"
            )
        given = {item.name: dataclasses.replace(entry, name=item.name) for item, entry in zip(model_inputs, entries)}
    else:
        unknown = [e.name for e in entries if e.name not in names]
        if unknown:
            raise ModelInputError(
                f"DataInputConfig names {unknown}, which {'is not an input' if len(unknown) == 1 else 'are not inputs'} "
                f"of the {framework} model; the model's inputs are: {_inputs_text(model_inputs)}"
            )
        given = {e.name: e for e in entries}
    return [_resolve(framework, item, given.get(item.name), model_inputs) for item in model_inputs]


def _resolve(framework: str, item: ModelInput, entry: InputShape | None, model_inputs: list[ModelInput]) -> InputShape:
    if entry is None:
        if item.shape is None or any(d is None for d in item.shape):
            raise ModelInputError(
                f"input {item.name!r} of the {framework} model has no static shape ({item.describe()}); give its shape in "
                f"DataInputConfig, e.g. {{{json.dumps(item.name)}: {{\"shape\": [\"1..8\", 3, 224, 224]}}}}; "
                f"the model's inputs are: {_inputs_text(model_inputs)}"
            )
        return InputShape(item.name, tuple(item.shape))
    if item.shape is not None:
        _check_declared(framework, item, entry)
    return entry


def _check_declared(framework: str, item: ModelInput, entry: InputShape) -> None:
    if entry.rank != len(item.shape):
        raise ModelInputError(
            f"DataInputConfig gives input {item.name!r} rank {entry.rank} {entry.shape_text()}, but the {framework} "
            f"model declares rank {len(item.shape)}: {item.describe()}"
        )
    shapes = entry.enumerated or (entry.dims,)
    for shape in shapes:
        for axis, (dim, fixed) in enumerate(zip(shape, item.shape)):
            if fixed is not None and dim != fixed:
                raise ModelInputError(
                    f"DataInputConfig gives input {item.name!r} {entry.shape_text()}, but dimension {axis} is fixed at "
                    f"{fixed} in the {framework} model ({item.describe()}); only the model's dynamic dimensions can "
                    "take other sizes, ranges or enumerated sizes"
                )


def channel_axis(channel_first: bool) -> int:
    return 1 if channel_first else 3


def ct_shape(ct, entry: InputShape):
    """``entry``'s shape as coremltools takes it: a tuple (static or with RangeDims), or EnumeratedShapes."""
    default = entry.default_shape
    if entry.enumerated is not None:
        return ct.EnumeratedShapes(shapes=[list(s) for s in entry.enumerated], default=list(default) if default else None)
    dims = []
    for axis, dim in enumerate(entry.dims):
        if isinstance(dim, Range):
            dims.append(ct.RangeDim(lower_bound=dim.lo, upper_bound=dim.hi, default=default[axis] if default else dim.lo))
        else:
            dims.append(dim)
    return tuple(dims)


def ct_input(ct, entry: InputShape, *, channel_first: bool) -> Any:
    """A ``ct.TensorType`` or ``ct.ImageType`` for ``entry``."""
    if entry.input_type != IMAGE:
        return ct.TensorType(name=entry.name, shape=ct_shape(ct, entry))
    channels = _image_channels(entry, channel_first)
    layout = ct.colorlayout.RGB if channels == 3 else ct.colorlayout.GRAYSCALE
    bias = _image_bias(entry, channels)
    scale = 1.0 if entry.scale is None else entry.scale
    return ct.ImageType(name=entry.name, shape=ct_shape(ct, entry), bias=bias, scale=scale, color_layout=layout,
                        channel_first=channel_first)


def _image_channels(entry: InputShape, channel_first: bool) -> int:
    layout = "[N, C, H, W] (NCHW)" if channel_first else "[N, H, W, C] (NHWC)"
    if entry.rank != 4:
        raise ModelInputError(f"DataInputConfig input {entry.name!r} has type Image, which needs a rank-4 shape {layout}; got {entry.shape_text()}")
    axis = channel_axis(channel_first)
    sizes = {shape[axis] for shape in entry.enumerated} if entry.enumerated else {entry.dims[axis]}
    if len(sizes) != 1 or next(iter(sizes)) not in (1, 3):
        raise ModelInputError(
            f"DataInputConfig input {entry.name!r} has type Image, whose channel dimension (axis {axis} of {layout}) "
            f"must be 3 (RGB) or 1 (grayscale) in every shape; got {entry.shape_text()}"
        )
    batches = {shape[0] for shape in entry.enumerated} if entry.enumerated else {entry.dims[0]}
    if batches != {1}:
        raise ModelInputError(
            f"DataInputConfig input {entry.name!r} has type Image, whose batch dimension (axis 0) must be 1: a Core ML image "
            f"input takes one image (apps batch them with Core ML's batch prediction API); got {entry.shape_text()}; "
            "use type Tensor for a batch range"
        )
    return next(iter(sizes))


def _image_bias(entry: InputShape, channels: int):
    if entry.bias is None:
        return None
    if channels == 1:
        if len(entry.bias) != 1:
            raise ModelInputError(f"DataInputConfig input {entry.name!r} is a grayscale Image (1 channel); its bias must be one number, got {list(entry.bias)}")
        return entry.bias[0]
    return list(entry.bias) * 3 if len(entry.bias) == 1 else list(entry.bias)
