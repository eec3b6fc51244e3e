"""Measure FP16 (``precision_mode``) error against the float32 reference, per accumulation dtype.

Each small model (the test suite's ONNX CNN, two MobileNetV2 blocks, a transformer block) is
imported, rewritten by :func:`airflow_neo.local.precision.apply_precision` with float32 and with
float16 accumulation, built for this x86-64 host (TargetDevice ml_c5: no float16 arithmetic, so
LLVM computes each float16 op in float32 and rounds its result to float16: the same values a
``fullfp16`` CPU gives for each op, up to FMA contraction) and run on several random inputs;
the worst ``max|tvm - onnxruntime| / max|onnxruntime|`` per model is printed, with FP32 for
comparison. The product refuses FP16 for ml_c5 (it lacks avx512fp16); this script calls the
rewrite directly to measure numbers only. Usage: ``python scripts/fp16_error.py [runs]``, or
``python scripts/fp16_error.py --zoo resnet50 efficientnet_b0 ... [--small]`` for architectures of
``tests/local/zoo.py`` (random weights) on the zoo's inputs.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _models(tmp: Path) -> dict:
    from tests.local import models
    from tests.local.test_arm_emulation import _mobilenet_block_onnx

    cnn = models.onnx_cnn(tmp / "cnn")
    transformer = models.onnx_transformer(tmp / "transformer")
    found = {}
    for name, case in (("cnn", cnn), ("transformer_block", transformer)):
        with tarfile.open(case.archive) as tar:
            found[name] = (tar.extractfile("model.onnx").read(), case.data_input_config)
    found["mobilenet_blocks"] = (_mobilenet_block_onnx().SerializeToString(), {"image": [1, 16, 24, 24]})
    return found


def _run(onnx_bytes: bytes, shapes: dict, accumulate: str | None, runs: int, tmp: Path, inputs: dict | None = None) -> float:
    import onnxruntime
    import tvm
    from tvm import relax

    from airflow_neo.local import compiler, precision
    from airflow_neo.local.frontends import IMPORTERS
    from airflow_neo.local.targets import resolve_target

    path = tmp / "model.onnx"
    path.write_bytes(onnx_bytes)
    imported = IMPORTERS["ONNX"](path, shapes, None, lambda line: None)
    target = resolve_target({"TargetDevice": "ml_c5"}, {})
    if accumulate:
        plan = precision.PrecisionPlan("FP16", feature="measurement only", accumulate=accumulate)
        imported.mod, _ = precision.apply_precision(imported.mod, plan, None, lambda line: None)
    executable = compiler._build(imported, target, None, lambda line: None)[0]
    vm = relax.VirtualMachine(executable, tvm.cpu())
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed in range(runs):
        if inputs is None or seed:
            rng = np.random.default_rng(seed)
            inputs = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
        got = vm["main"](*[tvm.runtime.tensor(array) for array in inputs.values()])
        got = [got] if hasattr(got, "numpy") else list(got)
        want = session.run(None, inputs)
        for g, w in zip(got, want):
            g = g.numpy().astype(np.float64)
            if not np.all(np.isfinite(g)):
                return float("inf")
            worst = max(worst, float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-12)))
    return worst


def _zoo(names: list[str], small: bool, tmp: Path) -> None:
    """Zoo architectures (tests/local/zoo.py, random weights, ONNX route): relative error of FP32 and of
    FP16 (float32 accumulation) against onnxruntime on the zoo's inputs, and compile seconds."""
    import time

    from tests.local import zoo

    for name in names:
        built = zoo.ZOO[name].build(small)
        shapes = {key: list(value.shape) for key, value in built.inputs.items()}
        row = {}
        for label, accumulate in (("fp32", None), ("fp16/acc32", "float32")):
            started = time.monotonic()
            row[label] = _run(built.files[built.model_file], shapes, accumulate, 1, tmp, inputs=built.inputs)
            row[label + " compile_s"] = time.monotonic() - started
        print(f"{name:20s} {'small' if small else 'full'} " + "  ".join(
            f"{key} {value:.2e}" if "compile" not in key else f"{key} {value:.0f}" for key, value in row.items()), flush=True)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--zoo":
        small = "--small" in argv
        with tempfile.TemporaryDirectory() as tmp:
            _zoo([name for name in argv[1:] if name != "--small"], small, Path(tmp))
        return 0
    runs = int(argv[0]) if argv else 5
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (onnx_bytes, shapes) in _models(tmp).items():
            row = {label: _run(onnx_bytes, shapes, accumulate, runs, tmp)
                   for label, accumulate in (("fp32", None), ("fp16/acc32", "float32"), ("fp16/acc16", "float16"))}
            print(f"{name:20s} " + "  ".join(f"{label} {value:.2e}" for label, value in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
