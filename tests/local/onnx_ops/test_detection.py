"""Detection post-processing: TVM 0.27 imports NonMaxSuppression and TopK itself (no rewrite in
airflow_neo.local.onnx_ops); this checks that they compile through the local compile path and
give onnxruntime's results on the original file, including a selection count that depends on
the data (score threshold)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.local.onnx_ops._helpers import compile_and_run, make_model, op_types, ort_run, rewritten


def _detection_head():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 1, (1, 20, 4)).astype(np.float32)
    boxes[..., 2:] = boxes[..., :2] + rng.uniform(0.1, 0.5, (1, 20, 2))
    scores = rng.uniform(0, 1, (1, 3, 20)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array([8], np.int64), "max_per_class"),
        numpy_helper.from_array(np.array([0.4], np.float32), "iou"),
        numpy_helper.from_array(np.array([0.8], np.float32), "score_threshold"),
        numpy_helper.from_array(np.array([4], np.int64), "k"),
    ]
    nodes = [
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_per_class", "iou", "score_threshold"], ["selected"]),
        helper.make_node("TopK", ["scores", "k"], ["values", "indices"], axis=-1),
    ]
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 20, 4]), helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3, 20])]
    outputs = [
        helper.make_tensor_value_info("selected", TensorProto.INT64, None),
        helper.make_tensor_value_info("values", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("indices", TensorProto.INT64, None),
    ]
    return make_model(nodes, inputs, outputs, inits), {"boxes": boxes, "scores": scores}


def test_nms_and_topk_are_left_to_tvm():
    model, inputs = _detection_head()
    model, report = rewritten(model, inputs)
    assert report.expanded == {} and op_types(model) == {"NonMaxSuppression", "TopK"}


def test_nms_and_topk_compile_and_match_onnxruntime(tmp_path):
    model, inputs = _detection_head()
    data = model.SerializeToString()
    want = ort_run(data, inputs)
    assert 0 < len(want[0]) < 3 * 8  # the score threshold cut the selection: its length depends on the data
    got, _, _ = compile_and_run(tmp_path, data, inputs)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
