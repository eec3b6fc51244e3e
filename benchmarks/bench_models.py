#!/usr/bin/env python
"""Real architectures through the local backend with its default schedules: compile and latency vs onnxruntime.

For each model of the set (random weights, batch 1, static shapes):

* torchvision ResNet-18, ResNet-50, MobileNetV2, MobileNetV3-Large, EfficientNet-B0, ConvNeXt-Tiny
  (224x224);
* BERT-base and DistilBERT encoders built from ``transformers`` configs (sequence length 128,
  inputs ``input_ids`` and ``attention_mask`` with 16 padding positions, output the last hidden
  state);
* a few ``timm`` architectures not named above (``timm_*``: ResNet-26-D, EfficientNet-Lite0,
  RegNetX-200MF, MixNet-S);

the script

1. exports the model to ONNX (``torch.onnx.export(..., dynamo=False)``, opset 17) in its own process
   and packs it as a Neo model archive (``model.tar.gz`` holding ``model.onnx``);
2. compiles it through the local backend the way a task does
   (:class:`airflow_neo.hooks.local.LocalNeoHook` ``create_compilation_job`` then
   ``wait_for_compilation_job``: a detached runner and its compile child), once for TargetPlatform
   LINUX/X86_64 (generic x86-64) and twice for the TargetDevice matching this CPU (``ml_c5`` with
   AVX-512, else ``ml_c4``: Haswell, AVX2): with the shipped tuning pack (the default, target
   ``device``) and without it (``AIRFLOW__NEO__TUNING_PACK=False`` in that compile's environment,
   target ``device_nopack``), all with no tuning (0 trials, a fresh empty tuning
   database per compile) and the compile cache off (``AIRFLOW__NEO__CACHE_MAX_BYTES=0``); each
   compile runs in its own process with a time limit, so one failure does not stop the rest; it
   records the wall time, the peak RSS of the runner's process tree (sampled from /proc), the
   job's status and FailureReason, the compiler's phase timings and the artifact's ``schedules``
   section (kernels per schedule rule and per origin: pack / default / none...);
3. measures the batch-1 latency of each of the three artifacts (``airflow_neo.runtime.load(...).run(...)``,
   ``TVM_NUM_THREADS``) and of onnxruntime (``intra_op_num_threads``) on the same ONNX file and
   the same inputs, each engine in its own process with the same thread count, in interleaved
   rounds (the best round's median counts: the machine may be shared), and the largest absolute
   difference of the first output against onnxruntime's;
4. profiles the TargetDevice artifact with the pack once (a relax VM instrument) and keeps the
   kernels that take the most time, with the schedule rule and origin each got;
5. writes ``benchmarks/results_models.json`` (summary: goal 1 = pack off over all models, goal 2 =
   pack on over :data:`PACK_MODELS` and over the others, the generic platform), its section of ``docs/benchmarks.md`` (between
   ``<!-- bench_models:start -->`` and ``<!-- bench_models:end -->``; the rest of the page is kept)
   and ``docs/benchmarks_models.png``.

Usage::

    python benchmarks/bench_models.py                              # the whole set
    python benchmarks/bench_models.py --models resnet18,bert_base  # a subset (merged into the results)
    python benchmarks/bench_models.py --report-only                # rewrite the docs from the JSON

Needs the ``local``, ``torch`` and ``bench`` extras (onnxruntime, matplotlib, torchvision,
transformers, timm). PyPI's torchvision for torch 2.13 is a CUDA build whose C++ ops do not load
with the CPU torch wheel; the classification models never call them, so this script defines the
two op schemas torchvision's import needs (``torchvision::nms``/``qnms``) before importing it.
Install transformers/timm with ``--no-deps`` (plus tokenizers, safetensors, huggingface_hub, tqdm)
so that pip does not replace the CPU torch wheel. No weights are downloaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results_models.json"
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks_models.png"
BEGIN_MARK = "<!-- bench_models:start -->"
END_MARK = "<!-- bench_models:end -->"
SEED = 0
SEQ_LEN = 128
PADDING = 16  # attention_mask zeros at the end, so the traced graph keeps the mask path

#: name -> (source, constructor name, description)
MODELS: dict[str, tuple[str, str, str]] = {
    "resnet18": ("torchvision", "resnet18", "ResNet-18"),
    "resnet50": ("torchvision", "resnet50", "ResNet-50"),
    "mobilenet_v2": ("torchvision", "mobilenet_v2", "MobileNetV2"),
    "mobilenet_v3_large": ("torchvision", "mobilenet_v3_large", "MobileNetV3-Large"),
    "efficientnet_b0": ("torchvision", "efficientnet_b0", "EfficientNet-B0"),
    "convnext_tiny": ("torchvision", "convnext_tiny", "ConvNeXt-Tiny"),
    "bert_base": ("transformers", "bert", "BERT-base encoder, seq 128"),
    "distilbert": ("transformers", "distilbert", "DistilBERT encoder, seq 128"),
    "timm_resnet26d": ("timm", "resnet26d", "ResNet-26-D (deep stem, avg-pool shortcut)"),
    "timm_efficientnet_lite0": ("timm", "efficientnet_lite0", "EfficientNet-Lite0 (ReLU6, no SE)"),
    "timm_regnetx_002": ("timm", "regnetx_002", "RegNetX-200MF (group convs)"),
    "timm_mixnet_s": ("timm", "mixnet_s", "MixNet-S (mixed depthwise kernels)"),
}
#: target -> (request kind, [neo] tuning_pack, words). "device" is what a user gets (the pack on, the
#: default); "device_nopack" is the same TargetDevice with AIRFLOW__NEO__TUNING_PACK=False in the compile's
#: environment (the default schedules alone); "platform" is generic x86-64 (the pack's CPU family does not
#: match it, so it gets no pack knobs either way).
TARGETS: dict[str, tuple[str, bool, str]] = {
    "device": ("device", True, "pack on"),
    "device_nopack": ("device", False, "pack off"),
    "platform": ("platform", True, "generic x86-64"),
}
#: the models the shipped x86-avx2 pack was built from (scripts/build_tuning_pack.py)
PACK_MODELS = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny")


# ---------------------------------------------------------------------------------- machine


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def device_for_cpu(flags: set[str]) -> str | None:
    """The TargetDevice whose CPU this machine can run: ml_c5 (Skylake-SP, AVX-512) or ml_c4 (Haswell, AVX2)."""
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags:
        return "ml_c5"
    if {"avx2", "fma", "f16c", "bmi1", "bmi2", "movbe"} <= flags:
        return "ml_c4"
    return None


def machine() -> dict:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "avx2": "avx2" in flags,
        "avx512": sorted(f for f in flags if f.startswith("avx512")),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in (
            "apache-tvm", "apache-tvm-ffi", "onnxruntime", "onnx", "torch", "torchvision", "transformers", "timm")},
    }


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------- export (own process)


def _import_torchvision():
    """torchvision's Python model code, without its C++ ops (PyPI's wheel is a CUDA build)."""
    from airflow_neo.local.torch_import import register_torchvision_ops

    register_torchvision_ops()
    return sys.modules["torchvision"]


def build_model(name: str):
    """(module in eval mode, {input name: numpy array}, [output names], notes)."""
    import numpy as np
    import torch

    source, ctor, _ = MODELS[name]
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    notes = {}
    if source in ("torchvision", "timm"):
        _import_torchvision()
        if source == "torchvision":
            import torchvision

            model = getattr(torchvision.models, ctor)(weights=None)
        else:
            import timm

            model = timm.create_model(ctor, pretrained=False)
        model.eval()
        with torch.no_grad():  # random but non-trivial batch-norm statistics
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.8, 1.2)
        inputs = {"input0": rng.standard_normal((1, 3, 224, 224)).astype("float32")}
        return model, inputs, ["output0"], notes
    _import_torchvision()  # transformers imports torchvision when it is installed
    import transformers

    if ctor == "bert":
        config = transformers.BertConfig()
        encoder = transformers.BertModel(config, add_pooling_layer=False)
    else:
        config = transformers.DistilBertConfig()
        encoder = transformers.DistilBertModel(config)
    notes["attn_implementation"] = getattr(config, "_attn_implementation", None)
    notes["transformers"] = transformers.__version__

    class Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    model = Encoder(encoder).eval()
    mask = np.ones((1, SEQ_LEN), dtype="int64")
    mask[:, SEQ_LEN - PADDING:] = 0
    inputs = {
        "input_ids": rng.integers(0, config.vocab_size, (1, SEQ_LEN)).astype("int64"),
        "attention_mask": mask,
    }
    return model, inputs, ["last_hidden_state"], notes


def onnx_bytes(model, inputs: dict, output_names: list[str]) -> bytes:
    """``model`` exported to ONNX (opset 17, the TorchScript exporter) for ``inputs`` ({name: numpy array})."""
    import torch

    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tensors, buffer, input_names=list(inputs), output_names=output_names,
                          opset_version=17, dynamo=False)
    return buffer.getvalue()


def _export_worker(args) -> None:
    """Export one model to ONNX and pack it; print a JSON summary."""
    import numpy as np
    import torch

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, inputs, output_names, notes = build_model(args.model)
    params = sum(p.numel() for p in model.parameters())
    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    onnx_path = out / "model.onnx"
    onnx_path.write_bytes(onnx_bytes(model, inputs, output_names))
    np.savez(out / "inputs.npz", **inputs)
    with torch.no_grad():
        reference = model(*tensors)
    np.save(out / "torch_output.npy", np.asarray(reference.detach().numpy(), dtype="float32"))
    archive = out / "model.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(onnx_path, arcname="model.onnx")
    print(json.dumps({
        "export_s": time.perf_counter() - start,
        "params_m": params / 1e6,
        "onnx_mb": onnx_path.stat().st_size / 2**20,
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in inputs.items()},
        "notes": notes,
    }))


# ---------------------------------------------------------------------------------- compile (own process)


def _request(job: str, archive: Path, out: Path, inputs: dict, target: str, device: str | None, limit: int) -> dict:
    output = {"S3OutputLocation": f"file://{out}"}
    if TARGETS[target][0] == "device":
        output["TargetDevice"] = device
    else:
        output["TargetPlatform"] = {"Os": "LINUX", "Arch": "X86_64"}
    return {
        "CompilationJobName": job,
        "RoleArn": "arn:aws:iam::123456789012:role/benchmark",
        "InputConfig": {"S3Uri": f"file://{archive}", "Framework": "ONNX",
                        "DataInputConfig": json.dumps({k: v["shape"] for k, v in inputs.items()})},
        "OutputConfig": output,
        "StoppingCondition": {"MaxRuntimeInSeconds": limit},
    }


def _compile_worker(args) -> None:
    """One compilation job through LocalNeoHook, as a task runs it; print a JSON summary.

    The environment (set by the caller) holds AIRFLOW_HOME, a fresh AIRFLOW__NEO__TUNING_DATABASE,
    AIRFLOW__NEO__TUNING_TRIALS=0 and AIRFLOW__NEO__CACHE_MAX_BYTES=0."""
    import psutil

    from airflow_neo.hooks.local import LocalNeoHook
    from airflow_neo.runtime import read_metadata

    model_dir = Path(args.dir)
    export = json.loads((model_dir / "export.json").read_text())
    job = args.job
    out = model_dir / f"artifact-{args.target}"
    request = _request(job, model_dir / "model.tar.gz", out, export["inputs"], args.target, args.device,
                       args.compile_limit)
    hook = LocalNeoHook(aws_conn_id=None, store_path=args.store)
    me = psutil.Process()
    peak = {"rss": 0, "procs": 0}
    done = threading.Event()
    pid_file = model_dir / f"runner-{args.target}.pid"

    def sample() -> None:  # the runner is this process's child (its own session), the compile child its
        while not done.is_set():
            total, procs = 0, 0
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                try:
                    total += child.memory_info().rss
                    procs += 1
                except psutil.Error:
                    pass
            if children and not pid_file.exists():
                pid_file.write_text(str(children[0].pid))
            peak["rss"] = max(peak["rss"], total)
            peak["procs"] = max(peak["procs"], procs)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    kind, _, words = TARGETS[args.target]
    result: dict = {"job": job, "target": args.target, "tuning_pack_env": os.environ.get("AIRFLOW__NEO__TUNING_PACK"),
                    "target_words": (f"TargetDevice {args.device} ({words})" if kind == "device"
                                     else "TargetPlatform LINUX/X86_64")}
    try:
        hook.create_compilation_job(request, tuning_trials=0)
        payload = hook.wait_for_compilation_job(job, check_interval=0.5, max_wait=args.compile_limit + 120)
    except Exception as err:  # noqa: BLE001 - a refused request is a result too
        done.set()
        result.update(status="ERROR", failure_reason=f"{type(err).__name__}: {err}", wall_s=time.perf_counter() - start,
                      peak_rss_mb=peak["rss"] / 2**20)
        print(json.dumps(result))
        return
    wall = time.perf_counter() - start
    done.set()
    sampler.join(1)
    log = hook.job_log(job)
    result.update(status=payload["CompilationJobStatus"], failure_reason=payload.get("FailureReason"), wall_s=wall,
                  peak_rss_mb=peak["rss"] / 2**20, processes=peak["procs"],
                  warnings=[line.split("WARNING: ", 1)[1][:400] for line in log.splitlines() if "WARNING: " in line][:10])
    if result["status"] == "COMPLETED":
        artifact = payload["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://")
        metadata = read_metadata(artifact)
        result.update(artifact=artifact, artifact_mb=os.path.getsize(artifact) / 2**20,
                      timings=metadata.get("timings_s"), schedules=metadata.get("schedules"),
                      tvm_target=(metadata.get("target") or {}).get("target"),
                      tuning=metadata.get("tuning"))
    else:
        result["log_tail"] = log[-4000:]
    print(json.dumps(result, default=str))


# ---------------------------------------------------------------------------------- latency (own process)


def _latency_worker(args) -> None:
    """One engine on one model in this process: save its first output, print {"median_ms", "runs"}."""
    import numpy as np

    inputs = dict(np.load(Path(args.dir) / "inputs.npz"))
    if args.engine.startswith("onnxruntime"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        if args.engine == "onnxruntime-nospin":  # its pool's threads sleep instead of spinning between ops
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(Path(args.dir) / "model.onnx"), options,
                                               providers=["CPUExecutionProvider"])

        def infer():
            return session.run(None, inputs)[0]
    else:
        from airflow_neo import runtime

        model = runtime.load(args.artifact)

        def infer():
            return model.run(inputs)[0]

    out = None
    for _ in range(args.warmup):
        out = infer()
    times = []
    deadline = time.monotonic() + args.max_seconds
    for _ in range(args.iters):
        begin = time.perf_counter()
        out = infer()
        times.append(time.perf_counter() - begin)
        if time.monotonic() > deadline and len(times) >= args.min_iters:
            break
    np.save(Path(args.dir) / f"output-{args.engine}.npy", np.asarray(out, dtype="float32"))
    print(json.dumps({"median_ms": statistics.median(times) * 1000, "runs": len(times)}))


def _profile_worker(args) -> None:
    """Per-kernel time of one artifact (relax VM instrument: wall time around each call, median of
    ``--profile-runs`` runs), with each kernel's schedule rule from the artifact's metadata."""
    import numpy as np
    import tvm
    from tvm import relax

    from airflow_neo.local.archive import safe_extract

    inputs = dict(np.load(Path(args.dir) / "inputs.npz"))
    with tempfile.TemporaryDirectory(prefix="bench-models-profile-") as scratch:
        safe_extract(args.artifact, Path(scratch))
        metadata = json.loads((Path(scratch) / "metadata.json").read_text())
        lib = tvm.runtime.load_module(str(Path(scratch) / metadata["library"]))
        libm = _libm_imports(Path(scratch) / metadata["library"])
    vm = relax.VirtualMachine(lib, tvm.cpu())
    arrays = [tvm.runtime.tensor(np.ascontiguousarray(inputs[spec["name"]].astype(spec["dtype"])))
              for spec in metadata["inputs"]]
    vm["main"](*arrays)  # warm-up
    runs: list[dict[str, float]] = []
    calls: dict[str, int] = {}
    state = {"t": 0.0, "run": {}}

    def instrument(func, symbol, before, ret, *call_args):
        now = time.perf_counter()
        if before:
            state["t"] = now
        else:
            state["run"][symbol] = state["run"].get(symbol, 0.0) + (now - state["t"])
            if len(runs) == 0:
                calls[symbol] = calls.get(symbol, 0) + 1
        return 0

    vm.set_instrument(instrument)
    walls = []
    for _ in range(args.profile_runs):
        state["run"] = {}
        begin = time.perf_counter()
        vm["main"](*arrays)
        walls.append(time.perf_counter() - begin)
        runs.append(state["run"])
    rules = (metadata.get("schedules") or {}).get("kernels") or {}
    origins = (metadata.get("schedules") or {}).get("origin") or {}
    per_kernel = {}
    for symbol in runs[0]:
        ms = statistics.median(run.get(symbol, 0.0) for run in runs) * 1000
        base = symbol.removesuffix("_prepacked")  # a kernel whose weight packing was folded out
        rule = rules.get(symbol) or rules.get(base) or ("(vm builtin)" if symbol.startswith("vm.") else "-")
        origin = origins.get(symbol) or origins.get(base) or "-"
        per_kernel[symbol] = {"kernel": symbol, "ms": ms, "calls": calls.get(symbol, 0), "rule": rule, "origin": origin}
    total = sum(e["ms"] for e in per_kernel.values())
    top = sorted(per_kernel.values(), key=lambda e: -e["ms"])
    by_rule: dict[str, float] = {}
    for entry in per_kernel.values():
        by_rule[entry["rule"]] = by_rule.get(entry["rule"], 0.0) + entry["ms"]
    print(json.dumps({"total_ms": total, "run_ms": statistics.median(walls) * 1000, "runs": len(runs), "libm": libm,
                      "top": [dict(e, share=e["ms"] / total) for e in top[:args.top]],
                      "ms_by_rule": dict(sorted(by_rule.items(), key=lambda kv: -kv[1]))}))


def _libm_imports(library: Path) -> list[str] | None:
    """The math-library functions the kernels call (``expf``, ``erff``...): each such call is a scalar
    call per element, so a loop that calls one is not vectorized. None without binutils' ``nm``."""
    import shutil

    if not shutil.which("nm"):
        return None
    listing = subprocess.run(["nm", "-D", "--undefined-only", str(library)], capture_output=True, text=True)
    names = {line.split()[-1] for line in listing.stdout.splitlines() if line.strip()}
    math = {"exp", "expf", "exp2f", "expm1f", "erf", "erff", "tanh", "tanhf", "log", "logf", "log1pf", "pow", "powf",
            "sqrtf", "sinf", "cosf", "fmodf", "sigmoid", "roundf", "nearbyintf", "floorf", "ceilf"}
    return sorted(names & math)


