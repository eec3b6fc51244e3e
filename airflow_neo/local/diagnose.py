"""Which graph node a TVM frontend failure happened at, and which of Neo's classes it falls in.

:func:`locate` reads the traceback of an exception raised inside TVM's importers: no TVM code is
patched and nothing is re-run. The frames it reads (checked against TVM 0.27's source):

* ONNX (``tvm.relax.frontend.onnx.onnx_frontend``): ``ONNXGraphImporter._construct_nodes`` and
  ``_convert_subgraph`` loop over the graph's nodes with the current ``node`` (an ONNX NodeProto)
  and its converted ``inputs`` (Relax expressions, typed) as locals; ``_check_for_unsupported_ops``
  holds ``graph`` and the ``unsupported_ops`` it found before converting anything.
* PyTorch (``tvm.relax.frontend.torch``): ``_translate_fx_graph`` and every converter hold the
  current fx ``node`` (its inputs' FakeTensors are in ``meta["val"]``);
  ``_check_unsupported_func_type`` holds ``nodes`` and ``missing_func_types``.

The innermost such frame wins (a subgraph's node over the ``If`` that holds it). When TVM renames
those frames or locals, :func:`locate` returns None and messages lose the node, nothing else.

:func:`classify` maps a failure onto Neo's classes with :data:`RULES`, a table checked in order;
the first rule that matches wins. Nothing here imports TVM at module level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from airflow_neo.local.errors import (
    CLIENT_ERROR,
    OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED,
    OPERATOR_ATTRIBUTE_REQUIRED,
    OPERATOR_ATTRIBUTE_VALUE_NOT_VALID,
    OPERATOR_NOT_IMPLEMENTED,
    SERVER_ERROR,
)

__all__ = ["DATA_DEPENDENT_OPS", "RULES", "Diagnosis", "NodeContext", "classify", "locate"]

_ONNX_MODULE = "tvm.relax.frontend.onnx"
_TORCH_MODULE = "tvm.relax.frontend.torch"
_ONNX_LOOPS = ("_construct_nodes", "_convert_subgraph")
_MAX_ITEMS = 8
_MAX_VALUE = 60
_MAX_NODES_PER_OP = 3


@dataclass(frozen=True)
class NodeContext:
    """One graph node: its name, op type, inputs (name, what was seen) and attributes (name, value)."""

    name: str
    op_type: str
    inputs: tuple[tuple[str, str], ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    position: int | None = None
    output: str | None = None
    module: str | None = None
    #: upstream nodes whose output size the data decides (NonZero, NonMaxSuppression, ...): ``(name, op)``
    data_dependent: tuple[tuple[str, str], ...] = ()

    def label(self) -> str:
        """``node 'name'``; an unnamed node by its position and first output."""
        if self.name:
            return f"node {self.name!r}"
        where = f" #{self.position}" if self.position is not None else ""
        return f"unnamed node{where}" + (f" (output {self.output!r})" if self.output else "")

    def details(self, *, with_op: bool = True) -> str:
        """``Op; inputs: x float32[1,3,4,4], pads int64[8]; attributes: mode='symmetric'``."""
        parts = [self.op_type] if with_op else []
        if self.module:
            parts.append(f"in {self.module}")
        if self.inputs:
            parts.append("inputs: " + _join(f"{name} {seen}".strip() for name, seen in self.inputs))
        if self.attributes:
            parts.append("attributes: " + _join(f"{name}={value}" for name, value in self.attributes))
        return "; ".join(parts)

    def describe(self) -> str:
        """``node '/encoder/Expand' (Expand; inputs: ...)``."""
        return f"{self.label()} ({self.details()})"

    @property
    def attribute_names(self) -> set[str]:
        return {name for name, _ in self.attributes}


@dataclass(frozen=True)
class Diagnosis:
    """Where a frontend failure happened: ``nodes`` is the failing node (``stage`` ``convert``), or
    every node of the operators found unsupported before conversion (``stage`` ``check``)."""

    framework: str
    stage: str
    nodes: tuple[NodeContext, ...]
    unsupported: tuple[str, ...] = field(default=())

    @property
    def node(self) -> NodeContext | None:
        return self.nodes[0] if self.stage == "convert" and self.nodes else None


# --------------------------------------------------------------------------------------------
# locating the node


def locate(err: BaseException) -> Diagnosis | None:
    """The node ``err`` was raised at, read from its traceback; None when it came from elsewhere."""
    found = None
    for frame in _frames(err):
        module = frame.f_globals.get("__name__", "")
        try:
            if module.startswith(_ONNX_MODULE):
                found = _onnx_frame(frame) or found
            elif module.startswith(_TORCH_MODULE):
                found = _torch_frame(frame) or found
        except Exception:  # noqa: BLE001 - a description only: never hide the real error
            continue
    return found


def _frames(err: BaseException):
    tb = err.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _onnx_frame(frame) -> Diagnosis | None:
    local = frame.f_locals
    name = frame.f_code.co_name
    if name in _ONNX_LOOPS and "node" in local:
        node = local["node"]
        graph = local.get("graph")
        position = _position(graph, node)
        inputs = local.get("inputs")
        if inputs is None:  # the failure came before the inputs were gathered
            known = getattr(local.get("self"), "_nodes", {})
            inputs = [known.get(i) if i else None for i in node.input]
        context = _onnx_node(node, list(inputs), position)
        if graph is not None:
            context = replace(context, data_dependent=_data_dependent_sources(graph, node))
        return Diagnosis("onnx", "convert", (context,))
    if name == "_check_for_unsupported_ops" and "unsupported_ops" in local and local.get("graph") is not None:
        unsupported = tuple(sorted(local["unsupported_ops"]))
        graph = local["graph"]
        declared = {value.name: value for value in (*graph.input, *graph.value_info, *graph.output)}
        declared.update({value.name: value for value in graph.initializer})
        declared.update(_inferred_shapes(graph, getattr(local.get("self"), "opset", None), declared))
        nodes = []
        for position, node in enumerate(graph.node):
            if node.op_type in unsupported:
                seen = [_value_info_text(declared[i]) if i in declared else "" for i in node.input]
                nodes.append(_onnx_node(node, seen, position))
        return Diagnosis("onnx", "check", tuple(nodes), unsupported)
    return None


def _inferred_shapes(graph, opset: int | None, declared: dict) -> dict:
    """ONNX shape inference over the graph's structure (initializers as typed inputs, so no weight
    is copied): the value infos of the intermediate tensors; ``{}`` when inference fails."""
    from onnx import helper, shape_inference

    if not opset:
        return {}
    try:
        weights = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in graph.initializer]
        skeleton = helper.make_graph(list(graph.node), graph.name or "g", [*graph.input, *weights], list(graph.output))
        model = helper.make_model(skeleton, opset_imports=[helper.make_opsetid("", int(opset))])
        inferred = shape_inference.infer_shapes(model, strict_mode=False).graph.value_info
    except Exception:  # noqa: BLE001 - shapes are a description only
        return {}
    return {value.name: value for value in inferred if value.name not in declared}


#: ONNX operators whose output size depends on the values of their inputs, not only on shapes.
DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})


def _data_dependent_sources(graph, node) -> tuple[tuple[str, str], ...]:
    """The nearest nodes upstream of ``node`` that are :data:`DATA_DEPENDENT_OPS` (at most a few)."""
    producers = {output: candidate for candidate in graph.node for output in candidate.output}
    found, seen, queue = [], set(), [name for name in node.input if name]
    while queue and len(found) < _MAX_ITEMS:
        name = queue.pop(0)
        if name in seen or name not in producers:
            continue
        seen.add(name)
        producer = producers[name]
        if producer.op_type in DATA_DEPENDENT_OPS:
            found.append((producer.name or producer.output[0], producer.op_type))
        else:
            queue.extend(i for i in producer.input if i)
    return tuple(dict.fromkeys(found))


def _position(graph, node) -> int | None:
    if graph is None:
        return None
    for index, candidate in enumerate(graph.node):
        if candidate is node:
            return index
    return None


def _onnx_node(node, inputs: list, position: int | None) -> NodeContext:
    """``inputs``: the Relax expressions converted for ``node.input``, or texts already made."""
    seen = []
    for index, input_name in enumerate(node.input):
        expr = inputs[index] if index < len(inputs) else None
        if input_name:
            seen.append((input_name, expr if isinstance(expr, str) else _relax_text(expr)))
    attributes = tuple((attr.name, _onnx_attribute(attr)) for attr in node.attribute)
    output = node.output[0] if len(node.output) else None
    return NodeContext(node.name, node.op_type, tuple(seen), attributes, position, output)


def _onnx_attribute(attr) -> str:
    from onnx import helper

    try:
        value = helper.get_attribute_value(attr)
    except Exception:  # noqa: BLE001
        return "?"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, (list, tuple)):
        value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        if any(not isinstance(v, (int, float, str)) for v in value):
            return f"<{len(value)} {type(value[0]).__name__ if value else 'value'}s>"
    elif hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto
        return _tensor_text(value)
    elif not isinstance(value, (int, float, str)):
        return f"<{type(value).__name__}>"
    return _short(repr(value))


def _tensor_text(tensor) -> str:
    """``float32[1]=[0.0]`` for a small tensor attribute, ``float32[3,3]`` for a larger one."""
    from onnx import numpy_helper

    try:
        array = numpy_helper.to_array(tensor)
    except Exception:  # noqa: BLE001
        return "<tensor>"
    text = f"{array.dtype}[{','.join(str(d) for d in array.shape)}]"
    return _short(f"{text}={array.ravel().tolist()}") if array.size <= _MAX_ITEMS else text


def _relax_text(expr) -> str:
    """``float32[1,3,4,4]`` for a tensor, ``shape[1,2]`` for a shape value, ``?`` when unknown."""
    if expr is None:
        return "(absent)"
    ty = getattr(expr, "ty", None)
    if ty is None:
        return "?"
    kind = type(ty).__name__
    if kind == "TensorType":
        dtype = str(ty.dtype) if getattr(ty, "dtype", None) is not None else "?"
        shape = getattr(ty, "shape", None)
        values = getattr(shape, "values", None)
        if values is None:
            ndim = getattr(ty, "ndim", -1)
            return f"{dtype}[rank {ndim}]" if ndim is not None and ndim >= 0 else f"{dtype}[?]"
        return f"{dtype}[{_dims(values)}]"
    if kind == "ShapeType":
        values = getattr(expr, "values", None)
        return f"shape[{_dims(values)}]" if values is not None else "shape"
    return _short(str(ty))


def _dims(values) -> str:
    """``1,3,224,224``; a symbolic dimension by its name."""
    dims = []
    for value in values:
        try:
            dims.append(str(int(value)))
        except (TypeError, ValueError):
            dims.append(str(value))
    return ",".join(dims)


def _value_info_text(value) -> str:
    """``float32[2,4]`` for an ONNX ValueInfoProto or TensorProto, ``""`` when it says nothing."""
    from onnx import helper

    if hasattr(value, "dims"):  # an initializer
        return f"{helper.tensor_dtype_to_np_dtype(value.data_type)}[{','.join(str(d) for d in value.dims)}]"
    tensor = value.type.tensor_type
    if not tensor.elem_type:
        return ""
    dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    if not tensor.HasField("shape"):
        return f"{dtype}[?]"
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    return f"{dtype}[{','.join(dims)}]"


def _torch_frame(frame) -> Diagnosis | None:
    local = frame.f_locals
    if frame.f_code.co_name == "_check_unsupported_func_type" and "missing_func_types" in local:
        missing = tuple(sorted(local["missing_func_types"]))
        nodes = [
            _torch_node(node) for node in local.get("nodes", ())
            if node.op == "call_function" and getattr(node.target, "__name__", "") in missing
        ]
        return Diagnosis("torch", "check", tuple(nodes), missing)
    node = local.get("node")
    if node is not None and type(node).__name__ == "Node" and hasattr(node, "target") and node.op == "call_function":
        return Diagnosis("torch", "convert", (_torch_node(node),))
    return None


def _torch_node(node) -> NodeContext:
    names = _schema_names(node.target)
    inputs, attributes = [], []
    for index, arg in enumerate(node.args):
        name = names[index] if index < len(names) else f"arg{index}"
        _torch_arg(name, arg, inputs, attributes)
    for name, arg in node.kwargs.items():
        _torch_arg(name, arg, inputs, attributes)
    return NodeContext(node.name, getattr(node.target, "__name__", str(node.target)), tuple(inputs), tuple(attributes),
                       module=_torch_module(node))


def _torch_arg(name: str, arg, inputs: list, attributes: list) -> None:
    if _is_fx_node(arg):
        inputs.append((arg.name, _fake_text(arg.meta.get("val"))))
    elif isinstance(arg, (list, tuple)) and any(_is_fx_node(a) for a in arg):
        for a in arg:
            if _is_fx_node(a):
                inputs.append((a.name, _fake_text(a.meta.get("val"))))
    else:
        attributes.append((name, _short(repr(arg))))


def _is_fx_node(value) -> bool:
    return type(value).__name__ == "Node" and hasattr(value, "meta")


def _schema_names(target) -> list[str]:
    try:
        return [argument.name for argument in target._schema.arguments]
    except AttributeError:
        return []


def _fake_text(value) -> str:
    shape = getattr(value, "shape", None)
    if shape is None:
        return "?"
    dtype = str(getattr(value, "dtype", "?")).replace("torch.", "")
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def _torch_module(node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, cls = list(stack.values())[-1]
    path = re.sub(r"^L\['self'\]\.?", "", str(path)) or "the model"
    cls_name = getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
    return f"{path} ({cls_name})"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _join(items) -> str:
    items = list(items)
    if len(items) > _MAX_ITEMS:
        items = items[:_MAX_ITEMS] + [f"... {len(items) - _MAX_ITEMS} more"]
    return ", ".join(items)


def unsupported_summary(diagnosis: Diagnosis) -> str:
    """``Celu (node '/act/Celu'; inputs: x float32[2,4]), LpNormalization (...)``: each unsupported
    operator with the nodes that use it (at most three each)."""
    parts = []
    for op in diagnosis.unsupported:
        nodes = [node for node in diagnosis.nodes if node.op_type == op]
        shown = [f"{node.label()}; {node.details(with_op=False)}".rstrip("; ") for node in nodes[:_MAX_NODES_PER_OP]]
        if len(nodes) > _MAX_NODES_PER_OP:
            shown.append(f"and {len(nodes) - _MAX_NODES_PER_OP} more node(s)")
        parts.append(f"{op} ({' | '.join(shown)})" if shown else op)
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# classifying the failure


@dataclass(frozen=True)
class Rule:
    """When ``test(err, text, node)`` holds, the failure is ``kind``/``neo_class``."""

    name: str
    kind: str
    neo_class: str | None
    test: Callable[[BaseException, str, NodeContext | None], bool]


def _tvm_error(name: str) -> Callable[[BaseException, str, Any], bool]:
    def test(err, _text, _node):
        try:
            import tvm.error
        except ImportError:  # pragma: no cover - tvm is installed wherever a TVM error is raised
            return False
        cls = getattr(tvm.error, name, None)
        return cls is not None and isinstance(err, cls)

    return test


def _matches(pattern: str, *, needs_node: bool = False) -> Callable[[BaseException, str, Any], bool]:
    regex = re.compile(pattern, re.IGNORECASE)
    return lambda _err, text, node: (node is not None or not needs_node) and bool(regex.search(text))


def _missing_attribute(err, _text, node) -> bool:
    """A converter's ``attr["name"]`` on an ONNX node without that attribute: a KeyError of its name."""
    if node is None or not isinstance(err, KeyError) or not err.args or not isinstance(err.args[0], str):
        return False
    key = err.args[0]
    return re.fullmatch(r"[A-Za-z_]\w*", key) is not None and key not in node.attribute_names


