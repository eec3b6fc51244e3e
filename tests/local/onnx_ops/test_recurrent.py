"""LSTM, GRU and RNN unrolled by airflow_neo.local.onnx_ops.recurrent.

Unit tests: one-node graphs for each op and attribute variant, onnxruntime on the rewritten
graph against onnxruntime on the original (no TVM; onnxruntime has no ``layout=1`` kernel, so
those graphs are checked against the ``layout=0`` graph on transposed data). Then torch's
``nn.LSTM``/``nn.GRU``/``nn.RNN`` (2 layers, bidirectional, batch_first) exported with the legacy
exporter, and a graph with ``sequence_lens`` and peepholes, compiled through the local compile
path and compared with onnxruntime on the original file (float32: within 1e-5 of the output's
largest magnitude).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from airflow_neo.local import onnx_normalize
from airflow_neo.local.errors import UnsupportedOperatorsError
from tests.local.onnx_ops._helpers import compile_and_run, make_model, op_types, ort_run, rewritten

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
SEQ, BATCH, INPUT, HIDDEN = 5, 3, 4, 6


def _graph(op, *, layout=0, bias=True, seq_lens=None, initial_h=False, initial_c=False, peepholes=False, opset=17, seq=SEQ, **attrs):
    """(model, inputs): one ``op`` node with random weights; optional inputs as graph inputs."""
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    gates, rng = GATES[op], np.random.default_rng(1)
    inits = [
        numpy_helper.from_array((rng.standard_normal((dirs, gates * HIDDEN, INPUT)) * 0.5).astype(np.float32), "W"),
        numpy_helper.from_array((rng.standard_normal((dirs, gates * HIDDEN, HIDDEN)) * 0.5).astype(np.float32), "R"),
    ]
    names = ["x", "W", "R", "B" if bias else ""]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal((dirs, 2 * gates * HIDDEN)).astype(np.float32), "B"))
    x_shape = [BATCH, seq, INPUT] if layout else [seq, BATCH, INPUT]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    inputs = {"x": rng.standard_normal(x_shape).astype(np.float32)}
    names.append("lens" if seq_lens is not None else "")
    if seq_lens is not None:
        graph_inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [BATCH]))
        inputs["lens"] = np.asarray(seq_lens, np.int32)
    state_shape = [BATCH, dirs, HIDDEN] if layout else [dirs, BATCH, HIDDEN]
    for wanted, name in ((initial_h, "h0"), (initial_c, "c0")):
        names.append(name if wanted else "")
        if wanted:
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, state_shape))
            inputs[name] = rng.standard_normal(state_shape).astype(np.float32)
    if peepholes:
        names.append("P")
        inits.append(numpy_helper.from_array(rng.standard_normal((dirs, 3 * HIDDEN)).astype(np.float32), "P"))
    while not names[-1]:
        names.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    if layout:
        attrs["layout"] = layout
    node = helper.make_node(op, names, outputs, name="cell", hidden_size=HIDDEN, **attrs)
    graph_outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs]
    return make_model([node], graph_inputs, graph_outputs, inits, opset=opset), inputs


def _reference(op, kwargs, inputs):
    if not kwargs.get("layout"):
        return ort_run(_graph(op, **kwargs)[0], inputs)
    model = _graph(op, **{**kwargs, "layout": 0})[0]
    feed = {name: value.transpose(1, 0, 2) if value.ndim == 3 else value for name, value in inputs.items()}
    y, *states = ort_run(model, feed)
    return [y.transpose(2, 0, 1, 3)] + [state.transpose(1, 0, 2) for state in states]


CASES = [
    (op, kwargs)
    for op in GATES
    for kwargs in (
        {},
        {"direction": "bidirectional", "initial_h": True},
        {"direction": "reverse", "seq_lens": [5, 2, 3]},
        {"direction": "bidirectional", "seq_lens": [5, 2, 1], "layout": 1, "initial_h": True},
        {"clip": 0.7, "opset": 10, "bias": False},
        {"seq": 1},
    )
] + [
    ("LSTM", {"peepholes": True, "initial_h": True, "initial_c": True}),
    ("LSTM", {"peepholes": True, "direction": "bidirectional", "seq_lens": [4, 5, 1]}),
    ("LSTM", {"input_forget": 1}),
    ("LSTM", {"direction": "bidirectional", "initial_c": True, "layout": 1}),
    ("GRU", {"linear_before_reset": 1, "direction": "bidirectional", "initial_h": True, "seq_lens": [1, 5, 4]}),
    ("GRU", {"linear_before_reset": 1, "bias": False}),
    ("RNN", {"activations": ["Relu"]}),
    ("RNN", {"activations": ["Relu", "Sigmoid"], "direction": "bidirectional"}),
    ("GRU", {"activations": ["sigmoid", "softsign"], "direction": "reverse"}),
    ("LSTM", {"activations": ["HardSigmoid", "LeakyRelu", "ScaledTanh"], "activation_alpha": [0.3, 0.1, 0.9], "activation_beta": [0.4, 1.1]}),
    ("GRU", {"activations": ["Affine", "Elu"], "activation_alpha": [0.5, 0.7], "activation_beta": [0.2]}),
    ("GRU", {"activations": ["Softplus", "ThresholdedRelu"], "activation_alpha": [0.1]}),
]


@pytest.mark.parametrize(("op", "kwargs"), CASES, ids=[f"{op}-{'-'.join(map(str, kwargs.items()))}" for op, kwargs in CASES])
def test_unrolled_graph_matches_onnxruntime(op, kwargs):
    model, inputs = _graph(op, **kwargs)
    want = _reference(op, kwargs, inputs)
    model, report = rewritten(model, inputs)
    assert report.expanded == {op: 1} and report.expanded_nodes > 0
    assert op not in op_types(model) and {init.name for init in model.graph.initializer}.isdisjoint({"W", "R"})
    got = ort_run(model, inputs)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * max(1.0, float(np.max(np.abs(w)))))


def test_input_forget_couples_the_gates():
    """``input_forget=1`` is honoured (f = 1 - i), not ignored: its outputs differ from the default's."""
    coupled, inputs = _graph("LSTM", input_forget=1)
    plain, _ = _graph("LSTM")
    got = ort_run(rewritten(coupled, inputs)[0], inputs)[0]
    assert np.max(np.abs(got - ort_run(plain, inputs)[0])) > 1e-2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activations": ["Sigmoid", "Gelu", "Tanh"]}, "LSTM node 'cell': activations='Gelu' is not supported"),
        ({"direction": "sideways"}, "LSTM node 'cell': direction='sideways' is not supported by the local backend; allowed: forward, reverse, bidirectional"),
        ({"activations": ["Sigmoid"]}, "LSTM node 'cell': activations=['Sigmoid'] is not supported by the local backend; allowed: 3 names"),
    ],
)
def test_unsupported_attribute_names_node_attribute_and_allowed_values(kwargs, message):
    model, inputs = _graph("LSTM", **kwargs)
    with pytest.raises(UnsupportedOperatorsError) as caught:
        rewritten(model, inputs)
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.operators == ["LSTM"]


