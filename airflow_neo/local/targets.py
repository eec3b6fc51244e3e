"""One table from SageMaker Neo targets (TargetDevice, or TargetPlatform Os x Arch x Accelerator) to
TVM targets, plus the C toolchain that links the compiled library.

CPU rows map to an LLVM target. NVIDIA rows (:data:`GPU_DEVICE_TARGETS`, and TargetPlatform with
Accelerator NVIDIA) map to a ``cuda`` target for one ``sm_XX`` with an LLVM host (x86-64 for the
GPU instances, aarch64 for Jetson boards). ``coreml`` is a model format, not a TVM target: it
resolves to :data:`COREML` and is converted by :mod:`airflow_neo.local.coreml`. The rest
(Inferentia/Trainium, Elastic Inference, Mali/Intel graphics, NPUs, Ambarella CVflow, Windows)
raise :class:`UnsupportedTargetError` saying why and what is supported. Nothing here imports
Airflow; only the validation of user-given ``mcpu``/``mattr`` options imports TVM (inside the
function).
"""

from __future__ import annotations

import difflib
import os
import platform
import re
import shutil
from dataclasses import dataclass, field

from airflow_neo.local.cuda.nvrtc import arch_number
from airflow_neo.local.errors import CompilationError, UnsupportedTargetError

__all__ = [
    "COREML",
    "DEVICE_TARGETS",
    "coreml_target",
    "is_coreml",
    "GPU_DEVICE_TARGETS",
    "GpuTarget",
    "PLATFORM_TARGETS",
    "UNSUPPORTED_DEVICES",
    "CpuTarget",
    "ResolvedTarget",
    "Toolchain",
    "check_target",
    "host_arch",
    "resolve_target",
    "support_table",
    "supported_targets_text",
]

DEFAULT_ANDROID_PLATFORM = 21


@dataclass(frozen=True)
class Toolchain:
    """A C compiler that links TVM's object files into a shared library for one ABI."""

    cc: str  #: executable name, ``{api}`` is replaced by ANDROID_PLATFORM
    package: str | None  #: the Debian package that provides it (None: not packaged)
    install_hint: str  #: how to get it, for error messages


# Keyed by (arch, abi); the Debian cross toolchains for an x86-64 (or arm64) host.
TOOLCHAINS: dict[str, Toolchain] = {
    "x86_64": Toolchain("x86_64-linux-gnu-gcc", "gcc-x86-64-linux-gnu", "apt-get install gcc-x86-64-linux-gnu"),
    "i686": Toolchain("i686-linux-gnu-gcc", "gcc-i686-linux-gnu", "apt-get install gcc-i686-linux-gnu"),
    "aarch64": Toolchain("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", "apt-get install gcc-aarch64-linux-gnu"),
    "armhf": Toolchain("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf", "apt-get install gcc-arm-linux-gnueabihf"),
    "armel": Toolchain("arm-linux-gnueabi-gcc", "gcc-arm-linux-gnueabi", "apt-get install gcc-arm-linux-gnueabi"),
}
_NDK_HINT = "install the Android NDK and put its toolchains/llvm/prebuilt/linux-x86_64/bin on PATH (no Debian package)"
ANDROID_TOOLCHAINS: dict[str, Toolchain] = {
    "aarch64": Toolchain("aarch64-linux-android{api}-clang", None, _NDK_HINT),
    "armel": Toolchain("armv7a-linux-androideabi{api}-clang", None, _NDK_HINT),
    "x86_64": Toolchain("x86_64-linux-android{api}-clang", None, _NDK_HINT),
    "i686": Toolchain("i686-linux-android{api}-clang", None, _NDK_HINT),
}


@dataclass(frozen=True)
class CpuTarget:
    """One row of the table: an LLVM CPU target and the toolchain family that links for it."""

    triple: str
    mcpu: str
    arch: str  #: "x86_64", "i686", "aarch64", "armhf" or "armel" (selects the toolchain)
    description: str
    mattr: tuple[str, ...] = ()
    float_abi: str | None = None  #: LLVM mfloat-abi ("hard"/"soft"), for 32-bit ARM
    os: str = "LINUX"
    note: str = ""

    @property
    def machine(self) -> str:
        """The ``platform.machine()`` family that runs this code natively."""
        return {"armhf": "armv7", "armel": "armv7"}.get(self.arch, self.arch)


def _x86(mcpu: str, description: str, note: str = "") -> CpuTarget:
    return CpuTarget("x86_64-linux-gnu", mcpu, "x86_64", description, note=note)


