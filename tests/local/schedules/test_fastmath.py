"""Fast math: float32 exp / sigmoid / erf / tanh / softmax become vectorizable arithmetic, accurate to float32 ulps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from .helpers import const, graph, host_target, rand, relax, tvm


def _lowered(mod):
    from airflow_neo.local.schedules.lowering import lower

    return lower(mod, host_target())


def _run(mod, x):
    from airflow_neo.local.schedules import apply_default_schedules

    target = host_target()
    scheduled, report = apply_default_schedules(_lowered(mod), target, log=lambda _: None)
    vm = relax.VirtualMachine(tvm.compile(scheduled, target=target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy(), report


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


OPS = {
    # name: (relax op, float64 reference, bound on |error| relative to max(|reference|, floor))
    "exp": (relax.op.exp, np.exp, (2e-6, 0.0)),
    "sigmoid": (relax.op.sigmoid, lambda x: 1 / (1 + np.exp(-x)), (2e-6, 1e-30)),
    "erf": (relax.op.erf, np.vectorize(math.erf), (2e-6, 1.0)),
    "tanh": (relax.op.tanh, np.tanh, (2e-6, 1.0)),
    "softmax": (lambda a: relax.op.nn.softmax(a, axis=-1), _softmax, (2e-5, 1e-3)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_approximation_is_accurate_over_activation_ranges(name):
    op, reference, (bound, floor) = OPS[name]
    # odd sizes, values across the range activations take (and exp's overflow edge)
    x = np.concatenate([rand(3, 1001, scale=4.0), np.linspace(-80, 80, 3 * 1001, dtype="float32").reshape(3, 1001)])
    out, _ = _run(graph({"x": x.shape}, lambda bb, a: bb.emit(op(a))), x)
    want = reference(x.astype("float64"))
    scale = np.maximum(np.abs(want), floor) if floor else np.abs(want)
    error = np.abs(out - want) / np.where(scale > 0, scale, 1)
    assert np.isfinite(out).all() and error.max() < bound, (name, float(error.max()))


def test_no_libm_call_is_left_in_a_silu_epilogue():
    """A pointwise conv with SiLU: the epilogue holds arithmetic only, and it still matches numpy."""
    w = rand(16, 8, 1, 1, scale=0.3)
    x = rand(1, 8, 5, 7)

    def body(bb, a):
        y = bb.emit(relax.op.nn.conv2d(a, const(w)))
        return bb.emit(relax.op.multiply(y, relax.op.sigmoid(y)))

    mod = graph({"x": x.shape}, body)
    text = _lowered(mod).script()
    assert "T.exp(" not in text and "T.sigmoid(" not in text
    out, report = _run(mod, x)
    y = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x.astype("float64"))
    np.testing.assert_allclose(out, y / (1 + np.exp(-y)), rtol=1e-5, atol=1e-6)
    assert "conv2d-pointwise" in report["counts"]


def test_other_dtypes_keep_the_exact_functions():
    x = rand(4, 9).astype("float64")
    bb = relax.BlockBuilder()
    param = relax.Var("x", relax.TensorType(x.shape, "float64"))
    with bb.function("main", [param]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.exp(param))
        bb.emit_func_output(out)
    text = _lowered(bb.get()).script()
    assert "T.exp(" in text
