"""Flexible input shapes: a DataInputConfig range compiles to one artifact that runs at any size in it.

Tiny models (a CNN with a range batch, an attention block with a range sequence length, a traced
TorchScript CNN), each compiled once and run through ``airflow_neo.runtime`` at three sizes
against onnxruntime / torch; ranges the model cannot take are clear ModelInputErrors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from airflow_neo import runtime
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.errors import ModelInputError
from tests.local import models

pytest.importorskip("tvm")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402


def _init(name: str, array: np.ndarray):
    return helper.make_tensor(name, TensorProto.FLOAT, array.shape, array.astype(np.float32).ravel().tolist())


def _model_bytes(nodes, inputs, outputs, initializers) -> bytes:
    graph = helper.make_graph(nodes, "flexible", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _cnn_bytes() -> bytes:
    """conv(3->4, 3x3, pad 1) - relu - global average pool - flatten - gemm(4->5); batch 'N'."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    inits = [_init("w", rng.standard_normal((4, 3, 3, 3))), _init("b", rng.standard_normal(4)),
             _init("fw", rng.standard_normal((5, 4))), _init("fb", rng.standard_normal(5))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])]
    return _model_bytes(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)


def _attention_bytes(d: int = 16) -> bytes:
    """layernorm - q/k/v matmuls - softmax(q k^T / sqrt(d)) v - residual; sequence length 'T'."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "beta"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "wq"], ["q"]),
        helper.make_node("MatMul", ["n", "wk"], ["k"]),
        helper.make_node("MatMul", ["n", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["ss"]),
        helper.make_node("Softmax", ["ss"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "v"], ["o"]),
        helper.make_node("Add", ["x", "o"], ["y"]),
    ]
    inits = [_init("g", 1 + 0.1 * rng.standard_normal(d)), _init("beta", 0.1 * rng.standard_normal(d)),
             *(_init(name, rng.standard_normal((d, d)) / np.sqrt(d)) for name in ("wq", "wk", "wv")),
             _init("scale", np.array(1 / np.sqrt(d)))]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", d])]
    return _model_bytes(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", d])], inits)


def _compile(tmp_path, framework: str, files: dict, data_input, log=lambda _line: None, **kwargs):
    archive = models.write_archive(tmp_path, files)
    case = models.ModelCase(archive, None, framework=framework, data_input_config=data_input, inputs={},
                            model_file=next(iter(files)))
    artifact = tmp_path / "artifact.tar.gz"
    kwargs.setdefault("profile_seconds", 0)
    metadata = compile_model(models.make_request(case), str(archive), str(artifact), log=log, verify="gate", **kwargs)
    return metadata, artifact


def _error(tmp_path, files: dict, data_input, framework: str = "ONNX") -> str:
    with pytest.raises(ModelInputError) as caught:
        _compile(tmp_path, framework, files, data_input)
    return str(caught.value)


def _check_sizes(artifact, reference, name: str, shapes: list[list[int]]) -> None:
    model = runtime.load(artifact)
    rng = np.random.default_rng(7)
    for shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32)
        [got] = model.run({name: x})
        [want] = reference(x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _verified_sizes(metadata: dict, name: str) -> list[list[int]]:
    verification = metadata["verification"]
    assert verification["passed"] is True
    assert all(item["passed"] and item["max_abs_diff"] <= item["tolerance"] for item in verification["shapes"])
    return [item["inputs"][name] for item in verification["shapes"]]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    files = {"model.onnx": _cnn_bytes()}
    return files, _compile(tmp_path_factory.mktemp("cnn"), "ONNX", files, {"x": ["1..8", 3, 16, 16]})


def test_onnx_cnn_with_a_range_batch_runs_at_every_size(cnn):
    files, (metadata, artifact) = cnn
    assert metadata["inputs"] == [{"name": "x", "shape": [None, 3, 16, 16], "dtype": "float32", "ranges": {"0": [1, 8]}}]
    assert metadata["outputs"][0]["shape"] == [None, 5]
    assert _verified_sizes(metadata, "x") == [[1, 3, 16, 16], [4, 3, 16, 16], [8, 3, 16, 16]]
    session = ort.InferenceSession(files["model.onnx"], providers=["CPUExecutionProvider"])
    _check_sizes(artifact, lambda x: session.run(None, {"x": x}), "x", [[1, 3, 16, 16], [3, 3, 16, 16], [8, 3, 16, 16]])


def test_runtime_refuses_a_size_outside_the_range(cnn):
    _, (_, artifact) = cnn
    model = runtime.load(artifact)
    with pytest.raises(ModelInputError, match=r"input 'x' dimension 0 is 9, outside the range 1\.\.8"):
        model.run({"x": np.zeros((9, 3, 16, 16), np.float32)})
    with pytest.raises(ModelInputError, match="must have shape"):
        model.run({"x": np.zeros((2, 3, 8, 8), np.float32)})


def test_attention_block_with_a_range_sequence_length(tmp_path):
    """Also: tuning leaves the symbolic kernels (all of this model's) to the default schedules
    instead of failing the build; the profile times the lower bound and says so."""
    files = {"model.onnx": _attention_bytes()}
    lines: list[str] = []
    metadata, artifact = _compile(tmp_path, "ONNX", files, {"x": [1, "16..128", 16]}, log=lines.append,
                                  tuning_trials=2, tuning_database=str(tmp_path / "tuning"), profile_seconds=0.2)
    assert metadata["inputs"][0]["shape"] == [1, None, 16] and metadata["inputs"][0]["ranges"] == {"1": [16, 128]}
    assert any("with symbolic shapes (DataInputConfig ranges) are not tuned" in line for line in lines)
    assert metadata["profile"]["input_shapes"] == {"x": [1, 16, 16]} and metadata["profile"]["latency_ms"]["p50"] > 0
    assert _verified_sizes(metadata, "x") == [[1, 16, 16], [1, 72, 16], [1, 128, 16]]
    session = ort.InferenceSession(files["model.onnx"], providers=["CPUExecutionProvider"])
    _check_sizes(artifact, lambda x: session.run(None, {"x": x}), "x", [[1, 16, 16], [1, 33, 16], [1, 128, 16]])


def test_torchscript_with_a_range_batch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                 torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    traced = torch.jit.trace(module, torch.randn(2, 3, 16, 16))
    path = tmp_path / "model.pth"
    torch.jit.save(traced, str(path))
    metadata, artifact = _compile(tmp_path, "PYTORCH", {"model.pth": path.read_bytes()}, [["1..4", 3, 16, 16]])
    assert metadata["inputs"][0]["ranges"] == {"0": [1, 4]} and metadata["versions"]["torch_route"] == "onnx-legacy"
    assert _verified_sizes(metadata, "input0") == [[1, 3, 16, 16], [2, 3, 16, 16], [4, 3, 16, 16]]

    def reference(x):
        with torch.no_grad():
            return [module(torch.from_numpy(x)).numpy()]

    _check_sizes(artifact, reference, "input0", [[1, 3, 16, 16], [3, 3, 16, 16], [4, 3, 16, 16]])


@pytest.mark.parametrize(("data_input", "match"), [
    ({"x": ["1..8", "1..3", 16, 16]}, r"'x' dimension 1 the range 1\.\.3, but the model fixes that dimension at 3"),
    ({"x": ["8..1", 3, 16, 16]}, r"'x': dimension 0 is '8\.\.1'; a dimension is a positive integer or a range"),
    ({"x": ["1..8", 3, 16]}, r"input 'x' rank 3 .* the model declares rank 4"),
])
def test_ranges_the_model_cannot_take(tmp_path, data_input, match):
    assert pytest.importorskip("re").search(match, _error(tmp_path, {"model.onnx": _cnn_bytes()}, data_input))


def test_a_range_below_the_sizes_the_model_takes(tmp_path):
    """A 3x3 convolution without padding needs 3 pixels at least: 1..16 is refused, 3..16 compiles."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, "H", "W"])]
    files = {"model.onnx": _model_bytes(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "OH", "OW"])],
                                        [_init("w", rng.standard_normal((2, 2, 3, 3)))])}
    text = _error(tmp_path / "low", files, {"x": [1, 2, "1..16", 16]})
    assert "lower bound" in text and "input 'x' dimension 2 at 1" in text and "H - 2 = -1 in relax.nn.conv2d" in text
    metadata, _ = _compile(tmp_path / "ok", "ONNX", files, {"x": [1, 2, "3..16", 16]})
    assert metadata["verification"]["passed"] is True


