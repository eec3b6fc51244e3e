"""The local backend's compiler: a Neo model archive in, a TVM-compiled artifact (``.tar.gz``) out.

:func:`compile_model` runs inside the compile child process. TVM, ONNX, PyTorch, TFLite and
treelite are imported inside functions only, so importing this module is cheap and never
imports Airflow.

Artifact layout (a gzip'ed tar, members at the top level)::

    model.so        the compiled library: a TVM Relax VM executable (ONNX, PYTORCH, TFLITE)
                    or a tl2cgen tree-ensemble library (XGBOOST)
    metadata.json   see METADATA_SCHEMA_VERSION and compile_model()
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import platform
import re
import tarfile
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from airflow_neo.core.validation import (
    ValidatedRequest,
    parse_compiler_options,
    parse_data_input_config,
)
from airflow_neo.local.archive import find_model_file, safe_extract
from airflow_neo.local.errors import (
    CompilationError,
    LocalCompilationError,
    ModelArchiveError,
    ModelInputError,
    UnsupportedFrameworkError,
    UnsupportedOperatorsError,
)
from airflow_neo.local.files import atomic_file, blake2b_file
from airflow_neo.local.frameworks import SUPPORTED_FRAMEWORKS, UNSUPPORTED_FRAMEWORKS, framework_problem
from airflow_neo.local.targets import ResolvedTarget, resolve_target

__all__ = [
    "ALLOWED_DTYPES",
    "LIBRARY_NAME",
    "METADATA_NAME",
    "METADATA_SCHEMA_VERSION",
    "SUPPORTED_FRAMEWORKS",
    "UNSUPPORTED_FRAMEWORKS",
    "InputSpec",
    "compile_model",
]

LIBRARY_NAME = "model.so"
METADATA_NAME = "metadata.json"
METADATA_SCHEMA_VERSION = 1
ALLOWED_DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")
DEFAULT_DTYPE = "float32"
ONNX_EXPORT_OPSET = 17

Log = Callable[[str], Any]


@dataclass
class InputSpec:
    """One model input: ``shape`` entries are None for dynamic dims; ``shape`` None = rank unknown."""

    name: str
    shape: list[int | None] | None
    dtype: str | None

    def describe(self) -> str:
        shape = "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"
        return f"{self.name} {shape} {self.dtype or '?'}"


@dataclass
class _Imported:
    mod: Any  # tvm.IRModule
    inputs: list[InputSpec]
    output_names: list[str]
    framework_versions: dict


# --------------------------------------------------------------------------------------------
# entry point


def compile_model(
    request: ValidatedRequest | dict,
    archive_path: str,
    artifact_path: str,
    *,
    log: Log = print,
    tuning_trials: int | None = None,
    tuning_database: str | None = None,
    work_dir: str | os.PathLike | None = None,
) -> dict:
    """Compile the model in ``archive_path`` as ``request`` says, and write the artifact to ``artifact_path``.

    :param request: a :class:`~airflow_neo.core.validation.ValidatedRequest`, or a normalized
        CreateCompilationJob request dict (wrapped with ``ValidatedRequest.from_normalized``):
        InputConfig.Framework, InputConfig.DataInputConfig, OutputConfig.TargetDevice or
        TargetPlatform, OutputConfig.CompilerOptions (``dtype``, ``mcpu``, ``mattr``,
        ``ANDROID_PLATFORM``).
    :param archive_path: the model archive (``.tar.gz``) on local disk.
    :param artifact_path: where to write the compiled artifact (``.tar.gz``); written atomically.
    :param log: called with one line per event (phases and their timings).
    :param tuning_trials: MetaSchedule trial budget of the model (see :mod:`airflow_neo.local.tuning`);
        None: 0 (``[neo] tuning_trials``' default). Records already in the target's tuning database
        are applied even with 0.
    :param tuning_database: root of the tuning databases; None: ``$AIRFLOW_HOME/neo/tuning``.
    :param work_dir: where the model is extracted and built; it belongs to the caller, who removes
        it (the runner gives a directory inside the job's work dir, which it removes whatever
        happens to this process). None: a temporary directory removed on return.
    :return: the metadata dict written as ``metadata.json`` in the artifact (``tuning``: the
        tuning report: database, workloads, trials, records digest).
    :raises LocalCompilationError: a subclass naming what was wrong (archive, inputs, framework,
        target, operators, toolchain).
    """
    started = time.monotonic()
    validated = _as_validated(request)
    framework = validated.framework
    _check_framework(framework)
    options = validated.compiler_options
    if not isinstance(options, dict):
        raise ModelInputError(f"OutputConfig.CompilerOptions must be a JSON object; got {options!r}")
    data_input = validated.data_input_config
    dtype_option = _dtype_option(options)
    target = resolve_target(validated.output_config, options)
    log(
        f"target: {target.source} -> {json.dumps(target.target, sort_keys=True)}"
        + (f" (cross-compiling with {target.cross_compiler})" if target.is_cross else "")
    )
    compiler_path = target.compiler()  # fail before the long work when the (cross) C compiler is missing
    digest = blake2b_file(archive_path)
    timings: dict[str, float] = {}
    with _work_dir(work_dir) as work:
        with _phase("extract", timings, log):
            files = safe_extract(archive_path, work / "model")
            model_file = find_model_file(work / "model", framework)
            log(f"model file: {model_file.relative_to(work / 'model').as_posix()} ({len(files)} file(s) in the archive)")
        out_dir = work / "out"
        out_dir.mkdir(exist_ok=True)
        library = out_dir / LIBRARY_NAME
        tuning_report = None
        if framework == "XGBOOST":
            with _phase("import", timings, log):
                tree_model, versions = _load_xgboost(model_file)
                log(f"XGBoost model: {int(tree_model.num_tree)} trees, {int(tree_model.num_feature)} features")
            with _phase("build", timings, log):
                source_dir = work / "c-source"
                _generate_xgboost_c(tree_model, source_dir)
            with _phase("export", timings, log):
                inputs, outputs = _export_xgboost(tree_model, source_dir, library, compiler_path)
            runtime = "tl2cgen"
        else:
            with _phase("import", timings, log):
                imported = _IMPORTERS[_importer_key(framework, model_file)](model_file, data_input, dtype_option, log)
                log("inputs: " + "; ".join(spec.describe() for spec in imported.inputs))
            with _phase("build", timings, log):
                tuning = _tuning_settings(validated.payload, started, tuning_trials, tuning_database, work)
                executable, outputs, tuning_report = _build(imported, target, tuning, log)
            with _phase("export", timings, log):
                _export_library(executable, library, compiler_path)
            inputs, versions = imported.inputs, imported.framework_versions
            runtime = "tvm-relax-vm"
        metadata = _metadata(
            request=validated.payload,
            framework=framework,
            model_file=model_file.relative_to(work / "model").as_posix(),
            runtime=runtime,
            inputs=inputs,
            outputs=outputs,
            target=target,
            options=options,
            data_input=data_input,
            digest=digest,
            versions=versions,
            timings=timings,
        )
        if tuning_report is not None:
            metadata["tuning"] = tuning_report
        _write_artifact(artifact_path, library, metadata)
    log(f"artifact: {artifact_path} ({os.path.getsize(artifact_path)} bytes) in {time.monotonic() - started:.2f} s")
    return metadata


@contextlib.contextmanager
def _work_dir(given: str | os.PathLike | None) -> Iterator[Path]:
    """The caller's work dir (left for its owner to remove), else a temporary one removed on exit."""
    if given is not None:
        work = Path(given)
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="airflow-neo-compile-") as temporary:
        yield Path(temporary)


