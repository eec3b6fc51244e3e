#!/usr/bin/env python
"""Benchmark of the local backend: compile time, tuning, cache, and artifact latency vs onnxruntime and torch.

One run, on one machine:

1. builds the reference architectures in-process with random weights (plain ``torch.nn``):
   ``transformer`` (2 transformer encoder layers, d=256, 4 heads, ff 1024, seq 128), ``mobilenetv2``
   and ``resnet18`` (224x224), exported to ONNX (``torch.onnx.export(dynamo=False)``) and packed as
   Neo model archives;
2. compiles each through the local backend exactly as a task does: a job in a job store, run by
   ``python -m airflow_neo.local.runner`` with the job's config (tuning budget and cache settings)
   in its environment (as :class:`~airflow_neo.hooks.local.LocalNeoHook` launches it): the *first
   compile* (fresh tuning database unless ``--database``), a *repeat compile* of the same model
   with the cache off (the records are applied, zero new trials), and a *cache hit* (a third job);
   wall time of each runner process, and the peak resident memory of the first compile's process
   tree (sampled every 0.2 s);
3. measures the median batch-1 latency of the artifact (TVM runtime), of onnxruntime on the same
   ONNX file and of torch eager on the same module, each engine in its own process with the same
   thread count, in interleaved rounds (the best round's median counts: the machine may be shared);
4. measures ``import airflow_neo.operators.neo`` after ``import airflow.sdk`` in fresh processes
   and asserts that it imports no tvm, onnx, onnxruntime or torch;
5. writes ``docs/benchmarks.md`` (tables, machine, date, budget) and ``docs/benchmarks.png``.

Usage::

    python benchmarks/bench_local.py --trials 256 --threads 2
    python benchmarks/bench_local.py --models resnet18 --trials 64 --out /tmp/bench

Needs the ``local`` and ``torch`` extras plus onnxruntime and matplotlib.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("transformer", "mobilenetv2", "resnet18")
SEED = 0
FORBIDDEN_AT_PARSE = ("tvm", "tvm_ffi", "onnx", "onnxruntime", "torch")


# ---------------------------------------------------------------------------------- the models


def _torch_models():
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        """ResNet-18 (He et al. 2016): 7x7 stem, 4 stages of 2 basic blocks, 1000 classes."""

        def __init__(self, classes: int = 1000):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, classes)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    def conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> list:
        return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers = [] if expand == 1 else conv_bn_relu6(cin, hidden, 1, 1)
            layers += conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
            layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        """MobileNetV2 (Sandler et al. 2018), width 1.0, 1000 classes."""

        def __init__(self, classes: int = 1000):
            super().__init__()
            config = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
            layers, cin = conv_bn_relu6(3, 32, 3, 2), 32
            for expand, cout, repeats, stride in config:
                for i in range(repeats):
                    layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                    cin = cout
            layers += conv_bn_relu6(cin, 1280, 1, 1)
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(1280, classes)

        def forward(self, x):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    class Encoder(nn.Module):
        """2 post-norm transformer encoder layers: d=256, 4 heads, feed-forward 1024, ReLU."""

        def __init__(self, d: int = 256, heads: int = 4, ff: int = 1024, layers: int = 2):
            super().__init__()
            layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

        def forward(self, x):
            return self.encoder(x)

    return torch, {"resnet18": ResNet18, "mobilenetv2": MobileNetV2, "transformer": Encoder}


INPUT_SHAPES = {"resnet18": [1, 3, 224, 224], "mobilenetv2": [1, 3, 224, 224], "transformer": [1, 128, 256]}


def build_model(name: str):
    """The module (eval mode, seeded random weights and batch-norm statistics) and its input shape."""
    torch, classes = _torch_models()
    torch.manual_seed(SEED)
    model = classes[name]().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.8, 1.2)
    return model, INPUT_SHAPES[name]


def example_input(shape):
    import numpy as np

    return np.random.default_rng(SEED).standard_normal(shape).astype("float32")


def export_onnx(name: str, path: Path) -> None:
    torch, _ = _torch_models()
    model, shape = build_model(name)
    buffer = io.BytesIO()
    # not under no_grad: there nn.TransformerEncoderLayer takes its fused fast path, which ONNX cannot export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(example_input(shape)),), buffer, input_names=["input0"],
                          output_names=["output0"], opset_version=17, dynamo=False)
    path.write_bytes(buffer.getvalue())


def write_archive(onnx_path: Path, archive: Path) -> None:
    data = onnx_path.read_bytes()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------- latency workers


def _latency_worker(args) -> None:
    """One engine, one model, in this process: print {"median_ms", "output"} as JSON."""
    import numpy as np

    shape = INPUT_SHAPES[args.model]
    data = example_input(shape)
    if args.engine == "tvm":
        from airflow_neo import runtime

        model = runtime.load(args.artifact)

        def infer():
            return model.run({"input0": data})[0]
    elif args.engine == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])

        def infer():
            return session.run(None, {"input0": data})[0]
    else:
        import torch

        torch.set_num_threads(args.threads)
        model, _ = build_model(args.model)
        tensor = torch.from_numpy(data)

        def infer():
            with torch.inference_mode():
                return model(tensor).numpy()

    for _ in range(args.warmup):
        out = infer()
    times = []
    deadline = time.monotonic() + args.max_seconds
    for _ in range(args.iters):
        start = time.perf_counter()
        out = infer()
        times.append(time.perf_counter() - start)
        if time.monotonic() > deadline and len(times) >= 10:
            break
    out = np.asarray(out, dtype="float32").reshape(-1)
    print(json.dumps({"median_ms": statistics.median(times) * 1000, "runs": len(times), "output": out[:4096].tolist()}))


def measure_latency(engine: str, model: str, threads: int, *, artifact=None, onnx=None, iters=50) -> dict:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--_latency", engine, "--model", model, "--threads", str(threads),
               "--iters", str(iters)]
    if artifact:
        command += ["--artifact", str(artifact)]
    if onnx:
        command += ["--onnx", str(onnx)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{engine} latency worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------- compile jobs


def _request(name: str, archive: Path, out: Path, mcpu: str | None, max_runtime: int) -> dict:
    output = {"S3OutputLocation": f"file://{out}", "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}
    if mcpu:
        output["CompilerOptions"] = json.dumps({"mcpu": mcpu})
    return {
        "CompilationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/benchmark",
        "InputConfig": {"S3Uri": f"file://{archive}", "Framework": "ONNX",
                        "DataInputConfig": json.dumps({"input0": INPUT_SHAPES[archive.stem.split(".")[0]]})},
        "OutputConfig": output,
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }


def run_compile_job(store_path: Path, request: dict, settings, threads: int) -> dict:
    """Record the job and run it with ``python -m airflow_neo.local.runner`` (as the hook does); wall
    time, the peak RSS of the runner's process tree, and the job's payload and metadata."""
    import psutil

    from airflow_neo.local.config import LocalJobConfig
    from airflow_neo.local.store import JobStore

    store = JobStore(store_path)
    store.create(request)
    config = LocalJobConfig(store=str(store_path), memory_limit_bytes=None, compile=settings)
    env = dict(os.environ, **config.to_env(), TVM_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [sys.executable, "-m", "airflow_neo.local.runner", "--store", str(store_path), "--job",
               request["CompilationJobName"]]
    log_path = store.log_path(request["CompilationJobName"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        peak = 0
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                total = parent.memory_info().rss
                for child in parent.children(recursive=True):
                    try:
                        total += child.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.2)
    wall = time.perf_counter() - start
    name = request["CompilationJobName"]
    payload = store.describe(name)
    if payload["CompilationJobStatus"] != "COMPLETED":
        raise RuntimeError(f"job {name} ended {payload['CompilationJobStatus']}: {payload.get('FailureReason')}\n"
                           f"{log_path.read_text()[-3000:]}")
    return {
        "wall_s": wall,
        "peak_rss_mb": peak / 2**20,
        "payload": payload,
        "metadata": store.compile_metadata(name) or {},
        "log": log_path.read_text(),
        "artifact": payload["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://"),
    }


# ---------------------------------------------------------------------------------- import cost


IMPORT_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
import airflow_neo.operators.neo
t2 = time.perf_counter()
heavy = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)
print(json.dumps({"airflow_sdk_ms": (t1 - t0) * 1000, "operators_ms": (t2 - t1) * 1000, "heavy": heavy}))
"""


