"""Load and run artifacts compiled by airflow-neo's local backend.

    from airflow_neo import runtime
    model = runtime.load("/data/compiled/model-ml_c5.tar.gz")   # or file://..., s3://... with s3_client=
    [logits] = model.run({"input0": batch})

An artifact is a ``.tar.gz`` holding ``model.so`` and ``metadata.json`` (see
:mod:`airflow_neo.local.compiler`). TVM (or tl2cgen, for XGBoost) is imported only when a model is
loaded; this module never imports Airflow.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlparse

from airflow_neo.local.archive import safe_extract
from airflow_neo.local.errors import IncompatibleArtifactError, ModelArchiveError, ModelInputError
from airflow_neo.local.targets import host_arch

__all__ = ["CompiledModel", "load", "read_metadata", "SUPPORTED_SCHEMA_VERSIONS"]

SUPPORTED_SCHEMA_VERSIONS = (1,)
METADATA_NAME = "metadata.json"

# LLVM feature name -> the flag /proc/cpuinfo shows when the CPU has it (instruction sets only;
# LLVM's tuning pseudo-features are not listed and so never checked).
_X86_FLAGS = {
    "sse3": "pni", "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "popcnt": "popcnt",
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2",
    "movbe": "movbe", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512dq": "avx512dq",
    "avx512vl": "avx512vl", "avx512cd": "avx512cd", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "avxvnni": "avx_vnni",
    "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
}
_AARCH64_FLAGS = {
    "neon": "asimd", "fp-armv8": "fp", "dotprod": "asimddp", "fullfp16": "asimdhp", "sve": "sve",
    "sve2": "sve2", "i8mm": "i8mm", "bf16": "bf16", "lse": "atomics", "rcpc": "lrcpc",
}


def _local_path(artifact: str | os.PathLike, s3_client, scratch: Path) -> Path:
    text = os.fspath(artifact)
    if text.startswith("file://"):
        parsed = urlparse(text)
        return Path(unquote(parsed.path))
    if text.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"loading {text} needs an s3_client (a boto3 S3 client)")
        parsed = urlparse(text)
        target = scratch / (Path(parsed.path).name or "artifact.tar.gz")
        s3_client.download_file(parsed.netloc, parsed.path.lstrip("/"), str(target))
        return target
    if "://" in text:
        raise ValueError(f"unsupported artifact location {text!r}; use a local path, file:// or s3://")
    return Path(text)


def read_metadata(artifact: str | os.PathLike, *, s3_client=None) -> dict:
    """The artifact's ``metadata.json``, without extracting the library or importing TVM."""
    with tempfile.TemporaryDirectory(prefix="airflow-neo-meta-") as scratch:
        path = _local_path(artifact, s3_client, Path(scratch))
        try:
            with tarfile.open(path, "r:*") as tar:
                member = tar.getmember(METADATA_NAME)
                handle = tar.extractfile(member)
                if handle is None:
                    raise KeyError(METADATA_NAME)
                return json.loads(handle.read().decode("utf-8"))
        except KeyError as err:
            raise ModelArchiveError(f"{path} has no {METADATA_NAME}; it is not an airflow-neo artifact") from err
        except (tarfile.TarError, OSError, EOFError, ValueError) as err:
            raise ModelArchiveError(f"not a valid .tar.gz: {path}: {type(err).__name__}: {err}") from err