def _as_validated(request: ValidatedRequest | dict) -> ValidatedRequest:
    """``request`` as a ValidatedRequest; a JSON member that does not parse is a ModelInputError naming it."""
    if isinstance(request, ValidatedRequest):
        return request
    try:
        return ValidatedRequest.from_normalized(request)
    except ValueError as err:
        for path, parse in (
            ("OutputConfig.CompilerOptions", parse_compiler_options),
            ("InputConfig.DataInputConfig", parse_data_input_config),
        ):
            try:
                parse(request)
            except ValueError as member_err:
                raise ModelInputError(f"{path} must be valid JSON: {member_err}") from member_err
        raise ModelInputError(str(err)) from err


# --------------------------------------------------------------------------------------------
# request helpers


def _check_framework(framework: str) -> None:
    if framework in SUPPORTED_FRAMEWORKS:
        return
    raise UnsupportedFrameworkError(f"Framework {framework or None!r} {framework_problem(framework)}")


def _dtype_option(options: dict) -> str | dict | None:
    value = options.get("dtype")
    if value is None:
        return None
    values = value.values() if isinstance(value, dict) else [value]
    for item in values:
        if not isinstance(item, str) or item not in ALLOWED_DTYPES:
            raise ModelInputError(
                f"CompilerOptions dtype {item!r} is not supported; use one of {', '.join(ALLOWED_DTYPES)} "
                "(a string for every input, or an object {input name: dtype})"
            )
    return value