def _a64(mcpu: str, description: str, note: str = "") -> CpuTarget:
    return CpuTarget("aarch64-linux-gnu", mcpu, "aarch64", description, note=note)


def _armhf(mcpu: str, description: str, mattr=("+neon",), note: str = "") -> CpuTarget:
    return CpuTarget("armv7l-linux-gnueabihf", mcpu, "armhf", description, tuple(mattr), "hard", note=note)


#: TargetDevice -> CPU target. The CPU is the one in the device (or instance family).
DEVICE_TARGETS: dict[str, CpuTarget] = {
    "ml_m4": _x86("haswell", "EC2 M4: Intel Xeon E5-2676 v3 / E5-2686 v4 (Haswell/Broadwell, AVX2)"),
    "ml_c4": _x86("haswell", "EC2 C4: Intel Xeon E5-2666 v3 (Haswell, AVX2)"),
    "ml_m5": _x86("skylake-avx512", "EC2 M5: Intel Xeon Platinum 8175M / 8259CL (Skylake-SP/Cascade Lake, AVX-512)"),
    "ml_c5": _x86("skylake-avx512", "EC2 C5: Intel Xeon Platinum 8124M / 8275CL (Skylake-SP/Cascade Lake, AVX-512)"),
    "lambda": _x86("x86-64", "AWS Lambda (x86_64): generic x86-64, runs on any Lambda host"),
    "sbe_c": _x86("x86-64-v3", "Snowball Edge Compute Optimized: x86-64 with AVX2 (x86-64-v3)"),
    "ml_m6g": _a64("neoverse-n1", "EC2 M6g: AWS Graviton2 (Neoverse N1)"),
    "ml_c6g": _a64("neoverse-n1", "EC2 C6g: AWS Graviton2 (Neoverse N1)"),
    "rasp4b": _a64("cortex-a72", "Raspberry Pi 4 Model B, 64-bit OS (Cortex-A72)"),
    "imx8qm": _a64("cortex-a72", "NXP i.MX 8QuadMax (Cortex-A72 + A53)", "CPU only; the GPU is not used"),
    "imx8mplus": _a64("cortex-a53", "NXP i.MX 8M Plus (Cortex-A53)", "CPU only; the NPU is not used"),
    "rk3399": _a64("cortex-a72", "Rockchip RK3399 (Cortex-A72 + A53)", "CPU only; the Mali GPU is not used"),
    "aisage": _a64("cortex-a72", "Acer aiSage, Rockchip RK3399Pro (Cortex-A72 + A53)", "CPU only; the NPU is not used"),
    "qcs605": _a64("cortex-a75", "Qualcomm QCS605 (Kryo 300: Cortex-A75/A55 class)", "CPU only; the Hexagon DSP is not used"),
    "qcs603": _a64("cortex-a75", "Qualcomm QCS603 (Kryo 300: Cortex-A75/A55 class)", "CPU only; the Hexagon DSP is not used"),
    "jacinto_tda4vm": _a64("cortex-a72", "TI Jacinto TDA4VM (Cortex-A72)", "CPU only; the C7x DSP/MMA (TIDL) is not used"),
    "rasp3b": _armhf("cortex-a53", "Raspberry Pi 3 Model B, 32-bit Raspberry Pi OS (Cortex-A53, ARMv7 hard-float)"),
    "rk3288": _armhf("cortex-a17", "Rockchip RK3288 (Cortex-A17, ARMv7 hard-float)", note="CPU only; the Mali GPU is not used"),
    "sitara_am57x": _armhf(
        "cortex-a15", "TI Sitara AM57x (Cortex-A15, ARMv7 hard-float)", note="CPU only; the C66x DSP/EVE (TIDL) is not used"
    ),
}



@dataclass(frozen=True)
class GpuTarget:
    """An NVIDIA row: the GPU's architecture (the default ``gpu-code``) and the host CPU that runs
    the rest of the model and launches the kernels."""

    arch: str
    host: CpuTarget
    description: str
    note: str = ""


