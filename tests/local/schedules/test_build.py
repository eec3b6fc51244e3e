"""compile_with_default_schedules: the metadata summary, and the fallback when a schedule cannot build."""

from __future__ import annotations

import numpy as np

from tests.local.schedules.helpers import fuse, graph, host_target, rand, relax, tvm


def _dense_relu():
    w = rand(13, 7)
    mod = graph({"x": (5, 7)}, lambda bb, x: relax.op.nn.relu(relax.op.matmul(x, relax.const(w.T.copy()))))
    return mod, lambda x: np.maximum(x @ w.T, 0)


def _run(executable, x):
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_summary_names_how_every_kernel_was_scheduled():
    from airflow_neo.local.schedules import compile_with_default_schedules

    target = host_target()
    mod, reference = _dense_relu()
    lines: list[str] = []
    executable, summary = compile_with_default_schedules(fuse(mod, target), target, log=lines.append)
    x = rand(5, 7)
    np.testing.assert_allclose(_run(executable, x), reference(x), rtol=1e-5, atol=1e-5)
    assert set(summary) == {"cpu", "counts", "kernels", "sources", "keys", "origin", "knobs", "unscheduled", "seconds"}
    assert set(summary["keys"]) == set(summary["kernels"]) and all(k.isdigit() for k in summary["keys"].values())
    assert "dense" in summary["kernels"].values() and summary["unscheduled"] == []
    # no tuning tier, no pack: every scheduled kernel has its rule's own plan
    assert set(summary["origin"].values()) == {"default"}
    dense = next(name for name, rule in summary["kernels"].items() if rule == "dense")
    assert set(summary["knobs"]) == {dense} and summary["knobs"][dense]["vector_inner"] >= 1  # the plan's own
    assert summary["sources"] == {"default": len(summary["kernels"])}
    assert sum(summary["counts"].values()) == len(summary["kernels"])
    assert not any(line.startswith("WARNING") for line in lines)


class _UnbuildableRule:
    """Binds a loop to a GPU thread axis: a schedule an llvm target cannot build."""

    name = "unbuildable"

    def schedule(self, func, target, cpu):
        from tvm import s_tir

        from airflow_neo.local.schedules.rules import Outcome

        sch = s_tir.Schedule(func)
        for block in sch.get_child_blocks(sch.get_sblock("root") if _has_root(sch) else None) or []:
            loops = sch.get_loops(block)
            if loops:
                sch.bind(loops[0], "threadIdx.x")
                return Outcome(sch, "unbuildable", "bound to threadIdx.x")
        return None


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001
        return False


def test_a_schedule_that_cannot_build_falls_back_to_the_unscheduled_module():
    from airflow_neo.local.schedules import compile_with_default_schedules

    target = host_target()
    mod, reference = _dense_relu()
    lines: list[str] = []
    executable, summary = compile_with_default_schedules(fuse(mod, target), target, log=lines.append, rules=(_UnbuildableRule(),))
    assert "fallback" in summary, lines
    assert any("did not build" in line and line.startswith("WARNING") for line in lines)
    x = rand(5, 7)
    np.testing.assert_allclose(_run(executable, x), reference(x), rtol=1e-5, atol=1e-5)


def test_kernels_no_rule_takes_are_named_in_a_warning():
    from airflow_neo.local.schedules import compile_with_default_schedules

    target = host_target()
    mod, reference = _dense_relu()
    lines: list[str] = []
    executable, summary = compile_with_default_schedules(fuse(mod, target), target, log=lines.append, rules=())
    assert summary["unscheduled"] and all(rule == "none" for rule in summary["kernels"].values())
    assert any(line.startswith("WARNING") and "run as serial loops" in line for line in lines)
    x = rand(5, 7)
    np.testing.assert_allclose(_run(executable, x), reference(x), rtol=1e-5, atol=1e-5)
