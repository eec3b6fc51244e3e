"""ONNX normalization before import: static input shapes in, shape subgraphs folded into constants.

Exporters write the shape arithmetic of a model into its graph: ``Shape -> Gather -> Div -> Slice``
for ``chunk``, ``Shape -> ConstantOfShape -> Expand`` in the attention-mask code of transformers,
``Shape -> Sub -> Pad`` for "same" padding. TVM's importer cannot take all of that when computed at
run time; with the job's DataInputConfig every one of these values is known before the import.
:func:`normalize` writes the static input shapes into the graph, infers the other shapes with
onnx's shape inference, and folds every node whose value those shapes and the graph's constants
determine, evaluated with onnx's reference evaluator (numpy).

Invariants:

* it changes only ``model`` (in place; a caller that needs the original loads it again), and
  raises on anything it cannot handle (see the contract with the caller below);
* graph inputs and outputs keep their names, types and order; a dimension given as None stays
  as the model declares it (symbolic), so genuinely dynamic dimensions stay dynamic;
* a node is folded only if it is in the default ONNX domain, carries no subgraph, is
  deterministic, is not a quantize/dequantize node, and each input is a constant (a small
  initializer, a ``Constant``, a folded value) or it reads the shape (``Shape``, ``Size``) of a
  tensor whose shape is fully static; a value of more than :data:`MAX_FOLDED_ELEMENTS` elements is
  left to run time (the pass targets shape computations, not weights);
* shape arithmetic on the static dims of partly symbolic shapes (a DataInputConfig range): a
  ``Gather``/``Slice`` of a ``Shape`` that picks only static dims folds, and so does everything
  computed only from it (:mod:`airflow_neo.local.onnx_static_dims`); what reads a symbolic dim stays;
* a folded value becomes an initializer (a ``Constant`` node where it is a graph output) with the
  dtype shape inference gives it; nodes and initializers nothing reads any more are removed;
* numerics: shape arithmetic is integer and exact; a folded float value is numpy's result for the
  same op;
* operators TVM's importer lacks (LSTM/GRU/RNN, onnxruntime's quantized operators) are rewritten
  by :func:`airflow_neo.local.onnx_ops.expand` after folding, with the shapes folding leaves; the
  rewrite runs even where folding failed (the failure is recorded in ``folding_skipped``), since a
  model that needs it cannot be imported without it;
* contract with the caller: an :class:`~airflow_neo.local.errors.LocalCompilationError` (an
  operator attribute the rewrite cannot express) is the job's answer and must propagate; any other
  exception only means "import the graph as given".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_neo.local import onnx_ops, onnx_static_dims

__all__ = ["MAX_FOLDED_ELEMENTS", "NormalizeReport", "normalize"]

#: The largest value (elements) the pass folds; shape tensors and small masks are far below it.
MAX_FOLDED_ELEMENTS = 1 << 16
#: Shape inference and folding repeat until nothing more folds, at most this many times.
MAX_PASSES = 64  # one pass per block on chains like Swin's (each window's pads read the previous block's shape)
#: Ops never folded: random or quantizing (a quantized model's weights stay quantized).
NEVER_FOLD = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
})
SHAPE_READS = frozenset({"Shape", "Size"})
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class NormalizeReport:
    """What :func:`normalize` did; :meth:`summary` is the job-log line, :meth:`as_metadata` the artifact's."""

    nodes_before: int
    nodes_after: int
    folded: int
    shape_reads: int
    passes: int
    seconds: float
    tool: str
    #: {op type: nodes rewritten by :mod:`airflow_neo.local.onnx_ops`}, and the nodes that replaced them.
    expanded: dict = field(default_factory=dict)
    expanded_nodes: int = 0
    #: Why constant folding stopped early ("ExceptionType: message"), None when it ran to the end.
    folding_skipped: str | None = None

    def summary(self) -> str:
        text = (
            f"onnx normalized for the input shapes: {self.nodes_before} -> {self.nodes_after} nodes, {self.folded} "
            f"folded into constants ({self.shape_reads} shape reads), {self.seconds:.2f} s ({self.tool})"
        )
        if self.expanded:
            ops = ", ".join(f"{op} x{count}" for op, count in sorted(self.expanded.items()))
            text += f"; operators rewritten for TVM: {ops} -> {self.expanded_nodes} nodes"
        if self.folding_skipped:
            text += f"; constant folding stopped: {self.folding_skipped}"
        return text

    def as_metadata(self) -> dict:
        return asdict(self)


