"""Shape arithmetic on the static dims of partly symbolic shapes, folded for :mod:`onnx_normalize`.

With a DataInputConfig range (a symbolic dimension), a tensor's shape is only partly known: in a
transformer with a range sequence length, ``hidden_states`` is ``[1, seq, 64]``. Exporters still
write ``Shape(hidden_states) -> Gather(2) -> Div(heads) -> Cast -> Sqrt`` for the attention scale,
or ``Shape -> Gather(0)`` for the batch of a reshape: values that read only the STATIC dims of such
a shape. :mod:`airflow_neo.local.onnx_normalize` folds a ``Shape`` only when the whole shape is
static; this module lets it fold the selection of static dims out of a partly symbolic one, after
which the arithmetic on them folds as ordinary constants.

Invariants:

* a *shape vector* is the output of a ``Shape`` node (``start``/``end`` honoured) on a tensor of
  known rank with at least one dim that is not static: a list with the static dims as ints and
  None at each other dim; it is never folded itself;
* a ``Gather`` (1-D data, axis 0) or ``Slice`` on a shape vector, every other input a constant,
  selects positions of it: the positions are computed by running the same node (onnx's reference
  evaluator) on ``arange(rank)``, so negative indices, steps and clamping follow the op exactly;
* the selection is folded (an int64 constant of those dims) only if every selected dim is static;
  a selection that touches a symbolic dim is left as a node, so arithmetic that depends on a
  symbolic dim stays in the graph (and stays symbolic); its result is a shape vector again, so a
  ``Slice`` then ``Gather`` reaching a static dim folds too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

__all__ = ["SELECTIONS", "fold", "merge", "partial_shapes", "select_static_dims", "shape_vector", "symbolic_static_dims"]

#: Ops that select dims of a shape vector without computing on them.
SELECTIONS = frozenset({"Gather", "Slice"})


def fold(node, vectors: dict, values: dict, partial: dict, types: dict, opset: int):
    """The node's value (a list of one int64 array) where it selects only static dims of a partly
    symbolic shape, else None; shape vectors met on the way are kept in ``vectors`` (graph order)."""
    import numpy as np
    from onnx import helper

    vector = shape_vector(node, partial)
    if vector is not None:
        vectors[node.output[0]] = vector
        return None
    value, vector = select_static_dims(node, vectors, values, opset)
    if vector is not None:
        vectors[node.output[0]] = vector
    name = node.output[0] if node.output else ""
    if value is None or (name in types and helper.tensor_dtype_to_np_dtype(types[name]) != np.int64):
        return None
    return [value]


def partial_shapes(values) -> dict[str, list[int | None]]:
    """``{name: dims}`` of tensor ``values`` (value infos) of known rank, None at each dim that is not static."""
    partial = {}
    for value in values:
        tensor = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor.HasField("shape"):
            partial[value.name] = [int(dim.dim_value) if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
    return partial


def symbolic_static_dims(light_model) -> dict[str, list[int | None]]:
    """``{name: dims}`` (None where not static) from onnxruntime's symbolic shape inference, where
    onnxruntime is installed and the inference runs; else ``{}``.

    onnx's own inference loses a static dim wherever a shape is computed at run time (a ``Slice``
    whose end is the sequence length makes ``[1, seq]`` into ``[?, ?]``, and every broadcast after
    it loses the batch); the symbolic inference carries named dims through those ops. Its
    ``auto_merge`` takes two dims a broadcast meets as equal (``Min(512, seq)`` and ``seq`` in
    BERT's position ids); a symbol it merges with a literal > 1 is a size at which alone the model
    runs, and the compile's verification at the range's bounds runs the graph as given."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except Exception:  # noqa: BLE001 - optional: without it, onnx's inference alone
        return {}
    try:
        with _scratch_cwd():
            inferred = SymbolicShapeInference.infer_shapes(light_model, auto_merge=True, guess_output_rank=False)
    except Exception:  # noqa: BLE001 - a graph it cannot follow: onnx's inference alone
        return {}
    return partial_shapes([*inferred.graph.value_info, *inferred.graph.output])


@contextlib.contextmanager
def _scratch_cwd():
    """A temporary working directory for the duration: onnxruntime's inference, when it cannot
    finish, saves ``sym_shape_infer_temp.onnx`` and its external data files into the current
    directory, which would leave them wherever the worker runs. (The compile runs in its own child
    process, so changing the process's directory there affects nothing else.)"""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="airflow-neo-shapes-") as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


def merge(partial: dict, symbolic: dict) -> dict:
    """``partial`` with each None filled by the static dim ``symbolic`` gives for it (same rank only;
    a static dim of ``partial`` is never changed)."""
    merged = dict(partial)
    for name, dims in symbolic.items():
        known = merged.get(name)
        if known is None:
            merged[name] = dims
        elif len(known) == len(dims):
            merged[name] = [own if own is not None else other for own, other in zip(known, dims)]
    return merged


def shape_vector(node, partial: dict[str, list[int | None]]) -> list[int | None] | None:
    """The shape vector a ``Shape`` node outputs, or None where its input's rank is unknown or its shape static."""
    dims = partial.get(node.input[0]) if node.op_type == "Shape" and node.input else None
    if dims is None or all(dim is not None for dim in dims):
        return None
    start, end = _attr(node, "start", 0), _attr(node, "end", None)
    return list(dims[slice(start, end)])


def select_static_dims(node, vectors: dict[str, list[int | None]], values: dict[str, Any], opset: int):
    """``(folded, vector)`` for a selection from a shape vector: ``folded`` is the node's value (an
    int64 array) when every selected dim is static, else None; ``vector`` is the selection as a
    shape vector when it is one-dimensional and touches a symbolic dim, else None."""
    import numpy as np

    if node.op_type not in SELECTIONS or not node.input or node.input[0] not in vectors or len(node.output) != 1:
        return None, None
    if node.op_type == "Gather" and _attr(node, "axis", 0) != 0:
        return None, None
    if any(name and name not in values for name in node.input[1:]):
        return None, None
    vector = vectors[node.input[0]]
    inputs = {name: values[name] for name in node.input[1:] if name}
    inputs[node.input[0]] = np.arange(len(vector), dtype=np.int64)
    try:
        positions = np.asarray(_run(node, inputs, opset))
    except Exception:  # noqa: BLE001 - an index the op refuses: the node stays, and fails or runs as exported
        return None, None
    dims = [vector[int(position)] for position in positions.ravel()]
    if all(dim is not None for dim in dims):
        return np.asarray(dims, dtype=np.int64).reshape(positions.shape), None
    return None, (dims if positions.ndim == 1 else None)


def _run(node, inputs: dict, opset: int):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(node, opsets={"": opset}).run(None, inputs)[0]


def _attr(node, name: str, default):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default
