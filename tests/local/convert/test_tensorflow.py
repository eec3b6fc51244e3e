"""TENSORFLOW and KERAS: small models converted with tf2onnx, compiled with TVM, run through
airflow_neo.runtime and compared with TensorFlow's own outputs; the input and option errors.

Skipped when tensorflow/tf2onnx are not installed, except under CI (which installs the
``tensorflow`` extra): there the tests fail instead. One module-scoped set of models: importing
TensorFlow alone takes seconds.
"""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest

from airflow_neo import runtime
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.convert import MissingExtra, Source, keras, tensorflow
from airflow_neo.local.errors import ModelArchiveError, ModelInputError, UnsupportedOperatorsError
from airflow_neo.local.references import NotVerifiable
from tests.local import models

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}


def _need_tensorflow():
    try:
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI installs the tensorflow extra, but: {err}")
        pytest.skip(f"tensorflow/tf2onnx not installed ({err}): pip install 'airflow-neo[tensorflow]'")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    _need_tensorflow()
    from tests.local.convert import tf_models

    directory = tmp_path_factory.mktemp("tf_models")
    cnn = tf_models.keras_cnn()
    return {
        "keras_h5": tf_models.keras_case(directory, ".h5", cnn),
        "keras_keras": tf_models.keras_case(directory, ".keras", cnn),
        "saved_model": tf_models.saved_model_case(directory, "serving_custom"),
        "frozen_graph": tf_models.frozen_graph_case(directory),
        "unsupported": tf_models.unsupported_op_graph(directory / "unsupported"),
    }


#: case -> CompilerOptions of its compile
OPTIONS = {
    "keras_h5": None,
    "keras_keras": None,
    "saved_model": {"signature_def_key": "serving_custom"},
    "frozen_graph": {"output_names": ["output_tensor:0"]},
}


def _convert(case, tmp_path, data_input=None, options=None, model_file=None):
    module = keras if case.framework == "KERAS" else tensorflow
    source = Source(case.framework, model_file or case.root / case.model_file, case.root,
                    case.data_input_config if data_input is None else data_input, options or {}, tmp_path / "work",
                    lambda _line: None)
    return module.convert(source)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", list(OPTIONS))
def test_compile_matches_tensorflow(cases, tmp_path, name):
    case = cases[name]
    request = models.make_request(case, target_platform=LINUX_X86_64, compiler_options=OPTIONS[name])
    artifact = tmp_path / "model-compiled.tar.gz"
    lines: list[str] = []
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append, verify="gate")
    model = runtime.load(artifact)
    assert model.input_names == list(case.data_input_config)
    assert [spec["shape"] for spec in metadata["inputs"]] == list(case.data_input_config.values())
    got = model.run(case.inputs)
    want = case.reference(case.inputs)
    assert len(got) == len(want)
    for ours, theirs in zip(got, want):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    verification = metadata["verification"]
    assert verification["passed"] and "onnx" not in verification["reference"], verification
    assert ("keras" if case.framework == "KERAS" else "tensorflow") in verification["reference"]
    assert metadata["versions"]["tf2onnx"] and metadata["versions"]["tensorflow"]
    assert any(line.startswith(f"converted {case.framework} to ONNX") for line in lines), lines