def load(
    artifact: str | os.PathLike,
    *,
    s3_client=None,
    device: str | None = None,
    check_host: bool = True,
    workdir: str | os.PathLike | None = None,
) -> CompiledModel:
    """Extract an artifact and load its library for running on this machine.

    :param artifact: a local path, a ``file://`` URI, or an ``s3://`` URI (with ``s3_client``).
    :param s3_client: a boto3 S3 client, for ``s3://`` artifacts.
    :param device: ``"cpu"`` or ``"cuda"``: where the artifact's code runs is fixed when it is compiled
        (``cuda``: NVIDIA targets, run on ``cuda:0``); None takes the artifact's, a different one is
        refused with ValueError.
    :param check_host: refuse, with :class:`IncompatibleArtifactError`, an artifact built for another
        CPU family or OS, or for instruction-set features this CPU lacks (running such code would
        kill the process with SIGILL instead of raising).
    :param workdir: where to extract, left in place for the caller (default: a temporary
        directory, removed as soon as the library is loaded: the loaded code stays mapped in this
        process, so nothing of the artifact is left on disk, even if the process is killed later).
    """
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; use 'cpu' or 'cuda' (or None: the artifact's)")
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="airflow-neo-model-")) if owned else Path(workdir)
    try:
        path = _local_path(artifact, s3_client, root)
        extracted = root / "artifact"
        safe_extract(path, extracted)
        meta_file = extracted / METADATA_NAME
        if not meta_file.is_file():
            raise ModelArchiveError(f"{artifact} has no {METADATA_NAME}; it is not an airflow-neo artifact")
        metadata = json.loads(meta_file.read_text("utf-8"))
        if metadata.get("schema_version") not in SUPPORTED_SCHEMA_VERSIONS:
            raise IncompatibleArtifactError(
                f"{artifact} has metadata schema_version {metadata.get('schema_version')!r}; this airflow-neo reads "
                f"{list(SUPPORTED_SCHEMA_VERSIONS)}"
            )
        if metadata.get("runtime") == "coreml":
            raise IncompatibleArtifactError(
                f"{artifact} is a Core ML model ({metadata['library']}): load it with Core ML on an Apple device "
                "(coremltools.models.MLModel on macOS); it cannot run on Linux"
            )
        library = extracted / metadata["library"]
        if not library.is_file():
            raise ModelArchiveError(f"{artifact} lacks its library {metadata['library']!r}")
        built_for = "cuda" if _is_cuda(metadata) else "cpu"
        if device is not None and device != built_for:
            raise ValueError(f"{artifact} was compiled for {built_for} ({(metadata.get('target') or {}).get('source')}); "
                             f"it cannot run on device {device!r}")
        if check_host:
            check_host_compatible(metadata)
        return CompiledModel(metadata, library, str(artifact))
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def check_host_compatible(metadata: dict) -> None:
    """Raise :class:`IncompatibleArtifactError` unless this machine can run the artifact's code."""
    target = metadata.get("target") or {}
    label = target.get("label") or target.get("source") or "?"
    machine, os_name = target.get("machine"), target.get("os", "LINUX")
    here = host_arch()
    if os_name != "LINUX" or platform.system() != "Linux":
        raise IncompatibleArtifactError(
            f"the artifact was compiled for {target.get('source', label)} ({target.get('triple')}); "
            f"this is {platform.system()} {here}: run it on the target device"
        )
    if machine and machine != here:
        raise IncompatibleArtifactError(
            f"the artifact was compiled for {target.get('source', label)} ({target.get('triple')}, {machine}); "
            f"this machine is {here}: run it on the target device"
        )
    tvm_target = target.get("tvm_target") or {}
    if tvm_target.get("kind") == "cuda":
        _check_cuda_device(target, label)
        tvm_target = tvm_target.get("host") or {}
    missing = _missing_cpu_features(tvm_target, here)
    if missing:
        raise IncompatibleArtifactError(
            f"the artifact was compiled for {target.get('source', label)} (mcpu "
            f"{(target.get('tvm_target') or {}).get('mcpu')}), which uses CPU features this machine lacks: "
            f"{', '.join(missing)}; recompile for this CPU (e.g. TargetPlatform LINUX/{'X86_64' if here == 'x86_64' else 'ARM64'}, "
            "or a CompilerOptions mcpu it supports)"
        )


def _check_cuda_device(target: dict, label: str) -> None:
    """IncompatibleArtifactError unless this machine has a CUDA driver and a GPU TVM can use."""
    from airflow_neo.local.cuda.device import cuda_unavailable

    why = cuda_unavailable()
    if why:
        arch = (target.get("tvm_target") or {}).get("arch")
        raise IncompatibleArtifactError(
            f"the artifact was compiled for {target.get('source', label)} (NVIDIA GPU, {arch}); {why}: "
            "run it on a machine with an NVIDIA GPU"
        )


def _is_cuda(metadata: dict) -> bool:
    """Whether the artifact's code runs on an NVIDIA GPU (its TVM target is ``cuda``)."""
    return (((metadata.get("target") or {}).get("tvm_target")) or {}).get("kind") == "cuda"


def _host_cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return None


def _missing_cpu_features(tvm_target: dict, here: str) -> list[str]:
    mapping = {"x86_64": _X86_FLAGS, "aarch64": _AARCH64_FLAGS}.get(here)
    if not mapping or not tvm_target:
        return []
    flags = _host_cpu_flags()
    if flags is None:
        return []
    from tvm.target import Target, codegen

    try:
        required = set(codegen.llvm_get_cpu_features(Target(tvm_target)))
    except Exception:  # noqa: BLE001 - an unreadable target cannot be checked
        return []
    return sorted(feature for feature in required if feature in mapping and mapping[feature] not in flags)