_CUDA_NOTE = "CUDA kernels by TVM (DLight default schedules) compiled by NVRTC; TensorRT is not used"
#: TargetDevice -> NVIDIA GPU target.
GPU_DEVICE_TARGETS: dict[str, GpuTarget] = {
    "ml_p3": GpuTarget("sm_70", _x86("broadwell", "Intel Xeon E5-2686 v4 (Broadwell)"),
                       "EC2 P3: NVIDIA V100 (Volta, sm_70); host Intel Xeon E5-2686 v4 (Broadwell)", _CUDA_NOTE),
    "ml_g4dn": GpuTarget("sm_75", _x86("cascadelake", "Intel Xeon Platinum 8259CL (Cascade Lake)"),
                         "EC2 G4dn: NVIDIA T4 (Turing, sm_75); host Intel Xeon Platinum 8259CL (Cascade Lake)", _CUDA_NOTE),
    "jetson_tx1": GpuTarget("sm_53", _a64("cortex-a57", "Cortex-A57"),
                            "NVIDIA Jetson TX1: Maxwell GPU (sm_53); host Cortex-A57", _CUDA_NOTE),
    "jetson_tx2": GpuTarget("sm_62", _a64("cortex-a57", "Cortex-A57"),
                            "NVIDIA Jetson TX2: Pascal GPU (sm_62); host Denver 2 + Cortex-A57 (code for the A57)", _CUDA_NOTE),
    "jetson_nano": GpuTarget("sm_53", _a64("cortex-a57", "Cortex-A57"),
                             "NVIDIA Jetson Nano: Maxwell GPU (sm_53); host Cortex-A57", _CUDA_NOTE),
    "jetson_xavier": GpuTarget("sm_72", _a64("carmel", "NVIDIA Carmel (ARMv8.2)"),
                               "NVIDIA Jetson AGX Xavier: Volta GPU (sm_72); host Carmel (ARMv8.2)", _CUDA_NOTE),
}
#: TargetDevice coreml: a Core ML model (coremltools), not a TVM library.
COREML = "coreml"

_CPU_INSTEAD = "compile for its CPU with TargetPlatform {'Os': 'LINUX', 'Arch': 'ARM64'} instead, or use backend='sagemaker'"
_GPU_INSTANCE = "use a CPU instance (TargetDevice ml_c5, ml_m5, ml_c6g ...) or backend='sagemaker'"
#: TargetDevice -> why the local backend cannot build for it.
UNSUPPORTED_DEVICES: dict[str, str] = {
    "ml_p2": (f"NVIDIA K80 (Kepler, sm_37): the NVRTC versions on PyPI (CUDA 12 from sm_50, CUDA 13 from sm_75) "
              f"cannot compile for it; {_GPU_INSTANCE}, or ml_p3/ml_g4dn"),
    "ml_inf1": f"AWS Inferentia: needs AWS's Neuron compiler, which is not on the package registries; {_GPU_INSTANCE}",
    "ml_inf2": f"AWS Inferentia2: needs AWS's Neuron compiler, which is not on the package registries; {_GPU_INSTANCE}",
    "ml_trn1": f"AWS Trainium: needs AWS's Neuron compiler, which is not on the package registries; {_GPU_INSTANCE}",
    "ml_eia2": f"Elastic Inference accelerator; {_GPU_INSTANCE}",
    "amba_cv2": f"Ambarella CVflow accelerator (Ambarella toolchain); {_CPU_INSTEAD}",
    "amba_cv22": f"Ambarella CVflow accelerator (Ambarella toolchain); {_CPU_INSTEAD}",
    "amba_cv25": f"Ambarella CVflow accelerator (Ambarella toolchain); {_CPU_INSTEAD}",
    "deeplens": (
        "AWS DeepLens Intel GPU (clDNN); compile for its Atom CPU with TargetPlatform "
        "{'Os': 'LINUX', 'Arch': 'X86_64'} instead, or use backend='sagemaker'"
    ),
    "x86_win32": "Windows DLL: linking needs TVM's Windows runtime library; use backend='sagemaker'",
    "x86_win64": "Windows DLL: linking needs TVM's Windows runtime library; use backend='sagemaker'",
}

