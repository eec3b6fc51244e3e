#!/usr/bin/env python
"""Compile small models for the targets beyond the CPU (an NVIDIA instance with FP16, a Jetson
board, a TargetPlatform with Accelerator NVIDIA, Core ML, a flexible-shape FP16 Graviton2 job)
through the real ``airflow-neo`` CLI, and print every command with its real output (the source of
the session in docs/cli.rst, section "Other targets (local backend)").

    nice -n 10 .venv/bin/python scripts/target_examples.py [DIRECTORY]   # default /tmp/neo-targets

The models are the test suite's (tests/local/models.py, tests/local/test_flexible_shapes.py:
random weights, a few layers). Each job runs ``create-compilation-job``, ``wait``,
``describe-compilation-job`` and ``describe-compilation-report`` as
scripts/framework_examples.py does. Exit status: 0 when every job is COMPLETED.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from framework_examples import ROLE, cli_environment, run_session, shorthand_json  # noqa: E402


@dataclass
class TargetJob:
    name: str
    comment: str
    framework: str
    archive: Path
    data_input: object
    output: str  #: the OutputConfig shorthand after S3OutputLocation (target and options)


def _options(value: dict) -> str:
    return f"CompilerOptions={shorthand_json(value)}"


def build_jobs(directory: Path) -> list[TargetJob]:
    from tests.local import models
    from tests.local.test_flexible_shapes import _cnn_bytes

    onnx = models.onnx_cnn(directory / "models" / "onnx_cnn")
    torchscript = models.torchscript_cnn(directory / "models" / "torchscript_cnn")
    with tarfile.open(torchscript.archive) as tar:
        files = {member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()}
    files["labels.txt"] = "\n".join(f"class_{index}" for index in range(10)).encode()
    labelled = models.write_archive(directory / "models" / "coreml", files)
    flexible = models.write_archive(directory / "models" / "flexible", {"model.onnx": _cnn_bytes()})
    return [
        TargetJob("cnn-g4dn-fp16", "NVIDIA T4 instance, FP16 kernels", "ONNX", onnx.archive,
                  onnx.data_input_config, f"TargetDevice=ml_g4dn,{_options({'precision_mode': 'FP16'})}"),
        TargetJob("cnn-jetson-nano", "Jetson Nano: sm_53 cubin, aarch64 host code", "ONNX", onnx.archive,
                  onnx.data_input_config, "TargetDevice=jetson_nano"),
        TargetJob("cnn-arm64-nvidia", "TargetPlatform with Accelerator NVIDIA: gpu-code, trt-ver, cuda-ver", "ONNX",
                  onnx.archive, onnx.data_input_config,
                  "TargetPlatform={Os=LINUX,Arch=ARM64,Accelerator=NVIDIA},"
                  + _options({"gpu-code": "sm_72", "trt-ver": "8.5.2", "cuda-ver": "11.4"})),
        TargetJob("cnn-coreml", "Core ML from TorchScript: a batch range, class labels from the archive", "PYTORCH",
                  labelled, [{"shape": ["1..4", 3, 16, 16], "default_shape": [1, 3, 16, 16]}],
                  f"TargetDevice=coreml,{_options({'class_labels': 'labels.txt'})}"),
        TargetJob("cnn-c6g-fp16-flexible", "Graviton2, FP16, batch 1..4 (verified under QEMU at 1, 2 and 4)", "ONNX",
                  flexible, {"x": ["1..4", 3, 16, 16]}, f"TargetDevice=ml_c6g,{_options({'precision_mode': 'FP16'})}"),
    ]


def create_args(job: TargetJob, directory: Path) -> list[str]:
    input_config = (f"S3Uri={job.archive.as_uri()},DataInputConfig={shorthand_json(job.data_input)},"
                    f"Framework={job.framework}")
    output_config = f"S3OutputLocation={(directory / 'compiled' / job.name).as_uri()},{job.output}"
    return ["create-compilation-job", "--compilation-job-name", job.name, "--role-arn", ROLE,
            "--input-config", input_config, "--output-config", output_config,
            "--stopping-condition", "MaxRuntimeInSeconds=900"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", default="/tmp/neo-targets", type=Path)
    args = parser.parse_args(argv)
    directory = args.directory.resolve()
    for stale in ("airflow-home", "compiled", "models"):
        shutil.rmtree(directory / stale, ignore_errors=True)
    env = cli_environment(directory, None)
    jobs = build_jobs(directory)
    reports = [run_session(job.name, job.comment, create_args(job, directory), env) for job in jobs]
    print("\n# summary")
    for job, report in zip(jobs, reports):
        print(f"{job.name:24s} {report.get('status')!s:10s} verification passed={(report.get('verification') or {}).get('passed')}")
    return 0 if all(report.get("status") == "COMPLETED" for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