def measure_import(runs: int = 5) -> dict:
    code = IMPORT_PROBE.replace("{FORBIDDEN!r}", repr(FORBIDDEN_AT_PARSE))
    samples = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-2000:])
        samples.append(json.loads(result.stdout.strip().splitlines()[-1]))
    heavy = sorted({m for sample in samples for m in sample["heavy"]})
    assert not heavy, f"importing airflow_neo.operators.neo imported {heavy}"
    return {
        "operators_ms": statistics.median(s["operators_ms"] for s in samples),
        "airflow_sdk_ms": statistics.median(s["airflow_sdk_ms"] for s in samples),
        "heavy": heavy,
        "runs": runs,
    }


# ---------------------------------------------------------------------------------- the run


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from tvm.target import codegen

        llvm_cpu = str(codegen.llvm_get_system_cpu())
    except Exception:  # noqa: BLE001
        llvm_cpu = None
    import importlib.metadata as md

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "llvm_cpu": llvm_cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("apache-tvm", "apache-tvm-ffi", "onnxruntime", "torch", "onnx")},
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def benchmark_model(name: str, args, work: Path, settings_cls, log) -> dict:
    import numpy as np

    model_dir = work / name
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = model_dir / f"{name}.onnx"
    archive = model_dir / f"{name}.tar.gz"
    export_onnx(name, onnx_path)
    write_archive(onnx_path, archive)
    store_path = work / "state" / "jobs.sqlite"
    database = args.database or str(work / "tuning")
    cache_dir = str(work / "cache")
    tuned = settings_cls(tuning_trials=args.trials, tuning_database=database, cache_dir=cache_dir,
                         cache_max_bytes=4 * 1024**3)
    no_cache = settings_cls(tuning_trials=args.trials, tuning_database=database, cache_dir=cache_dir, cache_max_bytes=0)
    tag = f"{int(time.time())}"
    result = {"model": name, "onnx_bytes": onnx_path.stat().st_size, "load_before": _load(), "onnx": str(onnx_path)}

    log(f"[{name}] first compile ({args.trials} trials) ...")
    first = run_compile_job(store_path, _request(f"{name}-first-{tag}", archive, model_dir / "first", args.mcpu,
                                                 args.max_runtime), no_cache, args.threads)
    tuning = first["metadata"].get("tuning") or {}
    result["artifact"] = first["artifact"]
    result["first"] = {"wall_s": first["wall_s"], "peak_rss_mb": first["peak_rss_mb"],
                       "new_trials": tuning.get("new_trials"), "tasks": tuning.get("tasks"),
                       "applied": tuning.get("applied"), "estimated_ms": tuning.get("estimated_latency_ms"),
                       "tuning_s": tuning.get("seconds")}
    result["progress"] = [line.split("[compiler] ", 1)[1] for line in first["log"].splitlines()
                          if "[compiler] tuning" in line]
    log(f"[{name}] first compile {first['wall_s']:.0f} s, {tuning.get('new_trials')} trials, "
        f"peak RSS {first['peak_rss_mb']:.0f} MiB")

    log(f"[{name}] repeat compile (cache off) ...")
    repeat = run_compile_job(store_path, _request(f"{name}-repeat-{tag}", archive, model_dir / "repeat", args.mcpu,
                                                  args.max_runtime), no_cache, args.threads)
    result["repeat"] = {"wall_s": repeat["wall_s"], "new_trials": (repeat["metadata"].get("tuning") or {}).get("new_trials")}
    log(f"[{name}] repeat compile {repeat['wall_s']:.1f} s, {result['repeat']['new_trials']} new trials")

    # prime the cache with the repeat's artifact (a miss stores it), then time a hit
    prime = run_compile_job(store_path, _request(f"{name}-prime-{tag}", archive, model_dir / "prime", args.mcpu,
                                                 args.max_runtime), tuned, args.threads)
    hit = run_compile_job(store_path, _request(f"{name}-hit-{tag}", archive, model_dir / "hit", args.mcpu,
                                               args.max_runtime), tuned, args.threads)
    assert "compile cache hit" in hit["log"], hit["log"][-2000:]
    internal = None
    for line in hit["log"].splitlines():
        if "phase timings:" in line and "total" in line:
            internal = float(line.rsplit("total", 1)[1].split()[0])
    result["cache_hit"] = {"wall_s": hit["wall_s"], "runner_total_s": internal,
                           "prime_wall_s": prime["wall_s"],
                           "same_bytes": Path(hit["artifact"]).read_bytes() == Path(prime["artifact"]).read_bytes()}
    log(f"[{name}] cache hit {hit['wall_s']:.2f} s (runner process), {internal} s inside the runner")

    measure_all(result, args)
    result["load_after"] = _load()
    ms = result["latency_ms"]
    log(f"[{name}] latency tvm {ms['tvm']:.2f} ms, onnxruntime {ms['onnxruntime']:.2f} ms, torch {ms['torch']:.2f} ms")
    return result


