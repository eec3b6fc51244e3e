"""Fuzzing the ONNX import of the compile child with mutated protobufs.

Small seed graphs (built with ``onnx.helper``: Relu, MatMul+Add, Conv with a shape subgraph that
the normalization folds, an LSTM that it rewrites, operators TVM lacks) are mutated through
onnx's proto API (wrong or unknown op types, missing and dangling inputs, bad and huge dims,
wrong or invalid dtypes, broken initializers and attributes, odd opsets) and at the byte level
(flips, truncation), with matching or mismatched DataInputConfig and dtype options.

Each model is imported by a long-lived worker process (``tests/fuzz/onnx_import_worker.py``)
exactly as ``compile_model`` does (the importer inside ``compiler._phase("import")``), under an
address-space cap, so that a crash in TVM kills the worker, not pytest.

Property: the import succeeds or fails with a LocalCompilationError whose FailureReason is in
Neo's form with a message; never another exception, never a crash or hang of the process.
"""

from __future__ import annotations

import atexit
import json
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz import examples

ROOT = Path(__file__).resolve().parents[2]
CASE_TIMEOUT = 180  # seconds a single import may take before it counts as a hang


# ----------------------------------------------------------------------------------------------
# seed graphs


def _seeds() -> dict:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def model(nodes, inputs, outputs, initializers=(), opset=17):
        graph = helper.make_graph(nodes, "seed", inputs, outputs, list(initializers))
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    f32 = TensorProto.FLOAT
    rng = np.random.default_rng(0)
    weight = lambda name, *shape: numpy_helper.from_array(rng.standard_normal(shape).astype("float32"), name)  # noqa: E731
    return {
        "relu": (model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", f32, [2, 4])],
                       [helper.make_tensor_value_info("y", f32, [2, 4])]), {"x": [2, 4]}),
        "mlp": (model(
            [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])],
            [helper.make_tensor_value_info("x", f32, ["batch", 8])], [helper.make_tensor_value_info("y", f32, ["batch", 4])],
            [weight("w", 8, 4), weight("b", 4)]), {"x": [1, 8]}),
        "conv": (model(
            [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0), helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0), helper.make_node("Reshape", ["c", "shape"], ["y"])],
            [helper.make_tensor_value_info("x", f32, [1, 3, 8, 8])], [helper.make_tensor_value_info("y", f32, None)],
            [weight("w", 4, 3, 3, 3), numpy_helper.from_array(np.array(0, "int64"), "zero"),
             numpy_helper.from_array(np.array([0], "int64"), "axes"), numpy_helper.from_array(np.array([-1], "int64"), "minus1")]),
            {"x": [1, 3, 8, 8]}),
        "lstm": (model(
            [helper.make_node("LSTM", ["x", "W", "R"], ["Y", "Y_h", "Y_c"], hidden_size=3)],
            [helper.make_tensor_value_info("x", f32, [5, 1, 4])], [helper.make_tensor_value_info("Y", f32, None)],
            [weight("W", 1, 12, 4), weight("R", 1, 12, 3)]), {"x": [5, 1, 4]}),
        "unsupported": (model(
            [helper.make_node("Celu", ["x"], ["c"]), helper.make_node("LpNormalization", ["c"], ["y"])],
            [helper.make_tensor_value_info("x", f32, [2, 4])], [helper.make_tensor_value_info("y", f32, [2, 4])]),
            {"x": [2, 4]}),
    }


SEEDS = _seeds()
OP_TYPES = ["Relu", "Add", "MatMul", "Conv", "Reshape", "Gather", "Concat", "LSTM", "Softmax", "Resize", "Loop", "If",
            "Scan", "NonZero", "Celu", "Einsum", "TopK", "Unknown", "", "relu", "Conv\u00e9", "QLinearConv", "Identity"]
DIMS = st.one_of(st.integers(1, 16), st.sampled_from([0, -1, -7, 2**31, 2**40, 2**62]))

# ----------------------------------------------------------------------------------------------
# mutations (each changes a ModelProto in place)