def normalize(model, input_shapes: dict[str, list[int | None]]) -> NormalizeReport:
    """Normalize ``model`` (an ``onnx.ModelProto``) in place for ``input_shapes`` ({input name: dims})."""
    import onnx

    started = time.monotonic()
    graph = model.graph
    nodes_before = len(graph.node)
    _set_input_shapes(graph, input_shapes)
    opset = _default_opset(model)
    folded = shape_reads = passes = 0
    folding_skipped = None
    try:
        for passes in range(1, MAX_PASSES + 1):
            symbolic: dict = {}
            inferred, initializers = _inferred_values(model, symbolic)
            shapes, types = _static_shapes_and_types(inferred, initializers)
            partial = onnx_static_dims.merge(onnx_static_dims.partial_shapes(inferred), symbolic)
            count, reads = _fold_pass(graph, shapes, types, opset, partial)
            folded, shape_reads = folded + count, shape_reads + reads
            if not count:
                break
    except Exception as err:  # noqa: BLE001 - folding is optional; the rewrites below are not
        if not onnx_ops.needs_expansion(model):
            raise
        folding_skipped = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    expansion = onnx_ops.expand(model, *_infer_or_declared(model)) if onnx_ops.needs_expansion(model) else onnx_ops.ExpansionReport()
    _remove_dead(graph)
    tool = f"onnx {onnx.__version__} shape inference + airflow-neo constant folding"
    return NormalizeReport(
        nodes_before, len(graph.node), folded, shape_reads, passes, round(time.monotonic() - started, 3), tool,
        dict(expansion.rewritten), expansion.nodes_added, folding_skipped,
    )


# --------------------------------------------------------------------------------------------
# shapes


def _set_input_shapes(graph, input_shapes: dict[str, list[int | None]]) -> None:
    for value in graph.input:
        dims = input_shapes.get(value.name)
        if dims is None:
            continue
        shape = value.type.tensor_type.shape
        if len(shape.dim) != len(dims):
            shape.ClearField("dim")
            for _ in dims:
                shape.dim.add()
        for dim, size in zip(shape.dim, dims):
            if size is not None:
                dim.Clear()
                dim.dim_value = int(size)


def _default_opset(model) -> int:
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    raise ValueError("the model imports no default-domain opset")


def _infer(model) -> tuple[dict[str, list[int] | None], dict[str, int]]:
    """Static shapes ({name: dims}, None where any dim is unknown) and element types of every value."""
    return _static_shapes_and_types(*_inferred_values(model))


def _inferred_values(model, symbolic: dict | None = None) -> tuple[list, Any]:
    """The value infos shape inference gives every value, and the model's initializers; where the
    graph has symbolic input dims, ``symbolic`` gets the static dims a symbolic shape inference finds
    (:func:`airflow_neo.local.onnx_static_dims.symbolic_static_dims`).

    Inference runs on a light copy: large initializers become typed graph inputs, so a big model
    neither gets copied whole nor hits protobuf's 2 GB limit; the copy has no ``value_info`` and no
    output shapes, so shapes declared at export time (for other input shapes) cannot leak in.
    """
    import onnx

    light = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "domain", "model_version"):
        setattr(light, field, getattr(model, field))
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    for value in model.graph.output:  # declared shapes may be stale (traced at export): inferred anew
        output = graph.output.add()
        output.CopyFrom(value)
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    declared = {value.name for value in model.graph.input}
    for init in model.graph.initializer:
        if _elements(init.dims) <= MAX_FOLDED_ELEMENTS and not init.external_data:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    light.ir_version = max(light.ir_version, 4)  # graph inputs need not list initializers
    inferred = onnx.shape_inference.infer_shapes(light, data_prop=True).graph
    values = [*inferred.input, *inferred.value_info, *inferred.output]
    if symbolic is not None and any(dim is None for dims in onnx_static_dims.partial_shapes(model.graph.input).values() for dim in dims):
        symbolic.update(onnx_static_dims.symbolic_static_dims(light))
    return values, model.graph.initializer


def _static_shapes_and_types(values, initializers) -> tuple[dict, dict]:
    """``({name: static shape}, {name: ONNX elem type})`` of tensor ``values`` and ``initializers``."""
    shapes: dict[str, list[int] | None] = {}
    types: dict[str, int] = {}
    for value in values:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            continue
        if tensor.elem_type:
            types[value.name] = tensor.elem_type
        if tensor.HasField("shape") and all(dim.HasField("dim_value") for dim in tensor.shape.dim):
            shapes[value.name] = [int(dim.dim_value) for dim in tensor.shape.dim]
    for init in initializers:
        shapes[init.name], types[init.name] = [int(d) for d in init.dims], init.data_type
    return shapes, types


def _infer_or_declared(model) -> tuple[dict, dict]:
    """:func:`_infer`'s shapes and types, or where inference fails those the graph declares."""
    try:
        return _infer(model)
    except Exception:  # noqa: BLE001 - the rewrites say what they miss
        return _static_shapes_and_types([*model.graph.input, *model.graph.value_info], model.graph.initializer)


def _elements(dims) -> int:
    count = 1
    for dim in dims:
        count *= int(dim)
    return count


# --------------------------------------------------------------------------------------------
# folding


