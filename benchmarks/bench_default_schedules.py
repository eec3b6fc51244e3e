#!/usr/bin/env python
"""Default CPU schedules: artifact latency without tuning, against today's path and onnxruntime.

For each model (plain ``torch.nn`` definitions, seeded random weights, exported with
``torch.onnx.export(dynamo=False)``):

* **today**: ONNX -> ``DecomposeOpsForInference`` -> zero pipeline -> ``tvm.compile`` (what
  ``airflow_neo.local.compiler._build`` does without tuning);
* **scheduled**: the same plus ``apply_default_schedules`` before ``tvm.compile``;
* **onnxruntime** on the same ONNX file.

All three run in this one process, side by side, with the same thread count (``TVM_NUM_THREADS``
and ``intra_op_num_threads``), batch 1, in interleaved rounds; each row reports the best round's
median and the 1-minute load average around the timing (the machine may be shared: on an
oversubscribed machine onnxruntime's spinning thread pool loses more than TVM's, so compare
``--threads 1`` too). Today's path is slow (seconds per ResNet-50 inference), so it gets fewer
runs; ``--skip-today`` leaves it out. ``compile s`` is import + zero pipeline + schedules +
``tvm.compile``; ``(today)`` the same without the schedules.

Usage::

    python benchmarks/bench_default_schedules.py                      # all models
    python benchmarks/bench_default_schedules.py --models resnet18 --skip-today
    python benchmarks/bench_default_schedules.py --json /tmp/schedules.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet18", "resnet50", "mobilenetv2", "transformer")
SEED = 0


# ---------------------------------------------------------------------------------- the models


def _torch_models():
    import torch
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            )
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))

    class ResNet(nn.Module):
        """ResNet-18 (basic blocks) or ResNet-50 (bottlenecks), 224x224, 1000 classes."""

        def __init__(self, deep: bool):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            stages = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)) if deep else ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))
            for width, count, stride in stages:
                for i in range(count):
                    block = Bottleneck(cin, width, stride if i == 0 else 1) if deep else Basic(cin, width, stride if i == 0 else 1)
                    blocks.append(block)
                    cin = width * 4 if deep else width
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    def cbr6(cin, cout, kernel, stride, groups=1):
        return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = ([] if expand == 1 else cbr6(cin, hidden, 1, 1)) + cbr6(hidden, hidden, 3, stride, hidden)
            self.body = nn.Sequential(*layers, nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        """MobileNetV2, width 1.0, 224x224, 1000 classes."""

        def __init__(self):
            super().__init__()
            config = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
            layers, cin = cbr6(3, 32, 3, 2), 32
            for expand, cout, count, stride in config:
                for i in range(count):
                    layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                    cin = cout
            self.features = nn.Sequential(*layers, *cbr6(cin, 1280, 1, 1))
            self.classifier = nn.Linear(1280, 1000)

        def forward(self, x):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    class Encoder(nn.Module):
        """2 post-norm transformer encoder layers: d=256, 4 heads, feed-forward 1024, seq 128."""

        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

        def forward(self, x):
            return self.encoder(x)

    return torch, {
        "resnet18": (lambda: ResNet(False), [1, 3, 224, 224]),
        "resnet50": (lambda: ResNet(True), [1, 3, 224, 224]),
        "mobilenetv2": (MobileNetV2, [1, 3, 224, 224]),
        "transformer": (Encoder, [1, 128, 256]),
    }


def export_onnx(name: str, path: Path) -> list[int]:
    import numpy as np

    torch, models = _torch_models()
    make, shape = models[name]
    torch.manual_seed(SEED)
    model = make().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.8, 1.2)
    example = torch.from_numpy(np.random.default_rng(SEED).standard_normal(shape).astype("float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # not under no_grad: there nn.TransformerEncoderLayer takes a fused path ONNX cannot export
        torch.onnx.export(model, (example,), str(path), input_names=["input0"], output_names=["output0"],
                          opset_version=17, dynamo=False)
    return shape


# ---------------------------------------------------------------------------------- building


def host_target():
    import tvm
    from tvm.target import codegen

    return tvm.target.Target({"kind": "llvm", "mtriple": str(codegen.llvm_get_system_triple()),
                              "mcpu": str(codegen.llvm_get_system_cpu())})


def build(onnx_path: Path, shape, target, *, schedules: bool, log=print):
    """Mirror of ``compiler._build`` (no tuning), with or without the default-schedule step.

    Returns ``(vm, seconds, report)``."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    started = time.monotonic()
    mod = from_onnx(onnx.load(str(onnx_path)), {"input0": shape})
    mod = relax.transform.DecomposeOpsForInference()(mod)
    with target:
        mod = relax.get_pipeline("zero")(mod)
    report = None
    if schedules:
        from airflow_neo.local.schedules import apply_default_schedules

        mod, report = apply_default_schedules(mod, target, log=log)
    executable = tvm.compile(mod, target=target)
    seconds = time.monotonic() - started
    return relax.VirtualMachine(executable, tvm.cpu()), seconds, report


