"""Knobs: every candidate the tuner may measure schedules correctly; knobs that do not fit are ignored."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_neo.local.configs.knobs import Knobs, candidates

from .helpers import const, fuse, graph, host_target, np_conv2d, rand, relax, tvm


class _Fixed:
    """A config source that gives every kernel the same knobs."""

    def __init__(self, knobs, label="tuned"):
        self.knobs, self.label = knobs, label

    def lookup(self, key):
        return (self.knobs, self.label)


def _contraction_shape(mod, target):
    """The knobs.Shape of the module's contraction kernel (what the tuner sees)."""
    from airflow_neo.local.schedules.cpu import cpu_info
    from airflow_neo.local.schedules.rules import ContractionRule

    for _, func in mod.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            outcome = ContractionRule().schedule(func, target, cpu_info(target))
            if outcome is not None:
                return outcome.shape
    raise AssertionError("no contraction kernel")


def _run(mod, arrays, target, configs=None):
    from airflow_neo.local.schedules import apply_default_schedules

    scheduled, report = apply_default_schedules(mod, target, log=lambda _: None, configs=configs)
    vm = relax.VirtualMachine(tvm.compile(scheduled, target=target), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy(), report


def _dense(batch, k, n):
    w = rand(n, k, scale=0.1)
    mod = graph({"x": (batch, k)}, lambda bb, x: relax.op.nn.relu(relax.op.matmul(x, const(w.T.copy()))))
    return mod, lambda x: np.maximum(x @ w.T, 0)


def _pointwise(c, o):
    w = rand(o, c, 1, 1, scale=0.1)
    mod = graph({"x": (1, c, 7, 9)}, lambda bb, x: relax.op.nn.conv2d(x, const(w)))
    return mod, lambda x: np_conv2d(x, w)


def _conv3x3(c, o):
    w = rand(o, c, 3, 3, scale=0.1)
    mod = graph({"x": (2, c, 6, 7)}, lambda bb, x: relax.op.nn.conv2d(x, const(w), padding=1))
    return mod, lambda x: np_conv2d(x, w, 1, 1)


CASES = {
    # a reduction long enough to be blocked, an odd row count, batch > 1
    "dense-k256": (lambda: _dense(5, 256, 24), (5, 256)),
    "pointwise-c192": (lambda: _pointwise(192, 32), (1, 192, 7, 9)),
    "conv3x3-c8": (lambda: _conv3x3(8, 32), (2, 8, 6, 7)),  # 32 out: two vector widths at 8 or 16 lanes
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_candidate_matches_numpy(case):
    make, shape = CASES[case]
    target = host_target()
    mod, reference = make()
    fused = fuse(mod, target)
    listed = candidates(_contraction_shape(fused, target))
    assert len(listed) > 3 and listed[0] == _contraction_shape(fused, target).default
    if case != "conv3x3-c8":
        assert any(k.reduce_block for k in listed), "a long reduction gets blocking candidates"
    x = rand(*shape)
    expected = reference(x)
    for knobs in listed:
        out, report = _run(fused, [x], target, _Fixed(knobs))
        entry = next(e for e in report["kernels"] if e["knobs"] is not None)
        assert entry["source"] == "tuned" and Knobs.from_dict(entry["knobs"]) == knobs, (knobs, entry)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4, err_msg=knobs.text())


def test_knobs_that_do_not_fit_are_ignored():
    target = host_target()
    mod, reference = _dense(5, 64, 24)
    fused = fuse(mod, target)
    x = rand(5, 64)
    # 7 divides neither 24 columns nor 5 rows; a reduction block must divide 64
    for knobs in (Knobs(vector_inner=7), Knobs(register_inner=7), Knobs(reduce_block=48)):
        out, report = _run(fused, [x], target, _Fixed(knobs, "pack"))
        entry = next(e for e in report["kernels"] if e["knobs"] is not None)
        assert entry["source"] == "default", (knobs, entry)
        np.testing.assert_allclose(out, reference(x), rtol=1e-4, atol=1e-4)


def test_knobs_from_json_name_the_bad_field():
    with pytest.raises(ValueError, match="vector_inner"):
        Knobs.from_dict({"vector_inner": 0})
    with pytest.raises(ValueError, match="unknown knobs"):
        Knobs.from_dict({"tile": 4})
    with pytest.raises(ValueError, match="parallel_register"):
        Knobs.from_dict({"parallel_register": "yes"})
    assert Knobs.from_dict(Knobs(8, 3, 64, True).to_dict()) == Knobs(8, 3, 64, True)
