"""DarkNet layers as ONNX nodes (opset 13): one emitter per layer type, each given the layer, the
tensors and shapes of the layers before it, and that layer's arrays from the ``.weights``.

Invariants: every tensor is NCHW float32 (a ``connected`` layer's output is ``(N, C)``, reshaped to
``(N, C, 1, 1)`` only when a spatial layer follows); the batch dimension is never written into a
Reshape (``0`` copies it), so a graph serves any batch size; batch normalisation is folded into the
convolution / connected weights in float64 with DarkNet's epsilon 1e-6; ``yolo`` and ``region``
layers emit no nodes: their output is the raw tensor they receive (see :mod:`.darknet`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_neo.local.convert.darknet_cfg import (
    Layer,
    Shape,
    conv_padding,
    pool_geometry,
    route_groups,
    route_sources,
    shortcut_source,
)
from airflow_neo.local.errors import OperatorAttributeNotImplementedError, UnsupportedOperatorsError

__all__ = ["ACTIVATIONS", "GraphBuilder", "SUPPORTED_LAYERS", "emit_layer", "validate"]

#: DarkNet's batch-norm epsilon (``.000001f`` in normalize_cpu), which OpenCV uses as well.
BN_EPSILON = 1e-6

#: options whose non-default value changes what a supported layer computes and that this reader
#: does not implement: (layer type or "*", option, default).
UNIMPLEMENTED_OPTIONS = (
    ("convolutional", "dilation", "1"), ("convolutional", "stride_x", None), ("convolutional", "stride_y", None),
    ("convolutional", "binary", "0"), ("convolutional", "xnor", "0"), ("convolutional", "flipped", "0"),
    ("convolutional", "antialiasing", "0"), ("convolutional", "share_index", None), ("convolutional", "deform", "0"),
    ("maxpool", "stride_x", None), ("maxpool", "stride_y", None), ("maxpool", "maxpool_depth", "0"),
    ("maxpool", "antialiasing", "0"), ("shortcut", "weights_type", "none"), ("shortcut", "beta", None),
    ("upsample", "scale", "1"), ("upsample", "reverse", "0"), ("reorg", "reverse", "0"), ("reorg", "flatten", "0"),
    ("reorg", "extra", "0"), ("softmax", "groups", "1"), ("softmax", "tree", None), ("connected", "flipped", "0"),
)


@dataclass
class GraphBuilder:
    """Collects the nodes and initializers of the graph; ``tensors[i]`` is layer i's output name."""

    input_name: str
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    tensors: list = field(default_factory=list)
    _count: int = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def node(self, op: str, inputs: list[str], stem: str, **attrs) -> str:
        from onnx import helper

        out = self.fresh(stem)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, stem: str, array) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def shape_const(self, stem: str, dims) -> str:
        import numpy as np

        return self.const(stem, np.asarray(dims, dtype=np.int64))

    def spatial(self, tensor: str, shape: Shape, stem: str) -> str:
        """``tensor`` as NCHW (a connected layer's ``(N, C)`` becomes ``(N, C, 1, 1)``)."""
        if not shape.flat:
            return tensor
        return self.node("Reshape", [tensor, self.shape_const(stem + "_shape", [0, shape.c, 1, 1])], stem + "_4d")


#: the layer types that read ``activation=`` (DarkNet's parse_convolutional/connected/shortcut)
ACTIVATED_LAYERS = ("convolutional", "connected", "shortcut")


def validate(layer: Layer) -> None:
    """Raise for an option value or activation of ``layer`` that the reader does not implement."""
    check_options(layer)
    name = layer.text("activation", "linear")
    if layer.type in ACTIVATED_LAYERS and name not in ACTIVATIONS:
        raise UnsupportedOperatorsError(
            f"{layer.where}: activation={name} is not supported by the DarkNet reader; supported: "
            + ", ".join(sorted(ACTIVATIONS)), [f"activation={name}"])


def check_options(layer: Layer) -> None:
    for kind, key, default in UNIMPLEMENTED_OPTIONS:
        value = layer.options.get(key)
        if layer.type == kind and value is not None and value != default:
            raise OperatorAttributeNotImplementedError(
                f"{layer.where}: {key}={value} is not supported by the DarkNet reader"
                + (f" (only {key}={default})" if default is not None else f" (leave {key} out)"), [layer.type])


# ----------------------------------------------------------------------------- activations


def _leaky(b, x, stem):
    return b.node("LeakyRelu", [x], stem, alpha=0.1)