# ---------------------------------------------------------------------------------- timing


def _timer(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(engines: dict, runs: dict, rounds: int) -> dict[str, float]:
    """Best-round median (ms) per engine, the engines interleaved round by round."""
    best = {name: float("inf") for name in engines}
    for fn in engines.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in engines.items():
            time.sleep(0.05)  # let the other engine's spinning threads go idle
            best[name] = min(best[name], _timer(fn, runs[name]))
    return best


def bench_model(name: str, work: Path, args) -> dict:
    import numpy as np
    import onnxruntime as ort
    import tvm

    onnx_path = work / f"{name}.onnx"
    shape = export_onnx(name, onnx_path)
    data = np.random.default_rng(SEED).standard_normal(shape).astype("float32")
    target = host_target()
    row: dict = {"model": name}
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input0": data})[0]
    tensor = tvm.runtime.tensor(data)
    vm, row["compile_s"], report = build(onnx_path, shape, target, schedules=True, log=lambda line: print("  " + line))
    row["schedules_s"] = report["seconds"]
    row["rules"] = report["counts"]
    out = vm["main"](tensor).numpy()
    row["max_abs_err"] = float(np.abs(out - reference).max())
    engines = {"scheduled": lambda: vm["main"](tensor), "onnxruntime": lambda: session.run(None, {"input0": data})}
    runs = {"scheduled": args.runs, "onnxruntime": args.runs}
    if not args.skip_today:
        today, row["today_compile_s"], _ = build(onnx_path, shape, target, schedules=False)
        engines["today"] = lambda: today["main"](tensor)
        runs["today"] = args.today_runs
    row["load_before"] = round(os.getloadavg()[0], 2)
    best = measure(engines, runs, args.rounds)
    row["load_after"] = round(os.getloadavg()[0], 2)
    row.update({f"{engine}_ms": round(ms, 3) for engine, ms in best.items()})
    row["ratio"] = round(best["scheduled"] / best["onnxruntime"], 2)
    return row


def print_table(rows: list[dict]) -> None:
    header = (f"{'model':<12} {'today ms':>10} {'scheduled ms':>13} {'onnxruntime ms':>15} {'ratio':>6} "
              f"{'compile s':>10} {'(today)':>8} {'max err':>8} {'load':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        today = f"{r['today_ms']:.1f}" if "today_ms" in r else "-"
        today_c = f"{r['today_compile_s']:.1f}" if "today_compile_s" in r else "-"
        print(f"{r['model']:<12} {today:>10} {r['scheduled_ms']:>13.2f} {r['onnxruntime_ms']:>15.2f} {r['ratio']:>6.2f} "
              f"{r['compile_s']:>10.1f} {today_c:>8} {r['max_abs_err']:>8.1e} {r['load_before']:>4.1f}-{r['load_after']:<4.1f}")
    ratios = [r["ratio"] for r in rows]
    if ratios:
        print(f"scheduled / onnxruntime: median {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per round (scheduled, onnxruntime)")
    parser.add_argument("--today-runs", type=int, default=2, help="timed runs per round of today's path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-today", action="store_true", help="leave out today's (slow) unscheduled path")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before the TVM runtime starts its pool
    sys.path.insert(0, str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-schedules-") as tmp:
        for name in args.models:
            print(f"{name}:", flush=True)
            rows.append(bench_model(name, Path(tmp), args))
            print(f"  {json.dumps(rows[-1])}", flush=True)
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
