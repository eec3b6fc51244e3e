"""Shared helpers of the onnx_ops tests: onnxruntime runs, the rewrite alone, the local compile path."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from airflow_neo import runtime
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.onnx_normalize import normalize
from tests.local import models

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}


def ort_run(model, inputs: dict) -> list[np.ndarray]:
    import onnxruntime

    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, inputs)


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17, ms: bool = False):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def rewritten(model, inputs: dict):
    """A normalized copy of ``model`` for the shapes of ``inputs`` and the normalize report."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    report = normalize(copy, {name: list(value.shape) for name, value in inputs.items()})
    return copy, report


def op_types(model) -> set[str]:
    return {node.op_type for node in model.graph.node}


def compile_onnx(tmp_path, data: bytes, inputs: dict):
    """Compile ``data`` (ONNX bytes) through the local compile path; (loaded artifact, metadata, log lines)."""
    case = models.ModelCase(
        models.write_archive(tmp_path / "model", {"model.onnx": data}),
        lambda feed: ort_run(data, feed),
        framework="ONNX",
        data_input_config={name: list(value.shape) for name, value in inputs.items()},
        inputs=inputs,
        model_file="model.onnx",
    )
    lines: list[str] = []
    request = models.make_request(case, target_platform=LINUX_X86_64, output_dir=tmp_path / "out")
    artifact = tmp_path / "artifact" / "model-compiled.tar.gz"
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append)
    return runtime.load(artifact), metadata, lines


def compile_and_run(tmp_path, data: bytes, inputs: dict):
    """Compile ``data`` (ONNX bytes) through the local compile path; (outputs for ``inputs``, metadata, log lines)."""
    compiled, metadata, lines = compile_onnx(tmp_path, data, inputs)
    return compiled.run(inputs), metadata, lines