def _constants(graph) -> dict[str, Any]:
    from onnx import numpy_helper

    values = {}
    for init in graph.initializer:
        if _elements(init.dims) <= MAX_FOLDED_ELEMENTS and not init.external_data:
            values[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and len(node.output) == 1:
            value = _constant_value(node)
            if value is not None and value.size <= MAX_FOLDED_ELEMENTS:
                values[node.output[0]] = value
    return values


def _constant_value(node):
    import numpy as np
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
            value = helper.get_attribute_value(attr)
            return np.asarray(value, dtype=np.float32 if "float" in attr.name else np.int64)
    return None  # sparse or string constants are left alone


def _fold_pass(graph, shapes: dict, types: dict, opset: int, partial: dict | None = None) -> tuple[int, int]:
    """Fold what can be folded now; return (nodes folded, of which shape reads).

    ``partial`` ({name: dims, None where not static}) lets selections of the static dims of partly
    symbolic shapes fold (:mod:`airflow_neo.local.onnx_static_dims`)."""
    values = _constants(graph)
    vectors: dict[str, list] = {}  # shape vectors of partly symbolic shapes, in graph order
    graph_outputs = {value.name for value in graph.output}
    kept, folded, reads = [], 0, 0
    new_initializers, constant_nodes = [], []
    for node in graph.node:
        result = None if node.op_type == "Constant" else _fold_node(node, values, shapes, types, opset)
        if result is None and partial is not None and node.domain in DEFAULT_DOMAINS:
            result = onnx_static_dims.fold(node, vectors, values, partial, types, opset)
            reads += result is not None
        if result is None:
            kept.append(node)
            continue
        folded += 1
        reads += node.op_type in SHAPE_READS
        for name, value in zip(node.output, result):
            values[name] = value
            if name in graph_outputs:
                constant_nodes.append(_constant_node(name, value))
            else:
                new_initializers.append(_tensor(name, value))
    if folded:
        del graph.node[:]
        graph.node.extend(constant_nodes + kept)
        graph.initializer.extend(new_initializers)
    return folded, reads


def _fold_node(node, values: dict, shapes: dict, types: dict, opset: int):
    """The node's output values (a list of arrays), or None where it cannot or should not fold."""
    import numpy as np

    if node.domain not in DEFAULT_DOMAINS or node.op_type in NEVER_FOLD or not all(node.output):
        return None  # an omitted optional output ("") is left alone too
    if any(attr.type in (5, 10) for attr in node.attribute):  # GRAPH, GRAPHS: If, Loop, Scan
        return None
    if node.op_type in SHAPE_READS:
        dims = shapes.get(node.input[0])
        if dims is None:
            return None
        if node.op_type == "Size":
            return [np.asarray(_elements(dims), dtype=np.int64)]
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        return [np.asarray(dims[slice(start, end)], dtype=np.int64)]
    if any(name and name not in values for name in node.input):
        return None
    for name in node.output:
        dims = shapes.get(name)
        if dims is not None and _elements(dims) > MAX_FOLDED_ELEMENTS:
            return None
    try:
        outputs = _evaluate(node, values, opset)
    except Exception:  # noqa: BLE001 - an op the reference evaluator cannot run stays a node
        return None
    result = []
    for name, value in zip(node.output, outputs):
        value = np.asarray(value)
        if value.size > MAX_FOLDED_ELEMENTS or (name in types and _np_type(types[name]) != value.dtype):
            return None
        result.append(value)
    return result if len(result) == len(node.output) else None


def _evaluate(node, values: dict, opset: int) -> list:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(node, opsets={"": opset})
    return evaluator.run(None, {name: values[name] for name in node.input if name})


def _attr(node, name: str, default):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _np_type(elem_type: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(elem_type)


def _tensor(name: str, value):
    from onnx import numpy_helper

    return numpy_helper.from_array(value, name)


def _constant_node(name: str, value):
    from onnx import helper

    return helper.make_node("Constant", [], [name], name=f"{name}_folded", value=_tensor(f"{name}_value", value))


# --------------------------------------------------------------------------------------------
# dead code


def _used_names(graph) -> set[str]:
    """Every value name a node reads, subgraph bodies (outer-scope references) included."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == 5 else list(attr.graphs) if attr.type == 10 else []):
                used |= _used_names(sub)
                used.update(value.name for value in sub.output)
    return used


def _remove_dead(graph) -> None:
    """Drop nodes none of whose outputs is read or a graph output, then unread initializers."""
    outputs = {value.name for value in graph.output}
    while True:
        used = _used_names(graph) | outputs
        live = [node for node in graph.node if any(name in used for name in node.output if name)]
        if len(live) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(live)
    used = _used_names(graph) | outputs
    inputs = {value.name for value in graph.input}
    keep = used | inputs
    for index in reversed(range(len(graph.initializer))):  # in place: no copy of the weights
        if graph.initializer[index].name not in keep:
            del graph.initializer[index]
    names = used | {init.name for init in graph.initializer}
    info = [value for value in graph.value_info if value.name in names]
    del graph.value_info[:]
    graph.value_info.extend(info)
