#!/usr/bin/env python
"""A real Keras MobileNetV2 (``keras.applications.MobileNetV2(weights=None)``, 224x224, random
weights and batch-norm statistics, logits out) through the local backend's TENSORFLOW and KERAS paths: compile time and error vs TF.

The model is saved three ways and each is packed as a Neo model archive and compiled in this
process with :func:`airflow_neo.local.compiler.compile_model` (TargetPlatform LINUX/X86_64,
no tuning, the artifact's verification gate on):

* KERAS ``.keras`` and KERAS ``.h5`` with DataInputConfig ``{"<input name>": [1, 3, 224, 224]}``
  (NCHW, Neo's form for KERAS);
* TENSORFLOW SavedModel (``model.export``, signature ``serving_default``) with DataInputConfig
  ``{"<signature input>": [1, 224, 224, 3]}`` (NHWC).

For each it records the compile's wall time and phases, and the largest absolute difference of
the artifact's output (``airflow_neo.runtime``) from TensorFlow's own on one random image
(Keras ``model(x)`` on the NHWC image; the SavedModel's signature), and the verification's.
TensorFlow is imported before the first compile (its import time is reported on its own), so
the compile times do not include it. Writes ``benchmarks/results_tensorflow_models.json``.

Usage::

    python benchmarks/tensorflow_models.py

Needs the ``local`` and ``tensorflow`` extras.
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

RESULTS = ROOT / "benchmarks" / "results_tensorflow_models.json"
SIZE = 224


def _archive(directory: Path, root: Path) -> Path:
    from tests.local.models import write_archive

    files = {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}
    return write_archive(directory, files, compresslevel=1)


def _request(archive: Path, framework: str, data_input: dict) -> dict:
    return {
        "CompilationJobName": "tf-bench",
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": f"file://{archive}", "Framework": framework, "DataInputConfig": json.dumps(data_input)},
        "OutputConfig": {"S3OutputLocation": "file:///tmp/airflow-neo-out", "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
    }


def _compile(label: str, archive: Path, framework: str, data_input: dict, inputs: dict, want: np.ndarray,
             work: Path) -> dict:
    from airflow_neo import runtime
    from airflow_neo.local.compiler import compile_model

    artifact = work / label / "model-compiled.tar.gz"
    lines: list[str] = []
    started = time.monotonic()
    metadata = compile_model(_request(archive, framework, data_input), str(archive), str(artifact), log=lines.append,
                             verify="gate")
    seconds = time.monotonic() - started
    model = runtime.load(artifact)
    started = time.monotonic()
    (got,) = model.run(inputs)
    run_s = time.monotonic() - started
    verification = metadata.get("verification") or {}
    result = {
        "case": label, "framework": framework, "data_input_config": data_input, "compile_s": round(seconds, 2),
        "timings_s": metadata["timings_s"], "run_s": round(run_s, 3),
        "max_abs_error_vs_tf": float(np.abs(np.asarray(got) - want).max()),
        "output_max_abs": float(np.abs(want).max()), "output_std": float(np.std(want)),
        "verification": {key: verification.get(key) for key in ("passed", "reference")}
        | {"worst_max_abs_diff": max((o["max_abs_diff"] for o in verification.get("outputs", [])), default=None)},
        "versions": {key: metadata["versions"].get(key) for key in ("tensorflow", "tf2onnx", "keras", "onnx_opset")},
    }
    print(json.dumps(result), flush=True)
    return result


def _randomize_batch_norms(model) -> None:
    """Batch-norm statistics and scales away from their identity initial values, so that folding
    them is exercised and the logits spread (fresh MobileNetV2 logits are almost all alike)."""
    import keras

    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.uniform(-0.2, 0.2, beta.shape).astype("float32"),
                               rng.uniform(-0.2, 0.2, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, variance.shape).astype("float32")])


def main() -> None:
    started = time.monotonic()
    import tensorflow as tf
    import keras
    import tf2onnx  # noqa: F401

    tf_import_s = time.monotonic() - started
    import tvm  # noqa: F401 - imported once here too, so that no compile pays for it

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    _randomize_batch_norms(model)
    from airflow_neo.local.convert.keras import layer_name

    input_name = layer_name(model.inputs[0])  # the InputLayer's name, what a saved model's input is called
    image = np.random.default_rng(0).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype("float32")
    want = np.asarray(model(image, training=False))
    results = []
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as scratch:
        work = Path(scratch)
        for suffix in (".keras", ".h5"):
            root = work / f"keras{suffix}"
            root.mkdir()
            model.save(root / f"mobilenet_v2{suffix}")
            archive = _archive(work / f"archive{suffix}", root)
            results.append(_compile(f"keras{suffix}", archive, "KERAS", {input_name: [1, 3, SIZE, SIZE]},
                                    {input_name: image.transpose(0, 3, 1, 2)}, want, work))
        root = work / "saved_model"
        model.export(str(root), format="tf_saved_model", verbose=False)
        signature = tf.saved_model.load(str(root)).signatures["serving_default"]
        (name,) = signature.structured_input_signature[1]
        (key,) = signature.structured_outputs
        want_tf = signature(**{name: tf.constant(image)})[key].numpy()
        archive = _archive(work / "archive_saved_model", root)
        results.append(_compile("saved_model", archive, "TENSORFLOW", {name: [1, SIZE, SIZE, 3]}, {name: image},
                                want_tf, work))
    summary = {"model": "keras.applications.MobileNetV2(weights=None, classifier_activation=None) with random batch-norm statistics, 224x224, batch 1 (logits)",
               "tensorflow_import_s": round(tf_import_s, 2), "results": results}
    RESULTS.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