def measure_all(result: dict, args) -> None:
    """Latency of the three engines for one model, in ``args.rounds`` interleaved rounds."""
    import numpy as np

    latency: dict[str, list[float]] = {"tvm": [], "onnxruntime": [], "torch": []}
    outputs = {}
    for _ in range(args.rounds):
        for engine in latency:
            measured = measure_latency(engine, result["model"], args.threads, artifact=result["artifact"],
                                       onnx=result["onnx"], iters=args.iters)
            latency[engine].append(measured["median_ms"])
            outputs[engine] = np.asarray(measured["output"], dtype="float32")
    result["latency_ms"] = {engine: min(values) for engine, values in latency.items()}
    result["latency_rounds_ms"] = latency
    result["latency_load"] = _load()
    result["max_abs_diff_vs_ort"] = float(np.max(np.abs(outputs["tvm"] - outputs["onnxruntime"])))


def remeasure(path: Path, args, log) -> int:
    """Measure the latencies of an earlier run's artifacts again (when the machine is quieter) and
    rewrite its report; the compile numbers stay those of the run."""
    data = json.loads(path.read_text())
    meta = data["meta"]
    for result in data["results"]:
        result.setdefault("first_pass", {})["latency_rounds_ms"] = result.get("latency_rounds_ms")
        result["first_pass"]["load_after"] = result.get("load_after")
        measure_all(result, args)
        ms = result["latency_ms"]
        log(f"[{result['model']}] latency tvm {ms['tvm']:.2f} ms, onnxruntime {ms['onnxruntime']:.2f} ms, "
            f"torch {ms['torch']:.2f} ms (load {result['latency_load']})")
    meta["remeasured"] = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_end": _load()}
    write_report(data["results"], meta, Path(args.out))
    return 0


