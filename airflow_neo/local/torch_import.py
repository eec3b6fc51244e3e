"""The PyTorch frontends: TorchScript (``.pt``/``.pth``) and ``torch.export`` programs (``.pt2``).

TorchScript is imported by the first of these routes that works (:data:`TORCHSCRIPT_ROUTES`):

1. ``onnx-legacy``: ``torch.onnx.export(..., dynamo=False)`` then the ONNX importer (with its
   normalization);
2. ``exported-program``: ``torch._export.converter.TS2EPConverter`` turns the TorchScript graph into
   a ``torch.export`` program, which is imported like a ``.pt2`` (below). This takes what the legacy
   exporter cannot: fused eval fast paths recorded by a trace (``_native_multi_head_attention``,
   ``_transformer_encoder_layer_fwd``) and newer ATen ops (``aten::diff``).

A ``torch.export`` program is imported as given (``exported-program``), else after
:func:`~airflow_neo.local.torch_rewrites.rewrite_program` (``exported-program-rewritten``).
Each failed route's failure is put in SageMaker Neo's form (:func:`route_failure`: an operator the
legacy ONNX exporter lacks is OperatorNotImplemented; anything else goes through
:func:`~airflow_neo.local.failures.translate`, which names the node where TVM's importer failed) and
logged; ``versions["torch_route"]`` names the route that worked and ``versions["torch_routes_failed"]``
the ones before it. When every route fails, the error is the most informative route's failure (a
ClientError class over a ServerError, a named node over none), in its class, followed by every
route's failure.

Before ``torch.jit.load`` torchvision is imported when installed, so that its operators
(``torchvision::nms``, ``roi_align``, ...) are registered; where its C++ library does not load, the
operators' schemas are defined so that models load (:func:`register_torchvision_ops`). A model
using an operator that no installed package defines fails with
:class:`~airflow_neo.local.errors.UnsupportedOperatorsError` naming the operator and its package.

Invariants: an importer returns every model input with a static shape and a dtype, or raises a
:class:`~airflow_neo.local.errors.LocalCompilationError` subclass; torch, torchvision and TVM are
imported inside the functions only; this module imports no other frontend module but
:mod:`~airflow_neo.local.frontend_common` (the ONNX importer is passed in).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, NamedTuple

from airflow_neo.local.errors import (
    CLIENT_ERROR,
    CompilationError,
    LocalCompilationError,
    ModelArchiveError,
    ModelInputError,
    UnsupportedOperatorsError,
    failure_reason,
)
from airflow_neo.local.flexible_shapes import dynamic_axes, example_shape, flexible_spec, parse_dims, shape_entries
from airflow_neo.local.frontend_common import Imported, InputSpec, Log, dtype_for, first_line, flatten, match_inputs, quiet

__all__ = ["ONNX_EXPORT_OPSET", "TORCHSCRIPT_ROUTES", "import_pt2", "import_torchscript", "register_torchvision_ops"]

ONNX_EXPORT_OPSET = 17
TORCHSCRIPT_ROUTES = ("onnx-legacy", "exported-program")

#: Packages that define TorchScript operator namespaces (their namespace is their module name).
OP_PACKAGES = ("torchvision", "torchaudio", "torchtext")

#: torchvision's operator schemas (torchvision/csrc/ops/*.cpp), defined when its C++ library does not
#: load, so that TorchScript files calling them load and torchvision's Python code imports.
TORCHVISION_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
                 "int sampling_ratio, bool aligned) -> Tensor",
    "roi_pool": "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
                "-> (Tensor, Tensor)",
    "ps_roi_align": "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
                    "int sampling_ratio) -> (Tensor, Tensor)",
    "ps_roi_pool": "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
                   "-> (Tensor, Tensor)",
    "deform_conv2d": "(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
                     "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
                     "SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "box_iou_rotated": "(Tensor boxes1, Tensor boxes2) -> Tensor",
}

_UNKNOWN_OP = re.compile(r"Unknown builtin op: ([A-Za-z_][\w]*)::(\w+)")
_NO_KERNEL = re.compile(r"Could not run '([A-Za-z_][\w]*)::(\w+)' with arguments from the '(\w+)' backend")
_TORCHVISION_NO_OPS = "Couldn't load custom C++ ops"
_NO_ONNX_SYMBOLIC = re.compile(r"Exporting the operator '?([\w:.]+)'? to ONNX opset version (\d+) is not supported")

ImportOnnx = Callable[..., Imported]

_torchvision_state: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------
# operator libraries


def register_torchvision_ops() -> str | None:
    """Import torchvision (when installed) so its TorchScript operators are registered.

    Returns None without torchvision, else its version, with ``" (operator schemas only: ...)"``
    when its C++ library did not load and the schemas of :data:`TORCHVISION_SCHEMAS` were defined
    instead (the models then load and export, but cannot run these operators). Idempotent.
    """
    if "status" in _torchvision_state:
        return _torchvision_state["status"]
    if importlib.util.find_spec("torchvision") is None:
        _torchvision_state["status"] = None
        return None
    import torch

    reason = None
    try:
        import torchvision
    except (RuntimeError, OSError, ImportError) as err:  # a C++ library built for another torch
        reason = first_line(err)
        _define_missing_schemas(torch)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import torchvision
    if not torchvision.extension._has_ops():
        reason = reason or "torchvision's C++ library did not load"
        _define_missing_schemas(torch)
    status = torchvision.__version__ + (f" (operator schemas only: {reason})" if reason else "")
    _torchvision_state["status"] = status
    return status


def _define_missing_schemas(torch) -> list[str]:
    defined = []
    for name, schema in TORCHVISION_SCHEMAS.items():
        if not _op_exists(torch, "torchvision", name):
            torch.library.define(f"torchvision::{name}", schema)
            defined.append(name)
    return defined


def _op_exists(torch, namespace: str, name: str) -> bool:
    try:
        getattr(getattr(torch.ops, namespace), name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _package_for(namespace: str) -> str:
    if namespace in OP_PACKAGES:
        return f"the {namespace} package"
    return f"the package that defines the {namespace!r} operator namespace"


def _graph_operators(module, namespace: str) -> list[str]:
    """The operators of ``namespace`` that ``module``'s code calls (its inlined graph, blocks included)."""
    found: set[str] = set()

    def walk(block) -> None:
        for node in block.nodes():
            if node.kind().startswith(f"{namespace}::"):
                found.add(node.kind())
            for inner in node.blocks():
                walk(inner)

    try:
        walk(module.inlined_graph)
    except (AttributeError, RuntimeError):  # pragma: no cover - a module without a graph
        return []
    return sorted(found)


