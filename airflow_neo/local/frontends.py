"""The local compiler's frontends: a model file in, a Relax module and its resolved inputs out.

ONNX, TorchScript, ``torch.export`` programs and TFLite flatbuffers each have an importer
(:data:`IMPORTERS`, keyed by :func:`importer_key`); TENSORFLOW, KERAS, DARKNET and MXNET models
are converted to ONNX first (:func:`import_converted`, :mod:`airflow_neo.local.convert`); the PyTorch ones live in
:mod:`airflow_neo.local.torch_import` (TorchScript tries the legacy ONNX export, then a
``torch.export`` conversion, and records the route used). They share one way of matching the
model's declared inputs with DataInputConfig and the ``dtype`` compiler option
(:func:`match_inputs`, :mod:`airflow_neo.local.frontend_common`). ONNX graphs (TorchScript's too, exported to ONNX) are normalized for the
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

from pathlib import Path
from typing import Any

from airflow_neo.local.errors import LocalCompilationError, ModelArchiveError, ModelInputError
from airflow_neo.local.frontend_common import (
    DEFAULT_DTYPE,
    Imported,
    InputSpec,
    Log,
    first_line,
    match_inputs,
    quiet,
)
from airflow_neo.local.flexible_shapes import FLEXIBLE_FRAMEWORKS
from airflow_neo.local.torch_import import import_pt2, import_torchscript

__all__ = [
    "DEFAULT_DTYPE", "IMPORTERS", "Imported", "InputSpec", "first_line", "import_converted", "importer_key", "match_inputs",
    "quiet",
]


def importer_key(framework: str, model_file: Path) -> str:
    if framework == "PYTORCH":
        return "PT2" if model_file.suffix.lower() == ".pt2" else "TORCHSCRIPT"
    return framework


def _import_onnx(model_file: Path, data_input, dtype_option, log: Log, *, framework: str = "ONNX", extra_versions=None) -> Imported:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(model_file))
    except (DecodeError, ValueError, OSError, RuntimeError) as err:
        raise ModelArchiveError(f"{model_file.name} is not a valid ONNX model: {type(err).__name__}: {err}") from err
    graph = model.graph
    _check_references(graph, model_file)
    initializers = {init.name for init in graph.initializer}
    model_inputs = []
    dim_names = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ModelInputError(f"ONNX input {value.name!r} is not a tensor; the local backend compiles tensor inputs only")
        shape = None
        if tensor_type.HasField("shape"):
            shape = [dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in tensor_type.shape.dim]
            dim_names[value.name] = [dim.dim_param or None for dim in tensor_type.shape.dim]
        dtype = None
        if tensor_type.elem_type:
            dtype = str(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        model_inputs.append(InputSpec(value.name, shape, dtype))
    resolved = match_inputs(framework, model_inputs, data_input, dtype_option,
                            flexible_ok=framework in FLEXIBLE_FRAMEWORKS)
    shapes = {spec.name: spec.shape for spec in resolved}
    dtypes = {spec.name: spec.dtype for spec in resolved}
    versions = {"onnx": onnx.__version__, "onnx_opset": _onnx_opset(model)}
    versions.update(extra_versions or {})
    output_names = [value.name for value in graph.output]
    model, normalized = _normalize_onnx(model, model_file, shapes, log)
    versions["onnx_normalized"] = normalized
    flexible = [spec for spec in resolved if getattr(spec, "ranges", None)]
    if flexible:
        mod = _from_onnx_flexible(model, model_file, resolved, dim_names, dtypes, dtype_option, log, framework)
        return Imported(mod, resolved, output_names, versions)
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


def _from_onnx_flexible(model, model_file: Path, resolved: list[InputSpec], dim_names: dict, dtypes: dict,
                        dtype_option, log: Log, framework: str):
    """The graph imported with its range dims symbolic (:mod:`airflow_neo.local.flexible_shapes`).

    Where the symbolic import or legalization fails, the model is imported again with each range
    at its lower bound: if that fails too, its failure is the job's (the range is not the cause);
    else the job fails with a ModelInputError naming the range dims and the op."""
    from airflow_neo.local.flexible_shapes import (
        check_extents,
        refusal,
        static_at_lower_bound,
        symbolic_shapes,
        with_bounds,
    )

    symbolic, bounds = symbolic_shapes(resolved, dim_names)
    log("flexible input shapes: " + ", ".join(f"{name} in {lo}..{hi}" for name, (lo, hi) in bounds.items()))
    try:
        mod = _from_onnx(model, symbolic, dtypes)
    except LocalCompilationError:
        raise
    except Exception as err:  # noqa: BLE001 - compared with a static import
        log(f"flexible input shapes: the symbolic import failed ({type(err).__name__}: {first_line(err)}); "
            "importing with each range at its lower bound to compare")
        _import_onnx(model_file, static_at_lower_bound(resolved), dtype_option, lambda _line: None, framework=framework)
        raise refusal(err, resolved, "import") from err
    try:
        _check_legalizes(mod)
    except RuntimeError as err:
        static = _import_onnx(model_file, static_at_lower_bound(resolved), dtype_option, lambda _line: None,
                              framework=framework)
        try:
            _check_legalizes(static.mod)
        except RuntimeError:
            pass  # not the ranges' doing: the build says what it says
        else:
            raise refusal(err, resolved, "legalization") from err
    check_extents(mod, bounds, resolved)
    return with_bounds(mod, bounds)


def _check_legalizes(mod) -> None:
    """Raise where an operator of ``mod`` does not legalize with its symbolic shapes: an op the
    CPU pipeline leaves as a Relax call on tensors, which the VM cannot run (a ``relax.arange``
    whose end is a symbolic size, for one)."""
    import tvm
    from tvm import relax

    legalized = relax.transform.LegalizeOps()(relax.transform.DecomposeOpsForInference()(mod))
    left = set()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name not in _VM_OPS \
                and not expr.op.name.startswith(_VM_OP_PREFIXES):
            if any(isinstance(getattr(arg, "ty", None), relax.TensorType) for arg in [expr, *expr.args]):
                left.add(expr.op.name)

    for _, func in legalized.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    if left:
        raise RuntimeError(f"operators not legalized with symbolic shapes: {', '.join(sorted(left))}")


#: Relax operators the VM runs as they are after legalization
_VM_OPS = frozenset({
    "relax.call_tir", "relax.call_tir_inplace", "relax.call_tir_with_grad", "relax.call_pure_packed",
    "relax.call_dps_packed", "relax.call_inplace_packed", "relax.shape_of", "relax.null_value",
    "relax.print", "relax.assert_op", "relax.hint_on_device", "relax.to_vdevice", "relax.tensor_to_shape",
    "relax.shape_to_tensor", "relax.invoke_closure", "relax.invoke_pure_closure", "relax.make_closure",
    "relax.call_builtin_with_ctx",
})
_VM_OP_PREFIXES = ("relax.builtin.", "relax.memory.", "relax.vm.")


def _check_references(graph, model_file: Path) -> None:
    """A node input or graph output that nothing defines (no graph input, initializer or node
    output) is a broken graph: ModelArchiveError naming it, where TVM would fail with a bare
    ``KeyError`` or read the name as a missing attribute. ``""`` is an omitted optional input;
    names inside subgraphs (If/Loop bodies may read outer names) are not checked."""
    defined = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    defined |= {name for node in graph.node for name in node.output}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in defined:
                label = f"{node.name!r}" if node.name else f"#{index}"
                raise ModelArchiveError(
                    f"{model_file.name} is not a valid ONNX model: node {label} ({node.op_type}) reads {name!r}, "
                    "which no graph input, initializer or node defines"
                )
    for value in graph.output:
        if value.name not in defined:
            raise ModelArchiveError(
                f"{model_file.name} is not a valid ONNX model: graph output {value.name!r} is not defined by any "
                "graph input, initializer or node"
            )


def _from_onnx(model, shapes: dict, dtypes: dict):
    from tvm.relax.frontend.onnx import from_onnx

    with quiet():
        return from_onnx(model, shape_dict=shapes, dtype_dict=dtypes)


def _normalize_onnx(model, model_file: Path, shapes: dict, log: Log) -> tuple[Any, dict]:
    """The graph normalized for ``shapes`` (:mod:`~airflow_neo.local.onnx_normalize`) and what was done.

    Raises only the import layer's own verdicts (:class:`LocalCompilationError`, e.g. an LSTM
    attribute its rewrite cannot express, where TVM would only say "LSTM not supported"); any
    other failure is logged and the graph is imported as given.
    """
    import onnx

    from airflow_neo.local.onnx_normalize import normalize

    try:
        with quiet():
            report = normalize(model, shapes)
    except LocalCompilationError:
        raise
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
    return import_torchscript(model_file, data_input, dtype_option, log, import_onnx=_import_onnx)


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


def import_converted(source, dtype_option) -> Imported:
    """A framework without a TVM frontend (:mod:`airflow_neo.local.convert`): its converter writes
    an ONNX graph, which the ONNX importer takes with the job's DataInputConfig; the converter's
    versions join the artifact's. ``source`` is a :class:`~airflow_neo.local.convert.Source`."""
    from airflow_neo.local.convert import converter_for

    source.work.mkdir(parents=True, exist_ok=True)
    converted = converter_for(source.framework)(source)
    source.log(f"converted {source.framework} to ONNX: {converted.onnx_path.name} (inputs: {', '.join(converted.input_names)})")
    versions = {"converted_to": "onnx", **converted.versions}
    return _import_onnx(converted.onnx_path, source.data_input, dtype_option, source.log, framework=source.framework,
                        extra_versions=versions)


IMPORTERS = {
    "ONNX": _import_onnx,
    "TORCHSCRIPT": _import_torchscript,
    "PT2": import_pt2,
    "TFLITE": _import_tflite,
}
