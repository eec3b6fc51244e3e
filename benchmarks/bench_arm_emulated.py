#!/usr/bin/env python
"""ARM64 under emulation: a crude speed proxy for TVM aarch64 artifacts against onnxruntime.

For each model (the sample CNN from :mod:`airflow_neo.samples`; ResNet-18, MobileNetV2 and a
2-layer transformer encoder from ``benchmarks/bench_default_schedules.py``: plain ``torch.nn``,
seeded random weights, ``torch.onnx.export(dynamo=False)``):

* compile it for an aarch64 target (default TargetDevice ``ml_c6g``, Neoverse N1) through
  :func:`airflow_neo.local.compiler.compile_model` (no tuning, default schedules);
* in ONE emulated aarch64 Python (``qemu-aarch64 -cpu neoverse-n1``, the root from
  ``scripts/arm_root.sh``, see :mod:`tests.support.qemu`) load the artifact with
  :mod:`airflow_neo.runtime` and an onnxruntime (aarch64 wheel) session on the same ONNX file,
  check both against onnxruntime on x86-64, then time them interleaved, a few rounds, same input,
  same thread count; each engine's figure is its best round's median;
* for context, the same on this machine natively: onnxruntime x86-64 and the model compiled for
  this CPU (TargetPlatform LINUX/X86_64 with this CPU's ``mcpu``), so the emulated TVM/onnxruntime
  ratio can be read against the native one.

Emulation is only a proxy: QEMU's TCG translates each NEON instruction into host code of very
different cost (some into helper calls), so hand-written NEON kernels (onnxruntime's MLAS) and
LLVM's code are distorted differently, and the time per inference says little about a real
Cortex-A72 or Graviton. Debian 12's qemu-user (7.2) ships no TCG plugins, so no instruction count
is available as a steadier measure. The section written into ``docs/benchmarks.md`` (between
``<!-- bench_arm:start -->`` and ``<!-- bench_arm:end -->``, appended at the end when absent) says so.

Usage::

    bash scripts/arm_root.sh                                  # once: the aarch64 root
    python benchmarks/bench_arm_emulated.py                   # all models, writes the docs section
    python benchmarks/bench_arm_emulated.py --models sample_cnn resnet18 --no-docs
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("sample_cnn", "resnet18", "mobilenetv2", "transformer")
LABELS = {
    "sample_cnn": "sample CNN (airflow_neo.samples, 1x3x32x32)",
    "resnet18": "ResNet-18 (1x3x224x224)",
    "mobilenetv2": "MobileNetV2 (1x3x224x224)",
    "transformer": "transformer encoder, 2 layers d=256 (1x128x256)",
}
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results_arm_emulated.json"
START, END = "<!-- bench_arm:start -->", "<!-- bench_arm:end -->"
SEED = 0


# ------------------------------------------------------------------------------------- models


def _default_schedules_bench():
    spec = importlib.util.spec_from_file_location("bench_default_schedules", ROOT / "benchmarks" / "bench_default_schedules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_model(name: str, directory: Path) -> tuple[Path, str, list[int]]:
    """Write ``model.onnx`` and a Neo archive ``model.tar.gz`` in ``directory``; (onnx path, input name, shape)."""
    from airflow_neo import samples

    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / "model.onnx"
    if name == "sample_cnn":
        onnx_path.write_bytes(samples.sample_cnn_onnx().SerializeToString())
        input_name, shape = samples.SAMPLE_INPUT_NAME, list(samples.SAMPLE_INPUT_SHAPE)
    else:
        shape = _default_schedules_bench().export_onnx(name, onnx_path)
        input_name = "input0"
    (directory / "model.tar.gz").write_bytes(samples.reproducible_tar_gz({"model.onnx": onnx_path.read_bytes()}))
    return onnx_path, input_name, shape


def compile_for(directory: Path, input_name: str, shape, output_config: dict, label: str) -> tuple[Path, dict, float]:
    """Compile ``directory/model.tar.gz`` through the local backend's compile path; (artifact, metadata, seconds).

    A fresh tuning database: no records from earlier tuning runs on this machine are applied."""
    from airflow_neo.local.compiler import compile_model

    request = {
        "CompilationJobName": f"bench-arm-{label}",
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": f"file://{directory / 'model.tar.gz'}", "Framework": "ONNX",
                        "DataInputConfig": json.dumps({input_name: shape})},
        "OutputConfig": {"S3OutputLocation": f"file://{directory}", **output_config},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    artifact = directory / f"model-{label}.tar.gz"
    started = time.monotonic()
    metadata = compile_model(request, str(directory / "model.tar.gz"), str(artifact), log=lambda line: None,
                             tuning_trials=0, tuning_database=str(directory / f"tuning-{label}"),
                             work_dir=directory / f"work-{label}")
    return artifact, metadata, time.monotonic() - started


def host_mcpu() -> str:
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


# ------------------------------------------------------------------------------------- timing



def time_engines(engines, runs, rounds, max_round_s):
    """{engine: (best round median ms, [round medians])}, the engines interleaved, order alternating."""
    import statistics
    import time

    for fn in engines.values():
        fn()  # warm-up (first-run costs: page faults, and translation under qemu)
    medians = {name: [] for name in engines}
    names = list(engines)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn, times, started = engines[name], [], time.monotonic()
            while len(times) < runs and (not times or time.monotonic() - started < max_round_s):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1000)
            medians[name].append(statistics.median(times))
    return {name: (min(values), values) for name, values in medians.items()}


# The emulated side: the same time_engines, as source.
GUEST = inspect.getsource(time_engines) + r'''
import json, os, platform, sys, time, traceback
import numpy as np

job = json.load(open(sys.argv[1]))
threads = job["threads"]
report = {"machine": platform.machine(), "models": {}}
t0 = time.monotonic()
import onnxruntime
from airflow_neo import runtime
report["onnxruntime"] = onnxruntime.__version__
for item in job["models"]:
    entry = report["models"][item["name"]] = {}
    try:
        data = np.load(item["input"])
        want = np.load(item["reference"])
        started = time.monotonic()
        model = runtime.load(item["artifact"])
        entry["tvm_load_s"] = time.monotonic() - started
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(item["onnx"], options, providers=["CPUExecutionProvider"])
        feed = {item["input_name"]: data}
        got_tvm = model.run(feed)[0]
        got_ort = session.run(None, feed)[0]
        entry["tvm_max_abs_diff"] = float(np.abs(got_tvm.reshape(want.shape) - want).max())
        entry["ort_max_abs_diff"] = float(np.abs(got_ort.reshape(want.shape) - want).max())
        entry["max_abs_out"] = float(np.abs(want).max())
        best = time_engines({"tvm": lambda: model.run(feed), "onnxruntime": lambda: session.run(None, feed)},
                            job["runs"], job["rounds"], job["max_round_s"])
        for engine, (ms, rounds) in best.items():
            entry[f"{engine}_ms"], entry[f"{engine}_rounds_ms"] = ms, rounds
        print(item["name"], json.dumps({k: v for k, v in entry.items() if not k.endswith("rounds_ms")}), flush=True)
    except Exception:
        entry["error"] = traceback.format_exc()
        print(item["name"], "FAILED", entry["error"], flush=True)
report["guest_s"] = time.monotonic() - t0
json.dump(report, open(sys.argv[2], "w"), indent=1)
'''


def native_times(onnx_path: Path, artifact: Path | None, input_name: str, data, args) -> tuple[dict, object]:
    """Native (x86-64) best-round medians of onnxruntime and the native artifact, and onnxruntime's output."""
    import onnxruntime

    from airflow_neo import runtime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {input_name: data}
    engines = {"onnxruntime": lambda: session.run(None, feed)}
    if artifact is not None:
        model = runtime.load(artifact)
        engines["tvm"] = lambda: model.run(feed)
    best = time_engines(engines, args.native_runs, args.rounds, args.max_round_s)
    return {f"native_{engine}_ms": ms for engine, (ms, _) in best.items()}, session.run(None, feed)[0]


