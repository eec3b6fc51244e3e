"""Small real ONNX graphs that TVM 0.27's importer rejects, one per Neo class, built with onnx.helper.

Each is valid for onnxruntime where ONNX allows it (TopK sorted=0 is legal ONNX that TVM does not
implement); the others break an operator's rules the way a faulty exporter does. Shared by
tests/local/test_errors.py and tests/local/test_diagnose.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.local.models import ModelCase, write_archive


def _never(inputs: dict) -> list:  # pragma: no cover - never runs: the model does not compile
    raise NotImplementedError


def _case(directory, model, shapes: dict[str, list[int]]) -> ModelCase:
    return ModelCase(
        write_archive(directory, {"model.onnx": model.SerializeToString()}),
        _never,
        framework="ONNX",
        data_input_config=shapes,
        inputs={name: np.zeros(shape, np.float32) for name, shape in shapes.items()},
        model_file="model.onnx",
    )


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17):
    from onnx import helper

    graph = helper.make_graph(nodes, "failing", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tensor(name, dtype, shape):
    from onnx import helper

    return helper.make_tensor_value_info(name, dtype, shape)


def unsupported_op(directory: str | Path) -> ModelCase:
    """x -> Relu '/act/Relu' -> Celu '/act/Celu' (TVM has no Celu converter) -> Relu."""
    from onnx import TensorProto, helper

    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="/act/Relu"),
            helper.make_node("Celu", ["r"], ["c"], name="/act/Celu"),
            helper.make_node("Relu", ["c"], ["y"], name="/out/Relu"),
        ],
        [_tensor("x", TensorProto.FLOAT, [2, 4])],
        [_tensor("y", TensorProto.FLOAT, [2, 4])],
    )
    return _case(directory, model, {"x": [2, 4]})


def pad_bad_mode(directory: str | Path) -> ModelCase:
    """Pad '/enc/Pad' with mode 'symmetric' (ONNX allows constant, reflect, edge, wrap)."""
    from onnx import TensorProto, helper, numpy_helper

    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    model = _model(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="/enc/Pad", mode="symmetric")],
        [_tensor("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [_tensor("y", TensorProto.FLOAT, [1, 3, 6, 6])],
        [pads],
    )
    return _case(directory, model, {"x": [1, 3, 4, 4]})


def topk_unsorted(directory: str | Path) -> ModelCase:
    """TopK '/head/TopK' with sorted=0: legal ONNX, but TVM's converter only implements sorted=1."""
    from onnx import TensorProto, helper, numpy_helper

    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    model = _model(
        [helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="/head/TopK", sorted=0)],
        [_tensor("x", TensorProto.FLOAT, [2, 8])],
        [_tensor("values", TensorProto.FLOAT, [2, 3]), _tensor("indices", TensorProto.INT64, [2, 3])],
        [k],
    )
    return _case(directory, model, {"x": [2, 8]})


def depth_to_space_without_blocksize(directory: str | Path) -> ModelCase:
    """DepthToSpace '/up/DepthToSpace' without its required ``blocksize`` attribute."""
    from onnx import TensorProto, helper

    model = _model(
        [helper.make_node("DepthToSpace", ["x"], ["y"], name="/up/DepthToSpace")],
        [_tensor("x", TensorProto.FLOAT, [1, 8, 2, 2])],
        [_tensor("y", TensorProto.FLOAT, [1, 2, 4, 4])],
    )
    return _case(directory, model, {"x": [1, 8, 2, 2]})


def constant_of_shape_scalar(directory: str | Path) -> ModelCase:
    """transformers' attention-mask pattern that fails BERT in TVM 0.27: ConstantOfShape
    '/mask/ConstantOfShape' of an empty shape (a scalar, legal ONNX) with a 1-element ``value``,
    added to x. TVM's converter fails inside it (broadcast_to of a 1-D value to rank 0)."""
    from onnx import TensorProto, helper, numpy_helper

    empty = numpy_helper.from_array(np.zeros([0], np.int64), "empty_shape")
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [1.0])
    model = _model(
        [
            helper.make_node("ConstantOfShape", ["empty_shape"], ["one"], name="/mask/ConstantOfShape", value=value),
            helper.make_node("Add", ["x", "one"], ["y"], name="/mask/Add"),
        ],
        [_tensor("x", TensorProto.FLOAT, [1, 16])],
        [_tensor("y", TensorProto.FLOAT, [1, 16])],
        [empty],
    )
    return _case(directory, model, {"x": [1, 16]})


def topk_of_data_dependent_count(directory: str | Path) -> ModelCase:
    """torchvision detection's ``_topk_min`` idiom: k = min(K, number of candidates), where the count
    comes from NonZero (data-dependent). TVM's ReduceMin converter cannot take the shape value."""
    from onnx import TensorProto, helper, numpy_helper

    model = _model(
        [
            helper.make_node("Greater", ["scores", "threshold"], ["keep"], name="/post/Greater"),
            helper.make_node("NonZero", ["keep"], ["where"], name="/post/NonZero"),
            helper.make_node("Shape", ["where"], ["where_shape"], name="/post/Shape"),
            helper.make_node("Gather", ["where_shape", "one"], ["count"], name="/post/Gather", axis=0),
            helper.make_node("Concat", ["limit", "count"], ["candidates"], name="/post/Concat", axis=0),
            helper.make_node("ReduceMin", ["candidates"], ["k"], name="/post/ReduceMin", keepdims=1),
            helper.make_node("TopK", ["scores", "k"], ["top", "index"], name="/post/TopK"),
        ],
        [_tensor("scores", TensorProto.FLOAT, [64])],
        [_tensor("top", TensorProto.FLOAT, ["k"])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "threshold"),
         numpy_helper.from_array(np.array([1], np.int64), "one"),
         numpy_helper.from_array(np.array([10], np.int64), "limit")],
    )
    return _case(directory, model, {"scores": [64]})
