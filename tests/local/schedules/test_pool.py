"""max/avg pooling (windows) and global average pooling against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import assert_rule, graph, np_pool2d, rand, relax, schedule_and_run


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d_3x3_stride2_pad1_odd_sizes(kind):
    x = rand(2, 5, 13, 10)
    op = relax.op.nn.max_pool2d if kind == "max" else relax.op.nn.avg_pool2d
    kwargs = {} if kind == "max" else {"count_include_pad": True}
    out, report, _ = schedule_and_run(
        graph({"x": x.shape}, lambda bb, d: bb.emit(op(d, pool_size=3, strides=2, padding=1, **kwargs))), [x]
    )
    assert_rule(report, "pool2d")
    np.testing.assert_allclose(out, np_pool2d(x, 3, 2, 1, kind), rtol=1e-5, atol=1e-6)


def test_global_average_pool():
    x = rand(3, 7, 5, 9)
    out, report, _ = schedule_and_run(
        graph({"x": x.shape}, lambda bb, d: bb.emit(relax.op.mean(d, axis=[2, 3], keepdims=True))), [x]
    )
    assert_rule(report, "reduction")
    np.testing.assert_allclose(out, x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
