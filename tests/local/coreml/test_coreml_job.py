"""TargetDevice coreml as a job: compile_model writes an artifact holding the Core ML package and
metadata.json (no model.so), says it is not verified and why, and the runtime refuses to load it
here. The conversion itself is tested in test_coreml.py."""

from __future__ import annotations

import json
import tarfile

import pytest

from airflow_neo.local.compiler import compile_model
from airflow_neo.local.errors import IncompatibleArtifactError, UnsupportedFrameworkError
from tests.local import models
from tests.support.requires import require

LABELS = [f"class_{index}" for index in range(10)]


@pytest.fixture(scope="module")
def torchscript_with_labels(tmp_path_factory):
    require("coremltools", "pip install 'airflow-neo[coreml]'")
    directory = tmp_path_factory.mktemp("coreml-job")
    case = models.torchscript_cnn(directory)
    with tarfile.open(case.archive) as tar:
        files = {member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()}
    files["labels.txt"] = "\n".join(LABELS).encode()
    archive = models.write_archive(directory, files, name="with-labels.tar.gz")
    return models.ModelCase(archive, case.reference, framework=case.framework, data_input_config=case.data_input_config,
                            inputs=case.inputs, model_file=case.model_file)


def test_coreml_job_artifact(torchscript_with_labels, tmp_path):
    from airflow_neo import runtime

    case = torchscript_with_labels
    request = models.make_request(
        case, target_device="coreml",
        data_input_config=[{"shape": ["1..4", 3, 16, 16], "default_shape": [1, 3, 16, 16]}],
        compiler_options={"class_labels": "labels.txt"})
    lines: list[str] = []
    artifact = tmp_path / "model-coreml.tar.gz"
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append)
    with tarfile.open(artifact) as tar:
        names = tar.getnames()
        stored = json.load(tar.extractfile("metadata.json"))
    assert "model.so" not in names
    assert "model.mlpackage/Manifest.json" in names
    assert any(name.startswith("model.mlpackage/Data/com.apple.CoreML/") for name in names)
    assert stored == json.loads(json.dumps(metadata))
    assert metadata["runtime"] == "coreml" and metadata["library"] == "model.mlpackage"
    assert metadata["target"]["label"] == "coreml" and metadata["target"]["os"] == "APPLE"
    assert metadata["verification"]["passed"] is None
    assert "cannot run on Linux" in metadata["verification"]["not_verified"]
    summary = metadata["coreml"]
    assert summary["classifier"]["labels"] == len(LABELS) and summary["classifier"]["labels_file"] == "labels.txt"
    assert summary["model_type"] == "mlProgram" and summary["compute_precision"] == "FP32"
    assert metadata["inputs"][0]["shape"][0] is None, "the batch range is a flexible dimension"
    assert metadata["versions"]["coremltools"]
    assert [line for line in lines if line.startswith("phase convert: ")]
    with pytest.raises(IncompatibleArtifactError, match="Core ML"):
        runtime.load(artifact)


def test_coreml_job_refuses_onnx(tmp_path):
    require("coremltools", "pip install 'airflow-neo[coreml]'")
    case = models.onnx_cnn(tmp_path)
    request = models.make_request(case, target_device="coreml")
    with pytest.raises(UnsupportedFrameworkError, match="TensorFlow/Keras and PyTorch"):
        compile_model(request, str(case.archive), str(tmp_path / "a.tar.gz"), log=lambda _: None)
    assert not (tmp_path / "a.tar.gz").exists()