BEGIN_MARK = "<!-- bench_local.py: begin (generated; edits between these marks are overwritten) -->"
END_MARK = "<!-- bench_local.py: end -->"


def _splice(existing: str, section: str) -> str:
    """``existing`` with this script's section replaced; the other sections of the page (the
    trigger benchmark's, for one) are kept as they are."""
    block = f"{BEGIN_MARK}\n{section.rstrip()}\n{END_MARK}"
    if BEGIN_MARK in existing and END_MARK in existing:
        head, _, rest = existing.partition(BEGIN_MARK)
        _, _, tail = rest.partition(END_MARK)
        return head + block + tail
    trigger_section = existing.find("\n## Trigger at scale")
    kept = existing[trigger_section:] if trigger_section >= 0 else ""
    return f"# Benchmarks\n\n{block}\n{kept}"


def write_report(results: list[dict], meta: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "## Local backend: compile speed and artifact latency",
        "",
        f"Generated by `benchmarks/bench_local.py` on {meta['date']} "
        f"(`{meta['command']}`).",
        "",
        f"- Machine: {meta['machine']['cpu']} (LLVM CPU `{meta['machine']['llvm_cpu']}`), "
        f"{meta['machine']['cores']} cores, {meta['machine']['memory_gb']} GB; Python {meta['machine']['python']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["machine"]["versions"].items()),
        f"- Tuning budget: **{meta['trials']} trials per model** (`tuning_trials`), one tuning database shared by "
        f"the models of the run{' (pre-existing: ' + meta['database'] + ')' if meta['database'] else ' (empty at the start)'}; "
        f"target TargetPlatform LINUX/X86_64 with CompilerOptions mcpu `{meta['mcpu']}`",
        f"- Threads: {meta['threads']} for every engine (TVM_NUM_THREADS, onnxruntime intra_op_num_threads, "
        "torch.set_num_threads); batch 1; latency = median of up to "
        f"{meta['iters']} runs after warm-up, best of {meta['rounds']} interleaved rounds, each engine in its own process"
        + (f"; latencies re-measured on {meta['remeasured']['date']} (`--remeasure`) with the run's artifacts, "
           "the first pass having met a busy machine" if meta.get("remeasured") else ""),
        f"- Load average (1/5/15 min) at the start {meta['load_start']}, at the end {meta['load_end']}: the machine "
        "may be shared, which slows tuning and adds noise to its measurements",
        "",
        "### Latency (ms, batch 1)",
        "",
        "| model | TVM artifact | onnxruntime | torch eager | TVM / onnxruntime | TVM / torch | max abs diff vs ORT "
        "| load avg while measured |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ms = r["latency_ms"]
        lines.append(
            f"| {r['model']} | {ms['tvm']:.2f} | {ms['onnxruntime']:.2f} | {ms['torch']:.2f} | "
            f"**{ms['tvm'] / ms['onnxruntime']:.2f}x** | {ms['tvm'] / ms['torch']:.2f}x | {r['max_abs_diff_vs_ort']:.1e} "
            f"| {r.get('latency_load', r.get('load_after'))} |"
        )
    lines += [
        "",
        "### Compile",
        "",
        "| model | first compile (s) | trials run | kernels (tuned/all) | tuner's estimate (ms) | peak RSS first compile (MiB) "
        "| repeat compile, cache off (s) | new trials on repeat | cache hit: runner process (s) | cache hit: inside the runner (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        f, rep, hit = r["first"], r["repeat"], r["cache_hit"]
        estimate = f"{f['estimated_ms']:.1f}" if f.get("estimated_ms") else "-"
        lines.append(
            f"| {r['model']} | {f['wall_s']:.0f} | {f['new_trials']} | {f['applied']}/{f['tasks']} | {estimate} | "
            f"{f['peak_rss_mb']:.0f} | {rep['wall_s']:.1f} | {rep['new_trials']} | {hit['wall_s']:.2f} | "
            f"{hit['runner_total_s'] if hit['runner_total_s'] is not None else '-'} |"
        )
    imp = meta["import"]
    lines += [
        "",
        "Targets (issue 4): artifact <= 1.0x onnxruntime with a first compile <= 10 min per model on 2 cores; "
        "repeat compile <= 30 s; cache hit <= 1 s. The cache-hit time of the runner process includes starting "
        "Python and importing the runner; the job itself (fetch, lookup, publish, complete) is the last column.",
        "",
        "### DAG-parse cost",
        "",
        f"`import airflow_neo.operators.neo` after `import airflow.sdk`: **{imp['operators_ms']:.1f} ms** (median of "
        f"{imp['runs']} fresh processes; target <= 50 ms; `import airflow.sdk` itself {imp['airflow_sdk_ms']:.0f} ms). "
        f"Modules among {', '.join(FORBIDDEN_AT_PARSE)} imported: {', '.join(imp['heavy']) or 'none'} (asserted).",
        "",
        "### Tuning progress of the first compiles",
        "",
    ]
    for r in results:
        lines += [f"<details><summary>{r['model']}</summary>", "", "```"] + r["progress"] + ["```", "", "</details>", ""]
    lines += ["![latency and compile time](benchmarks.png)", ""]
    report = out_dir / "benchmarks.md"
    report.write_text(_splice(report.read_text() if report.exists() else "", "\n".join(lines)))
    (out_dir / "benchmarks.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    _plot(results, meta, out_dir / "benchmarks.png")


def _plot(results: list[dict], meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.27
    for i, (engine, label) in enumerate((("tvm", "TVM artifact (tuned)"), ("onnxruntime", "onnxruntime"), ("torch", "torch eager"))):
        values = [r["latency_ms"][engine] for r in results]
        bars = left.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=label)
        left.bar_label(bars, fmt="%.1f", fontsize=7)
    left.set_xticks(range(len(names)), names)
    left.set_ylabel("median latency, batch 1 (ms)")
    left.set_title(f"Latency, {meta['threads']} threads")
    left.set_ylim(0, max(max(r["latency_ms"].values()) for r in results) * 1.2)
    left.legend(fontsize=8, loc="upper left")
    parts = (("first compile", lambda r: r["first"]["wall_s"]), ("repeat (cache off)", lambda r: r["repeat"]["wall_s"]),
             ("cache hit", lambda r: r["cache_hit"]["wall_s"]))
    for i, (label, get) in enumerate(parts):
        values = [get(r) for r in results]
        bars = right.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=label)
        right.bar_label(bars, fmt="%.1f", fontsize=7)
    right.set_yscale("log")
    right.set_ylim(0.1, max(r["first"]["wall_s"] for r in results) * 12)  # room for the legend
    right.set_xticks(range(len(names)), names)
    right.set_ylabel("wall time (s, log scale)")
    right.set_title(f"Compile, {meta['trials']} tuning trials per model")
    right.axhline(600, color="grey", linestyle="--", linewidth=0.8)
    right.legend(fontsize=8, loc="upper left", ncol=3)
    fig.suptitle(f"airflow-neo local backend on {meta['machine']['cpu']}, {meta['machine']['cores']} cores ({meta['date']})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=256, help="tuning trials per model (default 256)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=2, help="threads of every engine (default 2)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where benchmarks.md/.png/.json go (default docs/)")
    parser.add_argument("--work", default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--database", default=None, help="an existing tuning database root to start from")
    parser.add_argument("--mcpu", default=None, help="CompilerOptions mcpu (default: this machine's CPU, from LLVM)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds per engine (default 3)")
    parser.add_argument("--iters", type=int, default=50, help="timed runs per latency measurement (default 50)")
    parser.add_argument("--max-runtime", type=int, default=1800, help="MaxRuntimeInSeconds of the compile jobs")
    parser.add_argument("--remeasure", default=None, metavar="JSON",
                        help="only measure the latencies of an earlier run (its benchmarks.json) again and rewrite the report")
    # internal: one latency measurement in a fresh process
    parser.add_argument("--_latency", dest="latency_engine", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.latency_engine:
        args.engine = args.latency_engine
        _latency_worker(args)
        return 0

    from airflow_neo.local.settings import CompileSettings

    def log(message: str) -> None:
        print(f"{dt.datetime.now():%H:%M:%S} {message}", flush=True)

    if args.remeasure:
        return remeasure(Path(args.remeasure), args, log)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}")
    machine = _machine()
    args.mcpu = args.mcpu or machine["llvm_cpu"]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="airflow-neo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow-home"))

    log(f"work dir {work}; {machine['cpu']}, {machine['cores']} cores; load {_load()}")
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_local.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine, "trials": args.trials, "threads": args.threads, "mcpu": args.mcpu,
        "database": args.database, "rounds": args.rounds, "iters": args.iters, "load_start": _load(),
    }
    log("import cost of airflow_neo.operators.neo ...")
    meta["import"] = measure_import()
    log(f"import airflow_neo.operators.neo: {meta['import']['operators_ms']:.1f} ms; heavy modules: none")
    results = []
    for name in models:
        results.append(benchmark_model(name, args, work, CompileSettings, log))
        meta["load_end"] = _load()
        write_report(results, meta, Path(args.out))  # after each model, so a cut-off run keeps its numbers
    log(f"wrote {Path(args.out) / 'benchmarks.md'} and benchmarks.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
