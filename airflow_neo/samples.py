"""Small real models for examples, quickstarts and smoke tests (built with numpy + onnx, no torch).

``onnx`` and ``numpy`` are imported inside the functions, so importing this module is cheap.

Invariant: the sample archive is byte-stable: the same seed gives the same ``model.tar.gz`` bytes
on every run (no timestamps, owners or file modes from the machine in the tar or gzip headers), so
re-running a quickstart hits the compile cache and republishes the same artifact bytes.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

SAMPLE_INPUT_NAME = "data"
SAMPLE_INPUT_SHAPE = (1, 3, 32, 32)
SAMPLE_CLASSES = 10


def sample_cnn_onnx(seed: int = 0, width: int = 8):
    """A conv-relu-pool x2 + global-pool + dense classifier for 3x32x32 images, random weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype("float32"), name)

    inits = [
        weight("conv1_w", width, 3, 3, 3), weight("conv1_b", width),
        weight("conv2_w", width * 2, width, 3, 3), weight("conv2_b", width * 2),
        weight("fc_w", SAMPLE_CLASSES, width * 2), weight("fc_b", SAMPLE_CLASSES),
    ]
    nodes = [
        helper.make_node("Conv", ["data", "conv1_w", "conv1_b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "sample_cnn",
        [helper.make_tensor_value_info(SAMPLE_INPUT_NAME, TensorProto.FLOAT, list(SAMPLE_INPUT_SHAPE))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, SAMPLE_CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="airflow-neo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_sample_archive(path: str | Path, seed: int = 0) -> Path:
    """Write the sample CNN as a Neo-style ``model.tar.gz`` (``model.onnx`` inside) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = reproducible_tar_gz({"model.onnx": sample_cnn_onnx(seed).SerializeToString()})
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return path


def reproducible_tar_gz(files: dict[str, bytes]) -> bytes:
    """A ``.tar.gz`` of ``{name: bytes}`` whose bytes depend on the contents only (mtime 0, root owner, mode 0644)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def sample_data_input_config() -> dict:
    return {SAMPLE_INPUT_NAME: list(SAMPLE_INPUT_SHAPE)}
