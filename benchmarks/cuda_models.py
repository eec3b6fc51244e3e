"""Real architectures compiled for an NVIDIA GPU without one: which compile, how long it takes, what
the artifact holds (kernels, cubin size, half kernels under FP16), checked by the structure check.

    .venv/bin/python benchmarks/cuda_models.py [--arch sm_90] [--models resnet50,bert ...] [--full]

Uses the real-model zoo (tests/local/zoo.py; random weights, the small configurations unless
--full) with TargetPlatform LINUX/X86_64/NVIDIA. Writes benchmarks/results_cuda_models.json.
Numerics need a GPU: scripts/gpu_check.py runs artifacts on one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_MODELS = ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "densenet121", "swin_t",
                  "bert", "distilbert", "t5_encoder", "gpt2", "vit_torchscript", "lstm_forecaster")


def compile_one(name: str, arch: str, precision: str, small: bool, work: Path) -> dict:
    from airflow_neo.local.compiler import compile_model
    from airflow_neo.local.cuda.inspect import inspect_library
    from tests.local import zoo

    built = zoo.ZOO[name].build(small)
    archive = zoo.write_archive(work / name, built.files)
    request = zoo.request_for(built, archive, work / "out")
    request["OutputConfig"]["TargetPlatform"] = {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"}
    request["OutputConfig"]["CompilerOptions"] = json.dumps(
        {**(built.compiler_options or {}), "gpu-code": arch, "cuda-ver": "12.9", "trt-ver": "10.0.0",
         "precision_mode": precision})
    artifact = work / f"{name}-{precision}.tar.gz"
    started = time.monotonic()
    try:
        metadata = compile_model(request, str(archive), str(artifact), log=lambda _: None, verify="off")
    except Exception as err:  # noqa: BLE001 - a failure is a result
        return {"model": name, "precision": precision, "status": "failed", "reason": zoo.failure_reason(err)[:400],
                "seconds": round(time.monotonic() - started, 1)}
    import tarfile

    with tarfile.open(artifact) as tar:
        library = work / f"{name}-{precision}.so"
        library.write_bytes(tar.extractfile("model.so").read())
    structure = inspect_library(library)
    return {"model": name, "precision": precision, "status": "compiled", "seconds": round(time.monotonic() - started, 1),
            "timings_s": metadata["timings_s"], "arch": structure.arch, "kernels": len(structure.kernels),
            "cubin_bytes": structure.cubin_bytes, "float16_kernels": metadata["cuda"]["float16_kernels"],
            "nvrtc": metadata["cuda"]["nvrtc"], "artifact_bytes": artifact.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--full", action="store_true", help="full-size configurations (default: the small ones)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="cuda-models-") as tmp:
        for name in args.models.split(","):
            for precision in ("FP32", "FP16"):
                result = compile_one(name, args.arch, precision, not args.full, Path(tmp))
                print(json.dumps(result), flush=True)
                results.append(result)
    out = ROOT / "benchmarks" / "results_cuda_models.json"
    out.write_text(json.dumps({"arch": args.arch, "full_size": args.full, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
