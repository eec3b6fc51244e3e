"""ONNX normalization before import (airflow_neo.local.onnx_normalize and the ONNX importer's use of it).

Unit tests on small hand-built graphs (onnxruntime on the graph before and after as the reference),
then real architectures whose shape computations TVM cannot import as exported: each compiled
through the local compile path and compared with onnxruntime on the ORIGINAL file. The classes:

* attention-mask broadcasts of transformers encoders (Shape -> ConstantOfShape -> Expand):
  DistilBERT, RoBERTa (BERT's self-attention and extended mask, plus position ids from a CumSum of
  the mask), and DistilBERT through the TorchScript route;
* tensors split or reshaped by sizes computed from shapes (Shape -> Gather -> Div -> Slice):
  torchvision ShuffleNetV2 (``chunk``), timm EfficientViT-M0 (``split`` of q/k/v);
* pads computed by a subgraph (``Dynamic pads are not supported yet``): timm EfficientViT-B0.

The vision models are small configurations of the same classes (torchvision's ``ShuffleNetV2`` with
repeats [2, 1, 1]: its stride-1 block is the one that chunks; timm's ``EfficientVit`` with the B0
block types, one block per stage, the last stage a ViT stage with the LiteMLA pad), so a compile
costs a fraction of the full model's; ``scripts/real_models.py`` compiles the full ones.

The real-model tests need transformers / torchvision / timm (``scripts/setup.sh`` installs them
next to the CPU torch); they are skipped without them, except under ``CI=true``, where
``test_ci_has_the_real_model_packages`` fails instead.
"""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from airflow_neo import runtime
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.onnx_normalize import MAX_FOLDED_ELEMENTS, normalize
from tests.local import models

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}


