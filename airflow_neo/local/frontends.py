"""The local compiler's frontends: a model file in, a Relax module and its resolved inputs out.

ONNX, TorchScript (exported to ONNX first), ``torch.export`` programs and TFLite flatbuffers
each have an importer (:data:`IMPORTERS`, keyed by :func:`importer_key`); they share one way of
matching the model's declared inputs with DataInputConfig and the ``dtype`` compiler option
(:func:`match_inputs`). ONNX graphs (TorchScript's too, exported to ONNX) are normalized for the
resolved input shapes before TVM imports them (:mod:`airflow_neo.local.onnx_normalize`: shape
subgraphs folded into constants); where that fails, or the normalized graph does not import, the
graph is imported as given, and the log and ``versions["onnx_normalized"]`` say which happened.

Invariants: an importer returns every model input with a fully static shape and a dtype, or
raises :class:`~airflow_neo.local.errors.ModelInputError` naming the input, what the model declares
and what the request gave (:class:`~airflow_neo.local.errors.ModelArchiveError` for a file that is
not a model of its framework); the models are never cast. The frameworks' packages and TVM are
imported inside the importers only.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from airflow_neo.local.errors import ModelArchiveError, ModelInputError

__all__ = ["DEFAULT_DTYPE", "IMPORTERS", "Imported", "InputSpec", "first_line", "importer_key", "match_inputs", "quiet"]

DEFAULT_DTYPE = "float32"
ONNX_EXPORT_OPSET = 17

Log = Callable[[str], Any]


@dataclass
class InputSpec:
    """One model input: ``shape`` entries are None for dynamic dims; ``shape`` None = rank unknown."""

    name: str
    shape: list[int | None] | None
    dtype: str | None

    @property
    def shape_text(self) -> str:
        """``[1, 3, ?, ?]`` (``?`` for a dynamic dim), or ``?`` when the rank is unknown."""
        return "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def describe(self) -> str:
        return f"{self.name} {self.shape_text} {self.dtype or '?'}"


@dataclass
class Imported:
    """What an importer returns: the Relax module, the resolved inputs, output names, versions."""

    mod: Any  # tvm.IRModule
    inputs: list[InputSpec]
    output_names: list[str]
    framework_versions: dict


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


def match_inputs(
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
                        f"rank {len(spec.shape)} {spec.shape_text}; the model's inputs are: "
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


def importer_key(framework: str, model_file: Path) -> str:
    if framework == "PYTORCH":
        return "PT2" if model_file.suffix.lower() == ".pt2" else "TORCHSCRIPT"
    return framework


@contextlib.contextmanager
def quiet():
    """Silence frontend chatter (deprecation and renaming warnings) without hiding errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _import_onnx(model_file: Path, data_input, dtype_option, log: Log, *, framework: str = "ONNX", extra_versions=None) -> Imported:
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
    resolved = match_inputs(framework, model_inputs, data_input, dtype_option)
    shapes = {spec.name: spec.shape for spec in resolved}
    dtypes = {spec.name: spec.dtype for spec in resolved}
    versions = {"onnx": onnx.__version__, "onnx_opset": _onnx_opset(model)}
    versions.update(extra_versions or {})
    output_names = [value.name for value in graph.output]
    model, normalized = _normalize_onnx(model, model_file, shapes, log)
    versions["onnx_normalized"] = normalized
    try:
        mod = _from_onnx(model, shapes, dtypes)
    except Exception as err:
        if not normalized.get("applied"):
            raise
        # The normalization must never make a model that imports as given fail.
        log(f"importing the normalized ONNX graph failed ({type(err).__name__}: {first_line(err)}); importing the graph as given")
        del model
        try:
            mod = _from_onnx(onnx.load(str(model_file)), shapes, dtypes)
        except Exception:  # noqa: BLE001 - the normalized graph's error says more
            raise err from None
        versions["onnx_normalized"] = {**normalized, "applied": False, "skipped": f"import failed: {type(err).__name__}"}
    return Imported(mod, resolved, output_names, versions)


def _from_onnx(model, shapes: dict, dtypes: dict):
    from tvm.relax.frontend.onnx import from_onnx

    with quiet():
        return from_onnx(model, shape_dict=shapes, dtype_dict=dtypes)


def _normalize_onnx(model, model_file: Path, shapes: dict, log: Log) -> tuple[Any, dict]:
    """The graph normalized for ``shapes`` (:mod:`~airflow_neo.local.onnx_normalize`) and what was done.

    Never raises: where the normalization fails, the log says why and the graph is imported as given.
    """
    import onnx

    from airflow_neo.local.onnx_normalize import normalize

    try:
        with quiet():
            report = normalize(model, shapes)
    except Exception as err:  # noqa: BLE001 - any failure here only means "import the graph as given"
        log(f"onnx normalization skipped ({type(err).__name__}: {first_line(err)}); importing the graph as given")
        return onnx.load(str(model_file)), {"applied": False, "skipped": f"{type(err).__name__}: {first_line(err)}"}
    log(report.summary())
    return model, {"applied": True, **report.as_metadata()}


def _onnx_opset(model) -> int | None:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return None


def _import_torchscript(model_file: Path, data_input, dtype_option, log: Log) -> Imported:
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
                f"fit forward({', '.join(arg_names)}): {type(err).__name__}: {first_line(err)}"
            ) from err
    n_outputs = len(_flatten(result))
    output_names = [f"output{i}" for i in range(n_outputs)]
    buffer = io.BytesIO()
    with quiet(), torch.no_grad():
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


def first_line(err: Exception) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    # TorchScript errors put the real message last, after the traceback of the scripted code.
    return (lines[-1] if len(lines) > 1 and "Traceback" in text else lines[0])[:500]


def _import_pt2(model_file: Path, data_input, dtype_option, log: Log) -> Imported:
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
    resolved = match_inputs("PYTORCH", model_inputs, data_input, dtype_option, positional_ok=True)
    from tvm.relax.frontend.torch import from_exported_program

    with quiet():
        mod = from_exported_program(program, unwrap_unit_return_tuple=True)
    output_names = list(program.graph_signature.user_outputs)
    return Imported(mod, resolved, output_names, {"torch": torch.__version__})


_TFLITE_DTYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8", 10: "float64",
}


def _import_tflite(model_file: Path, data_input, dtype_option, log: Log) -> Imported:
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
    resolved = match_inputs("TFLITE", model_inputs, data_input, dtype_option)
    from tvm.relax.frontend.tflite import from_tflite

    with quiet():
        mod = from_tflite(
            model,
            shape_dict={spec.name: tuple(spec.shape) for spec in resolved},
            dtype_dict={spec.name: spec.dtype for spec in resolved},
        )
    return Imported(mod, resolved, output_names, {"tflite": getattr(tflite, "__version__", None)})


IMPORTERS = {
    "ONNX": _import_onnx,
    "TORCHSCRIPT": _import_torchscript,
    "PT2": _import_pt2,
    "TFLITE": _import_tflite,
}
