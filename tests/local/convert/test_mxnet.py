"""MXNET converter: the .params reader, the operators against MXNet itself (Gluon models exported by
MXNet 1.9.1 in a side virtualenv, run by MXNet) and against the operators' definitions (hand-written
models, numpy references, no MXNet needed), one compile through TVM, the archive errors."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from airflow_neo.local.convert import Source
from airflow_neo.local.convert import mxnet as mxconv
from airflow_neo.local.convert.mxnet_params import ParamsFormatError, read_params, split_params, write_params
from airflow_neo.local.errors import (
    ModelArchiveError,
    ModelInputError,
    OperatorAttributeNotImplementedError,
    UnsupportedOperatorsError,
)
from tests.local.convert import mxnet_handmade as handmade

HERE = Path(__file__).parent
#: the side virtualenv with MXNet 1.9.1 (its own numpy < 1.24); $AIRFLOW_NEO_MXNET_PYTHON overrides
SIDE_PYTHON = os.environ.get(mxconv.SIDE_PYTHON_ENV, "/var/cache/airflow-neo/mxnet-venv/bin/python")


def _convert(model_file: Path, data_input: dict, work: Path, log=None):
    work.mkdir(parents=True, exist_ok=True)
    source = Source("MXNET", model_file, model_file.parent, data_input, {}, work, log or (lambda line: None))
    return mxconv.convert(source)


def _run_onnx(path: Path, inputs: dict) -> list:
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)


@pytest.fixture(scope="module")
def gluon(tmp_path_factory):
    """Models that MXNet built and exported, with MXNet's outputs (tests/local/convert/mxnet_gluon.py)."""
    if not Path(SIDE_PYTHON).is_file():
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no MXNet side virtualenv at {SIDE_PYTHON} (python3.11 -m venv DIR && DIR/bin/pip install "
                    f"'mxnet==1.9.1' 'numpy<1.24'; set {mxconv.SIDE_PYTHON_ENV}=DIR/bin/python)")
    out = tmp_path_factory.mktemp("mxnet-gluon")
    done = subprocess.run([SIDE_PYTHON, str(HERE / "mxnet_gluon.py"), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "manifest.json").read_text())


def _gluon_case(gluon, name):
    out, manifest = gluon
    directory = out / name
    info = manifest["models"][name]
    symbol = directory / next(f for f in info["files"] if f.endswith("-symbol.json"))
    with np.load(directory / "outputs.npz") as saved:
        outputs = [saved[f"out{i}"] for i in range(len(saved.files))]
    return symbol, info["data_input"], {"data": np.load(directory / "inputs.npz")["data"]}, outputs


# -- the .params format -------------------------------------------------------------------------


def test_params_round_trip_every_dtype(tmp_path):
    arrays = {f"arg:{np.dtype(t).name}": (np.arange(6) % 3).astype(t).reshape(2, 3)
              for t in (np.float32, np.float64, np.float16, np.uint8, np.int32, np.int8, np.int64)}
    arrays["aux:stat"] = np.linspace(0, 1, 4, dtype=np.float32)
    names, values = read_params(write_params(tmp_path / "x.params", arrays))
    assert names == list(arrays)
    for value, want in zip(values, arrays.values()):
        assert value.dtype == want.dtype and np.array_equal(value, want)
    args, auxs = split_params(names, values)
    assert set(auxs) == {"stat"} and "float16" in args


def _legacy_file(magic_and_shape: bytes, data: np.ndarray) -> bytes:
    array = magic_and_shape + struct.pack("<iii", 1, 0, 0) + data.astype("<f4").tobytes()
    return struct.pack("<QQQ", 0x112, 0, 1) + array + struct.pack("<QQ", 1, 5) + b"arg:w"


@pytest.mark.parametrize("header", [
    struct.pack("<Ii2q", 0xF993FAC8, 2, 2, 3),  # V1: int64 dims
    struct.pack("<I2I", 2, 2, 3),  # legacy: the magic is the ndim, uint32 dims
], ids=["v1", "legacy"])
def test_params_older_layouts(tmp_path, header):
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    (tmp_path / "x.params").write_bytes(_legacy_file(header, data))
    names, values = read_params(tmp_path / "x.params")
    assert names == ["arg:w"] and np.array_equal(values[0], data)


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b"\x00" + b[1:], "not the NDArray list magic"),
    (lambda b: b[:-9], "truncated"),
    (lambda b: b[:24] + struct.pack("<I", 0xF993FACA) + b[28:], "numpy-shape semantics"),
    (lambda b: b[:28] + struct.pack("<i", 2) + b[32:], "csr storage"),
], ids=["magic", "truncated", "v3", "sparse"])
def test_params_reader_rejects(tmp_path, mutate, match):
    good = write_params(tmp_path / "good.params", {"arg:w": np.ones((2, 2), np.float32)}).read_bytes()
    (tmp_path / "bad.params").write_bytes(mutate(good))
    with pytest.raises(ParamsFormatError, match=match):
        read_params(tmp_path / "bad.params")