#: (Os, Arch) -> CPU target, for TargetPlatform without an Accelerator.
PLATFORM_TARGETS: dict[tuple[str, str], CpuTarget] = {
    ("LINUX", "X86_64"): CpuTarget("x86_64-linux-gnu", "x86-64", "x86_64", "Linux x86-64, any x86-64 CPU (generic)"),
    ("LINUX", "X86"): CpuTarget("i686-linux-gnu", "i686", "i686", "Linux 32-bit x86 (i686, generic)"),
    ("LINUX", "ARM64"): CpuTarget("aarch64-linux-gnu", "generic", "aarch64", "Linux AArch64, any ARMv8-A CPU (generic)"),
    ("LINUX", "ARM_EABIHF"): CpuTarget(
        "armv7l-linux-gnueabihf", "generic", "armhf", "Linux ARMv7-A hard-float (Debian armhf; add mattr +neon for NEON)",
        float_abi="hard",
    ),
    ("LINUX", "ARM_EABI"): CpuTarget(
        "armv7l-linux-gnueabi", "generic", "armel", "Linux ARMv7-A soft-float (arm-linux-gnueabi)", float_abi="soft"
    ),
    ("ANDROID", "ARM64"): CpuTarget("aarch64-linux-android", "generic", "aarch64", "Android arm64-v8a", os="ANDROID"),
    ("ANDROID", "ARM_EABI"): CpuTarget(
        "armv7a-linux-androideabi", "generic", "armel", "Android armeabi-v7a (NEON)", mattr=("+neon",), os="ANDROID"
    ),
    ("ANDROID", "X86_64"): CpuTarget("x86_64-linux-android", "x86-64", "x86_64", "Android x86_64", os="ANDROID"),
    ("ANDROID", "X86"): CpuTarget("i686-linux-android", "i686", "i686", "Android x86 (i686)", os="ANDROID"),
}

#: (Os, Arch) that take Accelerator NVIDIA: the host CPU row (its generic mcpu; CompilerOptions mcpu overrides).
GPU_PLATFORM_HOSTS: tuple[tuple[str, str], ...] = (("LINUX", "X86_64"), ("LINUX", "ARM64"))

#: (Os, Arch) combinations that exist in the API but not as a local target.
UNSUPPORTED_PLATFORMS: dict[tuple[str, str], str] = {
    ("ANDROID", "ARM_EABIHF"): "Android has no hard-float ABI; use Arch ARM_EABI (armeabi-v7a)",
}

#: TargetPlatform Accelerator -> why it is not supported.
UNSUPPORTED_ACCELERATORS: dict[str, str] = {
    "MALI": "Mali GPUs need OpenCL code and an OpenCL runtime to check it against, which this backend does not have",
    "INTEL_GRAPHICS": "Intel graphics need OpenCL code and an OpenCL runtime to check it against, which this backend does not have",
    "NNA": "neural network accelerators need the vendor's toolchain",
}

_PLATFORM_ARCH_LABEL = {"X86_64": "x86_64", "X86": "x86", "ARM64": "arm64", "ARM_EABIHF": "armhf", "ARM_EABI": "armel"}


@dataclass(frozen=True)
class ResolvedTarget:
    """What the compiler needs to build for one Neo target."""

    label: str  #: short name for artifact names: the TargetDevice ("ml_c5") or "linux-arm64"
    source: str  #: the request's words, e.g. "TargetDevice ml_c5"
    target: dict  #: the TVM target as a dict: kind, mtriple, mcpu, [mattr], [mfloat-abi]
    triple: str
    arch: str  #: toolchain family: x86_64, i686, aarch64, armhf, armel
    machine: str  #: the platform.machine() family that runs it: x86_64, i686, aarch64, armv7
    os: str  #: LINUX or ANDROID
    is_cross: bool  #: True when the code cannot be linked by this machine's native C compiler
    cross_compiler: str | None  #: executable name of the cross C compiler (None when native)
    cross_compiler_package: str | None  #: Debian package providing it (None when native or not packaged)
    install_hint: str  #: how to get the compiler, for error messages
    description: str
    note: str = ""
    options_applied: dict = field(default_factory=dict)  #: the mcpu/mattr options that overrode the table
    #: NVIDIA targets: {"kind": "cuda", "arch": "sm_75", "cuda_ver": ..., "trt_ver": ...}; None for CPU targets
    accelerator: dict | None = None

    @property
    def host_target(self) -> dict:
        """The LLVM target of the CPU code (the whole model for CPU targets; the host part for GPUs)."""
        return self.target.get("host", self.target)

    @property
    def mcpu(self) -> str:
        return self.host_target["mcpu"]

    @property
    def is_cuda(self) -> bool:
        return bool(self.accelerator) and self.accelerator.get("kind") == "cuda"

    def compiler(self) -> str:
        """Path of the C compiler that links the library; :class:`CompilationError` naming the package if missing."""
        if self.is_cross:
            found = shutil.which(self.cross_compiler or "")
            if found:
                return found
            package = f"the Debian package {self.cross_compiler_package}" if self.cross_compiler_package else "it"
            raise CompilationError(
                f"cross-compiling for {self.source} ({self.triple}) needs the C cross compiler "
                f"{self.cross_compiler!r}, which is not on PATH; install {package} ({self.install_hint})"
            )
        for name in [os.environ.get("CC"), "gcc", "cc", "clang"]:
            found = shutil.which(name) if name else None
            if found:
                return found
        raise CompilationError(
            f"compiling for {self.source} needs a C compiler to link the library and none is on PATH "
            "(gcc, cc, clang); install the Debian package gcc (apt-get install gcc)"
        )

    def runs_here(self) -> bool:
        """Whether this machine's CPU family and OS can load the compiled library (features not checked;
        for CUDA targets, whether a GPU is here is not checked either)."""
        return self.os == "LINUX" and self.machine == host_arch()


