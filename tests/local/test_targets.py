"""The Neo target -> TVM target table."""

from __future__ import annotations

import pytest

from airflow_neo.core.exceptions import NeoError
from airflow_neo.core.service_model import enum_of, target_devices
from airflow_neo.local import targets
from airflow_neo.local.errors import CompilationError, UnsupportedTargetError
from airflow_neo.local.targets import resolve_target, support_table


def test_every_api_target_device_is_in_the_table():
    tables = [set(targets.DEVICE_TARGETS), set(targets.GPU_DEVICE_TARGETS), {targets.COREML}, set(targets.UNSUPPORTED_DEVICES)]
    assert set(target_devices()) <= set().union(*tables)
    assert sum(len(table) for table in tables) == len(set().union(*tables)), "a device is in one table only"


def test_every_api_platform_combination_is_in_the_table():
    for os_name in enum_of("TargetPlatformOs"):
        for arch in enum_of("TargetPlatformArch"):
            key = (os_name, arch)
            assert key in targets.PLATFORM_TARGETS or key in targets.UNSUPPORTED_PLATFORMS, key
    assert set(enum_of("TargetPlatformAccelerator")) <= set(targets.UNSUPPORTED_ACCELERATORS) | {"NVIDIA"}


def test_table_cpus_are_known_to_llvm():
    """Every mcpu/mattr in the table is valid for its triple (TVM's LLVM says so)."""
    rows = list(targets.DEVICE_TARGETS.values()) + list(targets.PLATFORM_TARGETS.values())
    rows += [gpu.host for gpu in targets.GPU_DEVICE_TARGETS.values()]
    problems = []
    for row in rows:
        try:
            targets.validate_cpu(row.triple, row.mcpu, row.mattr, source=row.description)
        except UnsupportedTargetError as err:
            problems.append(str(err))
    assert rows and problems == []


@pytest.mark.parametrize(
    "output_config, triple, mcpu, label",
    [
        ({"TargetDevice": "ml_c5"}, "x86_64-linux-gnu", "skylake-avx512", "ml_c5"),
        ({"TargetDevice": "ml_m4"}, "x86_64-linux-gnu", "haswell", "ml_m4"),
        ({"TargetDevice": "lambda"}, "x86_64-linux-gnu", "x86-64", "lambda"),
        ({"TargetDevice": "ml_c6g"}, "aarch64-linux-gnu", "neoverse-n1", "ml_c6g"),
        ({"TargetDevice": "rasp4b"}, "aarch64-linux-gnu", "cortex-a72", "rasp4b"),
        ({"TargetDevice": "rasp3b"}, "armv7l-linux-gnueabihf", "cortex-a53", "rasp3b"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}, "x86_64-linux-gnu", "x86-64", "linux-x86_64"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}, "aarch64-linux-gnu", "generic", "linux-arm64"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM_EABIHF"}}, "armv7l-linux-gnueabihf", "generic", "linux-armhf"),
        ({"TargetPlatform": {"Os": "ANDROID", "Arch": "ARM64"}}, "aarch64-linux-android", "generic", "android-arm64"),
    ],
)
def test_resolve(output_config, triple, mcpu, label):
    resolved = resolve_target(output_config, {})
    assert (resolved.triple, resolved.mcpu, resolved.label) == (triple, mcpu, label)
    assert resolved.target["kind"] == "llvm" and resolved.target["mtriple"] == triple


def test_arm_hard_float_and_cross_compiler(monkeypatch):
    monkeypatch.setattr(targets, "host_arch", lambda: "x86_64")
    rasp3b = resolve_target({"TargetDevice": "rasp3b"})
    assert rasp3b.target["mfloat-abi"] == "hard" and "+neon" in rasp3b.target["mattr"]
    assert rasp3b.is_cross and rasp3b.cross_compiler == "arm-linux-gnueabihf-gcc"
    assert rasp3b.cross_compiler_package == "gcc-arm-linux-gnueabihf"
    arm64 = resolve_target({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}})
    assert arm64.is_cross and arm64.cross_compiler == "aarch64-linux-gnu-gcc"
    assert arm64.cross_compiler_package == "gcc-aarch64-linux-gnu"
    native = resolve_target({"TargetDevice": "ml_c5"})
    assert not native.is_cross and native.cross_compiler is None
    android = resolve_target({"TargetPlatform": {"Os": "ANDROID", "Arch": "ARM64"}}, {"ANDROID_PLATFORM": 28})
    assert android.is_cross and android.cross_compiler == "aarch64-linux-android28-clang"
    monkeypatch.setattr(targets, "host_arch", lambda: "aarch64")
    assert not resolve_target({"TargetDevice": "ml_m6g"}).is_cross
    assert resolve_target({"TargetDevice": "ml_c5"}).cross_compiler == "x86_64-linux-gnu-gcc"