def test_dynamic_sequence_length_is_refused_with_the_reason():
    model, inputs = _graph("GRU")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "seq"
    with pytest.raises(UnsupportedOperatorsError, match=r"GRU node 'cell': sequence length of input X=None .*static sequence length"):
        onnx_normalize.normalize(model, {"x": [None, BATCH, INPUT]})


def test_rewrite_runs_when_constant_folding_fails(monkeypatch):
    """Fault injection in the folding pass: the LSTM is still rewritten, the report says folding stopped."""

    def broken(*args, **kwargs):
        raise RuntimeError("injected folding failure")

    monkeypatch.setattr(onnx_normalize, "_fold_pass", broken)
    model, inputs = _graph("LSTM", direction="bidirectional")
    want = ort_run(model, inputs)
    model, report = rewritten(model, inputs)
    assert report.expanded == {"LSTM": 1} and report.folding_skipped == "RuntimeError: injected folding failure"
    assert "operators rewritten for TVM: LSTM x1" in report.summary() and "constant folding stopped" in report.summary()
    for g, w in zip(ort_run(model, inputs), want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5)


# -- the local compile path ------------------------------------------------------------------


def _torch_recurrent_model():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            kwargs = {"input_size": 8, "hidden_size": 8, "num_layers": 2, "bidirectional": True, "batch_first": True}
            self.lstm, self.gru = torch.nn.LSTM(**kwargs), torch.nn.GRU(**kwargs)
            self.rnn = torch.nn.RNN(8, 8, batch_first=True, nonlinearity="relu")

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            z, g = self.gru(x)
            r, _ = self.rnn(x)
            return y, h, c, z, g, r

    inputs = {"x": np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32)}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(Recurrent().eval(), (torch.from_numpy(inputs["x"]),), buffer, input_names=["x"], opset_version=17, dynamo=False)
    return buffer.getvalue(), inputs


def _assert_close(got, want, rel: float = 1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=rel * max(1.0, float(np.max(np.abs(w)))))


def test_torch_lstm_gru_rnn_compile_and_match_onnxruntime(tmp_path):
    data, inputs = _torch_recurrent_model()
    got, metadata, lines = compile_and_run(tmp_path, data, inputs)
    _assert_close(got, ort_run(data, inputs))
    info = metadata["versions"]["onnx_normalized"]
    assert info["applied"] is True and info["expanded"] == {"LSTM": 2, "GRU": 2, "RNN": 1}, info
    assert any("operators rewritten for TVM: GRU x2, LSTM x2, RNN x1" in line for line in lines), lines


def test_sequence_lens_peepholes_and_clip_compile_and_match_onnxruntime(tmp_path):
    model, inputs = _graph("LSTM", direction="bidirectional", seq_lens=[3, 2, 1], peepholes=True, initial_h=True, initial_c=True, clip=2.0, seq=3)
    data = model.SerializeToString()
    got, metadata, _ = compile_and_run(tmp_path, data, inputs)
    _assert_close(got, ort_run(data, inputs))
    assert metadata["versions"]["onnx_normalized"]["expanded"] == {"LSTM": 1}


def test_unsupported_attribute_fails_the_compile_with_the_rewrite_message(tmp_path):
    from airflow_neo.local.errors import LocalCompilationError, failure_reason

    model, inputs = _graph("LSTM", activations=["Sigmoid", "Gelu", "Tanh"], seq=2)
    with pytest.raises(LocalCompilationError, match=r"LSTM node 'cell': activations='Gelu' is not supported") as caught:
        compile_and_run(tmp_path, model.SerializeToString(), inputs)
    assert failure_reason(caught.value).startswith(
        "ClientError: OperatorAttributeNotImplemented: LSTM node 'cell': activations='Gelu' is not supported"
    )