def _missing_operator_error(model_file: Path, err: Exception, module=None) -> UnsupportedOperatorsError | None:
    """An UnsupportedOperatorsError naming the operator (and package) behind ``err``, if it is one."""
    text = str(err)
    unknown = _UNKNOWN_OP.search(text)
    if unknown:
        namespace, name = unknown.groups()
        installed = namespace in OP_PACKAGES and importlib.util.find_spec(namespace) is not None
        hint = ("it is installed but did not register this operator (a version without it?)" if installed
                else "install it on the compile worker")
        return UnsupportedOperatorsError(
            f"{model_file.name} uses the TorchScript operator {namespace}::{name}, which is not registered in this "
            f"worker's torch; it is defined by {_package_for(namespace)}: {hint}", [f"{namespace}::{name}"]
        )
    no_kernel = _NO_KERNEL.search(text)
    if no_kernel or _TORCHVISION_NO_OPS in text:
        namespace, name, backend = no_kernel.groups() if no_kernel else ("torchvision", None, "CPU")
        operators = [f"{namespace}::{name}"] if name else _graph_operators(module, namespace) or [f"{namespace}::*"]
        return UnsupportedOperatorsError(
            f"{model_file.name} calls {', '.join(operators)}, which {'has' if len(operators) == 1 else 'have'} no "
            f"{backend} kernel on this worker: {_package_for(namespace)} is installed without its C++ library "
            "(a build for another torch or CUDA); install the build that matches the installed torch", operators
        )
    return None