def _ort(model_bytes: bytes, inputs: dict) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _const(name: str, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _chunk_graph(channels: int | str = 8):
    """``x.chunk(2, dim=1)[0]`` as the legacy exporter writes it: Shape -> Gather -> Div -> Slice."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["c"], axis=0),
        helper.make_node("Div", ["c", "two"], ["half"]),
        helper.make_node("Unsqueeze", ["half", "zero_axis"], ["end"]),
        helper.make_node("Slice", ["x", "zero", "end", "one_axis"], ["y"]),
        helper.make_node("Relu", ["y"], ["out"]),
    ]
    inits = [_const("one", 1), _const("two", 2), _const("zero_axis", [0]), _const("zero", [0]), _const("one_axis", [1])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 4, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "half", 4, 4])
    return _model(nodes, [x], [out], inits)


# -- normalize() on small graphs ---------------------------------------------------------------


def test_shape_subgraph_is_folded_and_numerics_kept():
    model = _chunk_graph()
    original = model.SerializeToString()
    report = normalize(model, {"x": [1, 8, 4, 4]})
    onnx.checker.check_model(model)
    assert [node.op_type for node in model.graph.node] == ["Slice", "Relu"]
    assert report.nodes_before == 6 and report.nodes_after == 2 and report.shape_reads == 1 and report.folded == 4
    ends = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}[model.graph.node[0].input[2]]
    assert ends.tolist() == [4]
    assert report.summary().startswith("onnx normalized for the input shapes: 6 -> 2 nodes, 4 folded")
    assert report.as_metadata()["tool"].startswith(f"onnx {onnx.__version__} shape inference")
    x = {"x": np.random.default_rng(0).standard_normal((1, 8, 4, 4)).astype(np.float32)}
    np.testing.assert_array_equal(_ort(model.SerializeToString(), x)[0], _ort(original, x)[0])


def test_dynamic_dim_stays_dynamic():
    model = _chunk_graph(channels="C")
    report = normalize(model, {"x": [1, None, 4, 4]})
    assert "Shape" in [node.op_type for node in model.graph.node] and report.folded == 0
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_param == "C" and [d.dim_value for d in dims] == [1, 0, 4, 4]
    for channels in (4, 6):  # still runs for any size of the dynamic dimension
        x = np.ones((1, channels, 4, 4), np.float32)
        assert _ort(model.SerializeToString(), {"x": x})[0].shape == (1, channels // 2, 4, 4)


def _scale_graph():
    """y = x / sqrt(x.shape[-1]) + x.shape[1] (float): one value from a static dim of x [1, T, 16],
    one from its symbolic dim; the static one reached through Slice then Gather, as exporters write."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "one", "three"], ["tail"]),  # [T, 16]
        helper.make_node("Gather", ["tail", "minus_one"], ["width"]),  # 16: static
        helper.make_node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["width_f"], ["root"]),
        helper.make_node("Div", ["x", "root"], ["scaled"]),
        helper.make_node("Gather", ["s", "index_one"], ["length"]),  # T: symbolic
        helper.make_node("Cast", ["length"], ["length_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["scaled", "length_f"], ["y"]),
    ]
    inits = [_const("one", [1]), _const("three", [3]), _const("minus_one", -1), _const("index_one", 1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", 16])], inits)


def test_shape_arithmetic_on_the_static_dims_of_partly_symbolic_shapes_is_folded():
    model = _scale_graph()
    original = model.SerializeToString()
    report = normalize(model, {"x": [1, None, 16]})
    kept = {node.output[0]: node.op_type for node in model.graph.node}
    for name in ("width", "width_f", "root"):  # read only the static width: folded
        assert name not in kept
    assert [numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "root"] == [np.float32(4.0)]
    for name in ("s", "length", "length_f"):  # read the symbolic length: left to run time
        assert name in kept
    assert "tail" not in kept and report.shape_reads >= 1  # the Slice fed only the folded Gather
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_param == "T"
    for length in (3, 7):
        x = np.random.default_rng(length).standard_normal((1, length, 16)).astype(np.float32)
        [want], [got] = _ort(original, {"x": x}), _ort(model.SerializeToString(), {"x": x})
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(("starts", "ends", "folds"), [([-1], [3], True), ([0], [2], False), ([1], [2], False)])
def test_a_slice_of_a_partly_symbolic_shape_folds_only_when_all_its_dims_are_static(starts, ends, folds):
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "starts", "ends"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 16])],
                   [helper.make_tensor_value_info("y", TensorProto.INT64, [None])],
                   [_const("starts", starts), _const("ends", ends)])
    normalize(model, {"x": [1, None, 16]})
    ops = [node.op_type for node in model.graph.node]
    assert ("Slice" not in ops) is folds
    x = np.zeros((1, 5, 16), np.float32)
    assert _ort(model.SerializeToString(), {"x": x})[0].tolist() == [1, 5, 16][slice(starts[0], ends[0])]


def test_static_dims_that_onnx_shape_inference_loses_are_kept_by_the_symbolic_inference():
    """Position embeddings sliced to the sequence length (``table[:, :T]``): onnx's inference makes the
    slice [?, ?], so the sum's batch is unknown to it; onnxruntime's symbolic inference keeps it (1)."""
    pytest.importorskip("onnxruntime.tools.symbolic_shape_infer")
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["s", "one", "two"], ["length"]),
        helper.make_node("Slice", ["table", "zero", "length", "one"], ["positions"]),  # [1, T, 8]
        helper.make_node("Add", ["x", "positions"], ["summed"]),
        helper.make_node("Shape", ["summed"], ["s2"]), helper.make_node("Gather", ["s2", "index_zero"], ["batch"]),
        helper.make_node("Cast", ["batch"], ["batch_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["summed", "batch_f"], ["y"]),
    ]
    table = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(1, 8, 8), "table")
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", 8])],
                   [table, _const("zero", [0]), _const("one", [1]), _const("two", [2]), _const("index_zero", 0)])
    original = model.SerializeToString()
    normalize(model, {"x": [1, None, 8]})
    kept = {node.output[0] for node in model.graph.node}
    assert "batch" not in kept and "batch_f" not in kept and "length" in kept
    x = np.ones((1, 5, 8), np.float32)
    np.testing.assert_array_equal(_ort(model.SerializeToString(), {"x": x})[0], _ort(original, {"x": x})[0])