def test_missing_cross_compiler_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(targets, "host_arch", lambda: "x86_64")
    monkeypatch.setenv("PATH", str(tmp_path))
    resolved = resolve_target({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}})
    with pytest.raises(CompilationError, match=r"aarch64-linux-gnu-gcc.*not on PATH.*gcc-aarch64-linux-gnu"):
        resolved.compiler()


@pytest.mark.parametrize(
    "output_config, words",
    [
        ({"TargetDevice": "ml_p2"}, "sm_37"),
        ({"TargetDevice": "ml_inf1"}, "Neuron compiler, which is not on the package registries"),
        ({"TargetDevice": "ml_trn1"}, "Neuron compiler"),
        ({"TargetDevice": "ml_eia2"}, "Elastic Inference"),
        ({"TargetDevice": "amba_cv22"}, "CVflow"),
        ({"TargetDevice": "x86_win64"}, "Windows"),
        ({"TargetDevice": "no_such_device"}, "unknown"),
        ({"TargetPlatform": {"Os": "ANDROID", "Arch": "ARM64", "Accelerator": "NVIDIA"}}, "LINUX/X86_64, LINUX/ARM64 only"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "MALI"}}, "OpenCL runtime"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "INTEL_GRAPHICS"}}, "OpenCL runtime"),
        ({"TargetPlatform": {"Os": "ANDROID", "Arch": "ARM_EABIHF"}}, "hard-float"),
        ({}, "needs a TargetDevice"),
    ],
)
def test_unsupported_targets(output_config, words):
    with pytest.raises(UnsupportedTargetError) as info:
        resolve_target(output_config, {})
    message = str(info.value)
    assert words in message
    assert "not supported by the local backend" in message or "needs a TargetDevice" in message
    assert "ml_c5" in message and "LINUX/ARM64" in message, "the message names what is supported"
    assert isinstance(info.value, NeoError)


def test_mcpu_override():
    resolved = resolve_target({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}, {"mcpu": "haswell"})
    assert resolved.mcpu == "haswell" and resolved.options_applied == {"mcpu": "haswell"}
    rasp = resolve_target({"TargetDevice": "rasp4b"}, {"mcpu": "cortex-a53", "mattr": ["+crc"]})
    assert rasp.mcpu == "cortex-a53" and rasp.target["mattr"] == ["+crc"]
    armhf = resolve_target({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM_EABIHF"}}, {"mattr": "+neon,+vfp4"})
    assert armhf.target["mattr"] == ["+neon", "+vfp4"]


@pytest.mark.parametrize(
    "output_config, options, match",
    [
        ({"TargetDevice": "ml_c5"}, {"mcpu": "skylake-avx513"}, r"mcpu 'skylake-avx513' is not a CPU LLVM knows.*did you mean.*skylake-avx512"),
        ({"TargetDevice": "rasp4b"}, {"mcpu": "haswell"}, r"mcpu 'haswell' is not a CPU LLVM knows for TargetDevice rasp4b \(aarch64"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}, {"mcpu": "bogus"}, "not a CPU LLVM knows"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}, {"mcpu": ""}, "non-empty string"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}, {"mattr": ["+bogusfeature"]}, "mattr '\\+bogusfeature' is not a feature"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}, {"mattr": ["neon"]}, "must start with"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}, {"mattr": 5}, "list of strings"),
    ],
)
def test_bad_cpu_options(output_config, options, match):
    with pytest.raises(UnsupportedTargetError, match=match):
        resolve_target(output_config, options)