# --------------------------------------------------------------------------------------------
# TorchScript


def import_torchscript(model_file: Path, data_input, dtype_option, log: Log, *, import_onnx: ImportOnnx) -> Imported:
    """Import TorchScript by the first route of :data:`TORCHSCRIPT_ROUTES` that works."""
    import torch

    module = _load_torchscript(torch, model_file, log)
    if module is None:
        return import_pt2(model_file, data_input, dtype_option, log)
    specs = _torchscript_inputs(module, data_input, dtype_option)
    examples = tuple(_example_tensor(torch, spec) for spec in specs)
    n_outputs = _run_example(torch, module, model_file, specs, examples)
    output_names = [f"output{i}" for i in range(n_outputs)]
    failed: list[dict] = []
    routes = {
        "onnx-legacy": lambda: _via_onnx_legacy(torch, module, model_file, specs, examples, output_names, log, import_onnx),
        "exported-program": lambda: _via_exported_program(torch, module, specs, examples, output_names, log),
    }
    errors: list[RouteFailure] = []
    for route in TORCHSCRIPT_ROUTES:
        try:
            imported = routes[route]()
        except LocalCompilationError:
            raise
        except Exception as err:  # noqa: BLE001 - a route that fails hands over to the next
            failure = route_failure(route, err)
            errors.append(failure)
            failed.append({"route": route, "error": _clip(failure.reason)})
            log(f"TorchScript import route {route} failed ({failure.reason})" + _next_route_text(route))
            continue
        versions = imported.framework_versions
        versions["torch_route"] = versions.get("torch_route", route)
        versions["torch_routes_failed"] = failed + versions.get("torch_routes_failed", [])
        versions.update(_torch_versions(torch))
        log(f"TorchScript imported by route {versions['torch_route']}")
        return imported
    raise _all_routes_failed(errors)


def _torch_versions(torch) -> dict:
    versions = {"torch": torch.__version__}
    if _torchvision_state.get("status"):
        versions["torchvision"] = _torchvision_state["status"]
    return versions


def _next_route_text(route: str) -> str:
    index = TORCHSCRIPT_ROUTES.index(route)
    return f"; trying {TORCHSCRIPT_ROUTES[index + 1]}" if index + 1 < len(TORCHSCRIPT_ROUTES) else ""


def _short(err: Exception, limit: int = 300) -> str:
    return f"{type(err).__name__}: {first_line(err)[:limit]}"


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RouteFailure(NamedTuple):
    """One import route's failure: our error (in Neo's class) and whether it names a graph node."""

    route: str
    error: LocalCompilationError
    at_node: bool

    @property
    def reason(self) -> str:
        return failure_reason(self.error)

    def rank(self, index: int) -> tuple:
        """How informative the failure is: a ClientError with a Neo class over a ServerError, one at
        a node over one that names none, then the earlier route (``index``)."""
        return (self.error.kind == CLIENT_ERROR and self.error.neo_class is not None, self.at_node, -index)


def route_failure(route: str, err: Exception) -> RouteFailure:
    """A route's failure as our error in Neo's classes: an operator the legacy ONNX exporter has no
    symbolic for is OperatorNotImplemented; anything else is
    :func:`~airflow_neo.local.failures.translate` (the node where TVM's importer failed, named with
    its op and shapes). The error's traceback is kept, the locals of its frames are freed."""
    from airflow_neo.local.diagnose import locate
    from airflow_neo.local.failures import translate

    diagnosis = locate(err)
    match = _NO_ONNX_SYMBOLIC.search(str(err))
    if match:
        operator, opset = match.groups()
        error: LocalCompilationError = UnsupportedOperatorsError(
            f"the legacy ONNX exporter (opset {opset}) cannot export the TorchScript operator {operator}", [operator]
        )
    else:
        error = translate(err, "import")
    error.__cause__ = err
    at_node = diagnosis is not None and bool(diagnosis.nodes) and not match
    traceback.clear_frames(err.__traceback__)
    return RouteFailure(route, error, at_node)