def _mutate(model, draw) -> str:
    from onnx import AttributeProto, TensorProto

    graph = model.graph
    kind = draw(st.sampled_from([
        "op_type", "drop_input", "dangling_input", "input_dims", "input_dtype", "dim_param", "drop_graph_input",
        "initializer_dims", "initializer_data", "initializer_dtype", "attribute", "opset", "domain", "drop_node",
        "duplicate_output", "drop_output", "node_output_rename",
    ]))
    nodes = list(graph.node)
    if kind == "op_type" and nodes:
        draw(st.sampled_from(nodes)).op_type = draw(st.sampled_from(OP_TYPES))
    elif kind == "drop_input" and nodes:
        node = draw(st.sampled_from(nodes))
        if node.input:
            del node.input[draw(st.integers(0, len(node.input) - 1))]
    elif kind == "dangling_input" and nodes:
        draw(st.sampled_from(nodes)).input.append(draw(st.sampled_from(["nowhere", "", "y", "x"])))
    elif kind in ("input_dims", "dim_param", "input_dtype") and graph.input:
        value = draw(st.sampled_from(list(graph.input)))
        if kind == "input_dtype":
            value.type.tensor_type.elem_type = draw(st.sampled_from([0, 2, 6, 7, 8, 9, 10, 11, 16, 17, 24, 99]))
        else:
            shape = value.type.tensor_type.shape
            del shape.dim[:]
            for dim in draw(st.lists(DIMS, max_size=6)):
                entry = shape.dim.add()
                if kind == "dim_param":
                    entry.dim_param = draw(st.sampled_from(["n", "", "batch"]))
                else:
                    entry.dim_value = dim
    elif kind == "drop_graph_input" and graph.input:
        del graph.input[0]
    elif kind.startswith("initializer") and graph.initializer:
        init = draw(st.sampled_from(list(graph.initializer)))
        if kind == "initializer_dims":
            del init.dims[:]
            init.dims.extend(draw(st.lists(DIMS, max_size=5)))
        elif kind == "initializer_data":
            data = init.raw_data or bytes(init.float_data and b"")
            init.ClearField("float_data")
            init.raw_data = data[: draw(st.integers(0, max(len(data) - 1, 0)))] + draw(st.binary(max_size=8))
        else:
            init.data_type = draw(st.sampled_from([0, TensorProto.INT64, TensorProto.STRING, TensorProto.BOOL, 99]))
    elif kind == "attribute" and nodes:
        node = draw(st.sampled_from(nodes))
        name = draw(st.sampled_from(["axis", "pads", "hidden_size", "kernel_shape", "strides", "group", "direction", "alpha"]))
        for attr in list(node.attribute):
            if attr.name == name:
                node.attribute.remove(attr)
        attr = node.attribute.add()
        attr.name = name
        choice = draw(st.sampled_from(["int", "ints", "string", "float", "empty"]))
        if choice == "int":
            attr.type, attr.i = AttributeProto.INT, draw(st.integers(-(2**63), 2**63 - 1))
        elif choice == "ints":
            attr.type = AttributeProto.INTS
            attr.ints.extend(draw(st.lists(st.integers(-(2**31), 2**31), max_size=6)))
        elif choice == "string":
            attr.type, attr.s = AttributeProto.STRING, draw(st.sampled_from([b"", b"forward", b"bidirectional", b"\xff"]))
        elif choice == "float":
            attr.type, attr.f = AttributeProto.FLOAT, draw(st.floats(allow_nan=True, width=32))
    elif kind == "opset":
        model.opset_import[0].version = draw(st.sampled_from([0, 1, 6, 11, 13, 18, 21, 999, -1]))
    elif kind == "domain" and nodes:
        draw(st.sampled_from(nodes)).domain = draw(st.sampled_from(["com.microsoft", "ai.onnx.ml", "bogus", "ai.onnx"]))
    elif kind == "drop_node" and nodes:
        graph.node.remove(draw(st.sampled_from(nodes)))
    elif kind == "duplicate_output" and graph.output:
        graph.output.append(graph.output[0])
    elif kind == "drop_output" and graph.output:
        del graph.output[:]
    elif kind == "node_output_rename" and nodes:
        node = draw(st.sampled_from(nodes))
        if node.output:
            node.output[0] = draw(st.sampled_from(["x", "", "y", "w"]))
    return kind