@contextlib.contextmanager
def _phase(name: str, timings: dict, log: Log):
    started = time.monotonic()
    log(f"phase {name}: started")
    try:
        yield
    except LocalCompilationError:
        log(f"phase {name}: failed after {time.monotonic() - started:.2f} s")
        raise
    except Exception as err:  # noqa: BLE001 - every other failure becomes a CompilationError
        log(f"phase {name}: failed after {time.monotonic() - started:.2f} s")
        raise _translate(err, name) from err
    timings[name] = round(time.monotonic() - started, 3)
    log(f"phase {name}: {timings[name]:.2f} s")


_PACKAGES = {"tvm": "apache-tvm", "torch": "torch", "onnx": "onnx", "tflite": "tflite", "treelite": "treelite",
             "tl2cgen": "tl2cgen"}
_UNSUPPORTED_TORCH = re.compile(r"Unsupported function types? \[?([^\]\n]+)")


def _translate(err: Exception, phase: str) -> LocalCompilationError:
    text = str(err).strip()
    try:
        import tvm.error

        op_not_implemented = isinstance(err, tvm.error.OpNotImplemented)
    except ImportError:  # pragma: no cover - tvm is installed wherever this runs
        op_not_implemented = False
    if op_not_implemented:
        operators = [op.strip() for op in text.rsplit(":", 1)[-1].split(",") if op.strip()] if ":" in text else []
        return UnsupportedOperatorsError(
            f"the model uses operators that TVM {_tvm_version()} cannot convert: {text}", operators
        )
    if isinstance(err, ModuleNotFoundError):
        package = _PACKAGES.get((err.name or "").split(".")[0], err.name)
        return CompilationError(
            f"{phase} failed: the Python package {package!r} is not installed on this worker; "
            f"install it (pip install {package}) or the airflow-neo[local] extra"
        )
    match = _UNSUPPORTED_TORCH.search(text)
    if match:
        operators = [op.strip(" '\"") for op in match.group(1).split(",") if op.strip(" '\"")]
        return UnsupportedOperatorsError(
            f"the model uses operators that TVM {_tvm_version()} cannot convert: {', '.join(operators)}", operators
        )
    if len(text) > 2000:
        text = text[:1000] + "\n...\n" + text[-1000:]
    return CompilationError(f"{phase} failed: {type(err).__name__}: {text}")


def _tvm_version() -> str:
    try:
        import tvm

        return tvm.__version__
    except ImportError:  # pragma: no cover
        return "?"


# --------------------------------------------------------------------------------------------
# input matching (shared by the frontends)


def _model_inputs_text(model_inputs: list[InputSpec]) -> str:
    return "; ".join(spec.describe() for spec in model_inputs) or "none"


def _dtype_for(name: str, declared: str | None, dtype_option) -> str:
    wanted = dtype_option.get(name) if isinstance(dtype_option, dict) else dtype_option
    if declared is None:
        return wanted or DEFAULT_DTYPE
    if wanted and wanted != declared:
        raise ModelInputError(
            f"CompilerOptions dtype says {wanted} for input {name!r} but the model declares {declared}; "
            "the local backend does not cast models: drop the dtype option or convert the model"
        )
    return declared


