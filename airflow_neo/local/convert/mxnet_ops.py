"""MXNet 1.x symbol operators translated into ONNX nodes (opset :data:`OPSET`).

Each translator takes the :class:`Builder`, the MXNet node (``op``, ``name``, ``attrs`` as the
symbol file's strings) and the ONNX names of its inputs, adds nodes, and returns the ONNX names of
the node's outputs (MXNet's output 0 first). :data:`TRANSLATORS` maps op type -> translator;
:data:`PARAM_INPUTS` says which input positions of an op are learned parameters (so that a null node
feeding one is a parameter, never a model input) and :data:`LABEL_INPUTS` which are training labels
(ignored at inference).

Invariants: inference semantics only (BatchNorm uses the running statistics, Dropout is the
identity, SoftmaxOutput's label is unused); an attribute value a translator does not implement
raises :class:`~airflow_neo.local.errors.OperatorAttributeNotImplementedError` naming the node, the
attribute, its value and what is implemented; attribute defaults are MXNet 1.9's.
"""

from __future__ import annotations

import ast
from typing import Callable

import numpy as np

from airflow_neo.local.errors import (
    OperatorAttributeNotImplementedError,
    OperatorAttributeRequiredError,
    OperatorAttributeValueNotValidError,
)

__all__ = ["LABEL_INPUTS", "OPSET", "PARAM_INPUTS", "TRANSLATORS", "Builder", "fit_prelu_slopes"]

OPSET = 17


class Builder:
    """The ONNX graph being written: nodes, initializers (the parameters) and fresh names."""

    def __init__(self, params: dict[str, np.ndarray]):
        from onnx import helper

        self.helper = helper
        self.params = params
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self._count = 0
        #: every tensor name in use (graph inputs, initializers, node outputs): new outputs avoid them
        self.taken: set[str] = set()

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}__{self._count}"

    def const(self, base: str, value) -> str:
        name = self.fresh(base)
        self.initializers[name] = np.asarray(value)
        self.taken.add(name)
        return name

    def add(self, op_type: str, inputs: list[str], base: str, outputs: int = 1, **attrs) -> list[str]:
        names = [base if outputs == 1 and base not in self.taken else self.fresh(base) for _ in range(outputs)]
        self.taken.update(names)
        self.nodes.append(self.helper.make_node(op_type, inputs, names, name=self.fresh(base + "_" + op_type),
                                                **attrs))
        return names

    def one(self, op_type: str, inputs: list[str], base: str, **attrs) -> str:
        return self.add(op_type, inputs, base, **attrs)[0]


# -- attribute parsing --------------------------------------------------------------------------


def _literal(text: str):
    text = text.strip()
    lowered = {"true": True, "false": False, "none": None}.get(text.lower(), text)
    if lowered is not text:
        return lowered
    try:
        return ast.literal_eval(text.replace("L", "") if text.startswith("(") else text)
    except (ValueError, SyntaxError):
        return text


def attr(node, key: str, default=None):
    """``node``'s attribute ``key`` parsed from MXNet's string form ("(3, 3)", "True", "1e-05")."""
    value = node.attrs.get(key)
    return default if value is None else _literal(value)


def ints(node, key: str, default=()) -> list[int]:
    value = attr(node, key, default)
    value = [value] if isinstance(value, (int, float)) else list(value or [])
    return [int(v) for v in value]


def kernel(node) -> list[int]:
    """The ``kernel`` attribute, required by Convolution and by Pooling unless global."""
    value = ints(node, "kernel")
    if not value or any(size <= 0 for size in value):
        raise OperatorAttributeRequiredError(
            f"MXNet node {node.name!r} ({node.op}) needs a kernel of positive sizes; it has {node.attrs.get('kernel')!r}",
            [node.op])
    return value


def not_implemented(node, key: str, value, allowed: str) -> OperatorAttributeNotImplementedError:
    return OperatorAttributeNotImplementedError(
        f"MXNet node {node.name!r} ({node.op}): {key}={value!r} is not implemented; implemented: {allowed}",
        [node.op])


def _check_layout(node, allowed=("NCW", "NCHW", "NCDHW")) -> None:
    layout = attr(node, "layout")
    if layout not in (None, *allowed):
        raise not_implemented(node, "layout", layout, ", ".join(allowed))


# -- translators --------------------------------------------------------------------------------