@st.composite
def onnx_cases(draw):
    import onnx

    seed_name = draw(st.sampled_from(sorted(SEEDS)))
    seed, data_input = SEEDS[seed_name]
    model = onnx.ModelProto()
    model.CopyFrom(seed)
    mutations = [_mutate(model, draw) for _ in range(draw(st.integers(0, 3)))]
    data = model.SerializeToString()
    damage = draw(st.sampled_from(["none", "none", "none", "flip", "truncate"]))
    if damage == "flip" and data:
        buffer = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            buffer[draw(st.integers(0, len(buffer) - 1))] = draw(st.integers(0, 255))
        data = bytes(buffer)
    elif damage == "truncate":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if damage != "none":
        mutations.append(damage)
    data_input = draw(st.one_of(
        st.just(data_input), st.just(data_input), st.just(data_input), st.just(data_input), st.none(),
        st.dictionaries(st.sampled_from(["x", "w", "missing", ""]), st.lists(DIMS.filter(lambda d: d > 0), min_size=1, max_size=5),
                        min_size=1, max_size=2),
    ))
    dtype = draw(st.sampled_from([None, None, None, None, None, "float32", "float16", "int8", "int64", {"x": "float16"}, {"nope": "float32"}]))
    return {"seed": seed_name, "mutations": mutations, "data": data, "data_input": data_input, "dtype": dtype}


# ----------------------------------------------------------------------------------------------
# the worker


class ImportWorker:
    """The worker process (restarted after a crash or a hang)."""

    def __init__(self) -> None:
        self.process = None
        self.dir = Path(tempfile.mkdtemp(prefix="neo-onnx-fuzz-"))
        atexit.register(shutil.rmtree, self.dir, True)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.onnx_import_worker"], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert json.loads(self._line(600) or "{}").get("ready"), "the ONNX import worker did not start"

    def _line(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        return self.process.stdout.readline() or None

    def run(self, case: dict) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        model = self.dir / "model.onnx"
        model.write_bytes(case["data"])
        self.process.stdin.write(json.dumps({"model": str(model), "data_input": case["data_input"], "dtype": case["dtype"]}) + "\n")
        self.process.stdin.flush()
        line = self._line(CASE_TIMEOUT)
        if line is None:
            hung = self.process.poll() is None
            if hung:
                self.process.kill()
            code = self.process.wait()
            self.process = None
            return {"outcome": "hang" if hung else "crash", "returncode": code}
        return json.loads(line)


_WORKER = ImportWorker()


def _describe(case: dict) -> str:
    return f"seed {case['seed']}, mutations {case['mutations']}, DataInputConfig {case['data_input']}, dtype {case['dtype']}"


@settings(max_examples=examples(120, 1500))
@given(case=onnx_cases())
def test_mutated_onnx_imports_or_fails_with_a_local_compilation_error(case, tally):
    result = _WORKER.run(case)
    assert result["outcome"] in ("imported", "error"), f"{result} for {_describe(case)}"
    if result["outcome"] == "error":
        assert result["reason"].startswith(("ClientError: ", "ServerError: ")), result
        assert len(result["reason"].split(": ", 2)[-1].strip()) > 0, result
        tally(f"{result['class']} (raised {result['raw']})")
    else:
        tally("imported")


def _broken(tmp_path, *, node_input: str = "x", graph_output: str = "y") -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", [node_input], ["y"])], "broken",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info(graph_output, TensorProto.FLOAT, [2, 4])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_node_input_nothing_defines_is_a_model_archive_error(tmp_path):
    """Found by the fuzzer: TVM read the undefined input as a missing attribute (OperatorAttributeRequired)."""
    import pytest

    from airflow_neo.local.errors import ModelArchiveError
    from airflow_neo.local.frontends import IMPORTERS

    with pytest.raises(ModelArchiveError, match="node #0 \\(Relu\\) reads 'nowhere', which no graph input"):
        IMPORTERS["ONNX"](_broken(tmp_path, node_input="nowhere"), {"x": [2, 4]}, None, print)


def test_a_graph_output_nothing_defines_is_a_model_archive_error(tmp_path):
    """Found by the fuzzer: TVM failed with a bare KeyError (ServerError: import failed: KeyError: 'z')."""
    import pytest

    from airflow_neo.local.errors import ModelArchiveError
    from airflow_neo.local.frontends import IMPORTERS

    with pytest.raises(ModelArchiveError, match="graph output 'z' is not defined"):
        IMPORTERS["ONNX"](_broken(tmp_path, graph_output="z"), {"x": [2, 4]}, None, print)