def test_support_table_rows():
    rows = support_table()
    names = {(row["kind"], row["name"]): row for row in rows}
    assert names[("TargetDevice", "ml_c5")]["supported"] is True
    assert names[("TargetDevice", "ml_c5")]["mcpu"] == "skylake-avx512"
    assert names[("TargetDevice", "jetson_nano")]["supported"] is True
    assert names[("TargetDevice", "jetson_nano")]["gpu_code"] == "sm_53"
    assert names[("TargetDevice", "jetson_nano")]["debian_package"] == "gcc-aarch64-linux-gnu"
    assert names[("TargetDevice", "coreml")]["supported"] is True
    assert names[("TargetPlatform", "LINUX/X86_64/NVIDIA")]["supported"] is True
    assert names[("TargetDevice", "ml_p2")]["supported"] is False
    assert names[("TargetPlatform", "LINUX/ARM64")]["debian_package"] == "gcc-aarch64-linux-gnu"
    assert names[("TargetDevice", "rasp3b")]["cross_compiler"] == "arm-linux-gnueabihf-gcc"
    assert set(target_devices()) <= {name for kind, name in names if kind == "TargetDevice"}
    assert all(set(row) == set(rows[0]) for row in rows)


# ------------------------------------------------------------------------------------------- NVIDIA


@pytest.mark.parametrize(
    "output_config, options, arch, host_triple, host_mcpu",
    [
        ({"TargetDevice": "ml_g4dn"}, {}, "sm_75", "x86_64-linux-gnu", "cascadelake"),
        ({"TargetDevice": "ml_p3"}, {}, "sm_70", "x86_64-linux-gnu", "broadwell"),
        ({"TargetDevice": "jetson_nano"}, {}, "sm_53", "aarch64-linux-gnu", "cortex-a57"),
        ({"TargetDevice": "jetson_xavier"}, {"gpu-code": "sm_72", "cuda-ver": "10.2", "trt-ver": "7.1.3"}, "sm_72",
         "aarch64-linux-gnu", "carmel"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}},
         {"gpu-code": "sm_62", "trt-ver": "6.0.1", "cuda-ver": "10.0"}, "sm_62", "aarch64-linux-gnu", "generic"),
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"}},
         {"gpu_code": "sm_86", "mcpu": "skylake-avx512"}, "sm_86", "x86_64-linux-gnu", "skylake-avx512"),
    ],
)
def test_resolve_nvidia(output_config, options, arch, host_triple, host_mcpu):
    resolved = resolve_target(output_config, options)
    assert resolved.is_cuda and resolved.accelerator["arch"] == arch
    assert resolved.target["kind"] == "cuda" and resolved.target["arch"] == arch
    assert resolved.host_target["mtriple"] == host_triple and resolved.mcpu == host_mcpu
    assert resolved.is_cross == (host_triple.startswith("aarch64"))
    for key in ("cuda-ver", "trt-ver"):
        if key in options:
            assert resolved.accelerator[key.replace("-", "_")] == options[key]
    assert "TensorRT is not used" in resolved.note


@pytest.mark.parametrize(
    "output_config, options, match",
    [
        ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"}}, {}, "needs CompilerOptions gpu-code"),
        ({"TargetDevice": "ml_g4dn"}, {"gpu-code": "75"}, "gpu-code '75' is not a CUDA architecture"),
        ({"TargetDevice": "ml_g4dn"}, {"gpu-code": "compute_75"}, "give sm_XX"),
        ({"TargetDevice": "ml_g4dn"}, {"cuda-ver": "twelve"}, "cuda-ver 'twelve' is not a version of the form x.y"),
        ({"TargetDevice": "jetson_tx2"}, {"trt-ver": "6.0"}, "trt-ver '6.0' is not a version of the form x.y.z"),
    ],
)
def test_bad_nvidia_options(output_config, options, match):
    with pytest.raises(UnsupportedTargetError, match=match):
        resolve_target(output_config, options)


def test_coreml_is_a_target_but_not_a_tvm_one():
    assert targets.check_target({"TargetDevice": "coreml"}) == "coreml"
    assert targets.is_coreml({"TargetDevice": "coreml"}) and not targets.is_coreml({"TargetDevice": "ml_c5"})
    with pytest.raises(UnsupportedTargetError, match="Core ML model, not a TVM library"):
        resolve_target({"TargetDevice": "coreml"}, {})