def _conv(g: Builder, node, ins):
    _check_layout(node)
    kernel_shape = kernel(node)
    nd = len(kernel_shape)
    pad = ints(node, "pad") or [0] * nd
    inputs = ins[:2] if attr(node, "no_bias", False) else ins[:3]
    return g.add("Conv", inputs, node.name, kernel_shape=kernel_shape, strides=ints(node, "stride") or [1] * nd,
                 dilations=ints(node, "dilate") or [1] * nd, pads=pad + pad, group=int(attr(node, "num_group", 1)))


def _deconv(g: Builder, node, ins):
    _check_layout(node)
    if ints(node, "target_shape"):
        raise not_implemented(node, "target_shape", attr(node, "target_shape"), "unset (use pad and adj)")
    kernel_shape = kernel(node)
    nd = len(kernel_shape)
    pad = ints(node, "pad") or [0] * nd
    inputs = ins[:2] if attr(node, "no_bias", True) else ins[:3]  # Deconvolution's no_bias defaults to True
    return g.add("ConvTranspose", inputs, node.name, kernel_shape=kernel_shape, strides=ints(node, "stride") or [1] * nd,
                 dilations=ints(node, "dilate") or [1] * nd, pads=pad + pad, output_padding=ints(node, "adj") or [0] * nd,
                 group=int(attr(node, "num_group", 1)))


def _norm(onnx_op: str, default_eps: float) -> Callable:
    """LayerNorm (over ``axis``, default -1) and InstanceNorm: data, gamma, beta."""
    def translate(g: Builder, node, ins):
        extra = {"axis": int(attr(node, "axis", -1))} if onnx_op == "LayerNormalization" else {}
        if attr(node, "output_mean_var", False):
            raise not_implemented(node, "output_mean_var", True, "False")
        return g.add(onnx_op, ins[:3], node.name, epsilon=float(attr(node, "eps", default_eps)), **extra)
    return translate


def _batchnorm(g: Builder, node, ins):
    axis = int(attr(node, "axis", 1))
    if axis != 1:
        raise not_implemented(node, "axis", axis, "1 (the channel axis of NCHW)")
    gamma = ins[1]
    if attr(node, "fix_gamma", True):  # MXNet then treats gamma as 1 whatever the file holds
        like = g.params.get(ins[1], g.params.get(ins[2]))
        if like is None:
            raise not_implemented(node, "fix_gamma", True, "with gamma or beta a parameter of the .params file")
        gamma = g.const(node.name + "_gamma_fixed", np.ones(like.shape, np.float32))
    eps = float(attr(node, "eps", 1e-3))
    return g.add("BatchNormalization", [ins[0], gamma, ins[2], ins[3], ins[4]], node.name, epsilon=eps)


_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softrelu": "Softplus", "softsign": "Softsign"}


def _activation(g: Builder, node, ins):
    act = attr(node, "act_type")
    if act not in _ACTIVATIONS:
        raise not_implemented(node, "act_type", act, ", ".join(_ACTIVATIONS))
    return g.add(_ACTIVATIONS[act], ins[:1], node.name)


def _leaky_relu(g: Builder, node, ins):
    act = attr(node, "act_type", "leaky")
    slope = float(attr(node, "slope", 0.25))
    if act == "leaky":
        return g.add("LeakyRelu", ins[:1], node.name, alpha=slope)
    if act == "elu":
        return g.add("Elu", ins[:1], node.name, alpha=slope)
    if act == "selu":
        return g.add("Selu", ins[:1], node.name)
    if act == "rrelu":  # inference: the mean of the random slope's range
        lower, upper = float(attr(node, "lower_bound", 0.125)), float(attr(node, "upper_bound", 0.334))
        return g.add("LeakyRelu", ins[:1], node.name, alpha=(lower + upper) / 2)
    if act == "gelu":  # erf form, as MXNet computes it
        scaled = g.one("Div", [ins[0], g.const("sqrt2", np.float32(np.sqrt(2.0)))], node.name + "_scaled")
        erf1 = g.one("Add", [g.one("Erf", [scaled], node.name + "_erf"), g.const("one", np.float32(1))],
                     node.name + "_erf1")
        half = g.one("Mul", [ins[0], g.const("half", np.float32(0.5))], node.name + "_half")
        return g.add("Mul", [half, erf1], node.name)
    if act == "prelu":
        return g.add("PRelu", [ins[0], _channel_slope(g, node, ins[1])], node.name)
    raise not_implemented(node, "act_type", act, "leaky, elu, selu, rrelu, gelu, prelu")


