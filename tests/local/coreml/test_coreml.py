"""The coreml target: tiny PyTorch, Keras and TensorFlow models converted to Core ML ML Programs.

Core ML models cannot run on Linux (coremltools' runtime is macOS-only), so no test runs the
artifact through Core ML. What the tests check instead, on the saved ``.mlpackage`` read back with
``ct.models.MLModel(path, skip_model_load=True)``: input names and types, range and enumerated
shapes with their defaults, image preprocessing (bias and scale) and classifier labels in the spec,
FP16 vs FP32 weights, and every error path. coremltools 9.0 has no MIL interpreter, so the saved
program is evaluated by a small numpy interpreter (:mod:`tests.local.coreml.mil_numpy`) and
compared with the source framework: that checks the converted program computes the source model
(and Neo's ``x * scale + bias`` image preprocessing), not Core ML's own kernels.

``import coremltools`` imports TensorFlow and torch (about 7 s): the module imports it once.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from airflow_neo.local.coreml import MEMBER, compile_coreml
from airflow_neo.local.errors import (
    ModelArchiveError,
    ModelInputError,
    OperatorAttributeNotImplementedError,
    UnsupportedFrameworkError,
    UnsupportedOperatorsError,
)
from tests.local.coreml.mil_numpy import block_outputs, run_program
from tests.support.requires import require

SEED = 7
LABELS_TEXT = "cat\n\ndog\r\n  bird \n\nfish\nfrog\n"
LABELS = ["cat", "dog", "bird", "fish", "frog"]


@pytest.fixture(scope="module")
def ct():
    return require("coremltools", "pip install 'coremltools==9.0'")


@pytest.fixture(scope="module")
def torch():
    return require("torch", "pip install 'airflow-neo[torch]'")


class _Net:
    """conv 3->4 (3x3, pad 1) -> relu -> global average pool -> linear 4->5."""

    @staticmethod
    def build(torch):
        torch.manual_seed(SEED)

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
                self.fc = torch.nn.Linear(4, 5)

            def forward(self, x):
                return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

        return Net().eval()


@pytest.fixture(scope="module")
def torch_archive(torch, tmp_path_factory):
    """An extracted archive: ``model.pt`` (traced TorchScript) and ``labels.txt``; the eager model."""
    root = tmp_path_factory.mktemp("torch_archive")
    model = _Net.build(torch)
    torch.jit.save(torch.jit.trace(model, torch.rand(1, 3, 32, 32)), str(root / "model.pt"))
    (root / "labels.txt").write_text(LABELS_TEXT)
    return root, model


def _compile(framework, model_file, data_input, options, out, lines=None):
    log = (lines.append if lines is not None else lambda _line: None)
    return compile_coreml(framework, model_file, model_file.parent, data_input, options, out, log)


def _spec(ct, result):
    assert result.path.is_dir() and result.path.name == MEMBER == result.member
    return ct.models.MLModel(str(result.path), skip_model_load=True).get_spec()


def _range(feature):
    array = feature.type.multiArrayType
    return [[r.lowerBound, r.upperBound] for r in array.shapeRange.sizeRanges], list(array.shape)


def _weight_types(ct, result) -> set:
    from coremltools.proto import MIL_pb2

    spec = _spec(ct, result)
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    return {MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType) for op in block.operations
            if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"}


# ----------------------------------------------------------------------------- PyTorch


def test_torch_range_batch_fp32(ct, torch, torch_archive, tmp_path):
    root, model = torch_archive
    lines = []
    result = _compile("PYTORCH", root / "model.pt", [{"shape": ["1..8", 3, 32, 32], "default_shape": [2, 3, 32, 32]}], {},
                      tmp_path / "out", lines)
    spec = _spec(ct, result)
    assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion == 6
    (feature,) = spec.description.input
    assert feature.name == "x" and feature.type.WhichOneof("Type") == "multiArrayType"  # forward's argument name
    assert _range(feature) == ([[1, 8], [3, 3], [32, 32], [32, 32]], [2, 3, 32, 32])
    assert _weight_types(ct, result) == {"FLOAT32"}  # precision_mode defaults to FP32, as Neo's
    assert [(s.name, s.shape, s.dtype) for s in result.inputs] == [("x", [None, 3, 32, 32], "float32")]
    assert [s.shape for s in result.outputs] == [[None, 5]]
    summary = result.spec_summary
    assert summary["compute_precision"] == "FP32" and summary["weights"] == {"float32": 4} and summary["classifier"] is None
    assert summary["inputs"][0]["shape_constraint"] == {"kind": "range", "ranges": [[1, 8], [3, 3], [32, 32], [32, 32]],
                                                        "default": [2, 3, 32, 32]}
    assert set(result.versions) == {"coremltools", "torch"} and result.versions["coremltools"] == ct.__version__
    assert any("coreml input x: Tensor [1..8, 3, 32, 32]" in line for line in lines)
    names = [name for name, _ in result.files()]
    assert f"{MEMBER}/Manifest.json" in names and f"{MEMBER}/Data/com.apple.CoreML/model.mlmodel" in names
    assert all(path.is_file() for _, path in result.files())

    x = np.random.default_rng(SEED).standard_normal((3, 3, 32, 32)).astype(np.float32)
    (name,) = block_outputs(result.path)
    got = run_program(result.path, {"x": x})[name]
    expected = model(torch.from_numpy(x)).detach().numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5


def test_torch_enumerated_image_classifier_fp16(ct, torch, torch_archive, tmp_path):
    root, model = torch_archive
    scale = 0.007843137255
    entry = {"shape": [[1, 3, 32, 32], [1, 3, 48, 64]], "default_shape": [1, 3, 48, 64], "type": "Image",
             "bias": [-1, -0.5, 0.25], "scale": scale}
    result = _compile("PYTORCH", root / "model.pt", {"input0": entry},
                      {"class_labels": "labels.txt", "precision_mode": "FP16"}, tmp_path / "out")
    spec = _spec(ct, result)
    (feature,) = spec.description.input
    image = feature.type.imageType
    assert feature.name == "x" and feature.type.WhichOneof("Type") == "imageType"
    from coremltools.proto import FeatureTypes_pb2

    assert image.colorSpace == FeatureTypes_pb2.ImageFeatureType.RGB
    assert (image.width, image.height) == (64, 48)  # the default shape
    assert sorted((s.width, s.height) for s in image.enumeratedSizes.sizes) == [(32, 32), (64, 48)]
    assert _weight_types(ct, result) == {"FLOAT16"}
    summary = result.spec_summary
    assert summary["inputs"][0]["preprocessing"]["bias"] == [-1.0, -0.5, 0.25]
    assert summary["inputs"][0]["preprocessing"]["scale"] == pytest.approx(scale, rel=1e-6)
    assert summary["classifier"]["labels"] == len(LABELS) and summary["compute_precision"] == "FP16"
    assert spec.description.predictedFeatureName == "classLabel"
    assert [o.name for o in spec.description.output] == ["classLabel", "classLabel_probs"]
    assert [(s.name, s.shape) for s in result.inputs] == [("x", [1, 3, None, None])]

    pixels = np.random.default_rng(SEED).integers(0, 256, (1, 3, 48, 64)).astype(np.float32)
    values = run_program(result.path, {"x": pixels})
    label, scores = values["classLabel"], values["classLabel_probs"]
    assert list(scores) == LABELS
    # Neo's preprocessing: x * scale + bias, per channel
    normalized = pixels * np.float32(scale) + np.array([-1, -0.5, 0.25], np.float32).reshape(1, 3, 1, 1)
    expected = model(torch.from_numpy(normalized)).detach().numpy()
    assert np.abs(np.array(list(scores.values())) - expected[0]).max() < 2e-2  # an FP16 program
    assert label == LABELS[int(expected[0].argmax())]


def test_torch_unsupported_operator_is_named(ct, torch, tmp_path):
    class Bucketize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("bounds", torch.tensor([0.1, 0.5]))

        def forward(self, x):
            return torch.bucketize(x, self.bounds)

    model_file = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(Bucketize().eval(), torch.rand(2, 3)), str(model_file))
    with pytest.raises(UnsupportedOperatorsError) as err:
        _compile("PYTORCH", model_file, [[2, 3]], {}, tmp_path / "out")
    assert err.value.operators == ["bucketize"] and "'bucketize'" in str(err.value)
    assert err.value.failure_reason.startswith("ClientError: OperatorNotImplemented: ")


def test_torch_shape_that_breaks_an_op_names_it(ct, torch_archive, tmp_path):
    root, _ = torch_archive
    with pytest.raises(OperatorAttributeNotImplementedError) as err:
        _compile("PYTORCH", root / "model.pt", {"x": [1, 3, 32]}, {}, tmp_path / "out")
    assert err.value.operators and err.value.operators[0] in str(err.value) and "x [1, 3, 32]" in str(err.value)


def test_torch_labels_count_must_match_the_output(ct, torch_archive, tmp_path):
    root, _ = torch_archive
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pt").write_bytes((root / "model.pt").read_bytes())
    (tmp_path / "m" / "three.txt").write_text("a\nb\nc\n")
    with pytest.raises(ModelInputError, match="'three.txt' holds 3 labels"):
        _compile("PYTORCH", tmp_path / "m" / "model.pt", [[1, 3, 32, 32]], {"class_labels": "three.txt"}, tmp_path / "out")


@pytest.mark.parametrize(
    "data_input,needle",
    [
        (None, "DataInputConfig is required for PYTORCH"),
        ([[1, 3, 32, 32], [1, 10]], "gives 2 input(s) but the PYTORCH model takes 1: x"),
        ({"x": [1, 3, 32, 32], "y": [1]}, "names ['y'], which is not an input"),
        ([{"shape": ["1..4", 3, 32, 32], "type": "Image"}], "batch dimension (axis 0) must be 1"),
        ([{"shape": [1, 4, 32, 32], "type": "Image"}], "must be 3 (RGB) or 1 (grayscale)"),
        ([{"shape": [1, 32, 32], "type": "Image"}], "needs a rank-4 shape [N, C, H, W]"),
        ([{"shape": [1, 1, 32, 32], "type": "Image", "bias": [1, 2, 3]}], "grayscale Image (1 channel); its bias must be one number"),
        ([[1, "3..1", 32, 32]], "dimension 1 is '3..1'"),
    ],
)
def test_torch_bad_data_input(ct, torch_archive, tmp_path, data_input, needle):
    root, _ = torch_archive
    with pytest.raises(ModelInputError) as err:
        _compile("PYTORCH", root / "model.pt", data_input, {}, tmp_path / "out")
    assert needle in str(err.value)
    assert not (tmp_path / "out" / MEMBER).exists()


def test_not_a_torchscript_file(ct, tmp_path):
    (tmp_path / "model.pth").write_bytes(b"not a zip file")
    with pytest.raises(ModelArchiveError, match=r"model.pth is not a TorchScript model .* torch.jit.save"):
        _compile("PYTORCH", tmp_path / "model.pth", [[1, 3]], {}, tmp_path / "out")


# ----------------------------------------------------------------------------- options (no conversion)


@pytest.mark.parametrize("framework", ["ONNX", "TFLITE", "XGBOOST", "DARKNET", "MXNET"])
def test_frameworks_without_a_core_ml_converter(framework, tmp_path):
    with pytest.raises(UnsupportedFrameworkError) as err:
        compile_coreml(framework, tmp_path / "model", tmp_path, None, {}, tmp_path / "out", print)
    assert framework in str(err.value) and "TensorFlow/Keras and PyTorch" in str(err.value)


@pytest.mark.parametrize(
    "options,needle",
    [
        ({"class_labels": "imagenet.txt"}, "names 'imagenet.txt', which is not in the model archive; the archive holds 2 file(s): "
                                           "model.pt, sub/other.txt"),
        ({"class_labels": "empty.txt"}, "'empty.txt' holds no labels"),
        ({"class_labels": "../labels.txt"}, "must be a path inside the model archive"),
        ({"class_labels": "/etc/hostname"}, "must be a path inside the model archive"),
        ({"class_labels": 3}, "must be the name of a labels file"),
        ({"precision_mode": "INT8"}, "precision_mode is 'INT8'; allowed: ['FP16', 'FP32']"),
        ({"class_label": "labels.txt"}, "CompilerOptions ['class_label'] are not options of the coreml target"),
        ({"signature_def_key": "serve"}, "apply to TENSORFLOW models only"),
    ],
)
def test_bad_options(tmp_path, options, needle):
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.txt").write_text("a\n")
    if options.get("class_labels") == "empty.txt":
        (tmp_path / "empty.txt").write_text("\n  \n\n")
    with pytest.raises(ModelInputError) as err:
        compile_coreml("PYTORCH", tmp_path / "model.pt", tmp_path, [[1, 3]], options, tmp_path / "out", print)
    assert needle in str(err.value)


def test_labels_file_found_by_name_in_a_folder(tmp_path):
    from airflow_neo.local.coreml.options import parse_options

    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "labels.txt").write_text(LABELS_TEXT)
    parsed = parse_options({"class_labels": "labels.txt", "precision_mode": "fp16"}, tmp_path, "PYTORCH")
    assert list(parsed.labels) == LABELS and parsed.precision == "FP16"
    assert parse_options({}, tmp_path, "KERAS").precision == "FP32"


def test_list_form_is_pytorch_only(tmp_path):
    with pytest.raises(ModelInputError, match="list form is for PYTORCH only; for KERAS"):
        compile_coreml("KERAS", tmp_path / "model.h5", tmp_path, [[1, 8, 8, 3]], {}, tmp_path / "out", print)


# ----------------------------------------------------------------------------- Keras and TensorFlow


@pytest.fixture(scope="module")
def tf(ct):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "pip install 'airflow-neo[tensorflow]'")


@pytest.fixture(scope="module")
def keras_model(tf):
    import keras

    keras.utils.set_random_seed(SEED)
    return keras.Sequential([
        keras.Input((16, 16, 3), name="img"),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax", bias_initializer="random_normal"),
    ])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_image_input_nhwc(ct, keras_model, tmp_path, suffix):
    model_file = tmp_path / f"model{suffix}"
    keras_model.save(str(model_file))
    entry = {"shape": [1, 16, 16, 3], "type": "Image", "bias": [-1, -1, -1], "scale": 1 / 127.5}
    result = _compile("KERAS", model_file, {"img": entry}, {}, tmp_path / "out")
    spec = _spec(ct, result)
    (feature,) = spec.description.input
    assert feature.name == "img" and feature.type.imageType.width == 16 and feature.type.imageType.height == 16
    assert result.spec_summary["inputs"][0]["preprocessing"] == {"scale": pytest.approx(1 / 127.5, rel=1e-6), "bias": [-1.0] * 3}
    assert set(result.versions) == {"coremltools", "tensorflow", "keras"}

    pixels = np.random.default_rng(SEED).integers(0, 256, (1, 3, 16, 16)).astype(np.float32)  # Core ML feeds NCHW
    (name,) = block_outputs(result.path)
    got = run_program(result.path, {"img": pixels})[name]
    expected = keras_model(np.transpose(pixels, (0, 2, 3, 1)) / 127.5 - 1.0).numpy()
    assert np.abs(got - expected).max() < 1e-5


def test_keras_range_on_a_fixed_dimension_is_refused(ct, keras_model, tmp_path):
    model_file = tmp_path / "model.keras"
    keras_model.save(str(model_file))
    with pytest.raises(ModelInputError, match=r"dimension 1 is fixed at 16 in the KERAS model \(img \[\?, 16, 16, 3\]\)"):
        _compile("KERAS", model_file, {"img": {"shape": [1, "8..32", 16, 3]}}, {}, tmp_path / "out")
    with pytest.raises(ModelInputError, match=r"names \['input_1'\], which is not an input of the KERAS model"):
        _compile("KERAS", model_file, {"input_1": [1, 16, 16, 3]}, {}, tmp_path / "out")


def test_tensorflow_saved_model_range_and_frozen_graph(ct, tf, tmp_path):
    rng = np.random.default_rng(SEED)

    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((8, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.nn.relu(tf.matmul(x, self.w)), "z": tf.reduce_sum(x, axis=1)}

    module = Dense()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serve": module.serve})
    result = compile_coreml("TENSORFLOW", tmp_path / "sm" / "saved_model.pb", tmp_path, {"x": ["1..4", 8]},
                            {"signature_def_key": "serve", "output_names": ["y"]}, tmp_path / "out", print)
    (feature,) = _spec(ct, result).description.input
    assert feature.name == "x" and _range(feature) == ([[1, 4], [8, 8]], [1, 8])
    x = rng.standard_normal((3, 8)).astype(np.float32)
    (name,) = block_outputs(result.path)
    assert np.abs(run_program(result.path, {"x": x})[name] - module.serve(x)["y"].numpy()).max() < 1e-5
    with pytest.raises(ModelInputError, match=r"signature_def_key 'serving_default' is not a signature of the SavedModel; it has \['serve'\]"):
        compile_coreml("TENSORFLOW", tmp_path / "sm" / "saved_model.pb", tmp_path, {"x": [1, 8]},
                       {"signature_def_key": "serving_default"}, tmp_path / "out2", print)

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 4], name="input_tensor")
        tf.identity(tf.nn.relu(images * 2.0), name="output_tensor")
        tf.identity(tf.reduce_max(images), name="aux")
    (tmp_path / "frozen").mkdir()
    (tmp_path / "frozen" / "graph.pb").write_bytes(graph.as_graph_def().SerializeToString())
    result = compile_coreml("TENSORFLOW", tmp_path / "frozen" / "graph.pb", tmp_path / "frozen",
                            {"input_tensor:0": {"shape": [[1, 4], [2, 4]], "default_shape": [2, 4]}},
                            {"output_names": ["output_tensor:0"]}, tmp_path / "out3", print)
    spec = _spec(ct, result)
    (feature,) = spec.description.input
    assert feature.name == "input_tensor" and [o.name for o in spec.description.output] == ["output_tensor"]
    shapes = sorted(list(s.shape) for s in feature.type.multiArrayType.enumeratedShapes.shapes)
    assert shapes == [[1, 4], [2, 4]] and list(feature.type.multiArrayType.shape) == [2, 4]
    x = rng.standard_normal((2, 4)).astype(np.float32)
    assert np.abs(run_program(result.path, {"input_tensor": x})["output_tensor"] - np.maximum(2 * x, 0)).max() < 1e-6

    from tests.local.convert.tf_models import unsupported_op_graph

    lgamma = unsupported_op_graph(tmp_path / "lgamma")
    with pytest.raises(UnsupportedOperatorsError) as err:
        compile_coreml("TENSORFLOW", lgamma, lgamma.parent, None, {}, tmp_path / "out4", print)
    assert err.value.operators == ["Lgamma"] and "'Lgamma'" in str(err.value)


def test_tensorflow_garbage_saved_model(ct, tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ModelArchiveError, match="saved_model.pb is not a SavedModel TensorFlow can load"):
        compile_coreml("TENSORFLOW", tmp_path / "saved_model.pb", tmp_path, None, {}, tmp_path / "out", print)


def test_imports_are_lazy():
    code = ("import sys, airflow_neo.local.coreml as c; "
            "print(sorted(m for m in ('coremltools', 'torch', 'tensorflow', 'keras') if m in sys.modules))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