def _product(op):
    def emit(b, x, stem):
        return b.node("Mul", [x, b.node(op, [x], stem + "_" + op.lower())], stem)
    return emit


def _mish(b, x, stem):
    return b.node("Mul", [x, b.node("Tanh", [b.node("Softplus", [x], stem + "_softplus")], stem + "_tanh")], stem)


def _clip(low, high):
    def emit(b, x, stem):
        import numpy as np

        return b.node("Clip", [x, b.const(stem + "_min", np.float32(low)), b.const(stem + "_max", np.float32(high))], stem)
    return emit


def _loggy(b, x, stem):
    import numpy as np

    doubled = b.node("Mul", [b.node("Sigmoid", [x], stem + "_sigmoid"), b.const(stem + "_two", np.float32(2))], stem + "_x2")
    return b.node("Sub", [doubled, b.const(stem + "_one", np.float32(1))], stem)


#: DarkNet activation -> emitter(builder, tensor, stem) -> tensor (None: identity).
ACTIVATIONS = {
    "linear": None,
    "leaky": _leaky,
    "relu": lambda b, x, stem: b.node("Relu", [x], stem),
    "relu6": _clip(0.0, 6.0),
    "logistic": lambda b, x, stem: b.node("Sigmoid", [x], stem),
    "loggy": _loggy,
    "tanh": lambda b, x, stem: b.node("Tanh", [x], stem),
    "elu": lambda b, x, stem: b.node("Elu", [x], stem, alpha=1.0),
    "selu": lambda b, x, stem: b.node("Selu", [x], stem, alpha=1.6732, gamma=1.0507),
    "hardtan": _clip(-1.0, 1.0),
    "swish": _product("Sigmoid"),
    "mish": _mish,
}


def activate(b: GraphBuilder, layer: Layer, x: str) -> str:
    name = layer.text("activation", "linear")
    emit = ACTIVATIONS[name]  # validate() has checked the name
    return x if emit is None else emit(b, x, f"l{layer.index}_{name}")


# ----------------------------------------------------------------------------- layers


def _folded(arrays: dict, rows: int):
    """(weights as float32 with ``rows`` rows, bias): the batch norm, if any, folded in."""
    import numpy as np

    weights = arrays["weights"].astype(np.float64).reshape(rows, -1)
    bias = arrays["biases"].astype(np.float64)
    if "scales" in arrays:
        factor = arrays["scales"].astype(np.float64) / np.sqrt(arrays["rolling_variance"].astype(np.float64) + BN_EPSILON)
        weights = weights * factor[:, None]
        bias = bias - arrays["rolling_mean"].astype(np.float64) * factor
    return weights.astype(np.float32), bias.astype(np.float32)


