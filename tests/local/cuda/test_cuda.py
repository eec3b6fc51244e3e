"""NVIDIA targets without a GPU: NVRTC compiles TVM's kernels to a cubin for the asked sm_XX, the
cubin replaces the CUDA source in the library's packed imports, and the artifact's structure is
checked (device module present, the arch in the cubin, every kernel defined). Running the artifacts
needs an NVIDIA GPU: here they end "not verified", and the tests assert that they say why.
"""

from __future__ import annotations

import json
import tarfile

import pytest

from airflow_neo.local.compiler import compile_model
from airflow_neo.local.cuda import nvrtc
from airflow_neo.local.cuda.blob import BlobFormatError, CudaModule, ImportBlob, PackedModule
from airflow_neo.local.cuda.elf import ElfFile, cubin_arch
from airflow_neo.local.cuda.inspect import CudaArtifactError, inspect_library
from airflow_neo.local.errors import CompilationError, IncompatibleArtifactError, UnsupportedTargetError
from tests.local import models
from tests.support.requires import require

EM_X86_64, EM_AARCH64 = 62, 183
KERNEL = r"""
#include <cuda_fp16.h>
#include <cuda/std/cstdint>
extern "C" __global__ void scale(half* __restrict__ out, const half* __restrict__ in, int64_t n) {
  int64_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __hmul(in[i], __float2half(2.0f));
}
"""


@pytest.fixture(scope="module")
def nvrtcs():
    require("nvidia", "pip install 'airflow-neo[cuda]' (NVRTC from PyPI)")
    found = nvrtc.found_nvrtcs()
    assert found, "the cuda extra is installed but no NVRTC library loads"
    return found


def test_nvrtc_picks_the_oldest_version_that_knows_the_arch(nvrtcs):
    for arch in ("sm_53", "sm_75", "sm_90"):
        chosen = nvrtc.nvrtc_for(arch)
        assert chosen.supports(arch)
        assert all(not older.supports(arch) for older in nvrtcs if older.version < chosen.version)


@pytest.mark.parametrize("arch", ["sm_53", "sm_62", "sm_72", "sm_75", "sm_86", "sm_90"])
def test_cubin_is_for_the_asked_arch(nvrtcs, arch):
    cubin = ElfFile(nvrtc.compile_cubin(KERNEL, arch))
    assert cubin_arch(cubin) == arch
    assert "scale" in cubin.functions()


def test_newest_arch_takes_the_newer_nvrtc_and_its_elf_abi(nvrtcs):
    newest = max(arch for item in nvrtcs for arch in item.archs)
    arch = f"sm_{newest}"
    assert cubin_arch(ElfFile(nvrtc.compile_cubin(KERNEL, arch))) == arch


def test_arch_no_nvrtc_knows_is_a_client_error(nvrtcs):
    with pytest.raises(UnsupportedTargetError, match=r"no installed NVRTC compiles for sm_37.*CUDA 11"):
        nvrtc.nvrtc_for("sm_37")


def test_nvrtc_error_carries_its_log(nvrtcs):
    with pytest.raises(CompilationError, match=r"(?s)could not compile.*undefined_symbol_here"):
        nvrtc.compile_cubin('extern "C" __global__ void k() { undefined_symbol_here(); }', "sm_75")


def test_blob_round_trip_and_format_errors():
    blob = ImportBlob([0, 1, 2, 2], [1, 2])
    device = CudaModule("cuda", b"\x00" * 8, [], b"// source")
    blob.modules = [PackedModule("relax.VMExecutable", b"exec"), PackedModule("_lib", None),
                    PackedModule("cuda", device.to_payload())]
    data = blob.to_bytes()
    again = ImportBlob.from_bytes(data)
    assert again.to_bytes() == data and again.find("cuda") == [2]
    assert CudaModule.from_payload(again.modules[2].payload).code == b"// source"
    with pytest.raises(BlobFormatError, match="says it holds"):
        ImportBlob.from_bytes(data[:-3])
    with pytest.raises(BlobFormatError):
        CudaModule.from_payload(device.to_payload() + b"junk")


# ------------------------------------------------------------------------------ compile_model end to end


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return models.onnx_cnn(tmp_path_factory.mktemp("cnn"))


def _compile(case, tmp_path, **request_kwargs):
    request = models.make_request(case, **request_kwargs)
    lines: list[str] = []
    artifact = tmp_path / "model.tar.gz"
    metadata = compile_model(request, str(case.archive), str(artifact), log=lines.append, verify="gate")
    with tarfile.open(artifact) as tar:
        library = tmp_path / "model.so"
        library.write_bytes(tar.extractfile("model.so").read())
        stored = json.load(tar.extractfile("metadata.json"))
    assert stored == json.loads(json.dumps(metadata))
    return metadata, library, lines