def test_an_op_that_needs_a_static_size_is_refused_naming_it(tmp_path):
    """Pad with pads computed from the input's shape imports only when that shape is static."""
    helpers = [helper.make_tensor("start", TensorProto.INT64, [1], [0]), helper.make_tensor("end", TensorProto.INT64, [1], [1]),
               helper.make_tensor("zeros3", TensorProto.INT64, [3], [0, 0, 0]),
               helper.make_tensor("zeros4", TensorProto.INT64, [4], [0, 0, 0, 0])]
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "start", "end"], ["first"]),
             helper.make_node("Concat", ["zeros3", "first", "zeros4"], ["pads"], axis=0),
             helper.make_node("Pad", ["x", "pads"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 4])]
    files = {"model.onnx": _model_bytes(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 4, "M"])], helpers)}
    text = _error(tmp_path, files, {"x": ["1..4", 4, 4, 4]})
    assert "input 'x' dimension 0 (1..4) cannot stay symbolic" in text and "(Pad" in text
    assert "Give a static size" in text


def test_an_op_that_does_not_legalize_symbolic_is_refused(tmp_path):
    """Range(0, x's length) imports with a symbolic length but does not legalize; static it does."""
    ints = [helper.make_tensor("one", TensorProto.INT64, [], [1]), helper.make_tensor("zero", TensorProto.INT64, [], [0])]
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "one"], ["n"]),
             helper.make_node("Range", ["zero", "n", "one"], ["r"]), helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "rf"], ["y"])]
    files = {"model.onnx": _model_bytes(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])],
                                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "n"])], ints)}
    text = _error(tmp_path / "range", files, {"x": [1, "2..9"]})
    assert "input 'x' dimension 1 (2..9) cannot stay symbolic: TVM's legalization failed in op relax." in text
    assert _compile(tmp_path / "static", "ONNX", files, {"x": [1, 6]})[0]["verification"]["passed"] is True


def test_ranges_are_refused_where_the_importer_is_static(tmp_path):
    case = models.tflite_cnn(tmp_path / "tflite")
    name = next(iter(case.data_input_config))
    shape = list(case.data_input_config[name])
    config = {name: ["1..2", *shape[1:]]}
    request = models.make_request(case, data_input_config=config)
    with pytest.raises(ModelInputError, match=r"ranges compile for ONNX and PYTORCH \(TorchScript\) models only, not TFLITE"):
        compile_model(request, str(case.archive), str(tmp_path / "a.tar.gz"), log=lambda _line: None)
    assert json.loads(request["InputConfig"]["DataInputConfig"]) == config
