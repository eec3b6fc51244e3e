"""dense, matmul and batch_matmul (transformer shapes, odd sizes) against numpy."""

from __future__ import annotations

import numpy as np

from .helpers import assert_rule, const, graph, rand, relax, schedule_and_run


def test_dense_with_bias_gelu_odd_sizes():
    """A linear layer (constant weight, folded packing): M=5, K=7, N=13, then bias and GELU-ish tanh."""
    x, w, b = rand(5, 7), rand(7, 13), rand(13)

    def body(bb, data):
        y = bb.emit(relax.op.add(relax.op.matmul(data, const(w)), const(b)))
        return bb.emit(relax.op.tanh(y))

    out, report, _ = schedule_and_run(graph({"x": x.shape}, body), [x])
    assert_rule(report, "dense")
    np.testing.assert_allclose(out, np.tanh(x @ w + b), rtol=1e-4, atol=1e-5)


def test_dense_single_row_classifier():
    """M=1 (a classifier head): the vector var alone carries the tile."""
    x, w = rand(1, 64), rand(64, 1000)
    out, report, _ = schedule_and_run(graph({"x": x.shape}, lambda bb, d: bb.emit(relax.op.matmul(d, const(w)))), [x])
    assert_rule(report, "dense")
    np.testing.assert_allclose(out, x @ w, rtol=1e-4, atol=1e-4)


def test_batch_matmul_runtime_operands():
    """Attention-style product of two activations: batch 2x3, M=17, K=9, N=11."""
    a, b = rand(2, 3, 17, 9), rand(2, 3, 9, 11)

    def body(bb, x, y):
        return bb.emit(relax.op.matmul(x, y))

    out, report, _ = schedule_and_run(graph({"a": a.shape, "b": b.shape}, body), [a, b])
    assert_rule(report, "batch-matmul")
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-4)


def test_matmul_3d_input_constant_weight():
    """A transformer's linear layer on [batch, tokens, d]: batch 2, 10 tokens, d 24 -> 40."""
    x, w = rand(2, 10, 24), rand(24, 40)
    out, report, _ = schedule_and_run(graph({"x": x.shape}, lambda bb, d: bb.emit(relax.op.matmul(d, const(w)))), [x])
    assert_rule(report, "dense")
    np.testing.assert_allclose(out, x @ w, rtol=1e-4, atol=1e-4)