class CompiledModel:
    """A loaded artifact. ``run`` takes a dict {input name: array}, a list in input order, or one array."""

    def __init__(self, metadata: dict, library: Path, source: str = ""):
        self.metadata = metadata
        #: the file the library was loaded from (removed already when ``load`` extracted it itself)
        self.library_path = library
        self.source = source
        self.runtime = metadata.get("runtime")
        self.inputs: list[dict] = list(metadata.get("inputs") or [])
        self.outputs: list[dict] = list(metadata.get("outputs") or [])
        if self.runtime == "tvm-relax-vm":
            import tvm
            from tvm import relax

            if _is_cuda(metadata):  # the CUDA runtime must be loaded before the library is
                _check_cuda_device(metadata.get("target") or {}, str(self.target_label))
            self._device = tvm.cuda(0) if _is_cuda(metadata) else tvm.cpu()
            self._module = tvm.runtime.load_module(str(library))
            self._vm = relax.VirtualMachine(self._module, self._device)
            self._entry = self._vm[metadata.get("entry_function") or "main"]
        elif self.runtime == "tl2cgen":
            import tl2cgen

            self._predictor = tl2cgen.Predictor(str(library))
        else:
            raise IncompatibleArtifactError(f"unknown artifact runtime {self.runtime!r}")

    @property
    def input_names(self) -> list[str]:
        return [spec["name"] for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec["name"] for spec in self.outputs]

    @property
    def target_label(self) -> str | None:
        return (self.metadata.get("target") or {}).get("label")

    def __repr__(self) -> str:
        inputs = ", ".join(f"{s['name']}{s.get('shape')}:{s.get('dtype')}" for s in self.inputs)
        return f"<CompiledModel {self.metadata.get('framework')} {self.target_label} inputs=[{inputs}]>"

    def __call__(self, inputs) -> list:
        return self.run(inputs)

    def run(self, inputs: dict[str, Any] | Sequence[Any] | Any) -> list:
        """Run the model; returns the outputs as a list of numpy arrays, in metadata ``outputs`` order."""
        arrays = self._arrange(inputs)
        if self.runtime == "tl2cgen":
            import tl2cgen

            data = arrays[0]
            return [self._predictor.predict(tl2cgen.DMatrix(data, dtype=str(data.dtype)))]
        import tvm

        result = self._entry(*[tvm.runtime.tensor(array, device=self._device) for array in arrays])
        return _flatten_result(result)

    def _arrange(self, inputs) -> list:
        import numpy as np

        names = self.input_names
        if isinstance(inputs, dict):
            unknown = [key for key in inputs if key not in names]
            missing = [name for name in names if name not in inputs]
            if unknown or missing:
                raise ModelInputError(
                    f"inputs {sorted(inputs)} do not match the model's inputs {names}"
                    + (f"; unknown: {unknown}" if unknown else "")
                    + (f"; missing: {missing}" if missing else "")
                )
            values = [inputs[name] for name in names]
        elif isinstance(inputs, (list, tuple)):
            values = list(inputs)
        else:
            values = [inputs]
        if len(values) != len(names):
            raise ModelInputError(f"the model takes {len(names)} input(s) {names}; got {len(values)}")
        arrays = []
        for spec, value in zip(self.inputs, values):
            array = np.asarray(value)
            dtype = spec.get("dtype")
            if dtype and str(array.dtype) != dtype:
                if not np.can_cast(array.dtype, np.dtype(dtype), casting="same_kind"):
                    raise ModelInputError(f"input {spec['name']!r} must be {dtype}; got {array.dtype}")
                array = array.astype(dtype)
            shape = spec.get("shape")
            if shape is not None and (
                array.ndim != len(shape) or any(want is not None and want != got for want, got in zip(shape, array.shape))
            ):
                raise ModelInputError(
                    f"input {spec['name']!r} must have shape {shape} (None: any size); got {list(array.shape)}"
                )
            if spec.get("ranges"):  # a flexible dim: memory is planned for its upper bound
                from airflow_neo.local.flexible_shapes import check_ranges

                check_ranges(spec, array.shape)
            arrays.append(np.ascontiguousarray(array))
        return arrays


def _flatten_result(result) -> list:
    if hasattr(result, "numpy"):
        return [result.numpy()]
    if isinstance(result, (str, bytes)):
        raise TypeError(f"unexpected model output {result!r}")
    try:
        items = list(result)
    except TypeError:
        raise TypeError(f"unexpected model output of type {type(result).__name__}") from None
    return [leaf for item in items for leaf in _flatten_result(item)]