def test_shapes_declared_at_export_do_not_override_the_input_shapes():
    """value_info and output shapes traced for other input shapes (stale) are not used for folding."""
    model = _chunk_graph(channels="C")
    model.graph.value_info.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4]))
    model.graph.node.insert(0, helper.make_node("Identity", ["x"], ["x_id"]))
    model.graph.node[1].input[0] = "x_id"  # Shape(Identity(x))
    model.graph.value_info.append(helper.make_tensor_value_info("x_id", TensorProto.FLOAT, [1, 8, 4, 4]))
    normalize(model, {"x": [1, 6, 4, 4]})
    x = np.ones((1, 6, 4, 4), np.float32)
    assert _ort(model.SerializeToString(), {"x": x})[0].shape == (1, 3, 4, 4)


def test_large_values_and_quantized_weights_are_not_folded():
    big = int(MAX_FOLDED_ELEMENTS) * 2
    nodes = [
        helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"]),
        helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("Add", ["y", "s"], ["out"]),
    ]
    inits = [
        _const("big_shape", [big]),
        _const("w_q", np.arange(16).reshape(4, 4), np.int8),
        _const("w_scale", 0.5, np.float32),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])
    model = _model(nodes, [x], [out], inits)
    report = normalize(model, {"x": [2, 4]})
    assert {"ConstantOfShape", "DequantizeLinear"} <= {node.op_type for node in model.graph.node}
    assert report.folded == 0
    assert all(numpy_helper.to_array(init).size <= 16 for init in model.graph.initializer)


def test_graph_output_computed_from_shapes_becomes_a_constant_node():
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Relu", ["x"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3]), helper.make_tensor_value_info("shape", TensorProto.INT64, [2])]
    model = _model(nodes, [x], outputs)
    normalize(model, {"x": [5, 3]})
    onnx.checker.check_model(model)
    assert [value.name for value in model.graph.output] == ["y", "shape"]
    got = _ort(model.SerializeToString(), {"x": np.ones((5, 3), np.float32)})
    assert got[1].tolist() == [5, 3]


# -- the local compile path --------------------------------------------------------------------


def _onnx_case(directory, data: bytes, inputs: dict) -> models.ModelCase:
    """A Neo archive holding ``data`` as model.onnx; reference: onnxruntime on that (original) file."""
    return models.ModelCase(
        models.write_archive(directory, {"model.onnx": data}),
        lambda feed: _ort(data, feed),
        framework="ONNX",
        data_input_config={name: list(value.shape) for name, value in inputs.items()},
        inputs=inputs,
        model_file="model.onnx",
    )


