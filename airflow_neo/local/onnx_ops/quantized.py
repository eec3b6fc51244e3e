"""Quantized operators (onnxruntime's QOperator format) rewritten into float ops TVM imports.

Two classes of rewrite:

* **integer accumulation** (``QLinearConv``, ``QLinearMatMul``, ``ConvInteger``, com.microsoft
  ``QGemm``): the sum of ``(x - x_zero_point) * (w - w_zero_point)`` (+ the int32 bias) is
  computed by a float ``Conv``/``MatMul``/``Gemm`` on those integer differences. Every partial sum
  is an integer, so the float result is the exact integer sum as long as its magnitude stays
  below the float mantissa: float32 when a bound computed from the constant weights
  (``max|x - x_zp| * sum|w - w_zp| + |bias|``, per output channel) is below 2**24, else float64
  (exact below 2**53; weights not constant: float64). Requantization follows onnxruntime: the
  float32 multiplier ``x_scale * w_scale / y_scale`` (computed in that order, in float32), the
  accumulator cast to float32, multiplied, rounded half to even, plus ``y_zero_point``, saturated
  (a ``QuantizeLinear`` with scale 1);
* **float in between** (com.microsoft ``QLinearAdd``, ``QLinearMul``, ``QLinearSigmoid``,
  ``QLinearLeakyRelu``, ``QLinearGlobalAveragePool``, ``QLinearAveragePool``, ``QLinearConcat``,
  ``QLinearSoftmax``):
  ``DequantizeLinear`` -> the float op -> ``QuantizeLinear``, the definition of these ops;
  onnxruntime computes some of them with lookup tables or fixed-point steps, so results may
  differ by one quantization step;
* com.microsoft ``DynamicQuantizeLSTM`` (``quantize_dynamic`` of an LSTM): its int8 weights are
  dequantized into an ONNX ``LSTM``, which :mod:`.recurrent` unrolls; onnxruntime also quantizes
  the activations at run time, so the two differ by that quantization error.

Unsupported forms (a ``channels_last`` pooling, non-constant scales, or convolution weights that
are not constants)
raise :class:`~airflow_neo.local.errors.OperatorAttributeNotImplementedError` naming node and attribute.
"""

from __future__ import annotations

import numpy as np

from airflow_neo.local.onnx_ops._graph import Emitter, attributes, unsupported

