"""Fused element-wise tails and transposes/reshapes against numpy."""

from __future__ import annotations

import numpy as np

from .helpers import assert_rule, const, graph, rand, relax, schedule_and_run


def test_broadcast_add_clip_odd_shape():
    x, b = rand(2, 3, 7, 5), rand(1, 3, 1, 1)

    def body(bb, d):
        return bb.emit(relax.op.clip(relax.op.add(d, const(b)), 0.0, 6.0))

    out, report, _ = schedule_and_run(graph({"x": x.shape}, body), [x])
    assert_rule(report, "elementwise")
    np.testing.assert_allclose(out, np.clip(x + b, 0, 6), rtol=1e-6)


def test_attention_head_split_transpose():
    """reshape -> transpose -> multiply, as a transformer splits heads: [1, 10, 12] -> [1, 3, 10, 4]."""
    x = rand(1, 10, 12)

    def body(bb, d):
        y = relax.op.permute_dims(relax.op.reshape(d, (1, 10, 3, 4)), [0, 2, 1, 3])
        return bb.emit(relax.op.multiply(y, relax.const(0.5, "float32")))

    out, report, _ = schedule_and_run(graph({"x": x.shape}, body), [x])
    assert_rule(report, "elementwise")
    np.testing.assert_allclose(out, x.reshape(1, 10, 3, 4).transpose(0, 2, 1, 3) * 0.5, rtol=1e-6)