def _channel_slope(g: Builder, node, gamma: str) -> str:
    """PReLU's slope: a parameter of shape (1,) or (C,); a (C,) slope is reshaped to broadcast over
    the channel axis once the data's rank is known (:func:`fit_prelu_slopes`)."""
    array = g.params.get(gamma)
    if array is None:
        raise not_implemented(node, "gamma", "a computed tensor", "a parameter from the .params file")
    return g.const(gamma, array.reshape(()) if array.size == 1 else array.reshape(-1))


def fit_prelu_slopes(model) -> None:
    """Reshape each PRelu's (C,) slope initializer to (C, 1, ..., 1) for its data's rank (ONNX
    broadcasts a slope from the last axis; MXNet's is per channel, axis 1)."""
    import onnx
    from onnx import numpy_helper

    prelus = [node for node in model.graph.node if node.op_type == "PRelu"]
    if not prelus:
        return
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {info.name: len(info.type.tensor_type.shape.dim)
             for info in [*inferred.graph.value_info, *inferred.graph.input]}
    initializers = {init.name: init for init in model.graph.initializer}
    for node in prelus:
        slope, rank = initializers.get(node.input[1]), ranks.get(node.input[0])
        if slope is None or len(slope.dims) != 1:
            continue
        if rank is None:
            raise OperatorAttributeNotImplementedError(
                f"PReLU {node.name!r}: the rank of its data could not be inferred, so its per-channel slope "
                "cannot be placed on the channel axis", ["LeakyReLU"])
        if rank < 3:
            continue
        array = numpy_helper.to_array(slope)
        slope.CopyFrom(numpy_helper.from_array(array.reshape((-1,) + (1,) * (rank - 2)), slope.name))


def _pooling(g: Builder, node, ins):
    _check_layout(node)
    pool = attr(node, "pool_type", "max")
    if pool not in ("max", "avg", "sum"):
        raise not_implemented(node, "pool_type", pool, "max, avg, sum")
    if attr(node, "global_pool", False):
        if pool == "sum":
            raise not_implemented(node, "pool_type", pool, "max, avg with global_pool=True")
        return g.add("GlobalMaxPool" if pool == "max" else "GlobalAveragePool", ins[:1], node.name)
    kernel_shape = kernel(node)
    nd = len(kernel_shape)
    pad = ints(node, "pad") or [0] * nd
    convention = attr(node, "pooling_convention", "valid")
    if convention not in ("valid", "full"):
        raise not_implemented(node, "pooling_convention", convention, "valid, full")
    common = dict(kernel_shape=kernel_shape, strides=ints(node, "stride") or [1] * nd, pads=pad + pad,
                  ceil_mode=int(convention == "full"))
    if pool == "max":
        return g.add("MaxPool", ins[:1], node.name, **common)
    include_pad = int(bool(attr(node, "count_include_pad", True)) or pool == "sum")
    if pool == "avg":
        return g.add("AveragePool", ins[:1], node.name, count_include_pad=include_pad, **common)
    mean = g.one("AveragePool", ins[:1], node.name + "_mean", count_include_pad=1, **common)
    return g.add("Mul", [mean, g.const("window", np.float32(np.prod(kernel_shape)))], node.name)


def _fully_connected(g: Builder, node, ins):
    bias = [] if attr(node, "no_bias", False) else ins[2:3]
    if attr(node, "flatten", True):
        flat = g.one("Flatten", ins[:1], node.name + "_flat", axis=1)
        return g.add("Gemm", [flat, ins[1], *bias], node.name, transB=1)
    weight_t = g.one("Transpose", [ins[1]], node.name + "_weight_t", perm=[1, 0])
    if not bias:
        return g.add("MatMul", [ins[0], weight_t], node.name)
    product = g.one("MatMul", [ins[0], weight_t], node.name + "_matmul")
    return g.add("Add", [product, bias[0]], node.name)


def _flatten(g: Builder, node, ins):
    return g.add("Flatten", ins[:1], node.name, axis=1)


def _binary(onnx_op: str) -> Callable:
    def translate(g: Builder, node, ins):
        return g.add(onnx_op, ins[:2], node.name)
    return translate


def _scalar(onnx_op: str, reverse: bool = False) -> Callable:
    def translate(g: Builder, node, ins):
        scalar = g.const(node.name + "_scalar", np.float32(attr(node, "scalar", 0.0)))
        return g.add(onnx_op, [scalar, ins[0]] if reverse else [ins[0], scalar], node.name)
    return translate