# -- against MXNet ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet", "ops", "classifier"])
def test_converted_graph_matches_mxnet(gluon, tmp_path, name):
    symbol, data_input, inputs, want = _gluon_case(gluon, name)
    converted = _convert(symbol, data_input, tmp_path / "work")
    assert converted.input_names == ["data"] and converted.onnx_path == tmp_path / "work" / "model.onnx"
    got = _run_onnx(converted.onnx_path, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        print(f"{name}: max abs error {np.abs(g - w).max():.2e} (outputs up to {np.abs(w).max():.2f})")
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_resnet_keeps_gluon_names(gluon, tmp_path):
    import onnx

    symbol, data_input, _, _ = _gluon_case(gluon, "resnet")
    model = onnx.load(str(_convert(symbol, data_input, tmp_path).onnx_path))
    initializers = {init.name for init in model.graph.initializer}
    assert {"resnetv10_conv0_weight", "resnetv10_batchnorm0_running_mean", "resnetv10_dense0_weight"} <= initializers
    assert [i.name for i in model.graph.input] == ["data"]


def test_side_python_reference_runs_mxnet(gluon, monkeypatch):
    symbol, _, inputs, want = _gluon_case(gluon, "ops")
    monkeypatch.setattr("airflow_neo.local.convert.mxnet_runner.import_mxnet", lambda threads=None: None)
    monkeypatch.setenv(mxconv.SIDE_PYTHON_ENV, SIDE_PYTHON)
    ref = mxconv.reference(symbol, {"data_input_config": {"data": list(inputs["data"].shape)}}, threads=1)
    got = ref.run(inputs)
    assert ref.name.startswith("mxnet 1.9.1 (") and len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # a process per run: the profile has no baseline rather than timing MXNet's start-up
    from airflow_neo.local import profile

    metadata = {"framework": "MXNET", "data_input_config": {"data": list(inputs["data"].shape)}}
    baseline = profile._baseline(metadata, symbol, inputs, 5.0, 1, 60.0)
    assert set(baseline) == {"skipped"} and "each run starts a process" in baseline["skipped"], baseline


def test_reference_without_mxnet_is_not_verifiable(tmp_path, monkeypatch):
    from airflow_neo.local.references import NotVerifiable

    symbol, params, _ = handmade.small_cnn(fix_gamma=True)
    model_file = handmade.write_model(tmp_path, symbol, params)
    monkeypatch.setattr("airflow_neo.local.convert.mxnet_runner.import_mxnet", lambda threads=None: None)
    monkeypatch.delenv(mxconv.SIDE_PYTHON_ENV, raising=False)
    with pytest.raises(NotVerifiable, match=r"mxnet is not installed.*scripts/mxnet_venv\.sh.*numpy<1\.24"):
        mxconv.reference(model_file, {}, None)


def test_compile_end_to_end_verified_by_mxnet(gluon, tmp_path, monkeypatch):
    """Archive -> converter -> TVM -> runtime, the job's verification run by MXNet (side Python)."""
    from airflow_neo import runtime
    from airflow_neo.local.compiler import compile_model
    from tests.local import models

    monkeypatch.setenv(mxconv.SIDE_PYTHON_ENV, SIDE_PYTHON)
    symbol, data_input, inputs, want = _gluon_case(gluon, "ops")
    archive = models.write_archive(tmp_path, {p.name: p.read_bytes() for p in symbol.parent.iterdir()
                                              if p.suffix in (".json", ".params")})
    case = models.ModelCase(archive, lambda _: want, framework="MXNET", data_input_config=data_input,
                            inputs=inputs, model_file=symbol.name)
    request = models.make_request(case, target_platform={"Os": "LINUX", "Arch": "X86_64"})
    artifact = tmp_path / "artifact" / "model-compiled.tar.gz"
    lines: list[str] = []
    metadata = compile_model(request, str(archive), str(artifact), log=lines.append, verify="gate")
    got = runtime.load(artifact).run(inputs)
    print("\n".join(line for line in lines if "verif" in line))
    print(f"compile: {metadata['timings_s']}; max abs errors {[float(np.abs(g - w).max()) for g, w in zip(got, want)]}")
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert any("mxnet" in line and "verif" in line for line in lines), [l for l in lines if "verif" in l]


# -- against the operators' definitions (no MXNet) ----------------------------------------------


@pytest.mark.parametrize("fix_gamma", [True, False])
def test_handmade_cnn_matches_operator_definitions(tmp_path, fix_gamma):
    symbol, params, data = handmade.small_cnn(fix_gamma)
    converted = _convert(handmade.write_model(tmp_path, symbol, params), {"data": list(data.shape)}, tmp_path / "w")
    (got,) = _run_onnx(converted.onnx_path, {"data": data})
    want = handmade.small_cnn_reference(params, data, fix_gamma)
    assert got.shape == want.shape == (1, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    other = handmade.small_cnn_reference(params, data, not fix_gamma)
    assert not np.allclose(got, other, rtol=1e-3), "fix_gamma made no difference: the test cannot tell"


# -- archive and input errors -------------------------------------------------------------------


def _model(tmp_path, **change):
    symbol, params, data = handmade.small_cnn(fix_gamma=True)
    return handmade.write_model(tmp_path / "m", change.get("symbol", symbol), change.get("params", params)), data


def test_missing_and_ambiguous_params_file(tmp_path):
    model_file, data = _model(tmp_path)
    (model_file.parent / "model-0001.params").write_bytes((model_file.parent / "model-0000.params").read_bytes())
    with pytest.raises(ModelArchiveError, match=r"2 \.params files \(model-0000\.params, model-0001\.params\)"):
        _convert(model_file, {"data": list(data.shape)}, tmp_path / "w")
    for path in model_file.parent.glob("*.params"):
        path.unlink()
    with pytest.raises(ModelArchiveError, match=r"no \.params file.*holds 1 file\(s\): model-symbol\.json"):
        _convert(model_file, {"data": list(data.shape)}, tmp_path / "w")


def test_params_lacking_an_argument_is_named(tmp_path):
    _, params, _ = handmade.small_cnn(fix_gamma=True)
    model_file, data = _model(tmp_path, params={k: v for k, v in params.items() if k != "arg:fc_weight"})
    with pytest.raises(ModelArchiveError, match="model-0000.params lacks the argument.*fc_weight"):
        _convert(model_file, {"data": list(data.shape)}, tmp_path / "w")


@pytest.mark.parametrize("text", ['{"weights": []}', "not json", '{"nodes": [{"op": "null"}], "heads": []}'])
def test_not_a_symbol_file(tmp_path, text):
    model_file, data = _model(tmp_path, symbol=text)
    with pytest.raises(ModelArchiveError, match="model-symbol.json is not an MXNet symbol file"):
        _convert(model_file, {"data": list(data.shape)}, tmp_path / "w")


def test_unknown_operators_are_all_listed(tmp_path):
    symbol = handmade.symbol_json([("Convolution", "c", {"kernel": (1, 1), "num_filter": 1, "no_bias": True},
                                    ["data", "c_weight"]),
                                   ("_contrib_Fancy", "f", {}, ["c"]), ("RNN", "r", {}, ["f"]),
                                   ("Dropout", "d", {}, ["r"])], ["data"], ["d"])
    model_file, _ = _model(tmp_path, symbol=symbol, params={"arg:c_weight": np.ones((1, 1, 1, 1), np.float32)})
    with pytest.raises(UnsupportedOperatorsError, match="RNN, _contrib_Fancy") as err:
        _convert(model_file, {"data": [1, 1, 4, 4]}, tmp_path / "w")
    assert err.value.operators == ["RNN", "_contrib_Fancy"]


@pytest.mark.parametrize("layer, match", [
    (("Pooling", "pool", {"kernel": (2, 2), "pooling_convention": "same"}, ["data"]), "pooling_convention='same'"),
    (("Pooling", "pool", {"kernel": (2, 2), "pool_type": "lp"}, ["data"]), "pool_type='lp'"),
    (("Reshape", "flat", {"shape": (-3, -2)}, ["data"]), r"shape=\(-3, -2\)"),
    (("BatchNorm", "bn", {"axis": 3}, ["data", "g", "b", "m", "v"]), "axis=3"),
], ids=["pool-same", "pool-lp", "reshape-special", "batchnorm-axis"])
def test_unimplemented_attribute_values_are_named(tmp_path, layer, match):
    params = {f"{kind}:{name}": np.ones((2,), np.float32) for kind, name in
              (("arg", "g"), ("arg", "b"), ("aux", "m"), ("aux", "v"))}
    model_file, _ = _model(tmp_path, symbol=handmade.symbol_json([layer], ["data"], [layer[1]]), params=params)
    with pytest.raises(OperatorAttributeNotImplementedError, match=f"MXNet node '{layer[1]}' .*{match}") as err:
        _convert(model_file, {"data": [1, 2, 4, 4]}, tmp_path / "w")
    assert err.value.operators == [layer[0]]


def test_input_shapes_need_data_input_config(tmp_path):
    model_file, data = _model(tmp_path)
    with pytest.raises(ModelInputError, match="DataInputConfig is required for MXNet.*'data'"):
        _convert(model_file, {}, tmp_path / "w")
    with pytest.raises(ModelInputError, match=r"DataInputConfig names \['input'\].*inputs are \['data'\]"):
        _convert(model_file, {"input": list(data.shape)}, tmp_path / "w")