def _names_attribute(_err, text, node) -> bool:
    """The converter rejected a value of an attribute the node sets (a value TVM deems invalid
    matched the rule before): the attribute's name is a word of the message."""
    if node is None:
        return False
    return any(re.search(rf"\b{re.escape(name)}\b", text) for name in node.attribute_names if len(name) > 1)


#: Checked in order; the first match wins. No match: a ServerError (Neo: "all other errors are
#: system errors"), with the node named when it was found.
RULES: tuple[Rule, ...] = (
    Rule("tvm.error.OpNotImplemented", CLIENT_ERROR, OPERATOR_NOT_IMPLEMENTED, _tvm_error("OpNotImplemented")),
    Rule("torch: Unsupported function types", CLIENT_ERROR, OPERATOR_NOT_IMPLEMENTED,
         _matches(r"Unsupported function types?\b")),
    Rule("opset version N of Op not implemented", CLIENT_ERROR, OPERATOR_NOT_IMPLEMENTED,
         _matches(r"opset version \d+ of \w+ not implemented")),
    Rule("inputs sized by the data upstream (NonZero, NonMaxSuppression, ...)", CLIENT_ERROR,
         OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED, lambda _err, _text, node: node is not None and bool(node.data_dependent)),
    Rule("tvm.error.OpAttributeRequired", CLIENT_ERROR, OPERATOR_ATTRIBUTE_REQUIRED, _tvm_error("OpAttributeRequired")),
    Rule("tvm.error.OpAttributeInvalid", CLIENT_ERROR, OPERATOR_ATTRIBUTE_VALUE_NOT_VALID, _tvm_error("OpAttributeInvalid")),
    Rule("tvm.error.OpAttributeUnImplemented", CLIENT_ERROR, OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED,
         _tvm_error("OpAttributeUnImplemented")),
    Rule("KeyError of an attribute the node lacks", CLIENT_ERROR, OPERATOR_ATTRIBUTE_REQUIRED, _missing_attribute),
    Rule("'requires ... attribute' / 'must specify the ... attribute'", CLIENT_ERROR, OPERATOR_ATTRIBUTE_REQUIRED,
         _matches(r"requires? (the )?\w+ attribute|must specify the \w+ attribute|attribute \S+ (is )?required", needs_node=True)),
    Rule("'invalid' / 'not valid' / 'out of range'", CLIENT_ERROR, OPERATOR_ATTRIBUTE_VALUE_NOT_VALID,
         _matches(r"\binvalid\b|\bnot valid\b|\bout of range\b|\bmust be unique\b|\bmust be non-zero\b", needs_node=True)),
    Rule("names an attribute the node sets", CLIENT_ERROR, OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED, _names_attribute),
    Rule("'not (yet) supported' / 'only supports' / 'unsupported' at a node", CLIENT_ERROR, OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED,
         _matches(r"not (yet |currently )?supported|\bonly supports?\b|supported only|\bunsupported\b|"
                  r"not (yet )?implemented|currently only|only \w+ (is |are )?supported|is not handled", needs_node=True)),
)


def classify(err: BaseException, node: NodeContext | None) -> tuple[str, str | None, str]:
    """``(kind, neo_class, rule name)`` of ``err`` raised at ``node`` (None: not at a node)."""
    text = str(err)
    for rule in RULES:
        if rule.test(err, text, node):
            return rule.kind, rule.neo_class, rule.name
    return SERVER_ERROR, None, "no rule matched"
