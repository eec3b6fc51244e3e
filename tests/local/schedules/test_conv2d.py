"""conv2d (regular, strided, pointwise, grouped, depthwise, NHWC, runtime weights) against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import assert_rule, const, graph, np_conv2d, rand, relax, schedule_and_run

CASES = {
    # name: (N, C, H, W, O, k, stride, pad, groups, rule)
    "3x3-odd": (2, 3, 9, 11, 10, 3, 1, 1, 1, "conv2d"),
    "5x5-stride2": (1, 5, 13, 10, 24, 5, 2, 2, 1, "conv2d"),
    "pointwise": (2, 12, 7, 5, 20, 1, 1, 0, 1, "conv2d-pointwise"),
    "pointwise-stride2": (1, 8, 9, 9, 16, 1, 2, 0, 1, "conv2d-pointwise"),
    "grouped": (2, 8, 6, 7, 12, 3, 1, 1, 2, "conv2d-grouped"),
    "depthwise": (1, 24, 11, 9, 24, 3, 1, 1, 24, "conv2d-depthwise"),
    "depthwise-stride2": (2, 16, 10, 13, 16, 3, 2, 1, 16, "conv2d-depthwise"),
    "tiny-channels": (1, 1, 6, 6, 2, 3, 1, 0, 1, "conv2d"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_conv2d_bias_relu_matches_numpy(case):
    n, c, h, w, o, k, stride, pad, groups, rule = CASES[case]
    x, weight, bias = rand(n, c, h, w), rand(o, c // groups, k, k, scale=0.3), rand(1, o, 1, 1)

    def body(bb, data):
        y = bb.emit(relax.op.nn.conv2d(data, const(weight), strides=stride, padding=pad, groups=groups))
        return bb.emit(relax.op.nn.relu(relax.op.add(y, const(bias))))

    out, report, _ = schedule_and_run(graph({"x": x.shape}, body), [x])
    assert_rule(report, rule)
    expected = np.maximum(np_conv2d(x, weight, stride, pad, groups) + bias, 0)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_conv2d_with_runtime_weights_and_residual():
    """Weights passed at run time (no folding: packed per call) and a residual add in the tail."""
    x, weight, skip = rand(1, 6, 8, 8), rand(16, 6, 3, 3, scale=0.3), rand(1, 16, 8, 8)

    def body(bb, data, wvar, svar):
        y = bb.emit(relax.op.nn.conv2d(data, wvar, padding=1))
        return bb.emit(relax.op.add(y, svar))

    mod = graph({"x": x.shape, "w": weight.shape, "s": skip.shape}, body)
    out, report, _ = schedule_and_run(mod, [x, weight, skip])
    assert_rule(report, "conv2d")
    np.testing.assert_allclose(out, np_conv2d(x, weight, 1, 1) + skip, rtol=1e-4, atol=1e-4)


def test_conv2d_nhwc_hwio():
    x, weight = rand(1, 7, 9, 5), rand(3, 3, 5, 16, scale=0.3)

    def body(bb, data):
        return bb.emit(relax.op.nn.conv2d(data, const(weight), padding=1, data_layout="NHWC", kernel_layout="HWIO"))

    out, report, _ = schedule_and_run(graph({"x": x.shape}, body), [x])
    assert_rule(report, "conv2d")
    expected = np_conv2d(x.transpose(0, 3, 1, 2), weight.transpose(3, 2, 0, 1), 1, 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [4, 7])
def test_conv2d_with_a_fused_pad_tail(size, tmp_path):
    """ONNX Conv -> Relu -> Pad -> depthwise Conv (TF "SAME" padding exported explicitly, as in
    timm's tf_* models): the importer's pad fuses into the first conv's kernel; its border reads
    no accumulator element and must still be written."""
    import onnx
    from onnx import helper, numpy_helper

    from airflow_neo.local.frontends import IMPORTERS
    from airflow_neo.local.schedules import apply_default_schedules
    from airflow_neo.local.schedules.lowering import lower

    from .helpers import host_target, tvm

    x, weight, bias = rand(1, 8, size, size), rand(16, 8, 1, 1, scale=0.3), rand(16)
    depthwise = rand(16, 1, 3, 3, scale=0.3)
    (top, bottom), (left, right) = (0, 1), (0, 1)  # TF "SAME" for a stride-2 3x3 conv
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Pad", ["r", "pads"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "dw"], ["y"], group=16, strides=[2, 2])]
    initializers = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"),
                    numpy_helper.from_array(depthwise, "dw"),
                    numpy_helper.from_array(np.array([0, 0, top, left, 0, 0, bottom, right], dtype="int64"), "pads")]
    graph_proto = helper.make_graph(nodes, "pad", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
                                    [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializers)
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    target = host_target()
    imported = IMPORTERS["ONNX"](path, {"x": list(x.shape)}, None, lambda *_: None)
    mod, report = apply_default_schedules(lower(imported.mod, target), target, log=lambda _: None)
    assert any("pad" in e["kernel"] and e["rule"] == "conv2d-pointwise" for e in report["kernels"]), report["kernels"]
    out = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    padded = np.pad(np.maximum(np_conv2d(x, weight) + bias.reshape(1, -1, 1, 1), 0),
                    ((0, 0), (0, 0), (top, bottom), (left, right)))
    np.testing.assert_allclose(out, np_conv2d(padded, depthwise, stride=2, groups=16), rtol=1e-4, atol=1e-4)
