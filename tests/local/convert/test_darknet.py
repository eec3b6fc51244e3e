"""The DarkNet reader: small generated cfg files with random weights, converted to ONNX and run with
onnxruntime, against OpenCV's independent ``readNetFromDarknet``; the archive and input errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from airflow_neo.local.convert import Source, darknet
from airflow_neo.local.errors import (
    ModelArchiveError,
    ModelInputError,
    OperatorAttributeNotImplementedError,
    UnsupportedOperatorsError,
)
from tests.local.convert import darknet_nets as nets
from tests.support.requires import require

ort = pytest.importorskip("onnxruntime")


def _convert(cfg, data_input=None, work=None):
    work = work or cfg.parent
    return darknet.convert(Source("DARKNET", cfg, cfg.parent, data_input or {}, {}, work, lambda _line: None))


def _run_onnx(converted, x):
    session = ort.InferenceSession(str(converted.onnx_path), providers=["CPUExecutionProvider"])
    return session, session.run(None, {converted.input_names[0]: x})


def _image(shape, seed=1):
    return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


# ----------------------------------------------------------------------------- against OpenCV

#: net -> (DataInputConfig, output names and shapes the graph must return)
CASES = {
    "yolov3_tiny": ({}, {"yolo_13": [1, 21, 5, 5], "yolo_20": [1, 21, 10, 10]}),
    "yolov4_tiny": ({"images": [2, 3, 64, 64]}, {"yolo_12": [2, 18, 8, 8], "yolo_19": [2, 18, 16, 16]}),
    "yolov2": ({"data": [1, 3, 64, 64]}, {"region_14": [1, 16, 8, 8]}),
    "classifier_avgpool": ({}, {"softmax_7": [1, 10, 1, 1]}),
    "classifier_connected": ({}, {"softmax_5": [1, 5]}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_graph_matches_opencv(tmp_path, name):
    require("cv2", "pip install 'opencv-python-headless<5'")
    data_input, expected = CASES[name]
    cfg = nets.write_model(tmp_path / "model", name, nets.NETS[name]())
    converted = _convert(cfg, data_input, tmp_path)
    assert converted.input_names == (list(data_input) or ["data"])
    assert converted.versions["darknet_reader"].startswith("airflow-neo ")
    x = _image(next(iter(data_input.values())) if data_input else [1, *_net_chw(cfg)])
    session, ours = _run_onnx(converted, x)
    assert {o.name: o.shape for o in session.get_outputs()} == expected
    reference = darknet.reference(cfg, {"data_input_config": data_input}, 1)
    theirs = reference.run({converted.input_names[0]: x})
    assert reference.name.startswith("OpenCV 4.")
    assert [t.shape for t in theirs] == [tuple(shape) for shape in expected.values()]
    for got, want in zip(ours, theirs):
        error = float(np.abs(got - want).max())
        print(f"{name}: max abs error vs OpenCV {error:.3g} (output range {np.abs(want).max():.3g})")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def _net_chw(cfg):
    net, _ = darknet.read_cfg(cfg)
    return [net.int("channels"), net.int("height"), net.int("width")]


def test_input_size_other_than_the_cfg_for_a_fully_convolutional_net(tmp_path):
    cfg = nets.write_model(tmp_path, "tiny", nets.yolov3_tiny(size=80))
    session, outs = _run_onnx(_convert(cfg, {"data": [1, 3, 160, 160]}), _image([1, 3, 160, 160]))
    assert [o.shape for o in outs] == [(1, 21, 10, 10), (1, 21, 20, 20)]


def test_input_size_a_connected_layer_cannot_take(tmp_path):
    cfg = nets.write_model(tmp_path, "fc", nets.classifier_connected(size=32))
    with pytest.raises(ModelInputError, match=r"layer 2 \[connected\].*1024 inputs; its weights take 256.*H=32, W=32"):
        _convert(cfg, {"data": [1, 3, 64, 64]})


def test_old_weights_header_with_a_32_bit_seen(tmp_path):
    text = nets.classifier_avgpool()
    (tmp_path / "old.cfg").write_text(text)
    (tmp_path / "old.weights").write_bytes(nets.weights_bytes(text, version=(0, 1, 0)))
    new = nets.write_model(tmp_path / "new", "new", text)
    x = _image([1, *_net_chw(new)])
    _, old_out = _run_onnx(_convert(tmp_path / "old.cfg"), x)
    _, new_out = _run_onnx(_convert(new, work=tmp_path / "new"), x)
    np.testing.assert_array_equal(old_out[0], new_out[0])  # same floats, 4 bytes less header


# ----------------------------------------------------------------------------- activations


def _identity_conv_net(activation: str, channels: int = 4, size: int = 6) -> tuple[str, bytes]:
    text = nets.join(nets.net(size, size, channels), nets.conv(channels, size=1, bn=0, activation=activation))
    header = np.asarray([0, 2, 0], "<i4").tobytes() + np.asarray([0], "<i8").tobytes()
    floats = np.concatenate([np.zeros(channels), np.eye(channels).ravel()]).astype("<f4")
    return text, header + floats.tobytes()


def _softplus(x):
    return np.log1p(np.exp(x))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


#: DarkNet's activations (activations.h) in numpy
FORMULAS = {
    "leaky": lambda x: np.where(x > 0, x, 0.1 * x),
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "logistic": _sigmoid,
    "loggy": lambda x: 2 * _sigmoid(x) - 1,
    "tanh": np.tanh,
    "elu": lambda x: np.where(x >= 0, x, np.exp(x) - 1),
    "selu": lambda x: np.where(x >= 0, 1.0507 * x, 1.0507 * 1.6732 * (np.exp(x) - 1)),
    "hardtan": lambda x: np.clip(x, -1, 1),
    "swish": lambda x: x * _sigmoid(x),
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "linear": lambda x: x,
}


@pytest.mark.parametrize("activation", sorted(FORMULAS))
def test_activation_is_darknets(tmp_path, activation):
    text, weights = _identity_conv_net(activation)
    (tmp_path / "a.cfg").write_text(text)
    (tmp_path / "a.weights").write_bytes(weights)
    x = np.linspace(-8, 8, 4 * 6 * 6, dtype=np.float32).reshape(1, 4, 6, 6)
    _, (out,) = _run_onnx(_convert(tmp_path / "a.cfg"), x)
    np.testing.assert_allclose(out, FORMULAS[activation](x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_unsupported_activation_is_named_before_the_weights_are_read(tmp_path):
    text, _ = _identity_conv_net("plse")
    (tmp_path / "a.cfg").write_text(text)  # no .weights: the cfg is refused first
    with pytest.raises(UnsupportedOperatorsError, match=r"layer 0 \[convolutional\] \(line \d+ of a.cfg\): "
                                                        r"activation=plse.*supported: elu"):
        _convert(tmp_path / "a.cfg")


def test_reference_names_what_opencv_cannot_read(tmp_path):
    require("cv2", "pip install 'opencv-python-headless<5'")
    from airflow_neo.local.references import NotVerifiable

    text, weights = _identity_conv_net("selu")
    (tmp_path / "a.cfg").write_text(text)
    (tmp_path / "a.weights").write_bytes(weights)
    _convert(tmp_path / "a.cfg")  # the reader takes it
    with pytest.raises(NotVerifiable, match=r"OpenCV 4\.\S+ cannot read a\.cfg: .*selu"):
        darknet.reference(tmp_path / "a.cfg", {}, 1)


# ----------------------------------------------------------------------------- archive and input errors


def _tiny(tmp_path, text=None):
    return nets.write_model(tmp_path / "model", "tiny", text or nets.classifier_avgpool())


def test_missing_weights(tmp_path):
    cfg = _tiny(tmp_path)
    (cfg.parent / "tiny.weights").unlink()
    (cfg.parent / "labels.txt").write_text("cat\n")
    with pytest.raises(ModelArchiveError, match=r"no \.weights file beside tiny\.cfg.*exactly one \.weights.*"
                                                r"holds 2 file\(s\): labels\.txt, tiny\.cfg"):
        _convert(cfg)


def test_two_weights_files(tmp_path):
    cfg = _tiny(tmp_path)
    (cfg.parent / "tiny_best.weights").write_bytes((cfg.parent / "tiny.weights").read_bytes())
    with pytest.raises(ModelArchiveError, match=r"2 \.weights files \(tiny\.weights, tiny_best\.weights\)"):
        _convert(cfg)


def _needed(cfg) -> int:
    return (len((cfg.parent / "tiny.weights").read_bytes()) - 20) // 4


@pytest.mark.parametrize("change, expect", [
    (lambda data: data[:-12], r"holds {n_less} float32 values after its 20-byte header .*needs {n} \(3 too few"),
    (lambda data: data + bytes(8), r"holds {n_more} float32 values after .*needs {n} \(2 left over"),
    (lambda data: data + bytes(2), r"holds {n} float32 values and 2 stray bytes"),
])
def test_weights_size_must_match_the_cfg(tmp_path, change, expect):
    cfg = _tiny(tmp_path)
    n = _needed(cfg)
    path = cfg.parent / "tiny.weights"
    path.write_bytes(change(path.read_bytes()))
    with pytest.raises(ModelArchiveError, match=expect.format(n=n, n_less=n - 3, n_more=n + 2)) as caught:
        _convert(cfg)
    assert "tiny.weights" in str(caught.value) and "tiny.cfg" in str(caught.value)


def test_unknown_layer_types_are_all_named_with_their_lines(tmp_path):
    text = nets.classifier_avgpool().replace("[dropout]", "[lstm]\noutput=4\n\n[dropout]")
    text += "\n[crnn]\nhidden=4\n"
    cfg = _tiny(tmp_path, text)
    lines = text.splitlines()
    with pytest.raises(UnsupportedOperatorsError) as caught:
        _convert(cfg)
    message = str(caught.value)
    assert f"layer 4 [lstm] (line {lines.index('[lstm]') + 1} of tiny.cfg)" in message
    assert f"layer 9 [crnn] (line {lines.index('[crnn]') + 1} of tiny.cfg)" in message
    assert caught.value.operators == ["crnn", "lstm"]


def test_unimplemented_option_is_named(tmp_path):
    cfg = _tiny(tmp_path, nets.classifier_avgpool().replace("[maxpool]", "[maxpool]\nstride_x=1", 1))
    with pytest.raises(OperatorAttributeNotImplementedError, match=r"layer 1 \[maxpool\].*stride_x=1"):
        _convert(cfg)


def test_not_a_cfg(tmp_path):
    cfg = _tiny(tmp_path)
    cfg.write_text("name: 'caffe'\nlayer { type: 'Convolution' }\n")
    with pytest.raises(ModelArchiveError, match=r"line 1 of tiny\.cfg.*is this a DarkNet \.cfg"):
        _convert(cfg)


def test_weights_given_as_the_cfg(tmp_path):
    cfg = _tiny(tmp_path)
    cfg.write_bytes((cfg.parent / "tiny.weights").read_bytes())
    with pytest.raises(ModelArchiveError, match=r"tiny\.cfg is a binary file; a DarkNet \.cfg is text"):
        _convert(cfg)


def test_cfg_with_a_byte_order_mark_and_windows_line_ends(tmp_path):
    cfg = _tiny(tmp_path)
    cfg.write_bytes(b"\xef\xbb\xbf" + cfg.read_text().replace("\n", "\r\n").encode())
    assert _convert(cfg).input_names == ["data"]


def test_data_input_config_with_two_inputs(tmp_path):
    with pytest.raises(ModelInputError, match=r"names 2 inputs \(data, extra\).*one image input"):
        _convert(_tiny(tmp_path), {"data": [1, 3, 34, 34], "extra": [1, 3, 34, 34]})


def test_data_input_config_channels_must_match_the_net(tmp_path):
    with pytest.raises(ModelInputError, match=r"has C=34, but \[net\].*channels=3; allowed: \[N, 3, H, W\]"):
        _convert(_tiny(tmp_path), {"data": [1, 34, 34, 3]})


def test_reference_without_opencv_names_the_package(tmp_path, monkeypatch):
    from airflow_neo.local.references import NotVerifiable

    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(NotVerifiable, match=r'pip install "opencv-python-headless<5"'):
        darknet.reference(_tiny(tmp_path), {}, 1)



# ----------------------------------------------------------------------------- end to end


def test_compile_through_tvm_and_run(tmp_path):
    """One net through the local backend: archive -> reader -> ONNX import -> TVM -> artifact, run with
    airflow_neo.runtime and checked against OpenCV (the job's own verification uses it too)."""
    require("cv2", "pip install 'opencv-python-headless<5'")
    pytest.importorskip("tvm")
    from airflow_neo import runtime
    from airflow_neo.local.compiler import compile_model
    from tests.local import models

    text = nets.yolov4_tiny()
    archive = models.write_archive(tmp_path, {"yolov4-tiny.cfg": text.encode(), "yolov4-tiny.weights": nets.weights_bytes(text)})
    case = models.ModelCase(archive, None, framework="DARKNET", data_input_config={"images": [1, 3, 64, 64]},
                            inputs={}, model_file="yolov4-tiny.cfg")
    request = models.make_request(case, target_platform={"Os": "LINUX", "Arch": "X86_64"})
    artifact = tmp_path / "out" / "model-compiled.tar.gz"
    metadata = compile_model(request, str(archive), str(artifact), log=lambda _line: None, verify="gate")
    assert metadata["verification"]["passed"] and metadata["verification"]["reference"].startswith("OpenCV 4.")
    assert metadata["versions"]["darknet_reader"].startswith("airflow-neo ")

    model = runtime.load(artifact)
    assert model.input_names == ["images"] and model.output_names == ["yolo_12", "yolo_19"]
    x = _image([1, 3, 64, 64], seed=7)
    got = model.run({"images": x})
    want = darknet.reference(_unpacked(archive, tmp_path), {}, None).run({"images": x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def _unpacked(archive, tmp_path):
    import tarfile

    folder = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder / "yolov4-tiny.cfg"
