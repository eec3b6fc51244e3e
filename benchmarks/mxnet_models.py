"""The MXNET converter on Gluon model zoo architectures at full size (random weights and BatchNorm
statistics; nothing downloaded), built, exported and run by MXNet 1.9.1 in its side virtualenv:
converted ONNX (onnxruntime) vs MXNet, and TVM compiles verified by MXNet, with their seconds.

    .venv/bin/python benchmarks/mxnet_models.py [--compile NAME ...] [NAME ...]

The side Python is $AIRFLOW_NEO_MXNET_PYTHON or /var/cache/airflow-neo/mxnet-venv/bin/python
(pip install 'mxnet==1.9.1' 'numpy<1.24' in a virtualenv of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ["resnet18_v1", "resnet50_v2", "mobilenet1.0", "mobilenetv2_1.0", "squeezenet1.1", "densenet121",
          "vgg11_bn", "alexnet", "inceptionv3"]
COMPILED = ["resnet18_v1", "mobilenetv2_1.0"]


def _side_python() -> str:
    from airflow_neo.local.convert.mxnet import SIDE_PYTHON_ENV

    return os.environ.get(SIDE_PYTHON_ENV, "/var/cache/airflow-neo/mxnet-venv/bin/python")


def _max_error(ours, theirs) -> str:
    return ", ".join(f"{float(np.abs(a - b).max()):.2e} (range {float(np.abs(b).max()):.3g})" for a, b in zip(ours, theirs))


def run(name: str, info: dict, folder: Path, compile_too: bool) -> None:
    import onnxruntime as ort

    from airflow_neo.local.convert import Source, mxnet

    model_dir = folder / name
    symbol = model_dir / f"{name}-symbol.json"
    x = np.load(model_dir / "inputs.npz")["data"]
    with np.load(model_dir / "outputs.npz") as saved:
        theirs = [saved[f"out{i}"] for i in range(len(saved.files))]
    started = time.monotonic()
    converted = mxnet.convert(Source("MXNET", symbol, model_dir, info["data_input"], {}, folder / f"{name}-work",
                                     lambda _line: None))
    seconds = time.monotonic() - started
    session = ort.InferenceSession(str(converted.onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"data": x})
    print(f"{name}: convert {seconds:.2f} s; onnxruntime vs MXNet max abs error: {_max_error(ours, theirs)}", flush=True)
    if compile_too:
        _compile(name, model_dir, info, folder, x, theirs)


def _compile(name, model_dir, info, folder, x, theirs):
    from airflow_neo import runtime
    from airflow_neo.local.compiler import compile_model
    from tests.local import models

    files = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.suffix in (".json", ".params")}
    archive = models.write_archive(folder / f"{name}-archive", files)
    case = models.ModelCase(archive, None, framework="MXNET", data_input_config=info["data_input"], inputs={},
                            model_file=f"{name}-symbol.json")
    request = models.make_request(case, target_platform={"Os": "LINUX", "Arch": "X86_64"})
    artifact = folder / f"{name}-out" / "model-compiled.tar.gz"
    started = time.monotonic()
    metadata = compile_model(request, str(archive), str(artifact), log=lambda _line: None, verify="gate")
    verification = metadata.get("verification") or {}
    print(f"  compile: {time.monotonic() - started:.1f} s {metadata['timings_s']}; verification passed: "
          f"{verification.get('passed')} ({verification.get('reference')})", flush=True)
    model = runtime.load(artifact)
    got = model.run({"data": x})
    started = time.monotonic()
    for _ in range(3):
        model.run({"data": x})
    print(f"  TVM (untuned) run: {(time.monotonic() - started) / 3 * 1000:.0f} ms; vs MXNet max abs error: "
          f"{_max_error(got, theirs)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", nargs="*", default=COMPILED, help="the models to compile too")
    parser.add_argument("models", nargs="*", default=MODELS)
    args = parser.parse_args()
    side = _side_python()
    os.environ.setdefault("AIRFLOW_NEO_MXNET_PYTHON", side)
    with tempfile.TemporaryDirectory(prefix="mxnet-bench-") as scratch:
        folder = Path(scratch)
        started = time.monotonic()
        subprocess.run([side, str(ROOT / "tests/local/convert/mxnet_gluon.py"), scratch, "--zoo", *args.models],
                       check=True, stderr=subprocess.DEVNULL)
        print(f"MXNet built and ran {len(args.models)} models in {time.monotonic() - started:.1f} s")
        manifest = json.loads((folder / "manifest.json").read_text())
        for name in args.models:
            run(name, manifest["models"][name], folder, name in args.compile)


if __name__ == "__main__":
    main()
