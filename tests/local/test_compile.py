"""Real compiles with TVM of small real architectures, run through airflow_neo.runtime and compared
with the original framework; plus the failure cases a user meets."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tarfile
import time

import numpy as np
import pytest

from airflow_neo import runtime
from airflow_neo.core.exceptions import NeoError
from airflow_neo.local import frontends, targets
from airflow_neo.local.compiler import InputSpec, compile_model
from airflow_neo.local.errors import (
    CompilationError,
    IncompatibleArtifactError,
    ModelArchiveError,
    ModelInputError,
    UnsupportedFrameworkError,
    UnsupportedOperatorsError,
    UnsupportedTargetError,
)
from tests.local import models

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}
EM_X86_64, EM_ARM, EM_AARCH64 = 62, 40, 183
EF_ARM_ABI_FLOAT_HARD = 0x400


def _compile(case, tmp_path, log_lines: list[str] | None = None, verify: str = "gate", **request_kwargs):
    request_kwargs.setdefault("target_platform", None if "target_device" in request_kwargs else LINUX_X86_64)
    request = models.make_request(case, **request_kwargs)
    lines: list[str] = [] if log_lines is None else log_lines
    artifact = tmp_path / "artifact" / "model-compiled.tar.gz"
    started = time.monotonic()
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append, verify=verify)
    print(f"compile {case.framework} {case.model_file}: {time.monotonic() - started:.2f} s; {metadata['timings_s']}")
    return artifact, metadata, lines


def _check_outputs(case, model):
    got = model.run(case.inputs)
    want = case.reference(case.inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w).reshape(g.shape), rtol=case.rtol, atol=case.atol)


def _elf_header(data: bytes) -> tuple[int, int, int]:
    """(EI_CLASS, e_machine, e_flags) of a little-endian ELF file."""
    assert data[:4] == b"\x7fELF", "not an ELF file"
    assert data[5] == 1, "not little-endian"
    elf_class = data[4]
    (machine,) = struct.unpack_from("<H", data, 18)
    (flags,) = struct.unpack_from("<I", data, 36 if elf_class == 1 else 48)
    return elf_class, machine, flags


def _library_bytes(artifact) -> bytes:
    with tarfile.open(artifact) as tar:
        return tar.extractfile("model.so").read()


# -- real models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "builder",
    [
        models.onnx_cnn,
        models.onnx_transformer,
        models.torchscript_cnn,
        models.pt2_transformer,
        models.tflite_cnn,
        models.xgboost_classifier,
    ],
    ids=lambda builder: builder.__name__,
)
def test_compile_and_run_matches_the_framework(tmp_path, builder):
    case = builder(tmp_path / "model")
    artifact, metadata, lines = _compile(case, tmp_path)
    model = runtime.load(artifact)
    _check_outputs(case, model)
    assert model.input_names == list(case.inputs)
    assert metadata["framework"] == case.framework and metadata["model_file"] == case.model_file
    assert metadata["target"]["label"] == "linux-x86_64"
    for phase in ("extract", "import", "build", "export"):
        assert phase in metadata["timings_s"]
        assert any(line.startswith(f"phase {phase}: ") and line.endswith(" s") for line in lines), lines


def test_artifact_layout_and_metadata(tmp_path):
    case = models.onnx_cnn(tmp_path / "model")
    artifact, metadata, _ = _compile(case, tmp_path, compiler_options={"dtype": "float32"})
    with tarfile.open(artifact) as tar:
        assert sorted(tar.getnames()) == ["metadata.json", "model.so", "verification.npz"]
        stored = json.loads(tar.extractfile("metadata.json").read())
    assert stored == metadata
    assert metadata["schema_version"] == 1
    assert metadata["runtime"] == "tvm-relax-vm" and metadata["library"] == "model.so"
    assert metadata["entry_function"] == "main"
    assert metadata["inputs"] == [{"name": "input0", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    assert metadata["outputs"] == [{"name": "output0", "shape": [1, 10], "dtype": "float32"}]
    assert metadata["target"]["tvm_target"] == {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"}
    assert metadata["target"]["cross_compiled"] is False
    assert metadata["compiler_options"] == {"dtype": "float32"}
    assert metadata["data_input_config"] == {"input0": [1, 3, 16, 16]}
    assert metadata["input_archive_blake2b"] == hashlib.blake2b(case.archive.read_bytes()).hexdigest()
    assert metadata["versions"]["tvm"].startswith("0.27")
    assert "onnx" in metadata["versions"]
    assert runtime.read_metadata(f"file://{artifact}") == metadata


def test_torchscript_dict_form(tmp_path):
    case = models.torchscript_cnn(tmp_path / "model", list_form=False)
    artifact, metadata, _ = _compile(case, tmp_path)
    assert metadata["inputs"][0]["name"] == "input0"
    _check_outputs(case, runtime.load(artifact))


def test_ml_c5_runs_where_the_cpu_allows(tmp_path):
    """ml_c5 is Skylake-SP (AVX-512): loading refuses on a CPU without it instead of dying of SIGILL."""
    case = models.tflite_cnn(tmp_path / "model")
    artifact, metadata, _ = _compile(case, tmp_path, target_device="ml_c5")
    assert metadata["target"]["tvm_target"]["mcpu"] == "skylake-avx512"
    flags = runtime._host_cpu_flags() or set()
    if targets.host_arch() == "x86_64" and "avx512f" not in flags:
        with pytest.raises(IncompatibleArtifactError, match="avx512f"):
            runtime.load(artifact)
    elif targets.host_arch() == "x86_64":
        _check_outputs(case, runtime.load(artifact))


def test_mcpu_override_for_this_cpu(tmp_path):
    case = models.tflite_cnn(tmp_path / "model")
    from tvm.target import codegen

    host_cpu = str(codegen.llvm_get_system_cpu())
    artifact, metadata, _ = _compile(case, tmp_path, compiler_options={"mcpu": host_cpu})
    assert metadata["target"]["tvm_target"]["mcpu"] == host_cpu
    try:
        model = runtime.load(artifact)
    except IncompatibleArtifactError as err:  # a VM that hides features its CPU model implies
        pytest.skip(f"LLVM's host CPU {host_cpu} implies features this VM hides: {err}")
    _check_outputs(case, model)


def test_runtime_loads_file_and_s3_uris(tmp_path):
    case = models.tflite_cnn(tmp_path / "model")
    artifact, _, _ = _compile(case, tmp_path)

    class FakeS3:
        calls = []

        def download_file(self, bucket, key, filename):
            self.calls.append((bucket, key))
            shutil.copyfile(artifact, filename)

    s3 = FakeS3()
    for model in (runtime.load(f"file://{artifact}"), runtime.load("s3://bucket/out/model.tar.gz", s3_client=s3)):
        _check_outputs(case, model)
    assert s3.calls == [("bucket", "out/model.tar.gz")]
    assert runtime.read_metadata("s3://bucket/out/model.tar.gz", s3_client=s3)["framework"] == "TFLITE"
    with pytest.raises(ValueError, match="s3_client"):
        runtime.load("s3://bucket/out/model.tar.gz")
    with pytest.raises(ModelArchiveError, match="not an airflow-neo artifact"):
        runtime.load(case.archive)


def _need_cross(cc: str):
    if shutil.which(cc) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{cc} is not installed; CI must install it")
        pytest.skip(f"{cc} is not installed")


@pytest.mark.parametrize(
    "kwargs, cc, elf_class, machine, hard_float",
    [
        (dict(target_platform={"Os": "LINUX", "Arch": "ARM64"}), "aarch64-linux-gnu-gcc", 2, EM_AARCH64, None),
        (dict(target_device="rasp4b"), "aarch64-linux-gnu-gcc", 2, EM_AARCH64, None),
        (dict(target_device="rasp3b"), "arm-linux-gnueabihf-gcc", 1, EM_ARM, True),
    ],
    ids=["linux-arm64", "rasp4b", "rasp3b"],
)
def test_cross_compile_is_an_elf_for_the_target(tmp_path, monkeypatch, kwargs, cc, elf_class, machine, hard_float):
    monkeypatch.setattr(targets, "host_arch", lambda: "x86_64")
    _need_cross(cc)
    case = models.onnx_cnn(tmp_path / "model")
    # verification off: aarch64 artifacts are verified under emulation (tests/local/test_emulation.py), 20 s each
    artifact, metadata, _ = _compile(case, tmp_path, verify="off", **kwargs)
    assert metadata["target"]["cross_compiled"] is True and metadata["target"]["cross_compiler"] == cc
    got_class, got_machine, flags = _elf_header(_library_bytes(artifact))
    assert (got_class, got_machine) == (elf_class, machine)
    if hard_float is not None:
        assert bool(flags & EF_ARM_ABI_FLOAT_HARD) is hard_float
    if targets.host_arch() != metadata["target"]["machine"]:
        monkeypatch.undo()
        with pytest.raises(IncompatibleArtifactError, match="run it on the target device"):
            runtime.load(artifact)


def test_xgboost_cross_compile(tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "host_arch", lambda: "x86_64")
    _need_cross("aarch64-linux-gnu-gcc")
    case = models.xgboost_classifier(tmp_path / "model", filename="xgboost-model")
    artifact, metadata, _ = _compile(case, tmp_path, target_device="ml_c6g")
    assert metadata["runtime"] == "tl2cgen"
    assert metadata["inputs"] == [{"name": "data", "shape": [None, models.XGB_FEATURES], "dtype": "float32"}]
    assert metadata["outputs"] == [{"name": "predictions", "shape": [None, 1, 1], "dtype": "float32"}]
    assert metadata["model_file"] == "xgboost-model"
    assert _elf_header(_library_bytes(artifact))[1] == EM_AARCH64


# -- runtime input checks ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tflite")
    case = models.tflite_cnn(tmp_path / "model")
    artifact, _, _ = _compile(case, tmp_path)
    return case, runtime.load(artifact)


def test_runtime_accepts_list_single_array_and_casts(tflite_model):
    case, model = tflite_model
    x = case.inputs["input"]
    want = case.reference(case.inputs)[0]
    for given in ([x], x, x.astype(np.float64)):
        np.testing.assert_allclose(model.run(given)[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "inputs, match",
    [
        ({"wrong": np.zeros((1, 8, 8, 3), np.float32)}, r"unknown: \['wrong'\].*missing: \['input'\]"),
        ({"input": np.zeros((1, 8, 8), np.float32)}, r"must have shape \[1, 8, 8, 3\]"),
        ({"input": np.zeros((1, 3, 8, 8), np.float32)}, r"must have shape"),
        ({"input": np.zeros((1, 8, 8, 3), np.complex64)}, "must be float32; got complex64"),
        ([np.zeros((1, 8, 8, 3)), np.zeros(1)], "takes 1 input"),
    ],
)
def test_runtime_rejects_bad_inputs(tflite_model, inputs, match):
    _, model = tflite_model
    with pytest.raises(ModelInputError, match=match):
        model.run(inputs)


# -- failures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return models.onnx_cnn(tmp_path_factory.mktemp("cnn"))


def _failure(case, tmp_path, error, log_lines: list[str] | None = None, **kwargs) -> NeoError:
    """The ``error`` a compile raised (its log lines go to ``log_lines``); it left no artifact."""
    with pytest.raises(error) as info:
        _compile(case, tmp_path, log_lines=log_lines, **kwargs)
    assert isinstance(info.value, NeoError)
    assert not (tmp_path / "artifact" / "model-compiled.tar.gz").exists()
    return info.value


def test_wrong_input_name(cnn, tmp_path):
    error = _failure(cnn, tmp_path, ModelInputError, data_input_config={"data": [1, 3, 16, 16]})
    assert re.search(r"DataInputConfig names \['data'\].*model's inputs are: input0 \[1, 3, 16, 16\] float32", str(error))


def test_wrong_rank(cnn, tmp_path):
    error = _failure(cnn, tmp_path, ModelInputError, data_input_config={"input0": [1, 3, 16]})
    assert re.search(r"rank 3 \[1, 3, 16\].*rank 4", str(error))


def test_shape_conflicts_with_fixed_dims(cnn, tmp_path):
    error = _failure(cnn, tmp_path, ModelInputError, data_input_config={"input0": [1, 3, 32, 32]})
    assert re.search("dimension 2 is fixed at 16", str(error))


def test_dtype_option_conflicts(cnn, tmp_path):
    error = _failure(cnn, tmp_path, ModelInputError, compiler_options={"dtype": "float16"})
    assert re.search("declares float32", str(error))
    error = _failure(cnn, tmp_path, ModelInputError, compiler_options={"dtype": "float99"})
    assert re.search("dtype 'float99' is not supported", str(error))


def test_torchscript_wrong_rank(tmp_path):
    case = models.torchscript_cnn(tmp_path / "model")
    error = _failure(case, tmp_path, ModelInputError, data_input_config=[[1, 3, 16]])
    assert re.search(r"input0 \[1, 3, 16\] float32.*do not fit", str(error))
    error = _failure(case, tmp_path, ModelInputError, data_input_config=[[1, 3, 16, 16], [1, 3]])
    assert re.search(r"gives 2 input\(s\).*takes 1", str(error))
    error = _failure(case, tmp_path, ModelInputError, data_input_config=None)
    assert re.search("needs DataInputConfig", str(error))


def test_unsupported_operators_are_listed(tmp_path):
    case = models.onnx_unsupported_ops(tmp_path / "model")
    error = _failure(case, tmp_path, UnsupportedOperatorsError)
    assert re.search("Celu", str(error))
    assert set(error.operators) == set(models.UNSUPPORTED_ONNX_OPS)
    assert "LpNormalization" in str(error)
    assert isinstance(error, CompilationError)


def test_unsupported_torch_operators_are_listed(tmp_path):
    case = models.pt2_unsupported_ops(tmp_path / "model")
    error = _failure(case, tmp_path, UnsupportedOperatorsError)
    assert re.search("cannot convert", str(error))
    assert set(error.operators) == set(models.UNSUPPORTED_TORCH_OPS)


def test_torch_export_program_named_pt_and_positional_names(tmp_path):
    """A .pt that is a torch.export program compiles as one; Neo's input0 maps to the program's x."""
    case = models.pt2_cnn(tmp_path / "model", filename="model.pt")
    artifact, metadata, lines = _compile(case, tmp_path)
    assert any("is a torch.export program" in line for line in lines)
    assert metadata["inputs"] == [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    _check_outputs(case, runtime.load(artifact))


def test_missing_python_package_is_named(cnn, tmp_path, monkeypatch):
    def no_onnx(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnx'", name="onnx")

    monkeypatch.setitem(frontends.IMPORTERS, "ONNX", no_onnx)
    error = _failure(cnn, tmp_path, CompilationError)
    assert re.search(r"package 'onnx' is not installed.*pip install onnx", str(error))


@pytest.mark.parametrize("framework", ["SKLEARN", "CAFFE"])
def test_unsupported_framework(cnn, tmp_path, framework):
    request = models.make_request(cnn, target_platform=LINUX_X86_64)
    request["InputConfig"]["Framework"] = framework
    with pytest.raises(UnsupportedFrameworkError, match=rf"{framework}.*not supported by the local backend.*ONNX, PYTORCH, TFLITE, XGBOOST, TENSORFLOW, KERAS, DARKNET, MXNET"):
        compile_model(request, str(cnn.archive), str(tmp_path / "a.tar.gz"), log=lambda _: None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target_device="ml_p2"), "not supported by the local backend"),
        (dict(target_device="ml_g4dn", compiler_options={"gpu-code": "sm75"}), "gpu-code 'sm75' is not a CUDA architecture"),
        (dict(target_device="ml_inf2"), "not supported by the local backend"),
        (dict(target_platform={"Os": "LINUX", "Arch": "X86_64", "Accelerator": "INTEL_GRAPHICS"}), "not supported by the local backend"),
        (dict(target_device="ml_c5", compiler_options={"mcpu": "bogus-cpu"}), "mcpu 'bogus-cpu' is not a CPU LLVM knows"),
    ],
)
def test_unsupported_target_fails_before_any_work(cnn, tmp_path, kwargs, match):
    lines: list[str] = []
    assert re.search(match, str(_failure(cnn, tmp_path, UnsupportedTargetError, log_lines=lines, **kwargs)))
    assert not [line for line in lines if line.startswith("phase ")]  # refused before touching the model


def test_missing_cross_compiler_fails_before_any_work(cnn, tmp_path, monkeypatch):
    monkeypatch.setattr(targets, "host_arch", lambda: "x86_64")
    monkeypatch.setenv("PATH", str(tmp_path))
    lines = []
    request = models.make_request(cnn, target_platform={"Os": "LINUX", "Arch": "ARM64"})
    with pytest.raises(CompilationError, match="install the Debian package gcc-aarch64-linux-gnu"):
        compile_model(request, str(cnn.archive), str(tmp_path / "a.tar.gz"), log=lines.append)
    assert not any(line.startswith("phase") for line in lines)


def test_corrupt_and_unsafe_archives(cnn, tmp_path):
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b garbage")
    request = models.make_request(cnn, target_platform=LINUX_X86_64)
    with pytest.raises(ModelArchiveError, match="not a valid .tar.gz"):
        compile_model(request, str(corrupt), str(tmp_path / "a.tar.gz"), log=lambda _: None)
    wrong = models.write_archive(tmp_path / "wrong", {"README.md": b"hello", "model.h5": b"keras"})
    with pytest.raises(ModelArchiveError, match=r"no ONNX model file.*README\.md.*model\.h5"):
        compile_model(request, str(wrong), str(tmp_path / "a.tar.gz"), log=lambda _: None)


def test_corrupt_model_files(tmp_path):
    for framework, name, match in [
        ("ONNX", "model.onnx", "not a valid ONNX model"),
        ("TFLITE", "model.tflite", "not a TFLite flatbuffer"),
        ("PYTORCH", "model.pth", "not a TorchScript model"),
        ("PYTORCH", "model.pt2", "not a torch.export program"),
        ("XGBOOST", "model.json", "not an XGBoost model"),
    ]:
        archive = models.write_archive(tmp_path / framework / name, {name: b"\x08\x01garbage \xff\xfe" * 10})
        case = models.ModelCase(archive, None, framework=framework, data_input_config={"x": [1]}, inputs={}, model_file=name)
        with pytest.raises(ModelArchiveError, match=match):
            _compile(case, tmp_path / framework / name)


# -- input matching (pure) ------------------------------------------------------------------------


def test_match_inputs_rules():
    match = frontends.match_inputs
    declared = [InputSpec("x", [None, 16, 64], "float32"), InputSpec("mask", [None, 16], "int64")]
    resolved = match("ONNX", declared, {"x": [2, 16, 64], "mask": [2, 16]}, None)
    assert [(s.name, s.shape, s.dtype) for s in resolved] == [("x", [2, 16, 64], "float32"), ("mask", [2, 16], "int64")]
    with pytest.raises(ModelInputError, match="no static shape"):
        match("ONNX", declared, {"x": [2, 16, 64]}, None)
    # Neo's PyTorch convention: input0, input1 ... in order, when no name matches (torch.export)
    resolved = match("PYTORCH", declared, {"input0": [2, 16, 64], "input1": [2, 16]}, None, positional_ok=True)
    assert [s.shape for s in resolved] == [[2, 16, 64], [2, 16]]
    resolved = match("PYTORCH", declared, [[3, 16, 64], [3, 16]], None)
    assert [s.shape for s in resolved] == [[3, 16, 64], [3, 16]]
    with pytest.raises(ModelInputError, match=r"lists 1 shape\(s\).*has 2 input"):
        match("PYTORCH", declared, [[3, 16, 64]], None)
    with pytest.raises(ModelInputError, match="positive integers"):
        match("ONNX", declared, {"x": [2, 16, 0], "mask": [2, 16]}, None)
    static = [InputSpec("img", [1, 3, 8, 8], None)]
    assert match("TFLITE", static, None, {"img": "float16"})[0].dtype == "float16"
    assert match("TFLITE", static, None, None)[0].dtype == "float32"
