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
