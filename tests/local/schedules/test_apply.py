"""The driver: target facts, already-scheduled kernels, unmatched kernels, cross targets, report."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import const, fuse, graph, rand, relax, schedule_and_run, tvm

tvm_ffi = pytest.importorskip("tvm_ffi")


@pytest.mark.parametrize(
    "target, arch, bits, registers",
    [
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"}, "x86", 128, 16),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"}, "x86", 256, 16),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64", "mattr": ["+avx2", "+fma"]}, "x86", 256, 16),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"}, "x86", 512, 32),
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "neoverse-n1"}, "aarch64", 128, 32),
        ({"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf", "mcpu": "generic", "mattr": ["+neon"]}, "arm", 128, 16),
    ],
)
def test_cpu_info_reads_the_target_not_the_host(target, arch, bits, registers):
    from airflow_neo.local.schedules.cpu import cpu_info

    info = cpu_info(target)
    assert (info.arch, info.vector_bits, info.vector_registers) == (arch, bits, registers)
    assert info.lanes("float32") == bits // 32


def _conv_dense_graph():
    weight, fc = rand(32, 8, 3, 3, scale=0.3), rand(32, 10)

    def body(bb, data):
        y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(data, const(weight), padding=1)))
        y = bb.emit(relax.op.mean(y, axis=[2, 3]))
        return bb.emit(relax.op.matmul(y, const(fc)))

    return graph({"x": (1, 8, 12, 12)}, body)


@pytest.mark.parametrize("mcpu, mtriple, lanes", [("skylake-avx512", "x86_64-linux-gnu", 16), ("neoverse-n1", "aarch64-linux-gnu", 4)])
def test_cross_targets_take_their_vector_width_and_build(mcpu, mtriple, lanes):
    from airflow_neo.local.schedules import apply_default_schedules

    target = tvm.target.Target({"kind": "llvm", "mtriple": mtriple, "mcpu": mcpu})
    mod, report = apply_default_schedules(fuse(_conv_dense_graph(), target), target, log=lambda _: None)
    tiles = {k["rule"]: k["detail"] for k in report["kernels"]}
    assert {"conv2d", "dense", "reduction"} <= set(tiles), report["kernels"]
    vector = int(tiles["conv2d"].split()[1].split("x")[1].rstrip(","))
    assert vector % lanes == 0 and vector <= 2 * lanes
    tvm.compile(mod, target=target)  # code generation for the target, not run here


def test_already_scheduled_kernels_are_left_alone_and_rerun_is_stable():
    from airflow_neo.local.schedules import apply_default_schedules
    from airflow_neo.local.schedules.rules import DEFAULT_RULES

    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"})
    mod = fuse(_conv_dense_graph(), target)
    names = [gv for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    tuned = names[0]
    mod[tuned] = mod[tuned].with_attr("tirx.is_scheduled", True)
    before = mod[tuned]
    mod, report = apply_default_schedules(mod, target, log=lambda _: None, rules=DEFAULT_RULES)
    [kept] = [k["kernel"] for k in report["kernels"] if k["rule"] == "already-scheduled"]
    assert kept.startswith(tuned.name_hint)  # AttachAttrLayoutFreeBuffers may suffix the name
    assert tvm_ffi.structural_equal(mod[kept].without_attr("layout_free_buffers"), before)
    again, second = apply_default_schedules(mod, target, log=lambda _: None)
    assert set(second["counts"]) == {"already-scheduled"}
    assert tvm_ffi.structural_equal(again, mod)


class _Broken:
    name = "broken"

    def schedule(self, func, target, cpu):
        raise RuntimeError("boom")


def _symbolic_rows_matmul(w):
    """``main(x[n, 7]) = x @ w`` with a symbolic row count ``n`` (a DataInputConfig range)."""
    n = tvm.tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n, 7), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, const(w)))
        bb.emit_func_output(out)
    return bb.get()


def test_unmatched_and_failing_kernels_are_named_and_still_run():
    """A dynamic-shape matmul that only a rule that raises is offered: left as is, logged, correct."""
    from airflow_neo.local.schedules import apply_default_schedules

    w = rand(7, 5)
    module = _symbolic_rows_matmul(w)
    target = tvm.target.Target({"kind": "llvm"})
    lines: list[str] = []
    mod, report = apply_default_schedules(fuse(module, target), target, log=lines.append, rules=(_Broken(),))
    [kernel] = report["kernels"]
    assert kernel["rule"] is None and kernel["errors"] == ["broken: RuntimeError: boom"]
    assert report["unscheduled"] == [kernel["kernel"]]
    assert any(kernel["kernel"] in line and "unscheduled" in line for line in lines)
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    data = rand(3, 7)
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(data)).numpy(), data @ w, rtol=1e-5, atol=1e-5)


def test_symbolic_rows_stay_whole_and_the_static_dims_are_tiled():
    """A matmul whose row count is symbolic (a DataInputConfig range) gets the dense plan over its
    static dims, the rows loop left whole, and is correct at several row counts."""
    from airflow_neo.local.schedules import apply_default_schedules

    w = rand(7, 16)
    module = _symbolic_rows_matmul(w)
    target = tvm.target.Target({"kind": "llvm"})
    mod, report = apply_default_schedules(fuse(module, target), target, log=lambda _: None)
    [kernel] = report["kernels"]
    assert kernel["rule"] == "dense" and kernel["detail"].startswith("tile 1x")
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    for rows in (1, 5, 33):
        data = rand(rows, 7)
        np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(data)).numpy(), data @ w, rtol=1e-5, atol=1e-5)


def test_report_names_a_rule_for_every_kernel_of_a_small_cnn():
    x = rand(1, 8, 12, 12)
    out, report, lines = schedule_and_run(_conv_dense_graph(), [x])
    assert out.shape == (1, 10)
    assert not report["unscheduled"] and not report["generic"]
    assert all(k["rule"] and k["detail"] for k in report["kernels"])
    assert lines[0].startswith("default schedules: ")


def test_conv_kernel_is_parallel_vectorized_and_its_weights_folded():
    from airflow_neo.local.schedules import apply_default_schedules

    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"})
    mod, report = apply_default_schedules(fuse(_conv_dense_graph(), target), target, log=lambda _: None)
    [conv] = [k["kernel"] for k in report["kernels"] if k["rule"] == "conv2d"]
    kernels = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    [prepacked] = [name for name in kernels if name.startswith(conv) and name.endswith("_prepacked")]
    text = kernels[prepacked].script()
    assert "T.parallel" in text and "T.vectorized" in text and "T.unroll" in text
    assert not any(name.endswith("_weight_prepack") for name in kernels)  # folded into a constant
