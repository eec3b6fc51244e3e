"""MXNet's symbol file (nnvm graph JSON, as ``Symbol.save`` and ``HybridBlock.export`` write it),
read into :class:`MxGraph`, and the roles of its variables.

The file: ``nodes`` in topological order, each ``op`` (``"null"`` for a variable), ``name``,
attributes as strings under ``attrs`` (``attr`` or ``param`` in files of MXNet < 1.0) and ``inputs``
as ``[node, output, version]`` (``[node, output]`` in old files); ``heads`` are the outputs;
``arg_nodes``/``node_row_ptr``/``attrs`` are not needed here.

Invariants: :func:`load_symbol` accepts only an object with ``nodes`` and a non-empty ``heads``
list whose entries name earlier nodes (else :class:`ModelArchiveError`); :func:`classify` gives
every variable the heads depend on exactly one role: parameter (saved in the ``.params`` file, or
feeding a parameter slot of its consumer), label (feeding only a loss's label slot) or input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from airflow_neo.local.errors import ModelArchiveError

__all__ = ["MxGraph", "MxNode", "classify", "load_symbol", "needed_nodes"]


@dataclass
class MxNode:
    op: str
    name: str
    attrs: dict
    inputs: list  # [(node index, output index)]


@dataclass
class MxGraph:
    nodes: list[MxNode]
    heads: list[tuple[int, int]]
    #: null nodes by role: filled by :func:`classify`
    params: set = field(default_factory=set)
    labels: set = field(default_factory=set)
    inputs: list = field(default_factory=list)


def load_symbol(path: Path, holds: str = "") -> MxGraph:
    """The symbol file's graph; :class:`ModelArchiveError` when it is not an MXNet symbol (``holds``:
    what the archive holds, for the message)."""
    def bad(why: str) -> ModelArchiveError:
        return ModelArchiveError(f"{path.name} is not an MXNet symbol file ({why}); MXNET needs the "
                                 "*-symbol.json that HybridBlock.export or Symbol.save writes"
                                 + (f"; the archive holds {holds}" if holds else ""))

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise bad(f"not JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not isinstance(data.get("heads"), list):
        raise bad("no 'nodes' and 'heads' lists")
    nodes = []
    for index, raw in enumerate(data["nodes"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str) or "name" not in raw:
            raise bad(f"node {index} lacks 'op' or 'name'")
        attrs = raw.get("attrs", raw.get("attr", raw.get("param"))) or {}
        entries = [_entry(entry, index, bad) for entry in raw.get("inputs", [])]
        nodes.append(MxNode(raw["op"], str(raw["name"]), {str(k): str(v) for k, v in attrs.items()}, entries))
    heads = [_entry(entry, len(nodes), bad) for entry in data["heads"]]
    if not heads:
        raise bad("no heads (outputs)")
    return MxGraph(nodes, heads)


def _entry(entry, before: int, bad) -> tuple[int, int]:
    if not isinstance(entry, list) or len(entry) < 2 or not all(isinstance(v, int) for v in entry[:2]):
        raise bad(f"an input entry {entry!r} is not [node, output, version]")
    if not 0 <= entry[0] < before:
        raise bad(f"an input entry {entry!r} names node {entry[0]}, not an earlier node")
    return entry[0], entry[1]


def needed_nodes(graph: MxGraph) -> list[int]:
    """Indices of the nodes the heads depend on, in the file's (topological) order."""
    seen, stack = set(), [node for node, _ in graph.heads]
    while stack:
        index = stack.pop()
        if index not in seen:
            seen.add(index)
            stack.extend(node for node, _ in graph.nodes[index].inputs)
    return sorted(seen)


def classify(graph: MxGraph, order: list[int], saved: set[str]) -> None:
    """Fill ``graph.params``, ``graph.labels`` and ``graph.inputs`` (see the module docstring)."""
    from airflow_neo.local.convert.mxnet_ops import LABEL_INPUTS, PARAM_INPUTS

    slots: dict[int, set[str]] = {}
    for index in order:
        node = graph.nodes[index]
        for position, (source, _) in enumerate(node.inputs):
            kind = ("param" if position in PARAM_INPUTS.get(node.op, ()) else
                    "label" if position in LABEL_INPUTS.get(node.op, ()) else "data")
            slots.setdefault(source, set()).add(kind)
    for index in order:
        node = graph.nodes[index]
        if node.op != "null":
            continue
        kinds = slots.get(index, {"data"})
        if node.name in saved or "param" in kinds:
            graph.params.add(node.name)
        elif kinds == {"label"}:
            graph.labels.add(node.name)
        else:
            graph.inputs.append(node.name)
