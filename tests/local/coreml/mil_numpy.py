"""A numpy interpreter of a saved Core ML ML Program, for the ops the test models use.

Core ML cannot run models on Linux, and coremltools 9.0 ships no MIL interpreter (its ops'
``value_inference`` folds constants for some ops, not conv). This evaluates the program that was
saved (the ``.mlpackage``'s spec and weight blob, read with coremltools' blob reader), so the
tests compare what the artifact computes with the source framework. An op outside :data:`OPS`
fails the test naming it: extend the table rather than skip. Image inputs are fed as float pixels
in NCHW ``[1, C, H, W]`` (what Core ML hands the program); the program's own ``mul``/``add``
apply the scale and bias.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

_NP = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": np.bool_}
_MIL_DTYPES = {10: np.float16, 11: np.float32, 23: np.int32}


def load_program(package: Path):
    """``(main block, blob reader)`` of a saved ``.mlpackage``."""
    import coremltools as ct
    from coremltools.libmilstoragepython import _BlobStorageReader

    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    function = spec.mlProgram.functions["main"]
    weights = Path(package) / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    reader = _BlobStorageReader(str(weights)) if weights.exists() else None
    return function.block_specializations[function.opset], reader


def _value(value, reader):
    kind = value.WhichOneof("value")
    tensor_type = value.type.tensorType
    dims = [d.constant.size for d in tensor_type.dimensions]
    dtype = _MIL_DTYPES.get(tensor_type.dataType)
    if kind == "blobFileValue":
        read = reader.read_fp16_data if dtype == np.float16 else reader.read_float_data
        data = np.asarray(read(value.blobFileValue.offset))
        return data.view(np.float16).reshape(dims) if dtype == np.float16 else data.reshape(dims).astype(dtype)
    immediate = value.immediateValue
    if immediate.WhichOneof("value") == "list":
        return [_value(item, reader) for item in immediate.list.values]
    tensor = immediate.tensor
    field = tensor.WhichOneof("value")
    if field == "bytes":
        return np.frombuffer(tensor.bytes.values, dtype=dtype).reshape(dims)
    items = list(getattr(tensor, field).values) if field else []
    if field == "strings":
        return items[0] if not dims and len(items) == 1 else items
    return np.asarray(items, dtype=dtype or None).reshape(dims)


def _pads(pad_type, pad, kernel):
    kh, kw = kernel
    if pad_type == "same":
        return [(kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2]
    if pad_type == "valid":
        return [0, 0, 0, 0]
    return [int(p) for p in pad]


def _windows(x, kernel, strides, pads, fill=0.0):
    top, bottom, left, right = pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    windows = np.lib.stride_tricks.sliding_window_view(x, tuple(kernel), axis=(2, 3))
    return windows[:, :, :: int(strides[0]), :: int(strides[1])]


def _conv(x, weight, bias=None, strides=(1, 1), pad_type="valid", pad=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    if tuple(int(d) for d in dilations) != (1, 1):
        pytest.fail(f"mil_numpy conv: dilations {list(dilations)} not implemented")
    groups = int(groups)
    kernel = weight.shape[2:]
    windows = _windows(x, kernel, strides, _pads(pad_type, pad, kernel)).astype(np.float64)
    n, c, h, w = windows.shape[:4]
    windows = windows.reshape(n, groups, c // groups, h, w, *kernel)
    kernels = weight.astype(np.float64).reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
    out = np.einsum("ngchwij,gocij->ngohw", windows, kernels).reshape(n, weight.shape[0], h, w).astype(x.dtype)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def _max_pool(x, kernel_sizes, strides, pad_type="valid", pad=(0, 0, 0, 0), ceil_mode=False):
    if bool(ceil_mode):
        pytest.fail("mil_numpy max_pool: ceil_mode not implemented")
    kernel = [int(k) for k in kernel_sizes]
    return _windows(x, kernel, strides, _pads(pad_type, pad, kernel), fill=-np.inf).max(axis=(-2, -1))


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


OPS = {
    "mul": lambda x, y: x * y,
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "cast": lambda x, dtype: x.astype(_NP[dtype]),
    "relu": lambda x: np.maximum(x, 0).astype(x.dtype),
    "conv": _conv,
    "reduce_mean": lambda x, axes, keep_dims=False: x.mean(axis=tuple(int(a) for a in axes), keepdims=bool(keep_dims)).astype(x.dtype),
    "reshape": lambda x, shape: x.reshape([int(d) for d in shape]),
    "linear": lambda x, weight, bias=None: x @ weight.T + (0 if bias is None else bias),
    "matmul": lambda x, y, transpose_x=False, transpose_y=False: (x.swapaxes(-1, -2) if transpose_x else x) @ (y.swapaxes(-1, -2) if transpose_y else y),
    "softmax": _softmax,
    "max_pool": _max_pool,
    "clip": lambda x, alpha, beta: np.clip(x, alpha, beta).astype(x.dtype),
    "transpose": lambda x, perm: x.transpose([int(p) for p in perm]),
    "classify": lambda probabilities, classes: _classify(probabilities, classes),
}


def _classify(probabilities, classes):
    """Core ML's classify: (the label of the largest value, {label: value}) of a [1, K] or [K] tensor."""
    labels = [str(c) for c in classes]
    values = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    assert len(values) == len(labels), f"classify: {len(values)} values for {len(labels)} labels"
    return labels[int(values.argmax())], dict(zip(labels, values.tolist()))


def run_program(package: Path, feeds: dict) -> dict:
    """Every value the saved program computes on ``feeds`` (input name -> array), by name."""
    block, reader = load_program(package)
    env = {name: np.asarray(value) for name, value in feeds.items()}
    for op in block.operations:
        if op.type == "const":
            env[op.outputs[0].name] = _value(op.attributes["val"], reader)
            continue
        if op.type not in OPS:
            pytest.fail(f"mil_numpy: op {op.type!r} is not implemented (outputs {[o.name for o in op.outputs]})")
        args = {}
        for key, binding in op.inputs.items():
            argument = binding.arguments[0]
            args[key] = env[argument.name] if argument.name else _value(argument.value, reader)
        result = OPS[op.type](**args)
        results = result if len(op.outputs) > 1 else (result,)
        for output, value in zip(op.outputs, results):
            env[output.name] = value
    return env


def block_outputs(package: Path) -> list[str]:
    block, _ = load_program(package)
    return list(block.outputs)