def _compile_and_compare(case, tmp_path, *, rel: float = 1e-4, **request_kwargs):
    """Compile through the local compile path, run the artifact, compare with the reference.

    Tolerance: ``rel`` times the largest magnitude of the reference output.
    """
    lines: list[str] = []
    request = models.make_request(case, target_platform=LINUX_X86_64, output_dir=tmp_path / "out", **request_kwargs)
    artifact = tmp_path / "artifact" / "model-compiled.tar.gz"
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append)
    got = runtime.load(artifact).run(case.inputs)
    want = case.reference(case.inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.shape == w.shape
        scale = max(float(np.max(np.abs(w))), 1e-6)
        np.testing.assert_allclose(g, w, rtol=0, atol=rel * scale)
    return metadata, lines


def _assert_normalized(metadata: dict, lines: list[str]) -> None:
    info = metadata["versions"]["onnx_normalized"]
    assert info["applied"] is True and info["folded"] > 0 and info["shape_reads"] > 0, info
    assert info["nodes_after"] < info["nodes_before"]
    assert any(line.startswith("onnx normalized for the input shapes: ") for line in lines), lines


def test_data_dependent_dim_still_imports(tmp_path):
    """A dimension no input shape determines (NonZero's count) stays dynamic and still compiles."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
        helper.make_node("NonZero", ["positive"], ["where"]),
        helper.make_node("Shape", ["where"], ["count_shape"]),
        helper.make_node("Gather", ["count_shape", "one"], ["count"], axis=0),
        helper.make_node("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("ReduceProd", ["x_shape"], ["size"], keepdims=0),
        helper.make_node("Cast", ["size"], ["size_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["count_f", "size_f"], ["fraction"]),
        helper.make_node("Mul", ["x", "fraction"], ["out"]),
    ]
    inits = [_const("zero", 0.0, np.float32), _const("one", 1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 6])
    data = _model(nodes, [x], [out], inits).SerializeToString()
    inputs = {"x": np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)}
    metadata, lines = _compile_and_compare(_onnx_case(tmp_path / "model", data, inputs), tmp_path)
    info = metadata["versions"]["onnx_normalized"]
    assert info["applied"] is True and info["shape_reads"] == 1  # Shape(x) folded, Shape(NonZero(...)) kept


def _relu_case(tmp_path) -> models.ModelCase:
    nodes = [helper.make_node("Relu", ["x"], ["out"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])
    data = _model(nodes, [x], [out]).SerializeToString()
    inputs = {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}
    return _onnx_case(tmp_path / "model", data, inputs)


def test_normalization_failure_imports_the_graph_as_given(tmp_path, monkeypatch):
    """Fault injection in onnx (its shape inference raises): the import goes on with the graph as given."""

    def broken(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("injected failure")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    metadata, lines = _compile_and_compare(_relu_case(tmp_path), tmp_path)
    info = metadata["versions"]["onnx_normalized"]
    assert info == {"applied": False, "skipped": "InferenceError: injected failure"}
    assert "onnx normalization skipped (InferenceError: injected failure); importing the graph as given" in lines


def test_normalized_graph_that_does_not_import_falls_back_to_the_graph_as_given(tmp_path, monkeypatch):
    """Fault injection after a real normalization (a node TVM lacks added): the original graph is imported."""
    from airflow_neo.local import onnx_normalize

    real = onnx_normalize.normalize

    def normalize_then_break(model, shapes):
        report = real(model, shapes)
        model.graph.node.append(helper.make_node("NoSuchOp", ["x"], ["unused"], domain="example.invalid"))
        return report

    monkeypatch.setattr(onnx_normalize, "normalize", normalize_then_break)
    metadata, lines = _compile_and_compare(_relu_case(tmp_path), tmp_path)
    info = metadata["versions"]["onnx_normalized"]
    assert info["applied"] is False and info["skipped"].startswith("import failed: ")
    assert any(line.startswith("importing the normalized ONNX graph failed (") for line in lines), lines


# -- real architectures ------------------------------------------------------------------------


def test_ci_has_the_real_model_packages():
    """CI installs transformers, torchvision and timm, so the real-model tests below never skip there."""
    import importlib.util
    import os

    missing = [name for name in ("transformers", "torchvision", "timm") if importlib.util.find_spec(name) is None]
    if missing and os.environ.get("CI", "").lower() != "true":
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup.sh installs them)")
    assert not missing, f"CI must install {missing} (scripts/setup.sh)"


def _torch():
    return pytest.importorskip("torch")


def _import_torchvision():
    """torchvision's Python model code with the CPU torch wheel (PyPI's torchvision is a CUDA build
    whose C++ ops do not load): define the op schemas its import registers fakes for, then import."""
    torch = _torch()
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError:
        for op in ("nms", "qnms"):
            try:
                getattr(torch.ops.torchvision, op)
            except (AttributeError, RuntimeError):
                torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import torchvision  # noqa: F401
    return sys.modules["torchvision"]


def _export(torch, module, inputs: dict) -> bytes:
    buffer = io.BytesIO()
    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tensors, buffer, input_names=list(inputs), output_names=["output0"], opset_version=17, dynamo=False)
    return buffer.getvalue()


SEQ, PAD = 16, 4
SMALL_TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 1000}


def _text_encoder(kind: str):
    """(module returning the last hidden state, inputs): a small config of a transformers encoder."""
    torch = _torch()
    _import_torchvision_if_installed()
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(models.SEED)
    if kind == "roberta":
        inner = transformers.RobertaModel(transformers.RobertaConfig(**SMALL_TEXT), add_pooling_layer=False)
    else:
        config = transformers.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=1000)
        inner = transformers.DistilBertModel(config)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    mask = np.ones((1, SEQ), np.int64)
    mask[:, SEQ - PAD:] = 0  # padding, so the traced graph keeps the mask path
    rng = np.random.default_rng(models.SEED)
    inputs = {"input_ids": rng.integers(0, 1000, (1, SEQ)).astype(np.int64), "attention_mask": mask}
    return torch, Encoder().eval(), inputs


def _import_torchvision_if_installed():
    """transformers and timm import torchvision when it is installed: make that import work."""
    try:
        _import_torchvision()
    except pytest.skip.Exception:
        pass


def _vision(kind: str):
    torch = _torch()
    torch.manual_seed(models.SEED)
    if kind == "shufflenet_v2":
        shufflenet = _import_torchvision().models.shufflenetv2
        module, size = shufflenet.ShuffleNetV2([2, 1, 1], [8, 16, 32, 64, 128], num_classes=10), 64
    else:
        _import_torchvision_if_installed()
        timm = pytest.importorskip("timm")
        size = 96  # the smallest input at which these fail to import without normalization
        if kind == "efficientvit_m0":
            module = timm.create_model(kind, pretrained=False, num_classes=10, img_size=size, depth=(1, 1, 1))
        else:  # EfficientViT-B0's blocks (widths 8..64, head_dim 16), one per stage; the last stage has LiteMLA
            from timm.models.efficientvit_mit import EfficientVit

            module = EfficientVit(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1), head_dim=16, head_widths=(128, 128),
                                  num_classes=10)
    module.eval()
    with torch.no_grad():  # random but non-trivial batch-norm statistics
        for layer in module.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.running_mean.uniform_(-0.1, 0.1)
                layer.running_var.uniform_(0.8, 1.2)
    inputs = {"input0": np.random.default_rng(models.SEED).standard_normal((1, 3, size, size)).astype(np.float32)}
    return torch, module, inputs


@pytest.mark.parametrize(
    "kind",
    ["distilbert", "roberta", "shufflenet_v2", "efficientvit_m0", "efficientvit_b0"],  # roberta: BERT's attention
)
def test_real_model_compiles_and_matches_onnxruntime(tmp_path, kind):
    torch, module, inputs = _text_encoder(kind) if kind in ("distilbert", "roberta") else _vision(kind)
    data = _export(torch, module, inputs)
    metadata, lines = _compile_and_compare(_onnx_case(tmp_path / "model", data, inputs), tmp_path)
    _assert_normalized(metadata, lines)


def test_torchscript_transformer_is_normalized_too(tmp_path):
    torch, module, inputs = _text_encoder("distilbert")
    tensors = tuple(torch.from_numpy(value) for value in inputs.values())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, tensors, strict=False)
        want = module(*tensors).numpy()
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    case = models.ModelCase(
        models.write_archive(tmp_path / "model", {"model.pth": buffer.getvalue()}),
        lambda feed: [want],
        framework="PYTORCH",
        data_input_config={name: list(value.shape) for name, value in inputs.items()},
        inputs=inputs,
        model_file="model.pth",
    )
    metadata, lines = _compile_and_compare(case, tmp_path, compiler_options={"dtype": "int64"})
    _assert_normalized(metadata, lines)
    assert metadata["versions"]["torch"] == torch.__version__


def test_symbolic_inference_leaves_no_files_where_the_worker_runs(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference saves sym_shape_infer_temp.onnx (and external data)
    into the current directory when it cannot finish, here on an op of an unknown domain: it runs in
    a scratch directory, so nothing is left behind, and the graph keeps onnx's inference alone."""
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from airflow_neo.local import onnx_static_dims

    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="example.unknown")], "unknown_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.unknown", 1)])
    monkeypatch.chdir(tmp_path)
    assert onnx_static_dims.symbolic_static_dims(model) == {}
    assert list(tmp_path.iterdir()) == []