FLOAT32_EXACT = 1 << 24
#: ONNX tensor element types used here.
FLOAT, DOUBLE, INT32 = 1, 11, 6
CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _input(node, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _int_range(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _centered(emit: Emitter, x: str, zp: str, acc: int) -> str:
    """``float(x) - float(zp)`` in the accumulation type (exact: small integers)."""
    value = emit.value(x)
    if value is not None:
        zp_value = emit.value(zp)
        return emit.const((value.astype(np.float64) - _zp_array(zp_value, value.ndim, 0)).astype(_np(acc)), "w")
    cast = emit.op("Cast", [x], to=acc)
    if not zp:
        return cast
    zp_value = emit.value(zp)
    if zp_value is not None:
        return emit.op("Sub", [cast, emit.const(zp_value.astype(_np(acc)), "zp")])
    return emit.op("Sub", [cast, emit.op("Cast", [zp], to=acc)])


def _zp_array(zp, ndim: int, axis: int):
    """A (per-axis) zero point shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    if zp is None:
        return np.float64(0)
    zp = zp.astype(np.float64)
    if zp.ndim == 0 or zp.size == 1:
        return zp.reshape(())
    shape = [1] * ndim
    shape[axis] = zp.size
    return zp.reshape(shape)


def _np(elem: int):
    return np.float64 if elem == DOUBLE else np.float32


def _x_span(emit: Emitter, x_dtype, zp: str) -> int:
    """The largest ``|x - x_zero_point|`` an input of ``x_dtype`` can have."""
    low, high = _int_range(x_dtype)
    zp_value = emit.value(zp) if zp else np.zeros(1)
    if zp_value is None:
        return high - low
    return int(max(np.max(high - zp_value.astype(np.int64)), np.max(zp_value.astype(np.int64) - low)))


def _accumulator(emit: Emitter, weights_centered, reduce_axes: tuple, x_span: int, bias) -> int:
    """FLOAT where every partial sum is provably below 2**24 in magnitude, else DOUBLE."""
    if weights_centered is None:
        return DOUBLE
    bound = np.sum(np.abs(weights_centered.astype(np.float64)), axis=reduce_axes) * x_span
    if bias is not None:
        bound = bound + np.abs(bias.astype(np.float64))
    return FLOAT if float(np.max(bound)) < FLOAT32_EXACT else DOUBLE


def _x_dtype(emit: Emitter, node, x_zp: str):
    zp = emit.value(x_zp) if x_zp else None
    if zp is not None:
        return zp.dtype
    return np.int8 if emit.types.get(node.input[0]) == 3 else np.uint8  # 3: INT8


def _multiplier(emit: Emitter, node, scales: list[str], divisor: str | None, shape_axis: tuple[int, int] | None, alpha: float = 1.0) -> str:
    """The float32 requantization multiplier ``alpha * s0 * s1 / divisor``, as onnxruntime computes it."""
    values = [emit.value(name) for name in scales] + ([emit.value(divisor)] if divisor else [])
    if any(value is None for value in values):
        raise unsupported(node, "scale inputs", [name for name in scales + [divisor] if name and emit.value(name) is None], "constant scales (initializers)")
    result = np.float32(alpha) * values[0].astype(np.float32) if alpha != 1.0 else values[0].astype(np.float32)
    result = (result * values[1].astype(np.float32)).astype(np.float32)
    if divisor:
        result = (result / values[2].astype(np.float32)).astype(np.float32)
    if shape_axis is not None and result.size > 1:
        ndim, axis = shape_axis
        shape = [1] * ndim
        shape[axis] = result.size
        result = result.reshape(shape)
    return emit.const(result.astype(np.float32), "multiplier")


def _requantize(emit: Emitter, acc: str, acc_type: int, multiplier: str, y_zp: str, output: str) -> None:
    if acc_type == DOUBLE:
        acc = emit.op("Cast", [acc], to=FLOAT)
    scaled = emit.op("Mul", [acc, multiplier])
    one = emit.const(np.asarray(1.0, dtype=np.float32), "unit")
    inputs = [scaled, one] + ([y_zp] if y_zp else [])
    emit.op("QuantizeLinear", inputs, outputs=[output])


def _bias(emit: Emitter, name: str, acc: int, shape: list[int] | None = None):
    """(bias input name in the accumulation type or None, its constant value or None)."""
    if not name:
        return None, None
    value = emit.value(name)
    if value is None:
        return emit.op("Cast", [name], to=acc), None
    return emit.const(value.astype(_np(acc)).reshape(shape or value.shape), "bias"), value


# -- integer accumulation ----------------------------------------------------------------------


def _conv_like(node, emit: Emitter, x: str, x_zp: str, w: str, w_zp: str, bias_name: str):
    """(accumulator name, its type) of ``sum((x - x_zp) * (w - w_zp)) + bias`` as a float Conv."""
    attrs = {key: value for key, value in attributes(node).items() if key in CONV_ATTRIBUTES}
    w_value, w_zp_value = emit.value(w), emit.value(w_zp) if w_zp else None
    if w_value is None or (w_zp and w_zp_value is None):
        raise unsupported(node, "weights and their zero point", [w, w_zp], "constants (initializers)")
    centered = w_value.astype(np.int64) - _zp_array(w_zp_value, w_value.ndim, 0).astype(np.int64)
    bias_value = emit.value(bias_name) if bias_name else None
    span = _x_span(emit, _x_dtype(emit, node, x_zp), x_zp)
    acc = _accumulator(emit, centered, tuple(range(1, centered.ndim)), span, bias_value)
    if bias_name and bias_value is None:
        acc = DOUBLE
    weights = emit.const(centered.astype(_np(acc)), "w")
    inputs = [_centered(emit, x, x_zp, acc), weights]
    if bias_name:
        inputs.append(_bias(emit, bias_name, acc)[0])
    return emit.op("Conv", inputs, **attrs), acc


def qlinear_conv(node, emit: Emitter, shapes: dict) -> None:
    x, xs, xzp, w, ws, wzp, ys, yzp = (_input(node, k) for k in range(8))
    acc, acc_type = _conv_like(node, emit, x, xzp, w, wzp, _input(node, 8))
    ndim = len(shapes.get(x) or [0, 0, 0, 0])
    multiplier = _multiplier(emit, node, [xs, ws], ys, (ndim, 1))
    _requantize(emit, acc, acc_type, multiplier, yzp, node.output[0])


def conv_integer(node, emit: Emitter, shapes: dict) -> None:
    acc, _ = _conv_like(node, emit, node.input[0], _input(node, 2), node.input[1], _input(node, 3), "")
    emit.op("Cast", [acc], outputs=[node.output[0]], to=INT32)


def _matmul_acc(node, emit: Emitter, a: str, a_zp: str, b: str, b_zp: str, bias_name: str = "", trans_b: bool = False):
    """(accumulator, type) of ``(a - a_zp) @ (b - b_zp) + bias`` (``b`` [K, N], or [N, K] with ``trans_b``)."""
    b_value, b_zp_value = emit.value(b), emit.value(b_zp) if b_zp else None
    centered = None
    if b_value is not None and (not b_zp or b_zp_value is not None):
        axis = 0 if trans_b else b_value.ndim - 1
        centered = b_value.astype(np.int64) - _zp_array(b_zp_value, b_value.ndim, axis).astype(np.int64)
        if trans_b:
            centered = centered.T
    bias_value = emit.value(bias_name) if bias_name else None
    span = _x_span(emit, _x_dtype(emit, node, a_zp), a_zp)
    acc = _accumulator(emit, centered, (-2,) if centered is not None else (), span, bias_value)
    if centered is not None:
        weights = emit.const(centered.astype(_np(acc)), "w")
    else:
        weights = _centered(emit, b, b_zp, DOUBLE)
        acc = DOUBLE
        if trans_b:
            weights = emit.op("Transpose", [weights], perm=[1, 0])
    result = emit.op("MatMul", [_centered(emit, a, a_zp, acc), weights])
    if bias_name:
        result = emit.op("Add", [result, _bias(emit, bias_name, acc)[0]])
    return result, acc


def qlinear_matmul(node, emit: Emitter, shapes: dict) -> None:
    a, as_, azp, b, bs, bzp, ys, yzp = (_input(node, k) for k in range(8))
    acc, acc_type = _matmul_acc(node, emit, a, azp, b, bzp)
    _requantize(emit, acc, acc_type, _multiplier(emit, node, [as_, bs], ys, None), yzp, node.output[0])


def qgemm(node, emit: Emitter, shapes: dict) -> None:
    """com.microsoft QGemm: ``alpha * A' @ B' (+ C)``, requantized, or float when ``y_scale`` is absent."""
    attrs = attributes(node)
    if attrs.get("transA", 0):
        raise unsupported(node, "transA", attrs["transA"], "0")
    a, as_, azp, b, bs, bzp, c, ys, yzp = (_input(node, k) for k in range(9))
    acc, acc_type = _matmul_acc(node, emit, a, azp, b, bzp, c, trans_b=bool(attrs.get("transB", 0)))
    multiplier = _multiplier(emit, node, [as_, bs], ys or None, None, float(attrs.get("alpha", 1.0)))
    if ys:
        _requantize(emit, acc, acc_type, multiplier, yzp, node.output[0])
        return
    if acc_type == DOUBLE:
        acc = emit.op("Cast", [acc], to=FLOAT)
    emit.op("Mul", [acc, multiplier], outputs=[node.output[0]])


# -- float in between --------------------------------------------------------------------------


def _dq(emit: Emitter, x: str, scale: str, zp: str) -> str:
    return emit.op("DequantizeLinear", [x, scale] + ([zp] if zp else []))


def _q(emit: Emitter, x: str, scale: str, zp: str, output: str) -> None:
    emit.op("QuantizeLinear", [x, scale] + ([zp] if zp else []), outputs=[output])


def qlinear_binary(node, emit: Emitter, shapes: dict) -> None:
    a, as_, azp, b, bs, bzp, cs, czp = (_input(node, k) for k in range(8))
    result = emit.op(node.op_type[len("QLinear"):], [_dq(emit, a, as_, azp), _dq(emit, b, bs, bzp)])
    _q(emit, result, cs, czp, node.output[0])


def qlinear_unary(node, emit: Emitter, shapes: dict) -> None:
    """QLinearSigmoid, QLinearLeakyRelu, QLinearGlobalAveragePool, QLinearAveragePool: x, xs, xzp, ys, yzp."""
    attrs = attributes(node)
    if attrs.pop("channels_last", 0):
        raise unsupported(node, "channels_last", 1, "0 (NCHW)")
    x, xs, xzp, ys, yzp = (_input(node, k) for k in range(5))
    op = node.op_type[len("QLinear"):]
    result = emit.op(op, [_dq(emit, x, xs, xzp)], **attrs)
    _q(emit, result, ys, yzp, node.output[0])


def qlinear_softmax(node, emit: Emitter, shapes: dict) -> None:
    """com.microsoft QLinearSoftmax: ``opset`` says whose Softmax (before 13: over the flattened trailing
    axes); the model's Softmax is used where the two agree (same era, or the last axis)."""
    attrs = attributes(node)
    axis, era = int(attrs.get("axis", -1)), int(attrs.get("opset", emit.opset))
    rank = len(shapes.get(node.input[0]) or [])
    if (era >= 13) != (emit.opset >= 13) and axis not in (-1, rank - 1):
        raise unsupported(node, "axis", axis, f"the last axis when the node's opset ({era}) and the model's ({emit.opset}) differ about 13")
    x, xs, xzp, ys, yzp = (_input(node, k) for k in range(5))
    _q(emit, emit.op("Softmax", [_dq(emit, x, xs, xzp)], axis=axis), ys, yzp, node.output[0])


def qlinear_concat(node, emit: Emitter, shapes: dict) -> None:
    """com.microsoft QLinearConcat: Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input."""
    ys, yzp = node.input[0], node.input[1]
    parts = [_dq(emit, *node.input[k:k + 3]) for k in range(2, len(node.input), 3)]
    result = emit.op("Concat", parts, axis=int(attributes(node)["axis"]))
    _q(emit, result, ys, yzp, node.output[0])


def dynamic_quantize_lstm(node, emit: Emitter, shapes: dict) -> None:
    """com.microsoft DynamicQuantizeLSTM: dequantized weights ([dirs, in, 4H] -> [dirs, 4H, in]) into an LSTM."""
    from airflow_neo.local.onnx_ops.recurrent import expand_recurrent

    names = [_input(node, k) for k in range(12)]
    weights = []
    for w, scale, zp in ((names[1], names[8], names[9]), (names[2], names[10], names[11])):
        values = [emit.value(w), emit.value(scale), emit.value(zp)]
        if any(value is None for value in values):
            raise unsupported(node, "weights, scales and zero points", [w, scale, zp], "constants (initializers)")
        value, scale_value, zp_value = values
        zp_b = zp_value.astype(np.float32).reshape(zp_value.shape[0], 1, -1)
        scale_b = scale_value.astype(np.float32).reshape(scale_value.shape[0], 1, -1)
        real = (value.astype(np.float32) - zp_b) * scale_b
        weights.append(emit.const(np.ascontiguousarray(real.transpose(0, 2, 1)), "w"))
    from onnx import helper

    inputs = [names[0], *weights, *names[3:8]]
    while inputs and not inputs[-1]:
        inputs.pop()
    attrs = {key: value for key, value in attributes(node).items()}
    lstm = helper.make_node("LSTM", inputs, list(node.output), name=node.name, **attrs)
    expand_recurrent(lstm, emit, shapes)


STANDARD_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger")
CONTRIB_OPS = (
    "QGemm", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearGlobalAveragePool",
    "QLinearAveragePool", "QLinearConcat", "QLinearSoftmax", "DynamicQuantizeLSTM",
)
REWRITES = {
    "QLinearConv": qlinear_conv,
    "QLinearMatMul": qlinear_matmul,
    "ConvInteger": conv_integer,
    "QGemm": qgemm,
    "QLinearAdd": qlinear_binary,
    "QLinearMul": qlinear_binary,
    "QLinearSigmoid": qlinear_unary,
    "QLinearLeakyRelu": qlinear_unary,
    "QLinearGlobalAveragePool": qlinear_unary,
    "QLinearAveragePool": qlinear_unary,
    "QLinearConcat": qlinear_concat,
    "QLinearSoftmax": qlinear_softmax,
    "DynamicQuantizeLSTM": dynamic_quantize_lstm,
}