def _unary(onnx_op: str) -> Callable:
    def translate(g: Builder, node, ins):
        return g.add(onnx_op, ins[:1], node.name)
    return translate


def _add_n(g: Builder, node, ins):
    return g.add("Sum", ins, node.name)


def _concat(g: Builder, node, ins):
    return g.add("Concat", ins, node.name, axis=int(attr(node, "dim", 1)))


def _regression_output(g: Builder, node, ins):
    """The regression losses' forward at inference (the label is unused)."""
    return g.add("Sigmoid" if node.op == "LogisticRegressionOutput" else "Identity", ins[:1], node.name)


def _identity(g: Builder, node, ins):
    return g.add("Identity", ins[:1], node.name)


def _softmax(g: Builder, node, ins):
    temperature = attr(node, "temperature")
    data = ins[0]
    if temperature not in (None, 1, 1.0):
        data = g.one("Div", [data, g.const("temperature", np.float32(temperature))], node.name + "_tempered")
    op = "LogSoftmax" if node.op == "log_softmax" else "Softmax"
    return g.add(op, [data], node.name, axis=int(attr(node, "axis", -1)))


def _softmax_flat(g: Builder, node, data: str) -> list[str]:
    """Softmax over all but the first axis, the result in ``data``'s shape."""
    flat = g.one("Flatten", [data], node.name + "_flat", axis=1)
    soft = g.one("Softmax", [flat], node.name + "_soft", axis=1)
    return g.add("Reshape", [soft, g.one("Shape", [data], node.name + "_shape")], node.name)


def _softmax_output(g: Builder, node, ins):
    if attr(node, "preserve_shape", False):
        return g.add("Softmax", ins[:1], node.name, axis=-1)
    if attr(node, "multi_output", False):
        return g.add("Softmax", ins[:1], node.name, axis=1)
    return _softmax_flat(g, node, ins[0])


def _softmax_activation(g: Builder, node, ins):
    mode = attr(node, "mode", "instance")
    if mode == "channel":
        return g.add("Softmax", ins[:1], node.name, axis=1)
    if mode == "instance":
        return _softmax_flat(g, node, ins[0])
    raise not_implemented(node, "mode", mode, "instance, channel")


def _clip(g: Builder, node, ins):
    low = g.const(node.name + "_min", np.float32(attr(node, "a_min")))
    high = g.const(node.name + "_max", np.float32(attr(node, "a_max")))
    return g.add("Clip", [ins[0], low, high], node.name)


def _reshape(g: Builder, node, ins):
    shape = attr(node, "shape")
    if shape is None:
        shape = attr(node, "target_shape")
    shape = [int(v) for v in (shape or [])]
    if not shape:
        raise OperatorAttributeValueNotValidError(f"MXNet node {node.name!r} (Reshape) has no shape", [node.op])
    if attr(node, "reverse", False):
        raise not_implemented(node, "reverse", True, "False")
    special = [v for v in shape if v < -1]
    if special:
        raise not_implemented(node, "shape", tuple(shape), "positive sizes, 0 (copy) and -1 (infer)")
    return g.add("Reshape", [ins[0], g.const(node.name + "_shape", np.array(shape, np.int64))], node.name)


def _transpose(g: Builder, node, ins):
    axes = ints(node, "axes")
    return g.add("Transpose", ins[:1], node.name, **({"perm": axes} if axes else {}))


def _expand_dims(g: Builder, node, ins):
    return g.add("Unsqueeze", [ins[0], g.const("axes", np.array([int(attr(node, "axis"))], np.int64))], node.name)


def _reduce(onnx_op: str) -> Callable:
    def translate(g: Builder, node, ins):
        if attr(node, "exclude", False):
            raise not_implemented(node, "exclude", True, "False")
        axes = ints(node, "axis")
        inputs = [ins[0]] + ([g.const("axes", np.array(axes, np.int64))] if axes else [])
        return g.add(onnx_op, inputs, node.name, keepdims=int(bool(attr(node, "keepdims", False))))
    return translate


def _lrn(g: Builder, node, ins):
    return g.add("LRN", ins[:1], node.name, alpha=float(attr(node, "alpha", 1e-4)), beta=float(attr(node, "beta", 0.75)),
                 bias=float(attr(node, "knorm", 2.0)), size=int(attr(node, "nsize")))


def _upsampling(g: Builder, node, ins):
    sample = attr(node, "sample_type", "nearest")
    if sample != "nearest":
        raise not_implemented(node, "sample_type", sample, "nearest")
    scale = float(attr(node, "scale", 1))
    scales = g.const(node.name + "_scales", np.array([1, 1, scale, scale], np.float32))
    return g.add("Resize", [ins[0], "", scales], node.name, mode="nearest", nearest_mode="floor",
                 coordinate_transformation_mode="asymmetric")


