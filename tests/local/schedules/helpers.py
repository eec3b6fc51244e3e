"""Build tiny Relax graphs, compile them with the default schedules, run them on this machine."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

RNG = np.random.default_rng(7)


def host_target():
    """This machine's CPU (so AVX2/AVX-512 code is generated and can run here)."""
    from tvm.target import codegen

    return tvm.target.Target(
        {"kind": "llvm", "mtriple": str(codegen.llvm_get_system_triple()), "mcpu": str(codegen.llvm_get_system_cpu())}
    )


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype("float32")


def graph(inputs: dict, body):
    """An IRModule whose ``main`` takes ``inputs`` ({name: shape}) and returns ``body(bb, *vars)``."""
    bb = relax.BlockBuilder()
    params = [relax.Var(name, relax.TensorType(tuple(shape), "float32")) for name, shape in inputs.items()]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(body(bb, *params))
        bb.emit_func_output(out)
    return bb.get()


def const(array):
    return relax.const(np.asarray(array, dtype="float32"))


def fuse(mod, target):
    mod = relax.transform.DecomposeOpsForInference()(mod)
    with target:
        return relax.get_pipeline("zero")(mod)


def schedule_and_run(mod, arrays: list, target=None, *, schedules=True):
    """Returns ``(output, report, log_lines)``; ``report`` is None without schedules."""
    from airflow_neo.local.schedules import apply_default_schedules

    target = target or host_target()
    mod = fuse(mod, target)
    lines: list[str] = []
    report = None
    if schedules:
        mod, report = apply_default_schedules(mod, target, log=lines.append)
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in arrays])
    return out.numpy(), report, lines


def rules_of(report) -> dict[str, str | None]:
    return {k["kernel"]: k["rule"] for k in report["kernels"]}


def assert_rule(report, rule: str) -> None:
    rules = [k["rule"] for k in report["kernels"]]
    assert rule in rules, f"no kernel scheduled by {rule!r}: {report['kernels']}"
    assert not report["unscheduled"], report["kernels"]


# ---------------------------------------------------------------------------- numpy references


def np_conv2d(x, w, stride=1, pad=0, groups=1, dilation=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow), dtype="float64")
    per_group = o // groups
    for g in range(groups):
        xs = xp[:, g * cg : (g + 1) * cg]
        ws = w[g * per_group : (g + 1) * per_group]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilation : i * dilation + stride * oh : stride, j * dilation : j * dilation + stride * ow : stride]
                out[:, g * per_group : (g + 1) * per_group] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out.astype("float32")


def np_pool2d(x, k, stride, pad, kind):
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    n, c, h, w = x.shape
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    windows = [xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] for i in range(k) for j in range(k)]
    stack = np.stack(windows)
    return (stack.max(0) if kind == "max" else stack.mean(0)).astype("float32")
