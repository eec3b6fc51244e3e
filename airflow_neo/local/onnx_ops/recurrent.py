"""LSTM, GRU and RNN unrolled over their static sequence length into MatMul/Add/activation nodes.

Invariants:

* the sequence length must be static (the job's input shapes give it); batch and feature sizes
  may stay symbolic: a missing ``initial_h``/``initial_c`` is an exact zero that the unrolled graph
  leaves out (no zeros tensor of the batch size is needed);
* every attribute of the ONNX operator is honoured: ``direction`` (forward, reverse,
  bidirectional), ``layout`` (0 and 1), ``activations`` with ``activation_alpha``/``activation_beta``
  (the functions of :data:`ACTIVATIONS`, case-insensitive, the alphas and betas consumed in order by
  the functions that take them, defaults otherwise), ``clip``, LSTM ``input_forget`` and the peepholes
  ``P``, GRU ``linear_before_reset``; optional inputs ``B``, ``sequence_lens`` (padded steps keep
  the state and output zeros, as onnxruntime does), ``initial_h``, ``initial_c``;
* anything else (an unknown activation, a direction or layout outside the spec) raises
  :class:`~airflow_neo.local.errors.OperatorAttributeNotImplementedError` naming the node, the attribute and
  its value and what is allowed;
* numerics: the same float ops in the same dtype as the reference definition: the input
  projection of all steps is one MatMul, each step one MatMul with R, biases summed in numpy
  where constant.
"""

from __future__ import annotations

import numpy as np

from airflow_neo.local.onnx_ops._graph import Emitter, attributes, unsupported

#: Activation functions of the ONNX recurrent ops: {lowercase name: (ONNX op or None, alpha default, beta default)}.
ACTIVATIONS = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "leakyrelu": ("LeakyRelu", 0.01, None),
    "thresholdedrelu": ("ThresholdedRelu", 1.0, None),
    "elu": ("Elu", 1.0, None),
    "hardsigmoid": ("HardSigmoid", 0.2, 0.5),
    "affine": (None, 1.0, 0.0),
    "scaledtanh": (None, 1.0, 1.0),
}
#: op type: (gates, default activations per direction).
SPECS = {"LSTM": (4, ["Sigmoid", "Tanh", "Tanh"]), "GRU": (3, ["Sigmoid", "Tanh"]), "RNN": (1, ["Tanh"])}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def expand_recurrent(node, emit: Emitter, shapes: dict) -> None:
    """Emit the unrolled form of one LSTM/GRU/RNN ``node``; its outputs keep their names."""
    attrs = attributes(node)
    cell = _Cell(node, emit, shapes, attrs)
    x = node.input[0]
    if cell.layout == 1:
        x = emit.op("Transpose", [x], perm=[1, 0, 2])
    states = {key: _initial_state(emit, node, index, cell) for key, index in (("h", 5), ("c", 6))}
    ys, hs, cs = [], [], []
    for d in range(cell.directions):
        reverse = cell.direction == "reverse" or d == 1
        y, h, c = cell.run(x, d, reverse, states["h"][d], states["c"][d])
        ys.append(emit.unsqueeze(y, [1]))
        hs.append(h)
        cs.append(c)
    _write_outputs(node, emit, cell.layout, ys, hs, cs)


def _initial_state(emit: Emitter, node, index: int, cell: "_Cell") -> list:
    name = node.input[index] if len(node.input) > index else ""
    if not name or (index == 6 and node.op_type != "LSTM"):
        return [None] * cell.directions
    if cell.layout == 1:
        name = emit.transpose(name, [1, 0, 2])
    return [emit.unsqueeze(emit.pick(name, d), [0]) for d in range(cell.directions)]


