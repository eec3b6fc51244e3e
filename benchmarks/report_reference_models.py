#!/usr/bin/env python
"""Real verification and profile reports of the three reference models, as a user gets them.

For each reference model of ``benchmarks/bench_local.py`` (``transformer``, ``mobilenetv2``,
``resnet18``; random weights, exported to ONNX), this script does what a shell user does:

1. ``airflow-neo --backend local create-compilation-job --cli-input-json file://request.json``
   (target ``ml_c4``: AVX2 Haswell, what this machine runs; default settings: no tuning budget, verification ``gate``);
2. ``airflow-neo wait compilation-job-completed``;
3. ``airflow-neo describe-compilation-report`` (JSON) and its text form.

Everything runs in a fresh ``AIRFLOW_HOME`` under ``--work`` (a SQLite job store), with
``[neo] profile_seconds`` set by ``--profile-seconds`` (default 10) and ``TVM_NUM_THREADS`` by
``--threads``. The reports go to ``benchmarks/results_reports.json``; ``docs/reports.rst`` quotes
them. Usage::

    python benchmarks/report_reference_models.py --threads 2 --profile-seconds 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_local  # noqa: E402

TARGET = {"TargetDevice": "ml_c4"}


def _cli(env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "airflow_neo", "--backend", "local", *args], env=env,
                            capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"airflow-neo {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def _request(name: str, archive: Path, out: Path) -> dict:
    return {
        "CompilationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/reports",
        "InputConfig": {"S3Uri": archive.as_uri(), "Framework": "ONNX",
                        "DataInputConfig": json.dumps({"input0": bench_local.INPUT_SHAPES[name.split("-")[0]]})},
        "OutputConfig": {"S3OutputLocation": out.as_uri(), **TARGET},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
    }


def report_for(model: str, work: Path, env: dict) -> dict:
    onnx_path = work / f"{model}.onnx"
    archive = work / f"{model}.tar.gz"
    bench_local.export_onnx(model, onnx_path)
    bench_local.write_archive(onnx_path, archive)
    name = f"{model}-report"
    request = work / f"{name}.json"
    request.write_text(json.dumps(_request(name, archive, work / "out" / model)))
    _cli(env, "create-compilation-job", "--cli-input-json", request.as_uri())
    _cli(env, "wait", "compilation-job-completed", "--compilation-job-name", name, "--delay", "5",
         "--max-attempts", "720")
    report = json.loads(_cli(env, "describe-compilation-report", "--compilation-job-name", name))
    text = _cli(env, "describe-compilation-report", "--compilation-job-name", name, "--output", "text")
    return {"model": model, "report": report, "text": text}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(bench_local.MODELS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/airflow-neo-reports"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_reports.json")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    home = args.work / "airflow_home"
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__NEO__PROFILE_SECONDS": str(args.profile_seconds),
           "TVM_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    env.pop("AIRFLOW__NEO__LOCAL_STORE", None)
    results = []
    for model in args.models.split(","):
        result = report_for(model, args.work, env)
        print(result["text"], flush=True)
        results.append(result)
    args.out.write_text(json.dumps({"date": dt.date.today().isoformat(), "threads": args.threads,
                                    "profile_seconds": args.profile_seconds, "target": TARGET,
                                    "reports": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