def _all_routes_failed(errors: list[RouteFailure]) -> LocalCompilationError:
    """The most informative route's failure (:meth:`RouteFailure.rank`) in its Neo class, then
    every route's failure."""
    if not errors:
        return CompilationError("the TorchScript model could not be imported: no import route was tried")
    best_index = max(range(len(errors)), key=lambda i: errors[i].rank(i))
    best = errors[best_index].error
    routes = "; ".join(
        f"{item.route}: " + ("the failure stated first" if i == best_index
                             else _clip(f"{item.error.neo_class or item.error.kind}: {item.error}", 250))
        for i, item in enumerate(errors)
    )
    message = f"{best} (the TorchScript model could not be imported by any route: {routes})"
    if isinstance(best, UnsupportedOperatorsError):
        final: LocalCompilationError = type(best)(message, best.operators)
    else:
        final = type(best)(message, kind=best.kind, neo_class=best.neo_class)
    final.__cause__ = best.__cause__
    return final


def _load_torchscript(torch, model_file: Path, log: Log):
    """The loaded TorchScript module, or None when the file is a torch.export program."""
    status = register_torchvision_ops()
    if status and "schemas only" in status:
        log(f"torchvision {status}")
    try:
        module = torch.jit.load(str(model_file), map_location="cpu")
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, pickle errors, ...
        missing = _missing_operator_error(model_file, err)
        if missing is not None:
            raise missing from err
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
        return None
    module.eval()
    return module


def _torchscript_inputs(module, data_input, dtype_option) -> list[InputSpec]:
    """DataInputConfig matched with forward()'s arguments (by name, else in order: input0, ...)."""
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
        dims = parse_dims(name, shape)
        if dims is not None:  # a range: the ONNX export keeps that dim dynamic (flexible_shapes)
            specs.append(flexible_spec(InputSpec(name, None, None), dims, "PYTORCH", True))
            specs[-1].dtype = dtype_for(name, None, dtype_option)
            continue
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ModelInputError(f"DataInputConfig shape for {name!r} must be a list of positive integers; got {shape!r}")
        specs.append(InputSpec(name, list(shape), dtype_for(name, None, dtype_option)))
    return specs


def _run_example(torch, module, model_file: Path, specs: list[InputSpec], examples: tuple) -> int:
    """Run the module once on example inputs; the number of output tensors."""
    arg_names = [arg.name for arg in module.forward.schema.arguments if arg.name != "self"]
    with torch.no_grad():
        try:
            result = module(*examples)
        except Exception as err:  # noqa: BLE001 - a missing kernel, else the shapes do not fit
            missing = _missing_operator_error(model_file, err, module)
            if missing is not None:
                raise missing from err
            raise ModelInputError(
                f"running the TorchScript model with DataInputConfig inputs "
                f"({'; '.join(spec.describe() for spec in specs)}) failed, so the shapes (rank, sizes) or dtypes do not "
                f"fit forward({', '.join(arg_names)}): {type(err).__name__}: {first_line(err)}"
            ) from err
    return len(flatten(result))