def _match_inputs(
    framework: str,
    model_inputs: list[InputSpec],
    data_input,
    dtype_option,
    *,
    positional_ok: bool = False,
) -> list[InputSpec]:
    """Resolve each model input's shape and dtype from DataInputConfig and the model's declarations.

    ``positional_ok``: a dict whose keys are not the model's input names is taken in order
    (Neo's PyTorch convention: input0, input1, ...).
    """
    if isinstance(dtype_option, dict):
        unknown = sorted(set(dtype_option) - {spec.name for spec in model_inputs})
        if unknown and not positional_ok:
            raise ModelInputError(
                f"CompilerOptions dtype names {unknown}, which are not inputs of the {framework} model; "
                f"the model's inputs are: {_model_inputs_text(model_inputs)}"
            )
    given: dict[str, list[int]] = {}
    if data_input is None:
        pass
    elif isinstance(data_input, dict):
        names = [spec.name for spec in model_inputs]
        unknown = [key for key in data_input if key not in names]
        if unknown and positional_ok and len(data_input) == len(model_inputs) and not set(data_input) & set(names):
            given = dict(zip(names, data_input.values()))
        elif unknown:
            raise ModelInputError(
                f"DataInputConfig names {unknown}, which {'is not an input' if len(unknown) == 1 else 'are not inputs'} "
                f"of the {framework} model; the model's inputs are: {_model_inputs_text(model_inputs)}"
            )
        else:
            given = dict(data_input)
    elif isinstance(data_input, list):
        if data_input and not isinstance(data_input[0], list):
            data_input = [data_input]  # a single shape
        if len(data_input) != len(model_inputs):
            raise ModelInputError(
                f"DataInputConfig lists {len(data_input)} shape(s) but the {framework} model has "
                f"{len(model_inputs)} input(s): {_model_inputs_text(model_inputs)}"
            )
        given = {spec.name: shape for spec, shape in zip(model_inputs, data_input)}
    else:
        raise ModelInputError(f"DataInputConfig must be an object {{name: shape}} or a list of shapes; got {data_input!r}")

    resolved = []
    for spec in model_inputs:
        shape = given.get(spec.name)
        if shape is not None:
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
                raise ModelInputError(f"DataInputConfig shape for {spec.name!r} must be a list of positive integers; got {shape!r}")
            if spec.shape is not None:
                if len(shape) != len(spec.shape):
                    raise ModelInputError(
                        f"DataInputConfig gives input {spec.name!r} rank {len(shape)} {shape}, but the model declares "
                        f"rank {len(spec.shape)} {spec.describe().split(' ')[1]}; the model's inputs are: "
                        f"{_model_inputs_text(model_inputs)}"
                    )
                fixed = [(i, d, s) for i, (d, s) in enumerate(zip(shape, spec.shape)) if s is not None and d != s]
                if fixed:
                    i, d, s = fixed[0]
                    raise ModelInputError(
                        f"DataInputConfig gives input {spec.name!r} shape {shape}, but dimension {i} is fixed at {s} "
                        f"in the model ({spec.describe()}); change DataInputConfig or re-export the model with "
                        "that dimension dynamic"
                    )
        else:
            if spec.shape is None or any(d is None for d in spec.shape):
                raise ModelInputError(
                    f"input {spec.name!r} of the {framework} model has no static shape ({spec.describe()}); "
                    f"give its shape in DataInputConfig, e.g. {{{json.dumps(spec.name)}: [1, 3, 224, 224]}}; "
                    f"the model's inputs are: {_model_inputs_text(model_inputs)}"
                )
            shape = list(spec.shape)
        resolved.append(InputSpec(spec.name, [int(d) for d in shape], _dtype_for(spec.name, spec.dtype, dtype_option)))
    return resolved


# --------------------------------------------------------------------------------------------
# frontends


def _importer_key(framework: str, model_file: Path) -> str:
    if framework == "PYTORCH":
        return "PT2" if model_file.suffix.lower() == ".pt2" else "TORCHSCRIPT"
    return framework


