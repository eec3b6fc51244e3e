#!/usr/bin/env python
"""Compile one small model of each framework the local backend converts to ONNX (KERAS .h5,
TENSORFLOW SavedModel and frozen graph, DARKNET, MXNET) through the real ``airflow-neo`` CLI, as a
shell user would, and print every command with its real output (the source of the session in
docs/cli.rst, section "Other frameworks (local backend)").

    nice -n 10 .venv/bin/python scripts/framework_examples.py [DIRECTORY]   # default /tmp/neo-frameworks

The models are the test builders' (tests/local/convert/: random weights, a few layers), packed as
Neo model archives (``.tar.gz``, the model's files at the top level; a SavedModel's directory
contents). Each job runs ``create-compilation-job`` (AWS CLI shorthand), ``wait
compilation-job-completed``, ``describe-compilation-job`` and ``describe-compilation-report``
in a subprocess of ``.venv/bin/airflow-neo --backend local`` whose ``AIRFLOW_HOME`` is
``DIRECTORY/airflow-home`` (a fresh job store: the directory's previous jobs are removed first).

Verification references: TensorFlow/Keras (installed with the tensorflow extra), OpenCV for
DARKNET, and MXNet for MXNET when ``AIRFLOW_NEO_MXNET_PYTHON`` names the side virtualenv's python;
when it is unset this script builds or reuses that virtualenv (scripts/mxnet_venv.sh) unless
``--no-mxnet-venv`` is given (then the MXNET job falls back to onnxruntime, and its report says so).
Exit status: 0 when every job is COMPLETED with a passed verification, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = REPO / ".venv" / "bin" / "airflow-neo"
ROLE = "arn:aws:iam::123456789012:role/NeoRole"
TARGET = "ml_c5"


@dataclass
class Job:
    """One compilation job: its name, framework, archive, DataInputConfig and CompilerOptions."""

    name: str
    framework: str
    archive: Path
    data_input: dict
    compiler_options: dict = field(default_factory=dict)


# -- the models ---------------------------------------------------------------------------------


def build_jobs(directory: Path) -> list[Job]:
    """Write the five models and their archives under ``directory/models``."""
    sys.path.insert(0, str(REPO))
    from tests.local.convert import darknet_nets, mxnet_handmade, tf_models
    from tests.local.models import write_archive

    models = directory / "models"
    keras = tf_models.keras_case(models, ".h5")
    saved = tf_models.saved_model_case(models, signature_key="serving_default")
    frozen = tf_models.frozen_graph_case(models)
    cfg = darknet_nets.write_model(models / "darknet", "yolov4-tiny", darknet_nets.yolov4_tiny(size=64))
    symbol, params, data = mxnet_handmade.small_cnn(fix_gamma=True)
    symbol_file = mxnet_handmade.write_model(models / "mxnet", symbol, params)
    return [
        Job("keras-h5", "KERAS", keras.archive, keras.data_input_config),
        Job("tf-savedmodel", "TENSORFLOW", saved.archive, saved.data_input_config,
            {"signature_def_key": "serving_default"}),
        Job("tf-frozen", "TENSORFLOW", frozen.archive, frozen.data_input_config,
            {"output_names": ["output_tensor:0"]}),
        Job("darknet-yolov4-tiny", "DARKNET", _pack(write_archive, cfg.parent, models / "darknet_archive"),
            {"data": [1, 3, 64, 64]}),
        Job("mxnet-small-cnn", "MXNET", _pack(write_archive, symbol_file.parent, models / "mxnet_archive"),
            {"data": list(data.shape)}),
    ]


def _pack(write_archive, folder: Path, destination: Path) -> Path:
    """``destination/model.tar.gz`` holding ``folder``'s files at the top level."""
    files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
    return write_archive(destination, files)


# -- the CLI ------------------------------------------------------------------------------------


def shorthand_json(value) -> str:
    """A JSON value as a double-quoted shorthand value: ``"{\\"data\\": [1, 3, 64, 64]}"``."""
    return '"' + json.dumps(value).replace('"', '\\"') + '"'


def create_args(job: Job, directory: Path) -> list[str]:
    input_config = (f"S3Uri={job.archive.as_uri()},DataInputConfig={shorthand_json(job.data_input)},"
                    f"Framework={job.framework}")
    output_config = f"S3OutputLocation={(directory / 'compiled' / job.name).as_uri()},TargetDevice={TARGET}"
    if job.compiler_options:
        output_config += f",CompilerOptions={shorthand_json(job.compiler_options)}"
    return ["create-compilation-job", "--compilation-job-name", job.name, "--role-arn", ROLE,
            "--input-config", input_config, "--output-config", output_config,
            "--stopping-condition", "MaxRuntimeInSeconds=900"]