def _via_onnx_legacy(torch, module, model_file: Path, specs, examples, output_names, log: Log,
                     import_onnx: ImportOnnx) -> Imported:
    buffer = io.BytesIO()
    with quiet(), torch.no_grad(), _stdio_to(model_file.with_suffix(".onnx-export.log")):
        torch.onnx.export(
            module,
            examples,
            buffer,
            input_names=[spec.name for spec in specs],
            output_names=output_names,
            opset_version=ONNX_EXPORT_OPSET,
            dynamo=False,
            dynamic_axes=dynamic_axes(specs) or None,
        )
    onnx_file = model_file.with_suffix(".from-torchscript.onnx")
    onnx_file.write_bytes(buffer.getvalue())
    log(f"TorchScript exported to ONNX (opset {ONNX_EXPORT_OPSET}, {len(buffer.getvalue())} bytes)")
    shapes = {spec.name: shape_entries(spec) for spec in specs}
    dtypes = {spec.name: spec.dtype for spec in specs}
    return import_onnx(onnx_file, shapes, dtypes, log, framework="PYTORCH")


@contextlib.contextmanager
def _stdio_to(path: Path):
    """Send file descriptors 1 and 2 to ``path`` meanwhile: the legacy exporter's C++ log writes the
    whole TorchScript graph to stdout when an export fails, which would flood the job log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _via_exported_program(torch, module, specs, examples, output_names, log: Log) -> Imported:
    from torch._export.converter import TS2EPConverter

    if dynamic_axes(specs):
        raise RuntimeError("DataInputConfig ranges compile through the onnx-legacy route only")
    with quiet():
        program = TS2EPConverter(module, examples).convert()
        # The converter exports every dimension as dynamic (Dim.AUTO); the job's shapes are static.
        program = torch.export.export(program.module(), examples)
    log(f"TorchScript converted to a torch.export program ({sum(1 for _ in program.graph.nodes)} nodes)")
    mod, versions = _import_program(program, log)
    return Imported(mod, list(specs), output_names, versions)


def _example_tensor(torch, spec: InputSpec):
    dtype = getattr(torch, spec.dtype)
    shape = example_shape(spec)
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=torch.float32).to(dtype)
    if dtype == torch.bool:
        return torch.zeros(shape, dtype=torch.bool)
    return torch.zeros(shape, dtype=dtype)


# --------------------------------------------------------------------------------------------
# torch.export programs


def import_pt2(model_file: Path, data_input, dtype_option, log: Log) -> Imported:
    """Import a ``torch.export`` program (``torch.export.save``)."""
    import torch

    register_torchvision_ops()
    try:
        program = torch.export.load(str(model_file))
    except Exception as err:  # noqa: BLE001
        missing = _missing_operator_error(model_file, err)
        if missing is not None:
            raise missing from err
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
    mod, versions = _import_program(program, log)
    versions.update(_torch_versions(torch))
    output_names = list(program.graph_signature.user_outputs)
    return Imported(mod, resolved, output_names, versions)


def _import_program(program, log: Log) -> tuple[Any, dict]:
    """TVM's import of ``program`` as given, else after :func:`rewrite_program`; (module, versions)."""
    from tvm.relax.frontend.torch import from_exported_program

    from airflow_neo.local.torch_rewrites import rewrite_program

    try:
        with quiet():
            return from_exported_program(program, unwrap_unit_return_tuple=True), {"torch_route": "exported-program"}
    except Exception as err:  # noqa: BLE001 - the rewritten program may import; else this error says most
        first = err
    log(f"importing the torch.export program failed ({_short(first)}); rewriting it (fast-path decompositions, "
        "empty cat inputs) and importing again")
    try:
        with quiet():
            rewritten, done = rewrite_program(program)
            mod = from_exported_program(rewritten, unwrap_unit_return_tuple=True, run_ep_decomposition=False)
    except Exception as err:  # noqa: BLE001
        log(f"importing the rewritten torch.export program failed too ({_short(err)})")
        raise first from None
    log(f"rewritten torch.export program imported: {done}")
    failed = [{"route": "exported-program", "error": _clip(route_failure("exported-program", first).reason)}]
    return mod, {"torch_route": "exported-program-rewritten", "torch_rewrites": done, "torch_routes_failed": failed}