@contextlib.contextmanager
def _quiet():
    """Silence frontend chatter (deprecation and renaming warnings) without hiding errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import_onnx(model_file: Path, data_input, dtype_option, log: Log, *, framework: str = "ONNX", extra_versions=None) -> _Imported:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(model_file))
    except (DecodeError, ValueError, OSError, RuntimeError) as err:
        raise ModelArchiveError(f"{model_file.name} is not a valid ONNX model: {type(err).__name__}: {err}") from err
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    model_inputs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ModelInputError(f"ONNX input {value.name!r} is not a tensor; the local backend compiles tensor inputs only")
        shape = None
        if tensor_type.HasField("shape"):
            shape = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in tensor_type.shape.dim]
        dtype = None
        if tensor_type.elem_type:
            dtype = str(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        model_inputs.append(InputSpec(value.name, shape, dtype))
    resolved = _match_inputs(framework, model_inputs, data_input, dtype_option)

    from tvm.relax.frontend.onnx import from_onnx

    with _quiet():
        mod = from_onnx(
            model,
            shape_dict={spec.name: spec.shape for spec in resolved},
            dtype_dict={spec.name: spec.dtype for spec in resolved},
        )
    versions = {"onnx": onnx.__version__, "onnx_opset": _onnx_opset(model)}
    versions.update(extra_versions or {})
    return _Imported(mod, resolved, [value.name for value in graph.output], versions)


def _onnx_opset(model) -> int | None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return None


def _import_torchscript(model_file: Path, data_input, dtype_option, log: Log) -> _Imported:
    import torch

    try:
        module = torch.jit.load(str(model_file), map_location="cpu")
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, pickle errors, ...
        try:
            torch.export.load(str(model_file))
        except Exception:  # noqa: BLE001
            raise ModelArchiveError(
                f"{model_file.name} is not a TorchScript model: {type(err).__name__}: {str(err)[:300]}. "
                "The local backend needs TorchScript (torch.jit.trace or torch.jit.script, then torch.jit.save) "
                "in a .pt/.pth file, or a torch.export program (torch.export.save) in a .pt2 file; "
                "a state_dict or a pickled nn.Module cannot be compiled"
            ) from err
        log(f"{model_file.name} is a torch.export program; importing it as .pt2")
        return _import_pt2(model_file, data_input, dtype_option, log)
    module.eval()
    arguments = [arg for arg in module.forward.schema.arguments if arg.name != "self"]
    required = [arg for arg in arguments if not arg.has_default_value()]
    arg_names = [arg.name for arg in arguments]
    if data_input is None:
        raise ModelInputError(
            f"a TorchScript model needs DataInputConfig with the shape of each forward() argument "
            f"({', '.join(arg_names)}), e.g. {{\"input0\": [1, 3, 224, 224]}} or [[1, 3, 224, 224]]"
        )
    if isinstance(data_input, list) and data_input and not isinstance(data_input[0], list):
        data_input = [data_input]
    if isinstance(data_input, dict):
        if set(data_input) <= set(arg_names):
            names = [name for name in arg_names if name in data_input]  # forward() order
            shapes = [data_input[name] for name in names]
        else:
            names, shapes = list(data_input), list(data_input.values())  # Neo: in order, input0 ...
    elif isinstance(data_input, list):
        names, shapes = [f"input{i}" for i in range(len(data_input))], list(data_input)
    else:
        raise ModelInputError(f"DataInputConfig must be an object {{name: shape}} or a list of shapes; got {data_input!r}")
    if not len(required) <= len(shapes) <= len(arguments):
        expected = f"{len(required)}" if len(required) == len(arguments) else f"{len(required)} to {len(arguments)}"
        raise ModelInputError(
            f"DataInputConfig gives {len(shapes)} input(s) ({', '.join(names)}) but the TorchScript model's forward() "
            f"takes {expected}: {', '.join(arg_names)}"
        )
    specs = []
    for name, shape in zip(names, shapes):
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ModelInputError(f"DataInputConfig shape for {name!r} must be a list of positive integers; got {shape!r}")
        dtype = _dtype_for(name, None, dtype_option)
        specs.append(InputSpec(name, list(shape), dtype))
    examples = tuple(_example_tensor(torch, spec) for spec in specs)
    with torch.no_grad():
        try:
            result = module(*examples)
        except Exception as err:  # noqa: BLE001 - any failure here means the shapes do not fit
            raise ModelInputError(
                f"running the TorchScript model with DataInputConfig inputs "
                f"({'; '.join(spec.describe() for spec in specs)}) failed, so the shapes (rank, sizes) or dtypes do not "
                f"fit forward({', '.join(arg_names)}): {type(err).__name__}: {_first_line(err)}"
            ) from err
    n_outputs = len(_flatten(result))
    output_names = [f"output{i}" for i in range(n_outputs)]
    buffer = io.BytesIO()
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            module,
            examples,
            buffer,
            input_names=[spec.name for spec in specs],
            output_names=output_names,
            opset_version=ONNX_EXPORT_OPSET,
            dynamo=False,
        )
    onnx_file = model_file.with_suffix(".from-torchscript.onnx")
    onnx_file.write_bytes(buffer.getvalue())
    log(f"TorchScript exported to ONNX (opset {ONNX_EXPORT_OPSET}, {len(buffer.getvalue())} bytes)")
    shapes_by_name = {spec.name: spec.shape for spec in specs}
    dtypes = {spec.name: spec.dtype for spec in specs}
    return _import_onnx(
        onnx_file, shapes_by_name, dtypes, log, framework="PYTORCH", extra_versions={"torch": torch.__version__}
    )


def _example_tensor(torch, spec: InputSpec):
    dtype = getattr(torch, spec.dtype)
    if dtype.is_floating_point:
        return torch.randn(spec.shape, dtype=torch.float32).to(dtype)
    if dtype == torch.bool:
        return torch.zeros(spec.shape, dtype=torch.bool)
    return torch.zeros(spec.shape, dtype=dtype)


def _flatten(value) -> list:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flatten(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _flatten(item)]
    return [value]


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    # TorchScript errors put the real message last, after the traceback of the scripted code.
    return (lines[-1] if len(lines) > 1 and "Traceback" in text else lines[0])[:500]


def _import_pt2(model_file: Path, data_input, dtype_option, log: Log) -> _Imported:
    import torch

    try:
        program = torch.export.load(str(model_file))
    except Exception as err:  # noqa: BLE001
        raise ModelArchiveError(
            f"{model_file.name} is not a torch.export program (torch.export.save): {type(err).__name__}: {str(err)[:300]}"
        ) from err
    user_inputs = list(program.graph_signature.user_inputs)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    model_inputs = []
    for name in user_inputs:
        value = placeholders[name].meta.get("val")
        if not isinstance(value, torch.Tensor):
            raise ModelInputError(f"torch.export input {name!r} is not a tensor ({type(value).__name__}); only tensor inputs compile")
        shape = [int(d) if isinstance(d, int) else None for d in value.shape]
        model_inputs.append(InputSpec(name, shape, str(value.dtype).replace("torch.", "")))
    resolved = _match_inputs("PYTORCH", model_inputs, data_input, dtype_option, positional_ok=True)
    from tvm.relax.frontend.torch import from_exported_program

    with _quiet():
        mod = from_exported_program(program, unwrap_unit_return_tuple=True)
    output_names = list(program.graph_signature.user_outputs)
    return _Imported(mod, resolved, output_names, {"torch": torch.__version__})


_TFLITE_DTYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8", 10: "float64",
}


def _import_tflite(model_file: Path, data_input, dtype_option, log: Log) -> _Imported:
    import tflite

    buffer = model_file.read_bytes()
    if len(buffer) < 8 or buffer[4:8] != b"TFL3":
        raise ModelArchiveError(f"{model_file.name} is not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buffer, 0)
        subgraph = model.Subgraphs(0)
        model_inputs = []
        for index in subgraph.InputsAsNumpy():
            tensor = subgraph.Tensors(int(index))
            name = tensor.Name().decode("utf-8")
            shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
            signature = [int(d) for d in tensor.ShapeSignatureAsNumpy()] if tensor.ShapeSignatureLength() else shape
            dims = [None if s < 0 else d for d, s in zip(shape, signature)]
            model_inputs.append(InputSpec(name, dims, _TFLITE_DTYPES.get(tensor.Type())))
        output_names = [subgraph.Tensors(int(i)).Name().decode("utf-8") for i in subgraph.OutputsAsNumpy()]
    except (IndexError, AttributeError, TypeError, ValueError) as err:
        raise ModelArchiveError(f"{model_file.name} is not a readable TFLite model: {type(err).__name__}: {err}") from err
    resolved = _match_inputs("TFLITE", model_inputs, data_input, dtype_option)
    from tvm.relax.frontend.tflite import from_tflite

    with _quiet():
        mod = from_tflite(
            model,
            shape_dict={spec.name: tuple(spec.shape) for spec in resolved},
            dtype_dict={spec.name: spec.dtype for spec in resolved},
        )
    return _Imported(mod, resolved, output_names, {"tflite": getattr(tflite, "__version__", None)})


_IMPORTERS = {
    "ONNX": _import_onnx,
    "TORCHSCRIPT": _import_torchscript,
    "PT2": _import_pt2,
    "TFLITE": _import_tflite,
}


# --------------------------------------------------------------------------------------------
# build and export (TVM)


def _tuning_settings(request: dict, started: float, trials: int | None, database: str | None, work: Path) -> dict:
    """The job's tuning budget, database root, deadline (the time limit less a reserve for the
    build) and scratch directory, from the arguments the caller gave (defaults: CompileSettings')."""
    from airflow_neo.local.settings import CompileSettings

    defaults = CompileSettings()
    trials = defaults.tuning_trials if trials is None else int(trials)
    database = database or defaults.resolved().tuning_database
    max_runtime = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    deadline = None
    if max_runtime:
        deadline = started + float(max_runtime) - max(60.0, 0.2 * float(max_runtime))
    return {"trials": max(0, trials), "database_root": database, "deadline": deadline, "work_dir": work}


def _build(imported: _Imported, target: ResolvedTarget, tuning: dict | None = None, log: Log = print):
    import tvm
    from tvm import relax

    tvm_target = tvm.target.Target(target.target)
    mod = relax.transform.DecomposeOpsForInference()(imported.mod)
    with tvm_target:
        mod = relax.get_pipeline("zero")(mod)
    outputs = _output_specs(mod["main"], imported.output_names)
    report = None
    if tuning is not None:
        from airflow_neo.local.tuning import optimize

        mod, report = optimize(mod, target, log=log, **tuning)
    executable = tvm.compile(mod, target=tvm_target)
    return executable, outputs, report


def _output_specs(function, names: list[str]) -> list[InputSpec]:
    from tvm import relax

    leaves = []

    def walk(ty):
        if isinstance(ty, relax.TupleType) or hasattr(ty, "fields"):
            for field_ty in ty.fields:
                walk(field_ty)
        else:
            leaves.append(ty)

    walk(function.ret_ty)
    specs = []
    for index, ty in enumerate(leaves):
        shape = None
        dtype = None
        if isinstance(ty, relax.TensorType):
            dtype = str(ty.dtype) if ty.dtype else None
            if ty.shape is not None and hasattr(ty.shape, "values"):
                shape = [int(d) if _is_int(d) else None for d in ty.shape.values]
        name = names[index] if index < len(names) and len(names) == len(leaves) else f"output{index}"
        specs.append(InputSpec(name, shape, dtype))
    return specs


def _is_int(value) -> bool:
    try:
        int(value)
        return True
    except (TypeError, ValueError):
        return False


def _export_library(executable, library: Path, compiler: str) -> None:
    from tvm.support import cc

    # A fresh fcompile per export: tvm's cross_compiler appends to its option list in place.
    fcompile = cc.cross_compiler(compiler, options=[])
    try:
        executable.export_library(str(library), fcompile=fcompile)
    except RuntimeError as err:
        raise CompilationError(f"linking the library with {compiler} failed: {_first_line(err)}\n{str(err)[-1500:]}") from err


# --------------------------------------------------------------------------------------------
# XGBoost (treelite + tl2cgen)


def _load_xgboost(model_file: Path):
    import treelite

    suffix = model_file.suffix.lower()
    format_choice = {".json": "json", ".ubj": "ubjson"}.get(suffix, "inspect")
    errors = []
    try:
        model = treelite.frontend.load_xgboost_model(str(model_file), format_choice=format_choice)
        return model, _tree_versions()
    except Exception as err:  # noqa: BLE001 - treelite raises its own TreeliteError
        errors.append(f"{type(err).__name__}: {str(err).strip()[:300]}")
    try:
        model = treelite.frontend.load_xgboost_model_legacy_binary(str(model_file))
        return model, _tree_versions()
    except Exception as err:  # noqa: BLE001
        errors.append(f"{type(err).__name__}: {str(err).strip()[:300]}")
    raise ModelArchiveError(
        f"{model_file.name} is not an XGBoost model treelite can read (JSON, UBJSON or legacy binary, from "
        f"Booster.save_model): {' / '.join(errors)}"
    )


def _tree_versions() -> dict:
    import tl2cgen
    import treelite

    return {"treelite": treelite.__version__, "tl2cgen": tl2cgen.__version__}


def _generate_xgboost_c(model, source_dir: Path) -> None:
    import tl2cgen

    num_tree = int(model.num_tree)
    # Split big ensembles into several translation units so that gcc can compile them in parallel.
    params = {"parallel_comp": max(1, min(os.cpu_count() or 1, num_tree // 100))} if num_tree >= 200 else {}
    source_dir.mkdir(parents=True, exist_ok=True)
    with _quiet():
        tl2cgen.generate_c_code(model, str(source_dir), params, verbose=False)


def _export_xgboost(model, source_dir: Path, library: Path, compiler_path: str):
    import shutil

    import tl2cgen

    with _quiet():
        built = tl2cgen.create_shared(compiler_path, str(source_dir), verbose=False, long_build_time_warning=False)
    shutil.move(str(built), str(library))
    input_dtype = str(model.input_type) if getattr(model, "input_type", None) else "float32"
    output_dtype = str(model.output_type) if getattr(model, "output_type", None) else "float32"
    inputs = [InputSpec("data", [None, int(model.num_feature)], input_dtype)]
    # tl2cgen predicts (rows, targets, classes); the runtime returns that array as is.
    try:
        header = model.get_header_accessor()
        num_target = int(header.get_field("num_target")[0])
        num_class = int(max(header.get_field("num_class")))
    except Exception:  # noqa: BLE001 - only a description
        num_target = num_class = None
    outputs = [InputSpec("predictions", [None, num_target, num_class], output_dtype)]
    return inputs, outputs


# --------------------------------------------------------------------------------------------
# metadata and artifact


def _metadata(*, request, framework, model_file, runtime, inputs, outputs, target, options, data_input, digest, versions, timings) -> dict:
    import airflow_neo

    try:
        import tvm

        tvm_version = tvm.__version__
    except ImportError:  # pragma: no cover
        tvm_version = None
    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "producer": f"airflow-neo {airflow_neo.__version__} (local backend)",
        "runtime": runtime,
        "library": LIBRARY_NAME,
        "entry_function": "main" if runtime == "tvm-relax-vm" else None,
        "framework": framework,
        "framework_version": (request.get("InputConfig") or {}).get("FrameworkVersion"),
        "model_file": model_file,
        "inputs": [asdict(spec) for spec in inputs],
        "outputs": [asdict(spec) for spec in outputs],
        "target": {
            "label": target.label,
            "source": target.source,
            "tvm_target": target.target,
            "triple": target.triple,
            "machine": target.machine,
            "os": target.os,
            "cross_compiled": target.is_cross,
            "cross_compiler": target.cross_compiler,
        },
        "compiler_options": options,
        "data_input_config": data_input,
        "input_archive_blake2b": digest,
        "versions": {
            "tvm": tvm_version,
            "airflow_neo": airflow_neo.__version__,
            "python": platform.python_version(),
            **{key: value for key, value in versions.items() if value is not None},
        },
        "timings_s": timings,
        "compiled_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_artifact(artifact_path: str | os.PathLike, library: Path, metadata: dict) -> None:
    import gzip

    payload = json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8")
    with atomic_file(artifact_path) as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            _add_file(tar, LIBRARY_NAME, library.read_bytes(), 0o755)
            _add_file(tar, METADATA_NAME, payload, 0o644)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))