# ------------------------------------------------------------------------------------- report


def _fmt(value, spec=".1f", missing="-"):
    return missing if value is None else format(value, spec)


def write_docs(result: dict) -> None:
    rows = result["rows"]
    env = result["environment"]
    lines = [
        START,
        "## ARM64 under emulation (qemu-aarch64): TVM artifacts vs onnxruntime",
        "",
        f"Generated by `benchmarks/bench_arm_emulated.py` (`{result['command']}`) on {result['date']}; raw numbers in "
        "`benchmarks/results_arm_emulated.json`.",
        "",
        f"- Host: {env['cpu']}, {env['cores']} cores; {env['qemu']}, emulated CPU `-cpu {env['qemu_cpu']}`; "
        f"aarch64 root from `scripts/arm_root.sh` (Debian arm64 Python {env['guest_python']}, manylinux aarch64 wheels)",
        f"- Versions: apache-tvm {env['tvm']}, onnxruntime {env['onnxruntime_guest']} (aarch64, under qemu) / "
        f"{env['onnxruntime_host']} (x86-64, native), torch {env['torch']}",
        f"- aarch64 artifacts: {result['target_source']}, `compile_model` with default schedules, no tuning; native "
        f"artifacts: TargetPlatform LINUX/X86_64 with mcpu `{env['host_mcpu']}` (this CPU)",
        f"- Timing: batch 1, {result['threads']} thread(s) for both engines (`TVM_NUM_THREADS`, onnxruntime "
        f"`intra_op_num_threads`, inter-op 1); per engine the best of {result['rounds']} interleaved rounds' medians "
        f"(up to {result['runs']} runs a round under qemu, {result['native_runs']} natively, a round cut after "
        f"~{result['max_round_s']:.0f} s), after one warm-up run; TVM and onnxruntime run in the same emulated process. "
        f"1-minute load average {result['load_before']:.1f} before, {result['load_after']:.1f} after (shared machine)",
        f"- Accuracy: each output against onnxruntime x86-64 on the same input (max abs diff; max abs output in brackets)",
        "- **A crude proxy, not a device measurement**: QEMU's TCG translates each NEON instruction into host code of "
        "very different cost (some into helper calls), so onnxruntime's hand-written NEON kernels (MLAS) and LLVM's code "
        "are distorted differently and the times say little about a real Cortex-A72 or Graviton2; Debian 12's "
        "qemu-user 7.2 has no TCG plugins, so no instruction count is available instead. Read the emulated ratio "
        "next to the native x86-64 one, and measure on the device (or an RPC runner) before trusting either.",
        "",
        "| model | ratio under qemu (TVM / ORT) | TVM ms (qemu) | onnxruntime ms (qemu) | TVM max abs diff | ORT aarch64 max abs diff "
        "| native ratio | TVM ms (x86-64) | onnxruntime ms (x86-64) | qemu slowdown of onnxruntime | compile s (aarch64) |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.get("error"):
            lines.append(f"| {LABELS[row['model']]} | - | - | - | - | - | - | - | - | - | - |")
            continue
        out = row.get("max_abs_out")
        lines.append(
            f"| {LABELS[row['model']]} | **{_fmt(row.get('ratio'), '.2f')}x** | {_fmt(row.get('tvm_ms'))} "
            f"| {_fmt(row.get('onnxruntime_ms'))} | {_fmt(row.get('tvm_max_abs_diff'), '.1e')} ({_fmt(out, '.1f')}) "
            f"| {_fmt(row.get('ort_max_abs_diff'), '.1e')} | {_fmt(row.get('native_ratio'), '.2f')}x "
            f"| {_fmt(row.get('native_tvm_ms'), '.2f')} | {_fmt(row.get('native_onnxruntime_ms'), '.2f')} "
            f"| {_fmt(row.get('ort_slowdown'), '.0f')}x | {_fmt(row.get('compile_s'))} |"
        )
    failures = [row for row in rows if row.get("error")]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {row['model']}: `{row['error'].strip().splitlines()[-1]}`" for row in failures]
    ratios = [row["ratio"] for row in rows if row.get("ratio")]
    if ratios:
        lines += ["", f"Under qemu, TVM / onnxruntime: median {statistics.median(ratios):.2f}x over {len(ratios)} models "
                  f"(natively on x86-64: median {statistics.median([r['native_ratio'] for r in rows if r.get('native_ratio')] or [0]):.2f}x)."]
    lines.append(END)
    section = "\n".join(lines)
    text = DOCS.read_text() if DOCS.exists() else ""
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)
    print(f"wrote the {START} section of {DOCS}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--target-device", default="ml_c6g", help="aarch64 TargetDevice (default ml_c6g: Neoverse N1)")
    parser.add_argument("--threads", type=int, default=1, help="threads of both engines (default 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per round under qemu")
    parser.add_argument("--native-runs", type=int, default=15, help="timed runs per round natively")
    parser.add_argument("--max-round-s", type=float, default=20.0, help="cut a round of one engine after this long")
    parser.add_argument("--skip-native-tvm", action="store_true", help="no native x86-64 compile and timing of TVM")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the docs/benchmarks.md section")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"raw results (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before the TVM runtime starts its pool (native runs)

    import numpy as np

    from tests.support import qemu

    try:
        arm = qemu.find_root()
    except qemu.EmulationUnavailable as err:
        print(f"cannot emulate aarch64: {err}", file=sys.stderr)
        return 2

    import onnxruntime
    import torch
    import tvm

    from airflow_neo.local.targets import DEVICE_TARGETS

    mcpu = host_mcpu()
    command = "python benchmarks/bench_arm_emulated.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = os.getloadavg()[0]
    rows, job = [], {"threads": args.threads, "rounds": args.rounds, "runs": args.runs,
                     "max_round_s": args.max_round_s, "models": []}
    with tempfile.TemporaryDirectory(prefix="bench-arm-") as tmp:
        work = args.work or Path(tmp)
        for name in args.models:
            print(f"{name}: export, compile, native timing", flush=True)
            directory = work / name
            row: dict = {"model": name}
            rows.append(row)
            try:
                onnx_path, input_name, shape = export_model(name, directory)
                data = np.random.default_rng(SEED).standard_normal(shape).astype("float32")
                np.save(directory / "input.npy", data)
                artifact, _, row["compile_s"] = compile_for(
                    directory, input_name, shape, {"TargetDevice": args.target_device}, "arm64")
                native_artifact = None
                if not args.skip_native_tvm:
                    native_artifact, _, row["native_compile_s"] = compile_for(
                        directory, input_name, shape,
                        {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}, "CompilerOptions": json.dumps({"mcpu": mcpu})},
                        "x86_64")
                times, reference = native_times(onnx_path, native_artifact, input_name, data, args)
                row.update(times)
                if "native_tvm_ms" in row:
                    row["native_ratio"] = row["native_tvm_ms"] / row["native_onnxruntime_ms"]
                np.save(directory / "reference.npy", reference)
                job["models"].append({"name": name, "artifact": str(artifact), "onnx": str(onnx_path),
                                      "input": str(directory / "input.npy"), "reference": str(directory / "reference.npy"),
                                      "input_name": input_name})
                print(f"  compile {row['compile_s']:.1f} s; native {times}", flush=True)
            except Exception as err:  # noqa: BLE001 - a failed model is a row of the table
                row["error"] = f"{type(err).__name__}: {err}"
                print(f"  FAILED: {row['error']}", flush=True)
        job_path, report_path = work / "job.json", work / "guest_report.json"
        job_path.write_text(json.dumps(job))
        (work / "guest.py").write_text(GUEST)
        print(f"under qemu ({arm.qemu} -cpu {arm.cpu}): {', '.join(m['name'] for m in job['models'])}", flush=True)
        started = time.monotonic()
        with open(work / "guest.stderr", "w+") as stderr:  # stdout (one line per model) is shown as it comes
            proc = subprocess.run(
                arm.command(str(work / "guest.py"), str(job_path), str(report_path)),
                env=arm.env({"TVM_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}),
                cwd=work, text=True, stderr=stderr, timeout=6 * 3600,
            )
            stderr.seek(0)
            errors = stderr.read()
        if proc.returncode != 0 or not report_path.exists():
            print(f"the emulated Python failed ({proc.returncode}):\n{errors[-6000:]}", file=sys.stderr)
            return 1
        report = json.loads(report_path.read_text())
        print(f"  emulated process: {time.monotonic() - started:.0f} s", flush=True)
    guest_python = qemu.find_root().python.name.replace("python", "")
    for row in rows:
        entry = report["models"].get(row["model"])
        if entry is None:
            continue
        if entry.get("error"):
            row["error"] = entry["error"]
            continue
        row.update(entry)
        row["ratio"] = row["tvm_ms"] / row["onnxruntime_ms"]
        row["ort_slowdown"] = row["onnxruntime_ms"] / row["native_onnxruntime_ms"]
    qemu_version = subprocess.run([arm.qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    result = {
        "command": command.strip(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "target_source": f"TargetDevice {args.target_device} ({DEVICE_TARGETS[args.target_device].description})",
        "threads": args.threads, "rounds": args.rounds, "runs": args.runs, "native_runs": args.native_runs,
        "max_round_s": args.max_round_s, "load_before": load_before, "load_after": os.getloadavg()[0],
        "environment": {
            "cpu": _cpu_name(), "cores": os.cpu_count(), "qemu": qemu_version, "qemu_cpu": arm.cpu,
            "guest_python": guest_python, "tvm": tvm.__version__, "onnxruntime_guest": report.get("onnxruntime"),
            "onnxruntime_host": onnxruntime.__version__, "torch": torch.__version__, "host_mcpu": mcpu,
        },
        "rows": rows,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'model':<12} {'TVM ms':>10} {'ORT ms':>10} {'ratio':>7} {'native':>7} {'TVM err':>9}")
    for row in rows:
        if row.get("error"):
            print(f"{row['model']:<12} FAILED {row['error'].strip().splitlines()[-1]}")
            continue
        print(f"{row['model']:<12} {row['tvm_ms']:>10.1f} {row['onnxruntime_ms']:>10.1f} {row['ratio']:>6.2f}x "
              f"{_fmt(row.get('native_ratio'), '.2f'):>6}x {row['tvm_max_abs_diff']:>9.1e}")
    if not args.no_docs:
        write_docs(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
