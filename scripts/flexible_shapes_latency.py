"""Latency of a flexible-shape artifact against the static one, at the range's lower bound.

    .venv/bin/python scripts/flexible_shapes_latency.py [--seconds 3]

Builds two small ONNX models (a CNN on 64x64 images, batch range 1..8; an attention block of
width 64, sequence range 16..128), compiles each for this machine twice (static at the lower
bound, and flexible over the range; no tuning, default schedules), and prints the p50 latency of
each at the lower bound, the number of kernels the default schedules took, and the flexible one's
p50 at the upper bound. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnx import TensorProto, helper  # noqa: E402

from airflow_neo import runtime  # noqa: E402
from airflow_neo.local.compiler import compile_model  # noqa: E402
from tests.local import models  # noqa: E402


def _init(name, array):
    return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.astype(np.float32).ravel().tolist())


def _model(nodes, inputs, outputs, inits) -> bytes:
    model = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def cnn() -> bytes:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = [_init("w1", rng.standard_normal((16, 3, 3, 3)) * 0.2), _init("b1", rng.standard_normal(16)),
             _init("w2", rng.standard_normal((32, 16, 3, 3)) * 0.1), _init("b2", rng.standard_normal(32)),
             _init("fw", rng.standard_normal((10, 32))), _init("fb", rng.standard_normal(10))]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)


def attention(d: int = 64) -> bytes:
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "beta"], ["n"], axis=-1),
             *(helper.make_node("MatMul", ["n", w], [o]) for w, o in (("wq", "q"), ("wk", "k"), ("wv", "v"))),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["ss"]), helper.make_node("Softmax", ["ss"], ["a"], axis=-1),
             helper.make_node("MatMul", ["a", "v"], ["o"]), helper.make_node("Add", ["x", "o"], ["y"])]
    inits = [_init("g", np.ones(d)), _init("beta", np.zeros(d)),
             *(_init(w, rng.standard_normal((d, d)) / np.sqrt(d)) for w in ("wq", "wk", "wv")),
             _init("scale", np.array(1 / np.sqrt(d)))]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", d])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", d])], inits)


def p50_ms(model, x, seconds: float) -> float:
    model.run({"x": x})
    samples, deadline = [], time.perf_counter() + seconds
    while not samples or time.perf_counter() < deadline:
        started = time.perf_counter()
        model.run({"x": x})
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.median(samples))


def measure(work: Path, name: str, onnx_bytes: bytes, static: list, flexible: list, upper: list, seconds: float) -> dict:
    archive = models.write_archive(work / name, {"model.onnx": onnx_bytes})
    found = {"model": name}
    for label, shape in (("static", static), ("flexible", flexible)):
        case = models.ModelCase(archive, None, framework="ONNX", data_input_config={"x": shape}, inputs={},
                                model_file="model.onnx")
        artifact = work / name / f"{label}.tar.gz"
        started = time.monotonic()
        metadata = compile_model(models.make_request(case, target_platform={"Os": "LINUX", "Arch": "X86_64"}),
                                 str(archive), str(artifact), log=lambda _line: None, verify="gate")
        found[f"{label}_compile_s"] = round(time.monotonic() - started, 2)
        found[f"{label}_kernels"] = metadata["schedules"]["counts"]
        found[f"{label}_max_abs_diff"] = max(item["max_abs_diff"] for item in metadata["verification"]["outputs"])
        model = runtime.load(artifact)
        lower = np.random.default_rng(0).standard_normal(static).astype(np.float32)
        found[f"{label}_p50_ms_at_lower_bound"] = round(p50_ms(model, lower, seconds), 3)
        if label == "flexible":
            found["flexible_shapes"] = metadata["verification"]["shapes"]
            high = np.random.default_rng(0).standard_normal(upper).astype(np.float32)
            found["flexible_p50_ms_at_upper_bound"] = round(p50_ms(model, high, seconds), 3)
    found["slowdown_at_lower_bound"] = round(found["flexible_p50_ms_at_lower_bound"] / found["static_p50_ms_at_lower_bound"], 2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for result in (measure(work, "cnn", cnn(), [1, 3, 64, 64], ["1..8", 3, 64, 64], [8, 3, 64, 64], args.seconds),
                       measure(work, "attention", attention(), [1, 16, 64], [1, "16..128", 64], [1, 128, 64], args.seconds)):
            print(json.dumps(result))


if __name__ == "__main__":
    main()