def _convolutional(b, layer, x, previous, arrays, weights_transposed):
    filters, size, groups = layer.int("filters"), layer.int("size", 1), layer.int("groups", 1)
    stride, pad = layer.int("stride", 1), conv_padding(layer)
    kernel, bias = _folded(arrays, filters)
    kernel = kernel.reshape(filters, previous.c // groups, size, size)
    stem = f"l{layer.index}_conv"
    out = b.node("Conv", [b.spatial(x, previous, stem), b.const(stem + "_w", kernel), b.const(stem + "_b", bias)], stem,
                 kernel_shape=[size, size], strides=[stride, stride], pads=[pad] * 4, group=groups)
    return activate(b, layer, out)


def _connected(b, layer, x, previous, arrays, weights_transposed):
    outputs = layer.int("output", 1)
    if weights_transposed:  # a .weights with major or minor > 1000 stores connected weights as (inputs, outputs)
        arrays = dict(arrays, weights=arrays["weights"].reshape(previous.size, outputs).T.copy())
    weights, bias = _folded(arrays, outputs)
    stem = f"l{layer.index}_fc"
    flat = b.node("Flatten", [x], stem + "_flat", axis=1)
    out = b.node("Gemm", [flat, b.const(stem + "_w", weights), b.const(stem + "_b", bias)], stem, transB=1)
    return activate(b, layer, out)


def _maxpool(b, layer, x, previous, arrays, weights_transposed):
    size, stride, padding = pool_geometry(layer)
    stem = f"l{layer.index}_maxpool"
    low, high = padding // 2, padding - padding // 2  # DarkNet: offset -padding/2, the rest at the end
    return b.node("MaxPool", [b.spatial(x, previous, stem)], stem, kernel_shape=[size, size], strides=[stride, stride],
                  pads=[low, low, high, high])


def _avgpool(b, layer, x, previous, arrays, weights_transposed):
    stem = f"l{layer.index}_avgpool"
    return b.node("GlobalAveragePool", [b.spatial(x, previous, stem)], stem)


def _softmax(b, layer, x, previous, arrays, weights_transposed):
    import numpy as np

    stem = f"l{layer.index}_softmax"
    temperature = layer.float("temperature", 1.0)
    flat = b.node("Flatten", [x], stem + "_flat", axis=1)  # DarkNet: one softmax over all C*H*W values
    if temperature != 1.0:
        flat = b.node("Div", [flat, b.const(stem + "_t", np.float32(temperature))], stem + "_scaled")
    out = b.node("Softmax", [flat], stem, axis=1)
    if previous.flat:
        return out
    return b.node("Reshape", [out, b.shape_const(stem + "_shape", [0, previous.c, previous.h, previous.w])], stem + "_4d")


def _identity(b, layer, x, previous, arrays, weights_transposed):
    return x


def _upsample(b, layer, x, previous, arrays, weights_transposed):
    import numpy as np

    stride = float(layer.int("stride", 2))
    stem = f"l{layer.index}_upsample"
    scales = b.const(stem + "_scales", np.asarray([1, 1, stride, stride], dtype=np.float32))
    return b.node("Resize", [b.spatial(x, previous, stem), "", scales], stem, mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _reorg(b, layer, x, previous, arrays, weights_transposed):
    """DarkNet's reorg_cpu(forward=0): the input read as (C/s², H*s, W*s), offsets moved to channels."""
    s = layer.int("stride", 2)
    c, h, w = previous.c, previous.h, previous.w
    if c % (s * s):
        raise OperatorAttributeNotImplementedError(
            f"{layer.where}: stride={s} needs input channels divisible by {s * s}; it gets {c}", [layer.type])
    stem = f"l{layer.index}_reorg"
    x = b.node("Reshape", [x, b.shape_const(stem + "_in", [0, c // (s * s), h, s, w, s])], stem + "_split")
    x = b.node("Transpose", [x], stem + "_move", perm=[0, 3, 5, 1, 2, 4])
    return b.node("Reshape", [x, b.shape_const(stem + "_out", [0, c * s * s, h // s, w // s])], stem)


def _shortcut(b, layer, x, previous, arrays, weights_transposed):
    import numpy as np

    stem = f"l{layer.index}_shortcut"
    alpha = layer.float("alpha", 1.0)
    if alpha != 1.0:
        x = b.node("Mul", [x, b.const(stem + "_alpha", np.float32(alpha))], stem + "_scaled")
    return activate(b, layer, b.node("Add", [x, b.tensors[shortcut_source(layer)]], stem))


LAYER_EMITTERS = {
    "convolutional": _convolutional,
    "connected": _connected,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "softmax": _softmax,
    "dropout": _identity,
    "cost": _identity,
    "yolo": _identity,
    "region": _identity,
    "upsample": _upsample,
    "reorg": _reorg,
    "shortcut": _shortcut,
}

SUPPORTED_LAYERS = tuple(sorted([*LAYER_EMITTERS, "route"]))


def emit_route(b: GraphBuilder, layer: Layer, shapes: list[Shape]) -> str:
    """Concatenate the sources along channels; ``groups``/``group_id`` take one channel group of each."""
    groups, group_id = route_groups(layer)
    stem = f"l{layer.index}_route"
    sources = route_sources(layer)
    if len(sources) == 1 and groups == 1:
        return b.node("Identity", [b.tensors[sources[0]]], stem)
    parts = []
    for index in sources:
        tensor, shape = b.spatial(b.tensors[index], shapes[index], stem), shapes[index]
        if groups > 1:
            part = shape.c // groups
            tensor = b.node("Slice", [tensor, b.shape_const(stem + "_start", [group_id * part]),
                                      b.shape_const(stem + "_end", [(group_id + 1) * part]),
                                      b.shape_const(stem + "_axis", [1])], stem + "_group")
        parts.append(tensor)
    return parts[0] if len(parts) == 1 else b.node("Concat", parts, stem, axis=1)


def emit_layer(b: GraphBuilder, layer: Layer, previous: Shape, shapes: list[Shape], arrays: dict, transposed: bool) -> str:
    """Emit ``layer`` reading the last tensor (shape ``previous``); ``shapes`` are the earlier layers'.
    ``layer`` has passed :func:`validate`."""
    if layer.type == "route":
        return emit_route(b, layer, shapes)
    x = b.tensors[-1] if b.tensors else b.input_name
    return LAYER_EMITTERS[layer.type](b, layer, x, previous, arrays, transposed)