# ---------------------------------------------------------------------------------- orchestration


def _run(command: list[str], env: dict, timeout: float, log) -> tuple[dict | None, str]:
    """Run a worker in its own process group; (its last JSON line or None, why it failed)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True, cwd=str(ROOT))
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return None, f"timed out after {timeout:.0f} s\n{(stderr or '')[-2000:]}"
    lines = [line for line in (stdout or "").strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return None, f"exit {proc.returncode}\n{(stderr or '')[-3000:]}"
    return json.loads(lines[-1]), ""


def _worker_env(threads: int) -> dict:
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _kill_runner(pid_file: Path, log) -> None:
    """After a compile worker was killed: end the detached runner it started (its own session)."""
    try:
        pid = int(pid_file.read_text())
        os.killpg(pid, signal.SIGKILL)
        log(f"  killed the runner session {pid}")
    except (OSError, ValueError):
        pass


def kernel_counts(schedules: dict | None) -> dict | None:
    if not schedules:
        return None
    counts = schedules.get("counts") or {}
    generic = counts.get("generic", 0)
    unscheduled = len(schedules.get("unscheduled") or [])
    total = sum(counts.values())
    return {"total": total, "scheduled": total - generic - counts.get("none", 0), "generic": generic,
            "unscheduled": unscheduled, "by_rule": counts, "fallback": schedules.get("fallback"),
            "by_origin": schedules.get("sources") or {}, "knobs": len(schedules.get("knobs") or {})}


def benchmark_model(name: str, args, work: Path, device: str | None, log) -> dict:
    import numpy as np

    model_dir = work / name
    model_dir.mkdir(parents=True, exist_ok=True)
    source, ctor, description = MODELS[name]
    result: dict = {"model": name, "source": source, "constructor": ctor, "description": description,
                    "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "compiles": {}}
    env = _worker_env(args.threads)
    me = [sys.executable, str(Path(__file__).resolve())]

    log(f"[{name}] export to ONNX ...")
    export, why = _run(me + ["--_export", "--model", name, "--dir", str(model_dir)], env, args.export_limit, log)
    if export is None:
        result["export_error"] = why
        log(f"[{name}] export FAILED: {why.splitlines()[-1] if why else ''}")
        return result
    (model_dir / "export.json").write_text(json.dumps(export))
    result["export"] = export
    log(f"[{name}] {export['params_m']:.1f} M params, ONNX {export['onnx_mb']:.0f} MiB, export {export['export_s']:.0f} s")

    targets = [t for t in TARGETS if not (TARGETS[t][0] == "device" and device is None)
               and not (t == "platform" and args.skip_platform) and not (t == "device_nopack" and args.skip_nopack)]
    tag = dt.datetime.now().strftime("%H%M%S")
    for target in targets:
        job = f"bm-{name.replace('_', '-')}-{target.replace('_', '-')}-{tag}"
        cenv = dict(env)
        cenv.update({
            "AIRFLOW_HOME": str(work / "airflow-home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__NEO__TUNING_TRIALS": "0",
            "AIRFLOW__NEO__TUNING_DATABASE": tempfile.mkdtemp(prefix=f"tuning-{name}-{target}-", dir=work),
            "AIRFLOW__NEO__CACHE_MAX_BYTES": "0",
            "AIRFLOW__NEO__CACHE_DIR": str(work / "cache"),
        })
        cenv.pop("AIRFLOW__NEO__TUNING_PACK", None)  # the default (on), as a user gets it
        if not TARGETS[target][1]:
            cenv["AIRFLOW__NEO__TUNING_PACK"] = "False"
        log(f"[{name}] compile, {target} ...")
        compiled, why = _run(me + ["--_compile", "--dir", str(model_dir), "--target", target, "--job", job,
                                   "--device", str(device), "--store", str(work / "state" / "jobs.sqlite"),
                                   "--compile-limit", str(args.compile_limit)],
                             cenv, args.compile_limit + 300, log)
        if compiled is None:
            _kill_runner(model_dir / f"runner-{target}.pid", log)
            compiled = {"job": job, "target": target, "status": "ERROR", "failure_reason": why[:3000]}
        compiled["kernels"] = kernel_counts(compiled.get("schedules"))
        result["compiles"][target] = compiled
        if compiled["status"] == "COMPLETED":
            k = compiled["kernels"] or {}
            log(f"[{name}] {target}: COMPLETED in {compiled['wall_s']:.0f} s, peak RSS {compiled['peak_rss_mb']:.0f} MiB, "
                f"kernels {k.get('scheduled')}/{k.get('generic')}/{k.get('unscheduled')} (scheduled/generic/unscheduled), "
                f"origin {k.get('by_origin')}")
        else:
            log(f"[{name}] {target}: {compiled['status']}: {(compiled.get('failure_reason') or '')[:300]}")

    measure(result, model_dir, args, log)
    return result


def _wait_for_quiet(args, log) -> dict | None:
    """Wait (at most ``--max-wait`` s) until the 1-minute load average is under ``--max-load``; what happened."""
    if not args.max_load:
        return None
    begin = time.monotonic()
    deadline = begin + args.max_wait
    before = load_avg()
    if before[0] >= args.max_load:
        log(f"  load {before}: waiting up to {args.max_wait:.0f} s for a 1-min load under {args.max_load}")
    while os.getloadavg()[0] >= args.max_load and time.monotonic() < deadline:
        time.sleep(10)
    return {"load_before": before, "waited_s": round(time.monotonic() - begin), "load_after": load_avg(),
            "quiet": os.getloadavg()[0] < args.max_load}


def measure(result: dict, model_dir: Path, args, log) -> None:
    """Latency rounds of the model's artifacts and onnxruntime, numerics, and the device artifact's profile."""
    import numpy as np

    name = result["model"]
    env = _worker_env(args.threads)
    me = [sys.executable, str(Path(__file__).resolve())]
    targets = [t for t in TARGETS if t in (result.get("compiles") or {})]
    engines = {f"tvm-{t}": result["compiles"][t]["artifact"] for t in targets
               if result["compiles"][t]["status"] == "COMPLETED"}
    if not engines:
        return
    result["quiet_wait"] = _wait_for_quiet(args, log)
    engines["onnxruntime"] = None
    engines["onnxruntime-nospin"] = None
    latency: dict[str, list[float]] = {engine: [] for engine in engines}
    loads = []
    for _ in range(args.rounds):
        for engine, artifact in engines.items():
            command = me + ["--_latency", "--engine", engine, "--dir", str(model_dir), "--threads", str(args.threads),
                            "--iters", str(args.iters), "--max-seconds", str(args.max_seconds)]
            if artifact:
                command += ["--artifact", artifact]
            measured, why = _run(command, env, 1200, log)
            if measured is None:
                result.setdefault("latency_errors", {})[engine] = why[-2000:]
                continue
            latency[engine].append(measured["median_ms"])
        loads.append(load_avg())
    result["latency_rounds_ms"] = latency
    result["load_during_latency"] = loads
    result["measured"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ort_path = model_dir / "output-onnxruntime.npy"
    if ort_path.exists():
        ort = np.load(ort_path)
        result["ort_max_abs"] = float(np.max(np.abs(ort)))
        torch_path = model_dir / "torch_output.npy"
        if torch_path.exists():
            result["ort_vs_torch_max_abs_diff"] = float(np.max(np.abs(np.load(torch_path).reshape(ort.shape) - ort)))
        for target in targets:
            path = model_dir / f"output-tvm-{target}.npy"
            if path.exists():
                tvm_out = np.load(path).reshape(ort.shape)
                result["compiles"][target]["max_abs_diff_vs_ort"] = float(np.max(np.abs(tvm_out - ort)))
    summarize_latency(result)
    ms = result["latency_ms"]
    for target in targets:
        engine = f"tvm-{target}"
        if result["compiles"][target].get("ratio") is not None:
            log(f"[{name}] {target}: TVM {ms[engine]:.2f} ms vs onnxruntime {ms['onnxruntime-best']:.2f} ms = "
                f"{result['compiles'][target]['ratio']:.2f}x, max abs diff {result['compiles'][target].get('max_abs_diff_vs_ort')}")

    if args.profile and "tvm-device" in engines:
        profile, why = _run(me + ["--_profile", "--dir", str(model_dir), "--artifact", engines["tvm-device"]],
                            env, 900, log)
        result["profile_device"] = profile if profile is not None else {"error": why[-2000:]}


def summarize_latency(result: dict) -> None:
    """``latency_ms`` (each engine's best round median over this pass and any earlier pass of the same
    artifacts: contention only ever slows a round down) and each artifact's ratio to the faster
    onnxruntime configuration."""
    rounds: dict[str, list[float]] = {}
    for measurement in [*(result.get("earlier_measurements") or []), result]:
        for engine, values in (measurement.get("latency_rounds_ms") or {}).items():
            rounds.setdefault(engine, []).extend(values or [])
    ms = {engine: min(values) for engine, values in rounds.items() if values}
    ort_ms = [ms[e] for e in ("onnxruntime", "onnxruntime-nospin") if e in ms]
    if ort_ms:  # the faster onnxruntime configuration is the reference (on a busy machine spinning loses)
        ms["onnxruntime-best"] = min(ort_ms)
    result["latency_ms"] = ms
    result["latency_rounds_total"] = {engine: len(values) for engine, values in rounds.items()}
    for target, compiled in (result.get("compiles") or {}).items():
        engine = f"tvm-{target}"
        compiled["ratio"] = ms[engine] / ms["onnxruntime-best"] if engine in ms and ort_ms else None


def remeasure(args, log) -> int:
    """Latency rounds again for the models of an earlier run whose artifacts are still in ``--work``."""
    if not args.work:
        raise SystemExit("--remeasure needs the --work directory of the run that compiled the artifacts")
    data = json.loads(RESULTS.read_text())
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    data["meta"].setdefault("remeasure_passes", []).append({
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_models.py " + " ".join(sys.argv[1:]),
        "rounds": args.rounds, "iters": args.iters, "max_load": args.max_load, "max_wait": args.max_wait})
    for name in wanted:
        result = data["results"].get(name)
        model_dir = Path(args.work) / name
        artifacts = [c.get("artifact") for c in (result or {}).get("compiles", {}).values() if c.get("artifact")]
        if not result or not artifacts or not all(Path(a).exists() for a in artifacts) or not model_dir.is_dir():
            log(f"[{name}] nothing to remeasure (no artifact in {model_dir})")
            continue
        previous = {k: result.get(k) for k in ("latency_rounds_ms", "latency_ms", "load_during_latency", "measured")}
        result.setdefault("earlier_measurements", []).append(previous)
        args.threads = data["meta"]["threads"]
        measure(result, model_dir, args, log)
        RESULTS.write_text(json.dumps(data, indent=1, default=str) + "\n")
        write_report(data)
    return 0


# ---------------------------------------------------------------------------------- report


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _ratios(results: list[dict], target: str) -> list[tuple[str, float]]:
    return [(r["model"], r["compiles"][target]["ratio"]) for r in results
            if (r.get("compiles") or {}).get(target, {}).get("ratio") is not None]


def _summary(values: list[tuple[str, float]]) -> str:
    if not values:
        return "no model compiled"
    worst = max(values, key=lambda kv: kv[1])
    return (f"median **{statistics.median(v for _, v in values):.2f}x**, worst **{worst[1]:.2f}x** ({worst[0]}), "
            f"best {min(v for _, v in values):.2f}x over {len(values)} compiled models")


def _reason(compiled: dict) -> str:
    text = (compiled.get("failure_reason") or "").strip().replace("\n", " ").replace("|", "\\|")
    return text[:400] + ("..." if len(text) > 400 else "")


def write_report(data: dict) -> None:
    meta, results = data["meta"], [data["results"][m] for m in MODELS if m in data["results"]]
    lines = _method_lines(meta, results) + [""] + _summary_lines(meta, results) + [""]
    lines += _main_table(meta, results) + [""] + _profile_table(meta, results)
    failures = [(r["model"], t, c) for r in results for t, c in (r.get("compiles") or {}).items()
                if c.get("status") != "COMPLETED"]
    if failures:
        lines += ["", "### Failures", ""]
        for model, target, c in failures:
            lines.append(f"- **{model}** ({c.get('target_words', target)}): {c['status']}: "
                         f"`{(c.get('failure_reason') or '').strip().splitlines()[0][:500] if c.get('failure_reason') else ''}`")
    lines += ["", "![three ratios and compile time per model](benchmarks_models.png)", ""]
    section = "\n".join(lines)
    existing = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{BEGIN_MARK}\n{section.rstrip()}\n{END_MARK}"
    if BEGIN_MARK in existing and END_MARK in existing:
        head, _, rest = existing.partition(BEGIN_MARK)
        _, _, tail = rest.partition(END_MARK)
        text = head + block + tail
    else:
        text = existing.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)
    try:
        _plot(results, meta)
    except ImportError as err:
        print(f"no plot: {err}", file=sys.stderr)


def _method_lines(meta: dict, results: list[dict]) -> list[str]:
    m = meta["machine"]
    device = meta.get("device")
    passes = meta.get("remeasure_passes") or []
    loads = [round(x[0], 1) for r in results
             for measurement in [*(r.get("earlier_measurements") or []), r]
             for x in (measurement.get("load_during_latency") or [])]
    rounds_total = max([max((r.get("latency_rounds_total") or {}).values(), default=0) for r in results], default=0)
    start, end = meta.get("load_start"), meta.get("load_end")
    shared = meta.get("shared_note")
    return [
        "## Real architectures: default schedules and the tuning pack vs onnxruntime",
        "",
        f"Generated by `benchmarks/bench_models.py` (`{meta['command']}`) on {meta['date']}; raw numbers in "
        "`benchmarks/results_models.json`."
        + (" Latencies measured again with that run's artifacts ("
           + "; ".join(f"{p['date']}: `{p['command']}`" for p in passes)
           + "); the compile numbers are the run's." if passes else ""),
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; AVX2 {'yes' if m['avx2'] else 'no'}, "
        f"AVX-512 {', '.join(m['avx512']) if m['avx512'] else 'no'}; Python {m['python']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- Threads: {meta['threads']} for both engines (`TVM_NUM_THREADS`, onnxruntime `intra_op_num_threads`, "
        "inter-op 1); batch 1; latency = median of up to "
        f"{meta['iters']} runs (at most ~{meta['max_seconds']:.0f} s) after warm-up, best round of "
        + (f"{rounds_total} interleaved rounds over {1 + len(passes)} measuring passes ({meta['rounds']} in the run, "
           + ", ".join(str(p["rounds"]) for p in passes) + " in the `--remeasure` passes; contention only ever slows "
           "a round down)" if passes else f"{meta['rounds']} interleaved rounds")
        + ", each engine in its own process; the three artifacts of a model and onnxruntime take turns in the same "
        "rounds. onnxruntime runs twice, with its default spinning thread pool and with "
        "`session.intra_op.allow_spinning=0`; the ratio is against the faster of the two (spinning loses "
        "when other processes want the cores), so it never flatters TVM"
        + (f". 1-minute load average after each round: {min(loads)} to {max(loads)} (about 2 = this benchmark alone)"
           if loads else "")
        + (f"; at the start of the run {start}, at its end {end} (1/5/15-minute)" if start and end else ""),
        *([f"- Shared machine: {shared}"] if shared else []),
        f"- Compile: `LocalNeoHook.create_compilation_job` + `wait_for_compilation_job` (detached runner + compile "
        f"child), no tuning (0 trials, a fresh empty tuning database per compile), cache off. Three compiles per "
        f"model: TargetDevice `{device}` ({'AVX-512' if device == 'ml_c5' else 'AVX2, Haswell'}: this CPU's) "
        "**with the shipped tuning pack** (the default, as a user gets it: pack knobs for kernels whose workload "
        "key is in `airflow_neo/local/configs/pack.json` for this CPU family), the same TargetDevice **without it** "
        "(`AIRFLOW__NEO__TUNING_PACK=False` in that compile's environment: the default schedules alone), and "
        "TargetPlatform LINUX/X86_64 (generic x86-64, SSE2 only; not the pack's CPU family). Compile s = wall time "
        "of the whole job (runner start, import, schedules, LLVM, export); peak RSS = runner + compile child, "
        "sampled every 0.1 s",
        "- Models: random weights; torchvision/timm at 1x3x224x224, BERT/DistilBERT encoders (transformers "
        f"configs) at sequence length {SEQ_LEN} with {PADDING} padding positions; ONNX opset 17 from "
        "`torch.onnx.export(dynamo=False)`. The pack was built from the six torchvision models "
        f"({', '.join(PACK_MODELS)}); the others are not in it (some of their kernels may share a workload key)",
        "- Kernels: from the artifact's `metadata.json` `schedules` section: scheduled by a rule / by the "
        "`generic` fallback / unscheduled (serial loops); by origin (`sources`): `pack` = the pack's knobs applied, "
        "`default` = the rule's default plan, `none` = no knobs (rules without them)",
        "- max abs diff: first output of the artifact vs onnxruntime's on the same inputs (in brackets the "
        "largest absolute value of that output)",
    ]


def _origin(compiled: dict | None, key: str) -> int:
    return (((compiled or {}).get("kernels") or {}).get("by_origin") or {}).get(key, 0)


def _summary_lines(meta: dict, results: list[dict]) -> list[str]:
    device = meta.get("device")
    in_pack = [r for r in results if r["model"] in PACK_MODELS]
    others = [r for r in results if r["model"] not in PACK_MODELS]

    def goal(values: list[tuple[str, float]], limit: float) -> str:
        return f"; {sum(v <= limit for _, v in values)} of {len(values)} at or under {limit}x" if values else ""

    def pack_kernels(rs: list[dict]) -> str:
        parts = []
        for r in rs:
            c = (r.get("compiles") or {}).get("device")
            k = (c or {}).get("kernels") or {}
            if k:
                parts.append(f"{r['model']} {_origin(c, 'pack')}/{k.get('total', 0)}")
        return "kernels that took pack knobs (pack/all): " + ", ".join(parts) if parts else "no kernel counts"

    on_pack, on_other = _ratios(in_pack, "device"), _ratios(others, "device")
    lines = [
        f"**Goal 1: default compile, pack off** (TargetDevice {device}, `tuning_pack = False`), ratio = artifact / "
        f"onnxruntime: {_summary(_ratios(results, 'device_nopack'))}.",
        "",
        f"**Goal 2: pack on** (TargetDevice {device}, the default), the six models the pack was built from "
        f"(goal <= 1.3x): {_summary(on_pack)}{goal(on_pack, 1.3)}; {pack_kernels(in_pack)}.",
        "",
        f"Pack on, models not in the pack (timm, BERT, DistilBERT): {_summary(on_other)}; {pack_kernels(others)}.",
        "",
    ]
    faster, slower, same = [], [], []
    for r in results:
        compiles = r.get("compiles") or {}
        on, off = (compiles.get("device") or {}).get("ratio"), (compiles.get("device_nopack") or {}).get("ratio")
        if on and off:
            (slower if on > off * 1.03 else faster if on < off / 1.03 else []).append(f"{r['model']} {off / on:.2f}x")
            if not _origin(compiles.get("device"), "pack"):
                same.append(f"{r['model']} {off / on:.2f}x")
    if faster or slower:
        lines += ["Pack on vs pack off (speed-up = off / on, 3% margin): faster on " + (", ".join(faster) or "none")
                  + "; **slower** on " + (", ".join(slower) or "none") + "; the rest within 3%."
                  + (" Where no kernel took pack knobs the two artifacts have the same schedules, so their "
                     "difference is measurement noise on this machine: " + ", ".join(same) + "." if same else ""), ""]
    lines.append(f"TargetPlatform LINUX/X86_64 (generic x86-64): {_summary(_ratios(results, 'platform'))}.")
    return lines


def _main_table(meta: dict, results: list[dict]) -> list[str]:
    def trio(r: dict, key: str, spec: str) -> str:
        values = [((r.get("compiles") or {}).get(t) or {}).get(key) for t in ("device_nopack", "device", "platform")]
        return " / ".join(_fmt(v, spec) for v in values)

    def ratio(r: dict, target: str) -> str:
        value = ((r.get("compiles") or {}).get(target) or {}).get("ratio")
        return f"**{value:.2f}x**" if value else "-"

    def row(r: dict) -> str:
        label = f"{r['model']} ({r['description']})"
        if r.get("export_error"):
            return f"| {label} |" + " - |" * 10 + f" export failed: {r['export_error'].strip().splitlines()[-1][:300]} |"
        compiles = r.get("compiles") or {}
        ms = r.get("latency_ms") or {}
        c = compiles.get("device") or {}
        k = c.get("kernels") or {}
        kernels = (f"{k['scheduled']}/{k['generic']}/{k['unscheduled']}" + (" (fallback!)" if k.get("fallback") else "")
                   if k else "-")
        origin = ", ".join(f"{o} {n}" for o, n in (k.get("by_origin") or {}).items()) or "-"
        diffs = " / ".join(f"{d:.1e}" if d is not None else "-" for d in
                           ((compiles.get(t) or {}).get("max_abs_diff_vs_ort") for t in ("device_nopack", "device", "platform")))
        bad = [f"{t}: **{x['status']}**: {_reason(x)}" for t, x in compiles.items() if x.get("status") != "COMPLETED"]
        status = "; ".join(bad) or "ok"
        tvm_ms = " / ".join(_fmt(ms.get(f"tvm-{t}"), ".2f") for t in ("device_nopack", "device", "platform"))
        return (f"| {label} | {ratio(r, 'device_nopack')} | {ratio(r, 'device')} | {ratio(r, 'platform')} | {tvm_ms} | "
                f"{_fmt(ms.get('onnxruntime-best'), '.2f')} ({_fmt(ms.get('onnxruntime'), '.1f')} / "
                f"{_fmt(ms.get('onnxruntime-nospin'), '.1f')}) | {diffs} ({_fmt(r.get('ort_max_abs'), '.1f')}) | "
                f"{trio(r, 'wall_s', '.0f')} | {trio(r, 'peak_rss_mb', '.0f')} | {kernels} | {origin} | {status} |")

    device = meta.get("device")
    return [
        f"### Per model: TargetDevice {device} pack off / pack on, TargetPlatform LINUX/X86_64",
        "",
        "Triples are pack off / pack on / platform. Kernels and their origin are the pack-on artifact's.",
        "",
        "| model | ratio pack off (goal 1) | ratio pack on (goal 2) | ratio platform | TVM ms off / on / platform "
        "| onnxruntime ms (spin / no spin) | max abs diff off / on / platform (max abs out) | compile s off / on / platform "
        "| peak RSS MB off / on / platform | kernels scheduled/generic/unscheduled | kernels by origin | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        *[row(r) for r in results],
    ]


def _profile_table(meta: dict, results: list[dict]) -> list[str]:
    device = meta.get("device")
    lines = [f"### Where the time goes (TargetDevice {device} artifacts, pack on)", "",
             "Per-kernel wall time from a relax VM instrument (median of 5 runs, one process, same threads); "
             "`_prepacked` kernels had their weight packing folded out at compile time. libm calls: math "
             "functions the library imports (each is a scalar call per element: the loop around it is not "
             "vectorized). Compile phases from the artifact's `timings_s`; schedules = time spent choosing and "
             "applying the schedules.", "",
             "| model | profiled ms | kernels per rule | time by schedule rule (ms) | slowest kernels (rule, origin, share) "
             "| libm calls | compile phases (s) |",
             "|---|---:|---|---|---|---|---|"]
    profiled = 0
    for r in results:
        p = r.get("profile_device")
        c = (r.get("compiles") or {}).get("device") or {}
        if not p or "top" not in p:
            continue
        profiled += 1
        by_rule = ", ".join(f"{rule} {ms:.1f}" for rule, ms in list(p["ms_by_rule"].items())[:5])
        top = "; ".join(f"`{e['kernel']}` ({e['rule']}, {e.get('origin', '-')}, {e['share'] * 100:.0f}%)"
                        for e in p["top"][:3])
        timings = c.get("timings") or {}
        order = ["extract", "import", "build", "export"]
        phases = ", ".join(f"{k} {timings[k]:.1f}" for k in sorted(timings, key=lambda k: (order + [k]).index(k))
                           if isinstance(timings[k], (int, float)))
        sched_s = (c.get("schedules") or {}).get("seconds")
        if sched_s is not None:
            phases += f"; schedules {sched_s:.1f}"
        counts = ", ".join(f"{rule} {n}" for rule, n in ((c.get("kernels") or {}).get("by_rule") or {}).items())
        libm = ", ".join(p.get("libm") or []) or ("none" if p.get("libm") is not None else "-")
        lines.append(f"| {r['model']} | {p['total_ms']:.1f} | {counts} | {by_rule} | {top} | {libm} | {phases} |")
    if not profiled:
        lines.append("| (not profiled in this run: `--no-profile`) | | | | | | |")
    return lines


def _plot(results: list[dict], meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = [r["model"] + (" *" if r["model"] in PACK_MODELS else "") for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.6 * len(names) + 2.2))
    height = 0.27
    series = (("device_nopack", f"TargetDevice {meta.get('device')}, pack off (goal 1)"),
              ("device", f"TargetDevice {meta.get('device')}, pack on (goal 2)"),
              ("platform", "TargetPlatform LINUX/X86_64"))
    for i, (target, label) in enumerate(series):
        ys = [y + (i - 1) * height for y in range(len(names))]
        values = [((r.get("compiles") or {}).get(target) or {}).get("ratio") or 0 for r in results]
        bars = left.barh(ys, [v or 1e-3 for v in values], height, label=label)
        left.bar_label(bars, labels=[f"{v:.2f}x" if v else "" for v in values], fontsize=6, padding=2)
        for y, v in zip(ys, values):
            if not v:
                left.text(0.72, y, "failed / not run", fontsize=6, va="center")
        walls = [((r.get("compiles") or {}).get(target) or {}).get("wall_s") or 0 for r in results]
        bars = right.barh(ys, walls, height, label=label)
        right.bar_label(bars, labels=[f"{v:.0f}" if v else "-" for v in walls], fontsize=6, padding=2)
    for axis in (left, right):
        axis.set_yticks(range(len(names)), names, fontsize=8)
        axis.invert_yaxis()
    fig.legend(*left.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    left.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)
    left.axvline(1.3, color="green", linestyle=":", linewidth=0.8)
    left.set_xscale("log")
    top = max([((r.get("compiles") or {}).get(t) or {}).get("ratio") or 1 for r in results for t in TARGETS] + [2])
    ticks = [t for t in (0.8, 1, 1.3, 1.5, 2, 3, 4, 6, 8, 12) if t <= top * 1.3]
    left.set_xlim(0.7, top * 1.35)
    left.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    left.set_xticks(ticks, [f"{t:g}x" for t in ticks], fontsize=7)
    left.set_xlabel("TVM artifact latency / onnxruntime latency (log; < 1: TVM faster; dotted: 1.3x)")
    left.set_title(f"No tuning, batch 1, {meta['threads']} threads (* = model the pack was built from)", fontsize=9)
    right.set_xlabel("compile wall time (s)")
    right.set_title("Compile (runner + compile child, cache off)", fontsize=9)
    fig.suptitle(f"airflow-neo local backend, real architectures, {meta['machine']['cpu']} ({meta['date']})", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=2, help="threads of both engines (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds (default 3)")
    parser.add_argument("--iters", type=int, default=30, help="timed runs per latency measurement at most (default 30)")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="time cap of one latency measurement (default 15)")
    parser.add_argument("--min-iters", type=int, default=5, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--compile-limit", type=int, default=1800,
                        help="MaxRuntimeInSeconds of each compile job; its process is killed 300 s later (default 1800)")
    parser.add_argument("--export-limit", type=int, default=900, help="time limit of one ONNX export (default 900 s)")
    parser.add_argument("--device", default=None, help="TargetDevice to compile for (default: ml_c5 with AVX-512, else ml_c4)")
    parser.add_argument("--skip-platform", action="store_true", help="compile only for the TargetDevice")
    parser.add_argument("--skip-nopack", action="store_true",
                        help="compile the TargetDevice only with the tuning pack (the default), not also without it")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the per-kernel profile")
    parser.add_argument("--work", default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--fresh", action="store_true", help="start a new results file instead of merging into it")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the docs from results_models.json")
    parser.add_argument("--remeasure", action="store_true",
                        help="only measure the latencies again, with the artifacts of an earlier run (its --work dir); "
                             "the compile numbers stay those of that run")
    parser.add_argument("--max-load", type=float, default=0.0,
                        help="before each model's latency rounds, wait for a 1-minute load average under this (0: don't)")
    parser.add_argument("--max-wait", type=float, default=600.0, help="longest wait for --max-load (default 600 s)")
    parser.add_argument("--note", default=None,
                        help="what else ran on the machine during the run (written into the doc as is)")
    # internal: the workers
    parser.add_argument("--_export", dest="export_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_compile", dest="compile_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_latency", dest="latency_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_profile", dest="profile_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    parser.add_argument("--top", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--profile-runs", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if args.export_worker:
        _export_worker(args)
        return 0
    if args.compile_worker:
        _compile_worker(args)
        return 0
    if args.latency_worker:
        _latency_worker(args)
        return 0
    if args.profile_worker:
        _profile_worker(args)
        return 0

    if args.report_only:
        data = json.loads(RESULTS.read_text())
        for result in data["results"].values():
            summarize_latency(result)
        RESULTS.write_text(json.dumps(data, indent=1, default=str) + "\n")
        write_report(data)
        return 0

    def log(message: str) -> None:
        print(f"{dt.datetime.now():%H:%M:%S} {message}", flush=True)

    if args.remeasure:
        return remeasure(args, log)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    info = machine()
    device = args.device or device_for_cpu(cpu_flags())
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="airflow-neo-bench-models-"))
    work.mkdir(parents=True, exist_ok=True)
    data = {"meta": {}, "results": {}}
    if RESULTS.exists() and not args.fresh:
        data = json.loads(RESULTS.read_text())
    data["meta"] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_models.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": info, "device": device, "threads": args.threads, "rounds": args.rounds, "iters": args.iters,
        "max_seconds": args.max_seconds, "compile_limit_s": args.compile_limit, "load_start": load_avg(),
        "max_load": args.max_load, "max_wait": args.max_wait, "shared_note": args.note,
    }
    log(f"work dir {work}; {info['cpu']}, {info['cores']} cores, AVX2 {info['avx2']}, AVX-512 {info['avx512'] or 'no'}; "
        f"TargetDevice {device}; load {load_avg()}")
    for name in models:
        try:
            data["results"][name] = benchmark_model(name, args, work, device, log)
        except Exception as err:  # noqa: BLE001 - one model's trouble must not cost the others
            log(f"[{name}] benchmark error: {type(err).__name__}: {err}")
            data["results"][name] = {"model": name, "source": MODELS[name][0], "constructor": MODELS[name][1],
                                     "description": MODELS[name][2], "compiles": {},
                                     "export_error": f"benchmark error: {type(err).__name__}: {err}"}
        data["meta"]["load_end"] = load_avg()
        RESULTS.write_text(json.dumps(data, indent=1, default=str) + "\n")
        write_report(data)  # after each model, so a cut-off run keeps its numbers
    log(f"wrote {RESULTS.relative_to(ROOT)}, {DOC.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
