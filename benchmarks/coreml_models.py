#!/usr/bin/env python
"""torchvision ResNet-18 and MobileNetV2 (random weights, 224x224) through the coreml target.

Each model is traced, saved with ``torch.jit.save`` into an archive folder beside a 1000-line
labels file, and converted with :func:`airflow_neo.local.coreml.compile_coreml` twice:

* ``tensor-range``: DataInputConfig ``[{"shape": ["1..8", 3, 224, 224], "default_shape": [1, 3, 224, 224]}]``,
  precision FP32 (Neo's default);
* ``image-classifier``: ``[{"shape": [1, 3, 224, 224], "type": "Image", "bias": [-1, -1, -1],
  "scale": 0.007843137255}]`` with ``class_labels`` and ``precision_mode`` FP16.

It records the conversion's wall time, the package size, the spec summary and, where the
saved program's ops are ones the tests' numpy MIL interpreter (``tests/local/coreml/mil_numpy.py``)
implements, the largest absolute difference of the saved program's output from torch's on one
random input, and the largest output magnitude for scale (Core ML itself cannot run on Linux; the
interpreter accumulates in float64, so an FP16 program's error is that of its FP16 weights and
activations, not of Core ML's FP16 kernels). coremltools (which imports torch and
TensorFlow) is imported before the first conversion, and its import time reported on its own.
Writes ``benchmarks/results_coreml_models.json``.

Usage::

    python benchmarks/coreml_models.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCALE = 0.007843137255
CASES = {
    "tensor-range": ([{"shape": ["1..8", 3, 224, 224], "default_shape": [1, 3, 224, 224]}], {}),
    "image-classifier": ([{"shape": [1, 3, 224, 224], "type": "Image", "bias": [-1, -1, -1], "scale": SCALE}],
                         {"class_labels": "labels.txt", "precision_mode": "FP16"}),
}


def _models():
    from airflow_neo.local.torch_import import register_torchvision_ops

    status = register_torchvision_ops()
    import torch
    import torchvision

    torch.manual_seed(0)
    built = {}
    for name, ctor in (("resnet18", torchvision.models.resnet18), ("mobilenet_v2", torchvision.models.mobilenet_v2)):
        model = ctor(weights=None).eval()
        for module in model.modules():  # random batch-norm statistics, as trained weights would have
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        built[name] = model
    return torch, built, status


def _error(torch, model, result, case: str):
    from tests.local.coreml import mil_numpy

    rng = np.random.default_rng(0)
    try:
        if case == "image-classifier":
            pixels = rng.integers(0, 256, (1, 3, 224, 224)).astype(np.float32)
            values = mil_numpy.run_program(result.path, {"x": pixels})
            got = np.array(list(values["classLabel_probs"].values()))
            expected = model(torch.from_numpy(pixels * np.float32(SCALE) - 1.0)).detach().numpy()[0]
        else:
            x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
            (name,) = mil_numpy.block_outputs(result.path)
            got = mil_numpy.run_program(result.path, {"x": x})[name]
            expected = model(torch.from_numpy(x)).detach().numpy()
    except BaseException as err:  # noqa: BLE001 - pytest.fail (an op the interpreter lacks) is reported, not raised
        return None, None, f"{type(err).__name__}: {str(err)[:200]}"
    return float(np.abs(got.astype(np.float64) - expected).max()), float(np.abs(expected).max()), None


def main() -> None:
    torch, models, torchvision_status = _models()
    started = time.perf_counter()
    from airflow_neo.local.coreml.convert import import_coremltools

    ct = import_coremltools(print)
    results = {"coremltools": ct.__version__, "torch": torch.__version__, "torchvision": torchvision_status,
               "coremltools_import_s": round(time.perf_counter() - started, 2), "models": {}}
    from airflow_neo.local.coreml import compile_coreml

    with tempfile.TemporaryDirectory() as work:
        for name, model in models.items():
            archive = Path(work) / name
            archive.mkdir()
            torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 224, 224)), str(archive / "model.pt"))
            (archive / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(1000)))
            for case, (data_input, options) in CASES.items():
                out = Path(work) / f"{name}-{case}"
                began = time.perf_counter()
                result = compile_coreml("PYTORCH", archive / "model.pt", archive, data_input, options, out, lambda _line: None)
                seconds = time.perf_counter() - began
                error, scale, why = _error(torch, model, result, case)
                size = sum(path.stat().st_size for _, path in result.files())
                entry = {"convert_s": round(seconds, 2), "package_mb": round(size / 2**20, 2), "max_abs_error": error,
                         "reference_max_abs": scale, "error_not_measured": why, "spec_summary": result.spec_summary,
                         "inputs": [s.describe() for s in result.inputs], "outputs": [s.describe() for s in result.outputs]}
                results["models"][f"{name}/{case}"] = entry
                print(f"{name:13s} {case:17s} convert {seconds:6.2f} s  {entry['package_mb']:6.2f} MB  "
                      f"max abs error {error if error is not None else why} (outputs up to {scale})")
    path = ROOT / "benchmarks" / "results_coreml_models.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
