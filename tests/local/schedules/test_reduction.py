"""softmax and layer norm (row reductions) against numpy."""

from __future__ import annotations

import numpy as np

from .helpers import assert_rule, const, graph, rand, relax, schedule_and_run


def test_softmax_odd_rows():
    x = rand(2, 3, 5, 17, scale=3.0)
    out, report, _ = schedule_and_run(graph({"x": x.shape}, lambda bb, d: bb.emit(relax.op.nn.softmax(d, axis=-1))), [x])
    assert_rule(report, "reduction")
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_layer_norm_odd_width():
    x, gamma, beta = rand(3, 7, 19), rand(19), rand(19)

    def body(bb, d):
        return bb.emit(relax.op.nn.layer_norm(d, const(gamma), const(beta), axes=[-1], epsilon=1e-5))

    out, report, _ = schedule_and_run(graph({"x": x.shape}, body), [x])
    assert_rule(report, "reduction")
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-4, atol=1e-5)
