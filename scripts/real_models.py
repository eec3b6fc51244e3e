"""Compile the real-model zoo through the local backend and write the results table to docs/.

Each architecture of :data:`tests.local.zoo.ZOO` (transformers, torchvision and timm classes with
random weights; a detection model; quantized and recurrent models) is built, compiled through the
local compile path for TargetPlatform LINUX/X86_64, run, and compared with its reference
(onnxruntime on the ONNX file; torch for TorchScript and ``.pt2``), each in its own process with a
time limit, so one crash or hang costs only its own row. The table (status, FailureReason, compile
time, numerics) goes between the markers of ``docs/real_models.md``; the raw results to
``benchmarks/results_real_models.json``.

    .venv/bin/python scripts/real_models.py                # the whole zoo, full size (~30-60 min on 2 cores)
    .venv/bin/python scripts/real_models.py --small        # smaller configurations of the same classes
    .venv/bin/python scripts/real_models.py --only bert gpt2 --no-write

Needs the ``local`` and ``torch`` extras plus torchvision, transformers and timm (``scripts/setup.sh``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.local.zoo import ZOO, Result, check  # noqa: E402

DOC = ROOT / "docs" / "real_models.md"
RESULTS = ROOT / "benchmarks" / "results_real_models.json"
BEGIN_MARK = "<!-- real_models:start -->"
END_MARK = "<!-- real_models:end -->"


def run_one(name: str, small: bool, timeout: float) -> Result:
    """``check`` of one architecture in a child process (its own crash or hang is its own row)."""
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as work:
        out = Path(work) / "result.json"
        command = [sys.executable, __file__, "--child", name, "--result", str(out)] + (["--small"] if small else [])
        started = time.monotonic()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                                  env={**os.environ, "TVM_LOG_DEBUG": "0"})
        except subprocess.TimeoutExpired:
            return Result(name, "failed", f"no result within the script's limit of {timeout:.0f} s",
                          round(time.monotonic() - started, 1), route=ZOO[name].route)
        if out.exists():
            return Result(**json.loads(out.read_text()))
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return Result(name, "failed", f"the check process exited with code {proc.returncode}: {tail[0][:300]}",
                      route=ZOO[name].route)


def child(name: str, small: bool, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="zoo-") as work:
        result = check(ZOO[name], Path(work), small=small)
    result.details = {"onnx_normalized": result.details.get("versions", {}).get("onnx_normalized"),
                      "torch_route": result.details.get("versions", {}).get("torch_route")}
    out.write_text(json.dumps(dataclasses.asdict(result), default=str))


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[Result]) -> str:
    rows = ["| architecture | family | route | status | compile (s) | max error | reason |",
            "|---|---|---|---|---:|---:|---|"]
    for result in results:
        arch = ZOO[result.name]
        reason = result.reason.replace("|", "\\|").replace("\n", " ")
        if len(reason) > 300:
            reason = reason[:297] + "..."
        rows.append(f"| {arch.label} | {arch.family} | {arch.route} | {result.status} | {_fmt(result.compile_s, '.0f')} "
                    f"| {_fmt(result.max_error, '.1e')} | {reason} |")
    return "\n".join(rows)


def summary(results: list[Result]) -> str:
    tried = len(results)
    compiled = sum(r.status in ("matched", "mismatch") for r in results)
    matched = sum(r.status == "matched" for r in results)
    return f"{tried} architectures tried, {compiled} compiled, {matched} matched their reference ({matched / tried:.0%})."


def write_doc(results: list[Result], meta: dict) -> None:
    body = (f"{BEGIN_MARK}\n\nMeasured {meta['date']} ({'small configurations' if meta['small'] else 'full size'}, "
            f"TVM {meta['tvm']}, torch {meta['torch']}, onnxruntime {meta['onnxruntime']}): "
            f"{summary(results)}\n\n{table(results)}\n\n{END_MARK}")
    text = DOC.read_text()
    start, end = text.index(BEGIN_MARK), text.index(END_MARK) + len(END_MARK)
    DOC.write_text(text[:start] + body + text[end:])


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for key, package in (("tvm", "apache-tvm"), ("torch", "torch"), ("onnxruntime", "onnxruntime")):
        try:
            found[key] = version(package)
        except PackageNotFoundError:
            found[key] = "?"
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(ZOO), help="architectures to run (default: all)")
    parser.add_argument("--small", action="store_true", help="smaller configurations of the same architectures")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per architecture (default 1800)")
    parser.add_argument("--no-write", action="store_true", help="print the table; do not write docs/ or benchmarks/")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.small, args.result)
        return 0
    results = []
    for name in args.only or list(ZOO):
        result = run_one(name, args.small, args.timeout)
        print(f"{name}: {result.status} compile={_fmt(result.compile_s, '.1f')}s err={_fmt(result.max_error, '.1e')} "
              f"{result.reason[:200]}", flush=True)
        results.append(result)
    print(summary(results))
    if args.no_write:
        print(table(results))
        return 0
    meta = {"date": dt.date.today().isoformat(), "small": args.small, **_versions()}
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    key = "small" if args.small else "full"
    runs = previous.get(key, {}) if args.only else {}
    runs.update({r.name: dataclasses.asdict(r) for r in results})
    previous[key] = runs
    previous[f"{key}_meta"] = meta
    RESULTS.write_text(json.dumps(previous, indent=1, default=str) + "\n")
    ordered = [Result(**runs[name]) for name in ZOO if name in runs]
    write_doc(ordered, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