TRANSLATORS: dict[str, Callable] = {
    "Convolution": _conv,
    "Deconvolution": _deconv,
    "BatchNorm": _batchnorm,
    "LayerNorm": _norm("LayerNormalization", 1e-5), "InstanceNorm": _norm("InstanceNormalization", 1e-3),
    "Activation": _activation,
    "LeakyReLU": _leaky_relu,
    "Pooling": _pooling,
    "FullyConnected": _fully_connected,
    "Flatten": _flatten, "flatten": _flatten,
    "Concat": _concat, "concat": _concat,
    "add_n": _add_n, "ElementWiseSum": _add_n,
    "Dropout": _identity, "_copy": _identity, "identity": _identity, "BlockGrad": _identity, "stop_gradient": _identity,
    "softmax": _softmax, "log_softmax": _softmax,
    "SoftmaxOutput": _softmax_output, "Softmax": _softmax_output,
    "SoftmaxActivation": _softmax_activation,
    "LinearRegressionOutput": _regression_output, "MAERegressionOutput": _regression_output,
    "LogisticRegressionOutput": _regression_output,
    "clip": _clip,
    "Reshape": _reshape, "reshape": _reshape,
    "transpose": _transpose,
    "expand_dims": _expand_dims,
    "mean": _reduce("ReduceMean"), "sum": _reduce("ReduceSum"), "max": _reduce("ReduceMax"), "min": _reduce("ReduceMin"),
    "LRN": _lrn,
    "UpSampling": _upsampling,
    "relu": _unary("Relu"), "sigmoid": _unary("Sigmoid"), "tanh": _unary("Tanh"), "exp": _unary("Exp"),
    "log": _unary("Log"), "sqrt": _unary("Sqrt"), "abs": _unary("Abs"), "negative": _unary("Neg"),
    "square": lambda g, node, ins: g.add("Mul", [ins[0], ins[0]], node.name),
}
for _names, _onnx in (
    (("elemwise_add", "_Plus", "_plus", "_add", "broadcast_add", "broadcast_plus"), "Add"),
    (("elemwise_sub", "_Minus", "_minus", "_sub", "broadcast_sub", "broadcast_minus"), "Sub"),
    (("elemwise_mul", "_Mul", "_mul", "broadcast_mul"), "Mul"),
    (("elemwise_div", "_Div", "_div", "broadcast_div"), "Div"),
    (("_Maximum", "_maximum", "broadcast_maximum"), "Max"),
    (("_Minimum", "_minimum", "broadcast_minimum"), "Min"),
    (("_Power", "_power", "broadcast_power"), "Pow"),
):
    TRANSLATORS.update(dict.fromkeys(_names, _binary(_onnx)))
for _names, _onnx, _reverse in (
    (("_plus_scalar", "_PlusScalar"), "Add", False),
    (("_minus_scalar", "_MinusScalar"), "Sub", False),
    (("_rminus_scalar", "_RMinusScalar"), "Sub", True),
    (("_mul_scalar", "_MulScalar"), "Mul", False),
    (("_div_scalar", "_DivScalar"), "Div", False),
    (("_rdiv_scalar", "_RDivScalar"), "Div", True),
    (("_power_scalar", "_PowerScalar"), "Pow", False),
    (("_rpower_scalar", "_RPowerScalar"), "Pow", True),
    (("_maximum_scalar", "_MaximumScalar"), "Max", False),
    (("_minimum_scalar", "_MinimumScalar"), "Min", False),
):
    TRANSLATORS.update(dict.fromkeys(_names, _scalar(_onnx, _reverse)))

#: op -> the input positions that are learned parameters (weights, biases, statistics)
PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "Convolution": (1, 2), "Deconvolution": (1, 2), "FullyConnected": (1, 2), "BatchNorm": (1, 2, 3, 4),
    "LayerNorm": (1, 2), "InstanceNorm": (1, 2), "LeakyReLU": (1,),
}
#: op -> the input positions that are training labels (unused at inference)
LABEL_INPUTS: dict[str, tuple[int, ...]] = {
    "SoftmaxOutput": (1,), "Softmax": (1,), "LinearRegressionOutput": (1,), "MAERegressionOutput": (1,),
    "LogisticRegressionOutput": (1,),
}