@pytest.mark.parametrize(
    "request_kwargs, arch, host_machine",
    [
        ({"target_device": "ml_g4dn"}, "sm_75", EM_X86_64),
        ({"target_device": "jetson_nano"}, "sm_53", EM_AARCH64),
        ({"target_platform": {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"},
          "compiler_options": {"gpu-code": "sm_86", "trt-ver": "8.6.1", "cuda-ver": "12.2"}}, "sm_86", EM_X86_64),
    ],
)
def test_cuda_artifact_structure(nvrtcs, cnn, tmp_path, request_kwargs, arch, host_machine):
    metadata, library, lines = _compile(cnn, tmp_path, **request_kwargs)
    found = inspect_library(library)
    assert found.arch == arch and found.fmt == "cubin" and found.host_machine == host_machine
    assert found.modules == ("relax.VMExecutable", "_lib", "cuda")
    assert len(found.kernels) == metadata["cuda"]["kernels"] >= 2
    assert metadata["target"]["tvm_target"]["kind"] == "cuda" and metadata["target"]["accelerator"]["arch"] == arch
    assert metadata["cuda"]["nvrtc"] == nvrtc.nvrtc_for(arch).version_text
    assert metadata["cuda"]["tensorrt"].startswith("not used")
    assert metadata["schedules"]["kind"] == "dlight" and "tuning" not in metadata
    assert any(line.startswith(f"NVRTC {metadata['cuda']['nvrtc']}") and arch in line for line in lines)
    # no GPU here: the job says so instead of claiming a check it did not make
    assert metadata["verification"]["passed"] is None
    why = metadata["verification"]["not_verified"]
    if host_machine == EM_AARCH64:
        assert "no emulation: CUDA artifacts need an NVIDIA GPU" in why
    else:
        assert "no CUDA driver" in why or "no CUDA device" in why
    if "cuda-ver" in request_kwargs.get("compiler_options", {}):
        assert metadata["cuda"]["requested"] == {"cuda_ver": "12.2", "trt_ver": "8.6.1"}
        assert any("TensorRT is not used" in line for line in lines)


def test_old_cuda_ver_is_recorded_with_a_driver_note(nvrtcs, cnn, tmp_path):
    metadata, _, lines = _compile(cnn, tmp_path, target_device="jetson_tx2",
                                  compiler_options={"cuda-ver": "10.0", "trt-ver": "6.0.1"})
    assert "driver must support CUDA" in metadata["cuda"]["driver_note"]
    assert any(line.startswith("warning: built by NVRTC") for line in lines)


def test_runtime_refuses_a_cuda_artifact_without_a_gpu(nvrtcs, cnn, tmp_path):
    from airflow_neo import runtime
    from airflow_neo.runtime import check_host_compatible

    metadata, _, _ = _compile(cnn, tmp_path, target_device="ml_g4dn")
    try:
        import ctypes

        ctypes.CDLL("libcuda.so.1")
        pytest.skip("this machine has a CUDA driver; the GPU script runs these artifacts")
    except OSError:
        pass
    with pytest.raises(IncompatibleArtifactError, match="NVIDIA GPU, sm_75"):
        check_host_compatible(metadata)
    with pytest.raises(IncompatibleArtifactError, match="no CUDA driver"):
        runtime.load(tmp_path / "model.tar.gz")
    with pytest.raises(ValueError, match="compiled for cuda.*cannot run on device 'cpu'"):
        runtime.load(tmp_path / "model.tar.gz", device="cpu")


def test_inspect_refuses_cpu_and_uncompiled_libraries(nvrtcs, cnn, tmp_path):
    import tvm

    from airflow_neo.local.cuda.build import build

    _, cpu_library, _ = _compile(cnn, tmp_path / "cpu", target_device="ml_c5")
    with pytest.raises(CudaArtifactError, match="expected one CUDA module, found 0"):
        inspect_library(cpu_library)
    # TVM's own export keeps the kernels as CUDA source: not an artifact of this backend
    from tvm.relax.frontend.onnx import from_onnx
    import onnx

    with tarfile.open(cnn.archive) as tar:
        model = onnx.load_from_string(tar.extractfile("model.onnx").read())
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_75", "host": {"kind": "llvm"}})
    executable = build(from_onnx(model, shape_dict=cnn.data_input_config), target, log=lambda _: None)
    source_library = tmp_path / "source.so"
    executable.export_library(str(source_library))
    with pytest.raises(CudaArtifactError, match="holds 'cuda', not a compiled cubin"):
        inspect_library(source_library)


def test_fp16_on_a_gpu_computes_in_half(nvrtcs, cnn, tmp_path):
    fp32, _, _ = _compile(cnn, tmp_path / "fp32", target_device="ml_g4dn")
    fp16, library, _ = _compile(cnn, tmp_path / "fp16", target_device="ml_g4dn",
                                compiler_options={"precision_mode": "FP16"})
    assert fp32["cuda"]["float16_kernels"] == 0
    assert fp16["cuda"]["kernels"] / 2 < fp16["cuda"]["float16_kernels"] <= fp16["cuda"]["kernels"]
    assert fp16["precision"]["mode"] == "FP16"
    assert inspect_library(library).arch == "sm_75"


def test_ranges_are_refused_for_cuda_targets(nvrtcs, cnn, tmp_path):
    from airflow_neo.local.errors import ModelInputError

    request = models.make_request(cnn, target_device="ml_g4dn", data_input_config={"input0": ["1..4", 3, 16, 16]})
    with pytest.raises(ModelInputError, match="range for input0.*CPU targets only"):
        compile_model(request, str(cnn.archive), str(tmp_path / "a.tar.gz"), log=lambda _: None)
    assert not (tmp_path / "a.tar.gz").exists()
