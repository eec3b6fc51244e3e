"""Hand-written MXNet models (symbol JSON as MXNet 1.x writes it, ``.params`` by our writer) and
numpy implementations of the operators' definitions (MXNet's operator docs), for tests that run
without MXNet. Tiny on purpose: the references are plain loops.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from airflow_neo.local.convert.mxnet_params import write_params


def symbol_json(layers: list[tuple[str, str, dict, list[str]]], variables: list[str], heads: list[str]) -> str:
    """MXNet's symbol JSON: ``variables`` become ``null`` nodes, each layer ``(op, name, attrs,
    input names)`` an op node (attribute values as strings, as MXNet writes them)."""
    nodes, index = [], {}
    for name in variables:
        index[name] = len(nodes)
        nodes.append({"op": "null", "name": name, "inputs": []})
    for op, name, attrs, inputs in layers:
        missing = [i for i in inputs if i not in index]
        for var in missing:  # variables first seen as a layer input
            index[var] = len(nodes)
            nodes.append({"op": "null", "name": var, "inputs": []})
        index[name] = len(nodes)
        nodes.append({"op": op, "name": name, "attrs": {k: str(v) for k, v in attrs.items()},
                      "inputs": [[index[i], 0, 0] for i in inputs]})
    return json.dumps({
        "nodes": nodes,
        "arg_nodes": [i for i, node in enumerate(nodes) if node["op"] == "null"],
        "node_row_ptr": list(range(len(nodes) + 1)),
        "heads": [[index[h], 0, 0] for h in heads],
        "attrs": {"mxnet_version": ["int", 10901]},
    })


def small_cnn(fix_gamma: bool, seed: int = 0):
    """``(symbol json, {"arg:..."/"aux:...": array}, input)``: Convolution(pad 1, stride 2) ->
    BatchNorm -> LeakyReLU(0.2) -> max Pooling('full') -> Flatten -> FullyConnected -> softmax."""
    rng = np.random.RandomState(seed)
    layers = [
        ("Convolution", "conv", {"kernel": (3, 3), "stride": (2, 2), "pad": (1, 1), "num_filter": 4, "no_bias": False},
         ["data", "conv_weight", "conv_bias"]),
        ("BatchNorm", "bn", {"eps": 1e-3, "fix_gamma": fix_gamma},
         ["conv", "bn_gamma", "bn_beta", "bn_moving_mean", "bn_moving_var"]),
        ("LeakyReLU", "leaky", {"act_type": "leaky", "slope": 0.2}, ["bn"]),
        ("Pooling", "pool", {"kernel": (2, 2), "stride": (2, 2), "pool_type": "max", "pooling_convention": "full"},
         ["leaky"]),
        ("Flatten", "flat", {}, ["pool"]),
        ("FullyConnected", "fc", {"num_hidden": 3}, ["flat", "fc_weight", "fc_bias"]),
        ("softmax", "prob", {"axis": -1}, ["fc"]),
    ]
    params = {
        "arg:conv_weight": rng.normal(0, 0.5, (4, 2, 3, 3)), "arg:conv_bias": rng.normal(0, 0.1, (4,)),
        "arg:bn_gamma": rng.uniform(0.3, 2.0, (4,)), "arg:bn_beta": rng.normal(0, 0.3, (4,)),
        "aux:bn_moving_mean": rng.normal(0, 0.3, (4,)), "aux:bn_moving_var": rng.uniform(0.5, 2.0, (4,)),
        "arg:fc_weight": rng.normal(0, 0.5, (3, 4 * 2 * 2)), "arg:fc_bias": rng.normal(0, 0.1, (3,)),
    }
    params = {name: value.astype(np.float32) for name, value in params.items()}
    data = rng.uniform(-1, 1, (1, 2, 5, 5)).astype(np.float32)  # 3x3 after the conv: "full" pools 2x2
    return symbol_json(layers, ["data"], ["prob"]), params, data


def write_model(directory: Path, symbol: str, params: dict, prefix: str = "model") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{prefix}-symbol.json").write_text(symbol)
    write_params(directory / f"{prefix}-0000.params", params)
    return directory / f"{prefix}-symbol.json"


# -- numpy references: the operators' definitions -----------------------------------------------


def conv2d(x, w, b, stride: int, pad: int):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, width = x.shape
    k = w.shape[2]
    out_h, out_w = (h - k) // stride + 1, (width - k) // stride + 1
    out = np.zeros((n, w.shape[0], out_h, out_w), np.float64)
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out + b.reshape(1, -1, 1, 1)


def max_pool_full(x, k: int, stride: int):
    """'full' convention: ceil((size - k) / stride) + 1 windows, clipped at the border."""
    n, c, h, w = x.shape
    out_h, out_w = -(-(h - k) // stride) + 1, -(-(w - k) // stride) + 1
    out = np.empty((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k].max(axis=(2, 3))
    return out


def small_cnn_reference(params: dict, data, fix_gamma: bool):
    p = {name.split(":", 1)[1]: value.astype(np.float64) for name, value in params.items()}
    y = conv2d(data.astype(np.float64), p["conv_weight"], p["conv_bias"], stride=2, pad=1)
    gamma = np.ones_like(p["bn_gamma"]) if fix_gamma else p["bn_gamma"]
    shape = (1, -1, 1, 1)
    y = (y - p["bn_moving_mean"].reshape(shape)) / np.sqrt(p["bn_moving_var"].reshape(shape) + 1e-3)
    y = y * gamma.reshape(shape) + p["bn_beta"].reshape(shape)
    y = np.where(y > 0, y, 0.2 * y)
    y = max_pool_full(y, 2, 2).reshape(1, -1)
    y = y @ p["fc_weight"].T + p["fc_bias"]
    y = np.exp(y - y.max(axis=-1, keepdims=True))
    return y / y.sum(axis=-1, keepdims=True)
