"""The node emitter the rewrites share: unique names, constants, opset-correct basic ops.

Invariants: every node it emits is a default-domain op valid in the model's opset (attribute
or input forms of ``Slice``/``Unsqueeze``/``Squeeze``/``Clip`` chosen by that opset); every
name it makes starts with the rewritten node's name and a counter, so it cannot collide with a
name of the graph; constants become initializers; it never changes the graph itself (the caller
splices :attr:`Emitter.nodes` and :attr:`Emitter.initializers` in).
"""

from __future__ import annotations

from typing import Any

from airflow_neo.local.errors import OperatorAttributeNotImplementedError


def node_label(node) -> str:
    return f"{node.op_type} node {node.name or '(unnamed)'!r}"


def unsupported(node, attribute: str, value, allowed: str) -> OperatorAttributeNotImplementedError:
    """The error for an attribute value (or input) the rewrite cannot express (Neo: OperatorAttributeNotImplemented)."""
    return OperatorAttributeNotImplementedError(
        f"{node_label(node)}: {attribute}={value!r} is not supported by the local backend; allowed: {allowed}",
        [node.op_type],
    )


def attributes(node) -> dict[str, Any]:
    from onnx import helper

    values = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        values[attr.name] = value.decode() if isinstance(value, bytes) else [
            item.decode() if isinstance(item, bytes) else item for item in value
        ] if isinstance(value, list) else value
    return values


class Emitter:
    """Emits the nodes that replace one node; constants are looked up in ``constants``."""

    def __init__(self, node, opset: int, constants, names: set[str], types: dict | None = None):
        self.node = node
        self.types = types or {}  # {value name: ONNX element type}, where inference found it
        self.opset = opset
        self.constants = constants
        self.nodes: list = []
        self.initializers: list = []
        self._names = names
        self._prefix = (node.name or node.op_type).replace("/", "_")
        self._count = 0

    # -- names and constants ----------------------------------------------------------------

    def name(self, hint: str) -> str:
        while True:
            self._count += 1
            name = f"{self._prefix}__{hint}_{self._count}"
            if name not in self._names:
                self._names.add(name)
                return name

    def const(self, value, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        self.constants[name] = value
        return name

    def value(self, name: str):
        """The constant value of input ``name`` (a numpy array), or None if it is computed at run time."""
        return self.constants.get(name) if name else None

    # -- ops --------------------------------------------------------------------------------

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: list[str] | None = None, **attrs) -> str:
        from onnx import helper

        outputs = outputs or [self.name(hint or op_type.lower())]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=self.name(op_type), **attrs))
        return outputs[0]

    def slice(self, x: str, axis: int, start: int, end: int) -> str:
        import numpy as np

        if self.opset < 10:
            return self.op("Slice", [x], axes=[axis], starts=[start], ends=[end])
        ints = [self.const(np.asarray([v], dtype=np.int64), "idx") for v in (start, end, axis)]
        return self.op("Slice", [x, *ints])

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        import numpy as np

        if self.opset < 13:
            return self.op("Unsqueeze", [x], axes=axes)
        return self.op("Unsqueeze", [x, self.const(np.asarray(axes, dtype=np.int64), "axes")])

    def squeeze(self, x: str, axes: list[int]) -> str:
        import numpy as np

        if self.opset < 13:
            return self.op("Squeeze", [x], axes=axes)
        return self.op("Squeeze", [x, self.const(np.asarray(axes, dtype=np.int64), "axes")])

    def clip(self, x: str, low: float, high: float, dtype=None) -> str:
        import numpy as np

        if self.opset < 11:
            return self.op("Clip", [x], min=float(low), max=float(high))
        dtype = dtype or np.float32
        return self.op("Clip", [x, self.const(np.asarray(low, dtype=dtype), "min"), self.const(np.asarray(high, dtype=dtype), "max")])

    def transpose(self, x: str, perm: list[int]) -> str:
        value = self.value(x)
        if value is not None:
            return self.const(value.transpose(perm).copy(), "t")
        return self.op("Transpose", [x], perm=perm)

    def pick(self, x: str, index: int) -> str:
        """``x[index]`` along axis 0 (a constant is sliced here, not in the graph)."""
        value = self.value(x)
        if value is not None:
            return self.const(value[index].copy(), "pick")
        return self.squeeze(self.slice(x, 0, index, index + 1), [0])