def host_arch() -> str:
    """This machine's CPU family: x86_64, i686, aarch64, armv7 (or platform.machine() as is)."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("i386", "i486", "i586", "i686", "x86"):
        return "i686"
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    if machine.startswith("armv7") or machine.startswith("armv8l"):
        return "armv7"
    return machine


def _parse_mattr(value) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise UnsupportedTargetError(
            f"CompilerOptions mattr must be a list of strings such as ['+neon'] or a comma-separated string; got {value!r}"
        )
    result = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item[0] not in "+-" or len(item) < 2:
            raise UnsupportedTargetError(
                f"CompilerOptions mattr entry {item!r} must start with '+' or '-' and name an LLVM feature, e.g. '+neon'"
            )
        result.append(item)
    return result


def _source_and_row(output_config: dict) -> tuple[str, str, CpuTarget | GpuTarget | str]:
    device = output_config.get("TargetDevice")
    platform_ = output_config.get("TargetPlatform")
    if device and platform_:
        raise UnsupportedTargetError("OutputConfig has both TargetDevice and TargetPlatform; give exactly one")
    if device:
        if device in DEVICE_TARGETS:
            return f"TargetDevice {device}", device, DEVICE_TARGETS[device]
        if device in GPU_DEVICE_TARGETS:
            return f"TargetDevice {device}", device, GPU_DEVICE_TARGETS[device]
        if device == COREML:
            return f"TargetDevice {device}", device, COREML
        if device in UNSUPPORTED_DEVICES:
            raise UnsupportedTargetError(
                f"TargetDevice {device!r} is not supported by the local backend: {UNSUPPORTED_DEVICES[device]}. "
                f"{supported_targets_text()}"
            )
        raise UnsupportedTargetError(
            f"TargetDevice {device!r} is unknown and not supported by the local backend. {supported_targets_text()}"
        )
    if isinstance(platform_, dict):
        os_name, arch, accelerator = platform_.get("Os"), platform_.get("Arch"), platform_.get("Accelerator")
        source = f"TargetPlatform {os_name}/{arch}" + (f"/{accelerator}" if accelerator else "")
        if accelerator == "NVIDIA" and (os_name, arch) in GPU_PLATFORM_HOSTS:
            host = PLATFORM_TARGETS[(os_name, arch)]
            label = f"{str(os_name).lower()}-{_PLATFORM_ARCH_LABEL[arch]}-nvidia"
            return source, label, GpuTarget("", host, f"NVIDIA GPU (gpu-code from CompilerOptions); host {host.description}",
                                            _CUDA_NOTE)
        if accelerator:
            reason = UNSUPPORTED_ACCELERATORS.get(
                accelerator, "unknown accelerator" if accelerator != "NVIDIA" else
                f"NVIDIA GPUs are built for Os/Arch {', '.join('/'.join(key) for key in GPU_PLATFORM_HOSTS)} only")
            raise UnsupportedTargetError(
                f"{source} is not supported by the local backend: Accelerator {accelerator} ({reason}); "
                f"omit Accelerator to build for the CPU, or use backend='sagemaker'. "
                f"{supported_targets_text()}"
            )
        key = (os_name, arch)
        if key in PLATFORM_TARGETS:
            label = f"{str(os_name).lower()}-{_PLATFORM_ARCH_LABEL[arch]}"
            return source, label, PLATFORM_TARGETS[key]
        reason = UNSUPPORTED_PLATFORMS.get(key, "unknown Os/Arch combination")
        raise UnsupportedTargetError(
            f"{source} is not supported by the local backend: {reason}. {supported_targets_text()}"
        )
    raise UnsupportedTargetError(
        "OutputConfig needs a TargetDevice or a TargetPlatform {'Os': ..., 'Arch': ...}. " + supported_targets_text()
    )


def check_target(output_config: dict) -> str:
    """The target's label (``ml_c5``, ``linux-x86_64``) when the local backend builds for it.

    Raises :class:`UnsupportedTargetError` (what was asked, why not, what is supported) otherwise.
    Cheap: reads the table only (CPU options are checked by :func:`resolve_target`, with TVM).
    """
    return _source_and_row(output_config)[1]


def is_coreml(output_config: dict | None) -> bool:
    """Whether the request asks for a Core ML model (TargetDevice coreml) rather than a TVM library."""
    return (output_config or {}).get("TargetDevice") == COREML


def coreml_target() -> ResolvedTarget:
    """TargetDevice coreml as a resolved target: no TVM target and no C compiler; ``os`` "APPLE"
    (Core ML runs on macOS, iOS, iPadOS, watchOS and tvOS; never on this Linux machine)."""
    return ResolvedTarget(
        label=COREML, source=f"TargetDevice {COREML}", target={"kind": COREML}, triple="", arch="", machine="apple",
        os="APPLE", is_cross=True, cross_compiler=None, cross_compiler_package=None, install_hint="",
        description="Apple Core ML model (ML Program, .mlpackage) converted by coremltools",
        note="Core ML cannot run on Linux: the artifact is checked by its spec",
    )


def resolve_target(output_config: dict, compiler_options: dict | None = None) -> ResolvedTarget:
    """Map the request's OutputConfig (and the ``mcpu``/``mattr``/``ANDROID_PLATFORM`` compiler options) to a target.

    Raises :class:`UnsupportedTargetError` for targets the local backend cannot build (the message
    says "not supported by the local backend" and lists what is supported) and for an ``mcpu`` or
    ``mattr`` that LLVM does not know for the target's triple (checked with TVM's LLVM).
    """
    compiler_options = compiler_options or {}
    if not isinstance(compiler_options, dict):
        raise UnsupportedTargetError(f"CompilerOptions must be a JSON object; got {compiler_options!r}")
    source, label, row = _source_and_row(output_config or {})
    if row == COREML:
        raise UnsupportedTargetError(f"{source} builds a Core ML model, not a TVM library (airflow_neo.local.coreml)")
    accelerator = None
    if isinstance(row, GpuTarget):
        accelerator = _cuda_options(row, compiler_options, source)
        row = row.host
    mcpu = compiler_options.get("mcpu", row.mcpu)
    if not isinstance(mcpu, str) or not mcpu.strip():
        raise UnsupportedTargetError(f"CompilerOptions mcpu must be a non-empty string; got {mcpu!r}")
    mcpu = mcpu.strip()
    user_mattr = _parse_mattr(compiler_options.get("mattr"))
    mattr = list(row.mattr) + [flag for flag in user_mattr if flag not in row.mattr]
    applied = {}
    if "mcpu" in compiler_options:
        applied["mcpu"] = mcpu
    if user_mattr:
        applied["mattr"] = user_mattr
    if applied:
        validate_cpu(row.triple, mcpu, user_mattr, source=source)

    target: dict = {"kind": "llvm", "mtriple": row.triple, "mcpu": mcpu}
    if mattr:
        target["mattr"] = mattr
    if row.float_abi:
        target["mfloat-abi"] = row.float_abi
    if accelerator:
        target = {"kind": "cuda", "arch": accelerator["arch"], "host": target}

    if row.os == "ANDROID":
        api = compiler_options.get("ANDROID_PLATFORM", DEFAULT_ANDROID_PLATFORM)
        if not str(api).isdigit():
            raise UnsupportedTargetError(f"CompilerOptions ANDROID_PLATFORM must be an API level such as 28; got {api!r}")
        toolchain = ANDROID_TOOLCHAINS[row.arch]
        cc = toolchain.cc.format(api=int(api))
        is_cross = True
    else:
        toolchain = TOOLCHAINS[row.arch]
        cc = toolchain.cc
        is_cross = row.machine != host_arch()
    return ResolvedTarget(
        label=label,
        source=source,
        target=target,
        triple=row.triple,
        arch=row.arch,
        machine=row.machine,
        os=row.os,
        is_cross=is_cross,
        cross_compiler=cc if is_cross else None,
        cross_compiler_package=toolchain.package if is_cross else None,
        install_hint=toolchain.install_hint if is_cross else "apt-get install gcc",
        description=row.description,
        note=accelerator.pop("note") if accelerator else row.note,
        options_applied={**applied, **(accelerator.pop("applied") if accelerator else {})},
        accelerator=accelerator,
    )


_VERSION_FORMS = {"cuda-ver": (re.compile(r"^\d+\.\d+$"), "x.y, e.g. '12.2'"),
                  "trt-ver": (re.compile(r"^\d+\.\d+\.\d+$"), "x.y.z, e.g. '8.6.1'")}


def _cuda_options(row: GpuTarget, options: dict, source: str) -> dict:
    """The accelerator part of a resolved NVIDIA target: ``gpu-code`` (Neo also spells it
    ``gpu_code``; the table's default for a TargetDevice), ``cuda-ver``/``trt-ver`` checked and
    recorded (TensorRT is not used)."""
    given = options.get("gpu-code", options.get("gpu_code"))
    if given is None and not row.arch:
        raise UnsupportedTargetError(
            f"{source} needs CompilerOptions gpu-code (the GPU's architecture, e.g. 'sm_75' for a T4, 'sm_86' for an "
            "A10G, 'sm_72' for a Jetson Xavier)")
    arch = str(given if given is not None else row.arch).strip()
    arch_number(arch)
    found: dict = {"kind": "cuda", "arch": arch, "note": row.note, "applied": {}}
    if given is not None:
        found["applied"]["gpu-code"] = arch
    for key, (pattern, form) in _VERSION_FORMS.items():
        value = options.get(key)
        if value is None:
            continue
        if not pattern.match(str(value)):
            raise UnsupportedTargetError(f"CompilerOptions {key} {value!r} is not a version of the form {form}")
        found[key.replace("-", "_")] = str(value)
    return found


def validate_cpu(triple: str, mcpu: str, mattr: list[str] | tuple[str, ...] = (), *, source: str = "") -> None:
    """Check ``mcpu`` and each ``mattr`` feature against LLVM's lists for ``triple`` (imports TVM).

    LLVM silently builds generic code for an unknown CPU and ignores an unknown feature, so both
    are checked here: :class:`UnsupportedTargetError` names the bad value and close matches.
    """
    from tvm.target import Target, codegen

    where = f" for {source} ({triple})" if source else f" for {triple}"
    if not codegen.llvm_is_valid_cpu(mcpu, triple):
        try:
            known = sorted(str(cpu) for cpu in codegen.llvm_get_cpu_archlist(Target({"kind": "llvm", "mtriple": triple})))
        except Exception:  # noqa: BLE001 - the list is only a hint
            known = []
        close = difflib.get_close_matches(mcpu, known, n=5, cutoff=0.5)
        message = f"CompilerOptions mcpu {mcpu!r} is not a CPU LLVM knows{where}"
        if close:
            message += f"; did you mean {', '.join(close)}?"
        if known:
            message += f" LLVM knows {len(known)} CPUs for this triple, e.g. {', '.join(known[:12])} ..."
        raise UnsupportedTargetError(message)
    for flag in mattr:
        feature = flag[1:]
        probe = Target({"kind": "llvm", "mtriple": triple, "mcpu": mcpu, "mattr": [f"+{feature}"]})
        if not codegen.llvm_cpu_has_features(feature, probe):
            base = Target({"kind": "llvm", "mtriple": triple, "mcpu": mcpu})
            features = sorted(str(f) for f in codegen.llvm_get_cpu_features(base))
            shown = ", ".join(features[:40]) + (" ..." if len(features) > 40 else "")
            raise UnsupportedTargetError(
                f"CompilerOptions mattr {flag!r} is not a feature LLVM knows{where}; {mcpu} has: {shown}"
            )


def supported_targets_text() -> str:
    """One sentence naming every supported TargetDevice and TargetPlatform."""
    devices = ", ".join(sorted(DEVICE_TARGETS))
    gpus = ", ".join(f"{name} ({row.arch})" for name, row in GPU_DEVICE_TARGETS.items())
    platforms = ", ".join(f"{os_}/{arch}" for os_, arch in PLATFORM_TARGETS)
    gpu_platforms = ", ".join(f"{os_}/{arch}/NVIDIA" for os_, arch in GPU_PLATFORM_HOSTS)
    return (
        f"The local backend supports TargetDevice {devices}; NVIDIA GPUs {gpus}; {COREML} (Core ML, from PyTorch, "
        f"TensorFlow and Keras); TargetPlatform (Os/Arch, no Accelerator) {platforms}; and {gpu_platforms} "
        "(with CompilerOptions gpu-code)."
    )


def support_table() -> list[dict]:
    """Every target in the table, supported or not, as rows for documentation.

    Each row: ``kind`` ("TargetDevice"/"TargetPlatform"), ``name``, ``supported``, ``label``,
    ``triple``, ``mcpu``, ``mattr``, ``float_abi``, ``cross_compiler`` (on an x86-64 host),
    ``debian_package``, ``description``, ``note`` (for unsupported targets: the reason),
    ``gpu_code`` (NVIDIA rows: the default sm_XX; None where CompilerOptions must give it),
    ``checked`` (how the local backend checks its artifacts; None for unsupported targets),
    ``code`` ("cpu", "cuda" or "coreml": what the artifact holds; None for unsupported targets).
    """
    rows: list[dict] = []
    for device, row in DEVICE_TARGETS.items():
        rows.append(_row("TargetDevice", device, device, row))
    for device, gpu in GPU_DEVICE_TARGETS.items():
        rows.append(_gpu_row("TargetDevice", device, device, gpu))
    rows.append({**_unsupported_row("TargetDevice", COREML, ""), "supported": True, "label": COREML,
                 "description": "Apple Core ML model (coremltools; from PyTorch, TensorFlow and Keras)",
                 "note": "converted on Linux; Core ML cannot run it here, so the artifact is checked by its spec",
                 "checked": CHECKED_COREML, "code": "coreml"})
    for device, reason in UNSUPPORTED_DEVICES.items():
        rows.append(_unsupported_row("TargetDevice", device, reason))
    for (os_name, arch), row in PLATFORM_TARGETS.items():
        rows.append(_row("TargetPlatform", f"{os_name}/{arch}", f"{os_name.lower()}-{_PLATFORM_ARCH_LABEL[arch]}", row))
    for os_name, arch in GPU_PLATFORM_HOSTS:
        host = PLATFORM_TARGETS[(os_name, arch)]
        gpu = GpuTarget("", host, f"NVIDIA GPU, gpu-code from CompilerOptions; host {host.description}", _CUDA_NOTE)
        rows.append(_gpu_row("TargetPlatform", f"{os_name}/{arch}/NVIDIA",
                             f"{os_name.lower()}-{_PLATFORM_ARCH_LABEL[arch]}-nvidia", gpu))
    for (os_name, arch), reason in UNSUPPORTED_PLATFORMS.items():
        rows.append(_unsupported_row("TargetPlatform", f"{os_name}/{arch}", reason))
    for accelerator, reason in UNSUPPORTED_ACCELERATORS.items():
        rows.append(_unsupported_row("TargetPlatform", f"*/*/{accelerator}", reason))
    return rows


def _row(kind: str, name: str, label: str, row: CpuTarget) -> dict:
    toolchain = ANDROID_TOOLCHAINS[row.arch] if row.os == "ANDROID" else TOOLCHAINS[row.arch]
    native = row.os == "LINUX" and row.machine == "x86_64"
    return {
        "kind": kind,
        "name": name,
        "supported": True,
        "label": label,
        "triple": row.triple,
        "mcpu": row.mcpu,
        "mattr": list(row.mattr),
        "float_abi": row.float_abi,
        "cross_compiler": None if native else toolchain.cc.format(api=DEFAULT_ANDROID_PLATFORM),
        "debian_package": None if native else toolchain.package,
        "description": row.description,
        "note": row.note,
        "gpu_code": None,
        "checked": _how_checked(row),
        "code": "cpu",
    }


def _gpu_row(kind: str, name: str, label: str, gpu: GpuTarget) -> dict:
    return {**_row(kind, name, label, gpu.host), "gpu_code": gpu.arch or None, "description": gpu.description,
            "note": gpu.note, "checked": CHECKED_CUDA, "code": "cuda"}


CHECKED_NATIVE = "run here against the source framework (x86-64 CPUs with the target's features)"
CHECKED_EMULATED = "run under QEMU (qemu-aarch64 -cpu neoverse-n1) against the source framework"
CHECKED_STRUCTURE = "structure only (ELF machine, float ABI); no runtime here to run it"
CHECKED_CUDA = ("structure: the cubin's sm_XX and every kernel, read from model.so; run on a GPU with "
                "scripts/gpu_check.py")
CHECKED_COREML = "spec read back (inputs, shapes, preprocessing, labels, precision); Core ML cannot run on Linux"


def _how_checked(row: CpuTarget) -> str:
    if row.os != "LINUX" or row.arch in ("armhf", "armel", "i686"):
        return CHECKED_STRUCTURE
    return CHECKED_EMULATED if row.arch == "aarch64" else CHECKED_NATIVE


def _unsupported_row(kind: str, name: str, reason: str) -> dict:
    return {
        "kind": kind,
        "name": name,
        "supported": False,
        "label": None,
        "triple": None,
        "mcpu": None,
        "mattr": [],
        "float_abi": None,
        "cross_compiler": None,
        "debian_package": None,
        "description": "",
        "note": reason,
        "gpu_code": None,
        "checked": None,
        "code": None,
    }
