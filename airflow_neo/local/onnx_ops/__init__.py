"""ONNX operators that TVM 0.27's Relax importer lacks, rewritten into ONNX operators it imports.

Why rewrite at the ONNX level rather than register converters into TVM's convert map: the
rewritten graph is plain ONNX, so onnxruntime checks every rewrite alone (fast tests with no
TVM), nothing depends on the private ``_get_convert_map`` of one TVM release, and the same
graph goes through TVM's own, tested converters of MatMul, Conv, Slice, Where, ...

:func:`expand` runs inside :func:`airflow_neo.local.onnx_normalize.normalize`, with the shapes its
inference found. Invariants:

* it rewrites only nodes of the main graph whose (domain, op type) is in :data:`REWRITES`; each is
  replaced, in place in the node order, by nodes that write the same output names, so readers of
  those outputs and graph outputs are unchanged; the new nodes are default-domain ops valid in the
  model's opset; their constants become initializers;
* a node whose attributes or inputs the rewrite cannot express raises
  :class:`~airflow_neo.local.errors.OperatorAttributeNotImplementedError` naming the node, the attribute, its
  value and what is allowed (the caller must let it through, not import the graph as given);
* it returns the count of rewritten nodes by op type (empty when nothing matched, and then the
  model is untouched).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_neo.local.onnx_ops import quantized, recurrent
from airflow_neo.local.onnx_ops._graph import Emitter

MS_DOMAIN = "com.microsoft"
DEFAULT_DOMAINS = ("", "ai.onnx")

#: (domain, op type) -> rewrite(node, emitter, shapes); "" stands for the default domain.
REWRITES = {
    ("", "LSTM"): recurrent.expand_recurrent,
    ("", "GRU"): recurrent.expand_recurrent,
    ("", "RNN"): recurrent.expand_recurrent,
    **{("", op): quantized.REWRITES[op] for op in quantized.STANDARD_OPS},
    **{(MS_DOMAIN, op): quantized.REWRITES[op] for op in quantized.CONTRIB_OPS},
}


@dataclass
class ExpansionReport:
    """What :func:`expand` rewrote: {op type: count} and how many nodes replaced them."""

    rewritten: dict[str, int] = field(default_factory=dict)
    nodes_added: int = 0

    def summary(self) -> str:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(self.rewritten.items()))
        return f"{ops} rewritten into {self.nodes_added} supported nodes" if ops else "nothing rewritten"


def _key(node) -> tuple[str, str]:
    return ("" if node.domain in DEFAULT_DOMAINS else node.domain, node.op_type)


def needs_expansion(model) -> bool:
    """Whether the main graph holds a node :func:`expand` rewrites."""
    return any(_key(node) in REWRITES for node in model.graph.node)


def expand(model, shapes: dict[str, list[int] | None], types: dict[str, int] | None = None) -> ExpansionReport:
    """Rewrite the unsupported operators of ``model`` (in place).

    ``shapes``: {value name: static dims}; ``types``: {value name: ONNX element type} (both from
    shape inference; a value missing from them is treated as unknown).
    """
    graph = model.graph
    report = ExpansionReport()
    if not needs_expansion(model):
        return report
    opset = _default_opset(model)
    constants = _Constants(graph)
    names = {name for node in graph.node for name in [*node.input, *node.output, node.name]}
    names |= {init.name for init in graph.initializer} | {value.name for value in graph.input}
    new_nodes, new_inits = [], []
    for node in graph.node:
        rewrite = REWRITES.get(_key(node))
        if rewrite is None:
            new_nodes.append(node)
            continue
        emit = Emitter(node, opset, constants, names, types)
        rewrite(node, emit, shapes)
        new_nodes.extend(emit.nodes)
        new_inits.extend(emit.initializers)
        report.rewritten[node.op_type] = report.rewritten.get(node.op_type, 0) + 1
        report.nodes_added += len(emit.nodes)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    if not any(entry.domain in DEFAULT_DOMAINS for entry in model.opset_import):
        model.opset_import.add(domain="", version=opset)
    return report


def _default_opset(model) -> int:
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    return 13  # a graph of contrib ops only: emit opset-13 nodes (and import that opset)


class _Constants:
    """Constant values by name, converted to numpy only when a rewrite asks (weights can be large)."""

    def __init__(self, graph):
        self._protos = {init.name: init for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and len(node.output) == 1:
                for attr in node.attribute:
                    if attr.name == "value":
                        self._protos[node.output[0]] = attr.t
        self._values: dict = {}

    def get(self, name: str, default=None):
        from onnx import numpy_helper

        if name in self._values:
            return self._values[name]
        proto = self._protos.get(name)
        if proto is None:
            return default
        value = self._values[name] = numpy_helper.to_array(proto)
        return value

    def __setitem__(self, name: str, value) -> None:
        self._values[name] = value


__all__ = ["REWRITES", "ExpansionReport", "expand", "needs_expansion"]