def run_cli(args: list[str], env: dict, *, show: bool = True) -> subprocess.CompletedProcess:
    """Run ``airflow-neo --backend local ARGS``; print the command, its output and a non-zero exit."""
    argv = ["airflow-neo", "--backend", "local", *args]
    result = subprocess.run([str(CLI), *argv[1:]], env=env, capture_output=True, text=True, check=False)
    if show:
        print("$ " + shlex.join(argv), flush=True)
        sys.stdout.write(result.stdout + result.stderr)
        if result.returncode:
            print(f"(exit code {result.returncode})")
        sys.stdout.flush()
    return result


def run_job(job: Job, directory: Path, env: dict) -> dict:
    """The job's four commands; returns its report (JSON) for the summary."""
    return run_session(job.name, f"{job.framework}, archive {job.archive}", create_args(job, directory), env)


def run_session(name: str, heading: str, create: list[str], env: dict) -> dict:
    """``create`` (the create-compilation-job arguments), then wait, describe and the report, under
    the comment ``# name: heading``; returns the report (JSON)."""
    print(f"\n# {name}: {heading}", flush=True)
    run_cli(create, env)
    run_cli(["wait", "compilation-job-completed", "--compilation-job-name", name,
             "--delay", "5", "--max-attempts", "120"], env)
    run_cli(["describe-compilation-job", "--compilation-job-name", name,
             "--query", "[CompilationJobStatus, FailureReason]", "--output", "text"], env)
    run_cli(["describe-compilation-report", "--compilation-job-name", name, "--output", "text"], env)
    report = run_cli(["describe-compilation-report", "--compilation-job-name", name], env, show=False)
    try:
        return json.loads(report.stdout)
    except ValueError:
        return {"status": f"no report (exit {report.returncode}): {report.stderr.strip()}"}


# -- the environment ----------------------------------------------------------------------------


def mxnet_python(build: bool) -> str | None:
    """AIRFLOW_NEO_MXNET_PYTHON, else (``build``) the side virtualenv's python from mxnet_venv.sh."""
    if os.environ.get("AIRFLOW_NEO_MXNET_PYTHON"):
        return os.environ["AIRFLOW_NEO_MXNET_PYTHON"]
    if not build:
        return None
    done = subprocess.run(["bash", str(REPO / "scripts" / "mxnet_venv.sh")], capture_output=True, text=True,
                          check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        print(f"scripts/mxnet_venv.sh failed (exit {done.returncode}); MXNET verifies against onnxruntime:\n"
              f"{done.stderr[-2000:]}")
        return None
    return lines[-1]


def cli_environment(directory: Path, mxnet: str | None) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW__NEO__")}
    env["AIRFLOW_HOME"] = str(directory / "airflow-home")
    env.pop("AIRFLOW_NEO_MXNET_PYTHON", None)
    if mxnet:
        env["AIRFLOW_NEO_MXNET_PYTHON"] = mxnet
    return env


def summary(jobs: list[Job], reports: list[dict]) -> bool:
    """Print one line per job (status, verification, reference); True when all passed."""
    print("\n# summary")
    ok = True
    for job, report in zip(jobs, reports):
        verification = report.get("verification") or {}
        passed = report.get("status") == "COMPLETED" and verification.get("passed") is True
        ok = ok and passed
        print(f"{job.name:22s} {job.framework:11s} {report.get('status')!s:10s} "
              f"passed={verification.get('passed')} reference: {verification.get('reference')}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", default="/tmp/neo-frameworks", type=Path)
    parser.add_argument("--no-mxnet-venv", action="store_true", help="do not build the MXNet side virtualenv")
    parser.add_argument("--only", nargs="+", metavar="JOB", help="run only these jobs (names as printed)")
    args = parser.parse_args(argv)
    directory = args.directory.resolve()
    for stale in ("airflow-home", "compiled", "models"):
        shutil.rmtree(directory / stale, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    mxnet = mxnet_python(not args.no_mxnet_venv)
    env = cli_environment(directory, mxnet)
    print(f"# AIRFLOW_HOME={env['AIRFLOW_HOME']}\n# AIRFLOW_NEO_MXNET_PYTHON={mxnet or '(unset)'}\n"
          f"# airflow-neo is {CLI}", flush=True)
    jobs = build_jobs(directory)
    if args.only:
        jobs = [job for job in jobs if job.name in args.only]
    reports = [run_job(job, directory, env) for job in jobs]
    return 0 if summary(jobs, reports) else 1


if __name__ == "__main__":
    sys.exit(main())
