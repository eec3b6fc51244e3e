"""Build (or extend) the shipped tuning pack: schedule knobs measured on this machine for a model set.

Usage (from the repository root, in the project's virtualenv with the ``bench`` extra)::

    python scripts/build_tuning_pack.py                       # the standard model set, 8 candidates per kernel
    python scripts/build_tuning_pack.py --candidates 16       # a later run: the next candidates of each kernel
    python scripts/build_tuning_pack.py --models resnet18 --target ml_c4

What it does, per model: build the architecture with random weights (``benchmarks/bench_models.py``'s
model set), export ONNX, import and lower it exactly as a compile job does, and measure up to
``--candidates`` knob sets of each contraction kernel (``airflow_neo.local.tuning_configs``: the
default plan first, then its tile / reduction-blocking / threading variants) with the tuning
session's builder and runner. The fastest knobs per workload go into
``airflow_neo/local/configs/pack.json`` under this machine's CPU family (``x86-avx2`` on an AVX2
host with ``--target ml_c4``; ``x86-avx512`` with ``--target ml_c5`` on an AVX-512 host), merged
with what the pack had: runs are incremental (a candidate already measured is never measured again;
a larger ``--candidates`` measures the next ones), and each run is recorded in ``provenance``.

The target must run on this machine (its knobs are measured here). The pack is applied only to
targets of the same CPU family and TVM ``major.minor`` (``airflow_neo.local.configs.pack``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

STANDARD_SET = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"]


def lowered_kernels(name: str, target, log):
    """``[(key, kernel name, PrimFunc, priority)]`` of one model, lowered as a compile job lowers it."""
    import tvm
    from bench_models import build_model, onnx_bytes
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from airflow_neo.local.frontends import IMPORTERS

    model, inputs, output_names, _ = build_model(name)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        path.write_bytes(onnx_bytes(model, inputs, output_names))
        imported = IMPORTERS["ONNX"](path, {k: list(v.shape) for k, v in inputs.items()}, None, log)
    from airflow_neo.local.schedules.lowering import lower

    mod = lower(imported.mod, target)
    with tvm.transform.PassContext(), target:
        marked = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    from airflow_neo.local.schedules.apply import kernel_key

    kernels = []
    for task in ms.relax_integration.extract_tasks(marked, target):
        func = task.dispatched[0]["main"]
        try:
            flops = float(tvm.s_tir.analysis.estimate_tir_flops(task.dispatched[0]))
        except Exception:  # noqa: BLE001 - only orders the work
            flops = 0.0
        kernels.append((kernel_key(func), task.task_name, func, float(task.weight) * max(flops, 1.0)))
    return kernels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(STANDARD_SET), help="comma-separated names from benchmarks/bench_models.py")
    parser.add_argument("--target", default="ml_c4", help="TargetDevice whose CPU this machine runs (default ml_c4)")
    parser.add_argument("--candidates", type=int, default=8, help="knob sets per kernel in total, over all runs")
    parser.add_argument("--pack", default=str(ROOT / "airflow_neo/local/configs/pack.json"))
    args = parser.parse_args(argv)

    import tvm

    from airflow_neo.local import tuning
    from airflow_neo.local.configs import JsonConfigStore, cpu_family
    from airflow_neo.local.configs.file import parse_records
    from airflow_neo.local.configs.pack import PACK_FORMAT
    from airflow_neo.local.files import atomic_write_json
    from airflow_neo.local.schedules.cpu import cpu_info
    from airflow_neo.local.targets import resolve_target
    from airflow_neo.local.tuning_configs import tune_configs

    resolved = resolve_target({"TargetDevice": args.target})
    reason = tuning.tunable_here(resolved.target, runs_here=resolved.runs_here())
    if reason:
        print(f"cannot measure {args.target} here: {reason}", file=sys.stderr)
        return 2
    cores = tuning._num_cores()
    target = tvm.target.Target({**resolved.target, "num-cores": cores})
    cpu = cpu_info(target)
    family = cpu_family(cpu.arch, cpu.vector_bits, cpu.fma)
    pack_path = Path(args.pack)
    pack = json.loads(pack_path.read_text()) if pack_path.exists() else {"format": PACK_FORMAT, "families": {}}
    if pack.get("tvm") and pack["tvm"].split(".")[:2] != tvm.__version__.split(".")[:2]:
        print(f"the pack was built with TVM {pack['tvm']}; this is {tvm.__version__}: start a new pack file", file=sys.stderr)
        return 2
    log = lambda line: print(line, flush=True)  # noqa: E731
    started = time.monotonic()
    pack["format"], pack["tvm"] = PACK_FORMAT, tvm.__version__
    run = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "family": family,
        "target": args.target,
        "models": [],
        "candidates_per_kernel": args.candidates,
        "measured": 0,
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores",
        "tvm": tvm.__version__,
    }
    pack.setdefault("provenance", []).append(run)
    with tempfile.TemporaryDirectory() as scratch:
        store = JsonConfigStore(scratch)
        store.merge(list(parse_records(pack["families"].get(family)).values()))
        session = tuning._Session(cores, log)
        session.start()
        try:
            for name in [m for m in args.models.split(",") if m]:
                t0 = time.monotonic()
                kernels = lowered_kernels(name, target, log)
                spent = tune_configs(kernels, target, session.builder, session.runner, store,
                                     args.candidates * len(kernels), log, cap=args.candidates)
                run["measured"] += sum(spent.values())
                run["models"].append(name)
                run["seconds"] = round(time.monotonic() - started)
                # written after every model: an interrupted run keeps what it measured
                pack["families"][family] = {key: r.to_json() for key, r in sorted(store.records().items())}
                atomic_write_json(pack_path, pack)
                log(f"== {name}: {len(kernels)} kernels, {sum(spent.values())} candidates measured in "
                    f"{time.monotonic() - t0:.0f} s")
        finally:
            session.close()
        records = store.records()
    faster = sum(1 for r in records.values() if r.useful() and r.default_secs and r.secs < r.default_secs)
    print(f"pack: {len(records)} workloads for {family} ({faster} faster than the default plan), "
          f"{run['measured']} candidates measured this run; {pack_path} ({pack_path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