def _write_outputs(node, emit: Emitter, layout: int, ys: list, hs: list, cs: list) -> None:
    """Y [seq, dirs, batch, H] (layout 1: [batch, seq, dirs, H]), Y_h and Y_c [dirs, batch, H] (layout 1: [batch, dirs, H])."""
    outputs = list(node.output) + [""] * (3 - len(node.output))
    for name, parts, axis, perm in ((outputs[0], ys, 1, [2, 0, 1, 3]), (outputs[1], hs, 0, [1, 0, 2]), (outputs[2], cs, 0, [1, 0, 2])):
        if not name:
            continue
        if layout == 1:
            whole = emit.op("Concat", parts, axis=axis) if len(parts) > 1 else parts[0]
            emit.op("Transpose", [whole], outputs=[name], perm=perm)
        elif len(parts) > 1:
            emit.op("Concat", parts, outputs=[name], axis=axis)
        else:
            emit.op("Identity", parts, outputs=[name])


class _Cell:
    """One recurrent node's attributes and weights; :meth:`run` unrolls one direction."""

    def __init__(self, node, emit: Emitter, shapes: dict, attrs: dict):
        self.node, self.emit, self.kind = node, emit, node.op_type
        gates, default_acts = SPECS[node.op_type]
        self.gates = gates
        self.direction = attrs.get("direction", "forward")
        if self.direction not in DIRECTIONS:
            raise unsupported(node, "direction", self.direction, "forward, reverse, bidirectional")
        self.directions = DIRECTIONS[self.direction]
        self.layout = attrs.get("layout", 0)
        if self.layout not in (0, 1):
            raise unsupported(node, "layout", self.layout, "0 or 1")
        self.clip = attrs.get("clip")
        self.input_forget = attrs.get("input_forget", 0)
        self.linear_before_reset = attrs.get("linear_before_reset", 0)
        self.acts = _activations(node, attrs, default_acts, self.directions)
        self.hidden = self._hidden_size(attrs, shapes)
        self.steps = self._steps(shapes)
        weights = emit.value(node.input[1])
        self.dtype = weights.dtype if weights is not None else np.float32

    def _hidden_size(self, attrs: dict, shapes: dict) -> int:
        if "hidden_size" in attrs:
            return int(attrs["hidden_size"])
        dims = shapes.get(self.node.input[2])
        if dims is None:
            raise unsupported(self.node, "hidden_size", None, "an integer, or a recurrence weight R of static shape")
        return int(dims[-1])

    def _steps(self, shapes: dict) -> int:
        dims = shapes.get(self.node.input[0])
        axis = 1 if self.layout == 1 else 0
        if dims is None or len(dims) != 3 or not dims[axis]:
            raise unsupported(
                self.node, "sequence length of input X", dims,
                "a static sequence length: give every input's full shape in DataInputConfig",
            )
        return int(dims[axis])

    # -- weights ----------------------------------------------------------------------------

    def _input(self, index: int) -> str:
        return self.node.input[index] if len(self.node.input) > index else ""

    def _bias(self, d: int) -> tuple[str | None, str | None]:
        """(bias added to the input projection, GRU's R bias of the h gate kept inside the reset product)."""
        emit, name, width = self.emit, self._input(3), self.gates * self.hidden
        if not name:
            return None, None
        lbr = self.kind == "GRU" and self.linear_before_reset
        value = emit.value(name)
        if value is not None:
            w_b, r_b = value[d][:width], value[d][width:].copy()
            if lbr:
                r_h = r_b[2 * self.hidden:].copy()
                r_b[2 * self.hidden:] = 0
                return emit.const((w_b + r_b).astype(value.dtype), "bias"), emit.const(r_h.reshape(1, 1, -1), "rbh")
            return emit.const((w_b + r_b).astype(value.dtype), "bias"), None
        row = emit.pick(name, d)
        w_b, r_b = emit.slice(row, 0, 0, width), emit.slice(row, 0, width, 2 * width)
        if not lbr:
            return emit.op("Add", [w_b, r_b]), None
        r_zr = emit.slice(r_b, 0, 0, 2 * self.hidden)
        zeros = emit.const(np.zeros(self.hidden, dtype=self.dtype), "zeros")
        return emit.op("Add", [w_b, emit.op("Concat", [r_zr, zeros], axis=0)]), emit.slice(r_b, 0, 2 * self.hidden, width)

    def _peepholes(self, d: int) -> list | None:
        name = self._input(7) if self.kind == "LSTM" else ""
        if not name:
            return None
        row = self.emit.pick(name, d)  # [3H]: i, o, f
        return [self.emit.slice(row, 0, k * self.hidden, (k + 1) * self.hidden) for k in range(3)]

    def _mask(self, t: int) -> str | None:
        """[1, batch, 1] bool: step ``t`` is inside each sequence (None: no ``sequence_lens``, or all full)."""
        emit, name = self.emit, self._input(4)
        if not name:
            return None
        value = emit.value(name)
        if value is not None:
            if np.all(value >= self.steps):
                return None
            return emit.const((t < value.astype(np.int64)).reshape(1, -1, 1), "mask")
        lens = emit.op("Cast", [name], to=7)  # INT64
        return emit.unsqueeze(emit.op("Less", [emit.const(np.asarray(t, dtype=np.int64), "t"), lens]), [0, 2])

    # -- unrolling --------------------------------------------------------------------------

    def run(self, x: str, d: int, reverse: bool, h: str | None, c: str | None):
        """(Y of this direction [seq, batch, H], final h [1, batch, H], final c or None)."""
        emit = self.emit
        w_t = emit.transpose(emit.pick(self.node.input[1], d), [1, 0])
        r_t = emit.transpose(emit.pick(self.node.input[2], d), [1, 0])
        bias, r_bias_h = self._bias(d)
        projected = emit.op("MatMul", [x, w_t])
        if bias is not None:
            projected = emit.op("Add", [projected, bias])
        peep = self._peepholes(d)
        acts = self.acts[d]
        outputs = [None] * self.steps
        for t in (reversed(range(self.steps)) if reverse else range(self.steps)):
            xt = emit.slice(projected, 0, t, t + 1)
            if self.kind == "LSTM":
                h_new, c_new = self._lstm_step(xt, r_t, h, c, peep, acts)
            elif self.kind == "GRU":
                h_new, c_new = self._gru_step(xt, r_t, h, r_bias_h, acts), None
            else:
                h_new, c_new = self._act(acts[0], self._clip(self._add_recurrent(xt, h, r_t))), None
            mask = self._mask(t)
            if mask is None:
                h, c, outputs[t] = h_new, c_new, h_new
                continue
            zero = emit.const(np.zeros((), dtype=self.dtype), "zero")
            outputs[t] = emit.op("Where", [mask, h_new, zero])
            h = emit.op("Where", [mask, h_new, h or zero])
            c = emit.op("Where", [mask, c_new, c or zero]) if c_new is not None else None
        y = emit.op("Concat", outputs, axis=0) if self.steps > 1 else outputs[0]
        return y, h, c

    def _add_recurrent(self, xt: str, h: str | None, r_t: str) -> str:
        if h is None:
            return xt
        return self.emit.op("Add", [xt, self.emit.op("MatMul", [h, r_t])])

    def _gate(self, x: str, k: int) -> str:
        return self.emit.slice(x, 2, k * self.hidden, (k + 1) * self.hidden)

    def _clip(self, x: str) -> str:
        return x if self.clip is None else self.emit.clip(x, -self.clip, self.clip, self.dtype)

    def _lstm_step(self, xt, r_t, h, c, peep, acts):
        emit, (f, g, hact) = self.emit, acts
        gates = self._add_recurrent(xt, h, r_t)
        i, o, fg, cand = (self._gate(gates, k) for k in range(4))
        if peep is not None and c is not None:
            i = emit.op("Add", [i, emit.op("Mul", [peep[0], c])])
            fg = emit.op("Add", [fg, emit.op("Mul", [peep[2], c])])
        i = self._act(f, self._clip(i))
        if self.input_forget:
            fg = emit.op("Sub", [emit.const(np.ones((), dtype=self.dtype), "one"), i])
        else:
            fg = self._act(f, self._clip(fg))
        cand = self._act(g, self._clip(cand))
        c_new = emit.op("Mul", [i, cand])
        if c is not None:
            c_new = emit.op("Add", [emit.op("Mul", [fg, c]), c_new])
        if peep is not None:
            o = emit.op("Add", [o, emit.op("Mul", [peep[1], c_new])])
        o = self._act(f, self._clip(o))
        return emit.op("Mul", [o, self._act(hact, c_new)]), c_new

    def _gru_step(self, xt, r_t, h, r_bias_h, acts):
        emit, (f, g) = self.emit, acts
        xz, xr, xh = (self._gate(xt, k) for k in range(3))
        if h is None:
            z, r = self._act(f, self._clip(xz)), self._act(f, self._clip(xr))
            inner = emit.op("Mul", [r, r_bias_h]) if (self.linear_before_reset and r_bias_h) else None
        else:
            rec = emit.op("MatMul", [h, r_t])
            z = self._act(f, self._clip(emit.op("Add", [xz, self._gate(rec, 0)])))
            r = self._act(f, self._clip(emit.op("Add", [xr, self._gate(rec, 1)])))
            if self.linear_before_reset:
                rec_h = self._gate(rec, 2)
                if r_bias_h:
                    rec_h = emit.op("Add", [rec_h, r_bias_h])
                inner = emit.op("Mul", [r, rec_h])
            else:
                r_h = emit.slice(r_t, 1, 2 * self.hidden, 3 * self.hidden)
                inner = emit.op("MatMul", [emit.op("Mul", [r, h]), r_h])
        cand = self._act(g, self._clip(xh if inner is None else emit.op("Add", [xh, inner])))
        one = emit.const(np.ones((), dtype=self.dtype), "one")
        h_new = emit.op("Mul", [emit.op("Sub", [one, z]), cand])
        if h is not None:
            h_new = emit.op("Add", [h_new, emit.op("Mul", [z, h])])
        return h_new

    def _act(self, spec: tuple, x: str) -> str:
        name, alpha, beta = spec
        op, _, _ = ACTIVATIONS[name]
        emit = self.emit
        if name == "affine":
            scaled = emit.op("Mul", [x, emit.const(np.asarray(alpha, dtype=self.dtype), "alpha")])
            return emit.op("Add", [scaled, emit.const(np.asarray(beta, dtype=self.dtype), "beta")])
        if name == "scaledtanh":
            inner = emit.op("Tanh", [emit.op("Mul", [x, emit.const(np.asarray(beta, dtype=self.dtype), "beta")])])
            return emit.op("Mul", [inner, emit.const(np.asarray(alpha, dtype=self.dtype), "alpha")])
        kwargs = {key: float(value) for key, value in (("alpha", alpha), ("beta", beta)) if value is not None}
        return emit.op(op, [x], **kwargs)


def _activations(node, attrs: dict, defaults: list[str], directions: int) -> list[list[tuple]]:
    """Per direction, the (lowercase name, alpha, beta) of each activation function."""
    names = attrs.get("activations") or defaults * directions
    per_direction = len(defaults)
    if len(names) == per_direction and directions == 2:
        names = names * 2
    if len(names) != per_direction * directions:
        raise unsupported(node, "activations", names, f"{per_direction * directions} names ({per_direction} per direction)")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    specs = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATIONS:
            raise unsupported(node, "activations", name, ", ".join(sorted(ACTIVATIONS)) + " (case-insensitive)")
        _, alpha, beta = ACTIVATIONS[key]
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        specs.append((key, alpha, beta))
    return [specs[d * per_direction:(d + 1) * per_direction] for d in range(directions)]


__all__ = ["ACTIVATIONS", "expand_recurrent"]
