"""Run CUDA artifacts on a real NVIDIA GPU against onnxruntime: the check CI cannot make.

Two steps, so that the GPU machine needs only the runtime (TVM, numpy, airflow_neo) and no compile
toolchain:

    # here (any machine with the cuda extra): compile the models for the GPU's architecture and
    # record inputs and onnxruntime's outputs beside each artifact
    .venv/bin/python scripts/gpu_check.py build /tmp/gpu-check --arch sm_90

    # on the GPU machine: run each artifact on cuda:0 through airflow_neo.runtime, compare, time
    python scripts/gpu_check.py run /tmp/gpu-check > gpu_check.json

``run`` prints one JSON object: the GPU's name (nvidia-smi), and per model and precision the max
abs error against onnxruntime on the CPU and the median latency (20 runs after 3 warm-ups).
Record the numbers and the GPU in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("onnx_cnn", "onnx_transformer", "torchscript_cnn")
PRECISIONS = ("FP32", "FP16")


def build(out: Path, arch: str) -> None:
    import numpy as np

    from airflow_neo.local.compiler import compile_model
    from tests.local import models

    out.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        case = getattr(models, name)(Path(tempfile.mkdtemp(prefix=f"gpu-{name}-")))
        expected = [np.asarray(array) for array in case.reference(case.inputs)]
        np.savez(out / f"{name}.npz", **{f"input:{k}": v for k, v in case.inputs.items()},
                 **{f"output:{i}": v for i, v in enumerate(expected)})
        for precision in PRECISIONS:
            request = models.make_request(
                case, target_platform={"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"},
                compiler_options={"gpu-code": arch, "trt-ver": "10.0.0", "cuda-ver": "12.9", "precision_mode": precision})
            compile_model(request, str(case.archive), str(out / f"{name}-{precision}.tar.gz"), log=lambda _: None)
            print(f"built {name} {precision} for {arch}", file=sys.stderr)


def run(out: Path) -> dict:
    import numpy as np

    from airflow_neo import runtime

    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        gpu = "unknown (no nvidia-smi)"
    results = {"gpu": gpu, "models": []}
    for name in MODELS:
        data = np.load(out / f"{name}.npz")
        inputs = {key.split(":", 1)[1]: data[key] for key in data.files if key.startswith("input:")}
        expected = [data[f"output:{i}"] for i in range(sum(key.startswith("output:") for key in data.files))]
        for precision in PRECISIONS:
            model = runtime.load(out / f"{name}-{precision}.tar.gz", device="cuda")
            got = model.run(inputs)
            error = max(float(np.max(np.abs(g.astype("float64") - np.asarray(w).reshape(g.shape))))
                        for g, w in zip(got, expected))
            for _ in range(3):
                model.run(inputs)
            times = []
            for _ in range(20):
                started = time.perf_counter()
                model.run(inputs)
                times.append(time.perf_counter() - started)
            results["models"].append({"model": name, "precision": precision, "max_abs_error": error,
                                      "median_ms": round(1000 * sorted(times)[len(times) // 2], 3)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("build", "run"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", default="sm_90", help="the GPU's architecture (H100/H200: sm_90)")
    args = parser.parse_args()
    if args.step == "build":
        build(args.out, args.arch)
    else:
        print(json.dumps(run(args.out), indent=2))


if __name__ == "__main__":
    main()