def test_keras_graph_takes_nchw_and_names_outputs_by_layer(cases, tmp_path):
    import onnx

    converted = _convert(cases["keras_keras"], tmp_path)
    graph = onnx.load(str(converted.onnx_path)).graph
    (value,) = graph.input
    assert value.name == "input_1"
    assert [dim.dim_value for dim in value.type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert [output.name for output in graph.output] == ["logits"]
    # the NCHW -> NHWC Transpose is folded into the convolutions that follow
    assert graph.node[0].op_type == "Conv"


def test_saved_model_outputs_sorted_by_key(cases, tmp_path):
    import onnx

    converted = _convert(cases["saved_model"], tmp_path, options={"signature_def_key": "serving_custom"})
    assert converted.input_names == ["images", "bias"]
    assert [v.name for v in onnx.load(str(converted.onnx_path)).graph.output] == ["features", "scores"]


def test_frozen_graph_outputs(cases, tmp_path):
    import onnx

    case = cases["frozen_graph"]
    terminal = _convert(case, tmp_path / "terminal")  # no output_names: the terminal tensors, by name
    assert [v.name for v in onnx.load(str(terminal.onnx_path)).graph.output] == ["aux:0", "output_tensor:0"]
    named = _convert(case, tmp_path / "named", options={"output_names": ["output_tensor:0", "aux"]})
    assert [v.name for v in onnx.load(str(named.onnx_path)).graph.output] == ["output_tensor:0", "aux:0"]
    assert named.input_names == ["input_tensor:0"]
    by_node_name = _convert(case, tmp_path / "node", data_input={"input_tensor": [1, 24, 24, 3]})
    assert by_node_name.input_names == ["input_tensor"]
    assert [v.name for v in onnx.load(str(by_node_name.onnx_path)).graph.input] == ["input_tensor"]


# ----------------------------------------------------------------------------- errors


def test_both_signature_def_key_and_output_names(tmp_path):
    source = Source("TENSORFLOW", tmp_path / "saved_model.pb", tmp_path, {}, {"signature_def_key": "serving_default",
                    "output_names": ["out:0"]}, tmp_path / "work", lambda _line: None)
    with pytest.raises(ModelInputError, match="both signature_def_key and output_names"):
        tensorflow.convert(source)


@pytest.mark.parametrize("name, data_input, options, match", [
    ("saved_model", {"input": [2, 16, 16, 3]}, {"signature_def_key": "serving_custom"},
     r"names \['input'\].*its inputs are \['bias', 'images'\]"),
    ("saved_model", None, {"signature_def_key": "predict"}, r"'predict' is not a signature.*\['serving_custom'\]"),
    ("saved_model", None, {}, r"'serving_default' is not a signature.*\['serving_custom'\]"),
    ("saved_model", {"images": [2, 3, 16, 16], "bias": [2, 5]}, {"signature_def_key": "serving_custom"},
     r"'images': \[2, 3, 16, 16\] does not fit the model's input images \[\?, 16, 16, 3\]"),
    ("frozen_graph", {"images:0": [1, 24, 24, 3]}, {}, r"its inputs are \['input_tensor:0'\]"),
    ("frozen_graph", None, {"output_names": ["logits:0"]}, r"\['logits:0'\] are not tensors.*'aux:0', 'output_tensor:0'"),
    ("frozen_graph", None, {"signature_def_key": "serving_default"}, "signature_def_key .* is for a SavedModel"),
    ("keras_h5", {"input_1": [1, 32, 32, 3]}, {},
     r"KERAS DataInputConfig is NCHW.*\[\?, 32, 32, 3\].*the NCHW shape it takes is \[1, 3, 32, 32\]"),
    ("keras_keras", {"input_1": [3, 32, 32]}, {}, r"KERAS DataInputConfig is NCHW.*\[1, 3, 32, 32\]"),
    ("keras_keras", {"input": [1, 3, 32, 32]}, {}, r"names \['input'\].*its inputs are \['input_1'\]"),
])
def test_input_errors_name_what_the_model_has(cases, tmp_path, name, data_input, options, match):
    with pytest.raises(ModelInputError, match=match):
        _convert(cases[name], tmp_path, data_input=data_input, options=options)


def test_unconverted_tensorflow_ops_are_listed(cases, tmp_path):
    path = cases["unsupported"]
    source = Source("TENSORFLOW", path, path.parent, {}, {"output_names": ["y:0"]}, tmp_path, lambda _line: None)
    with pytest.raises(UnsupportedOperatorsError, match="Lgamma") as caught:
        tensorflow.convert(source)
    assert caught.value.operators == ["Lgamma"]


@pytest.mark.parametrize("file_name, module", [("frozen.pb", tensorflow), ("model.h5", keras), ("model.keras", keras)])
def test_files_that_are_not_models(cases, tmp_path, file_name, module):
    path = tmp_path / file_name
    path.write_bytes(b"\x08\x96\x01 not a model at all" * 4)
    source = Source("KERAS" if module is keras else "TENSORFLOW", path, tmp_path, {}, {}, tmp_path / "work",
                    lambda _line: None)
    with pytest.raises(ModelArchiveError, match=file_name.replace(".", r"\.")):
        module.convert(source)


def test_missing_extra_is_named(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorflow(name, *args, **kwargs):
        if name.split(".")[0] in ("tensorflow", "tf2onnx"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorflow)
    for framework, module, file_name in (("TENSORFLOW", tensorflow, "frozen.pb"), ("KERAS", keras, "model.h5")):
        source = Source(framework, tmp_path / file_name, tmp_path, {}, {}, tmp_path / "work", lambda _line: None)
        with pytest.raises(MissingExtra, match=r"pip install 'airflow-neo\[tensorflow\]'"):
            module.convert(source)
        with pytest.raises(NotVerifiable, match="tensorflow is not installed"):
            module.reference(tmp_path / file_name, {}, None)
