"""airflow_neo.local.diagnose: the failing node read from TVM's own tracebacks, and the rule table.

The failures are real: ONNX graphs that TVM 0.27's importer rejects, and a torch.export program
with operators it lacks; nothing in TVM is patched.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from airflow_neo.local.diagnose import RULES, NodeContext, classify, locate, unsupported_summary
from tests.local import failing_graphs


def _onnx_failure(builder, tmp_path) -> BaseException:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    case = builder(tmp_path)
    with tarfile.open(case.archive) as tar:
        model = onnx.load_from_string(tar.extractfile("model.onnx").read())
    with pytest.raises(Exception) as info:
        from_onnx(model, shape_dict=case.data_input_config)
    return info.value


def test_onnx_failing_node_with_inputs_and_attributes(tmp_path):
    err = _onnx_failure(failing_graphs.pad_bad_mode, tmp_path)
    diagnosis = locate(err)
    assert diagnosis.framework == "onnx" and diagnosis.stage == "convert"
    node = diagnosis.node
    assert (node.name, node.op_type, node.position) == ("/enc/Pad", "Pad", 0)
    assert node.inputs == (("x", "float32[1,3,4,4]"), ("pads", "int64[8]"))
    assert node.attributes == (("mode", "'symmetric'"),)
    assert node.describe() == "node '/enc/Pad' (Pad; inputs: x float32[1,3,4,4], pads int64[8]; attributes: mode='symmetric')"
    assert classify(err, node)[:2] == ("ClientError", "OperatorAttributeValueNotValid")


def test_onnx_unsupported_operators_are_found_before_conversion_with_inferred_shapes(tmp_path):
    err = _onnx_failure(failing_graphs.unsupported_op, tmp_path)
    diagnosis = locate(err)
    assert diagnosis.stage == "check" and diagnosis.node is None
    assert diagnosis.unsupported == ("Celu",)
    assert [(n.name, n.position, n.inputs) for n in diagnosis.nodes] == [("/act/Celu", 1, (("r", "float32[2,4]"),))]
    assert unsupported_summary(diagnosis) == "Celu (node '/act/Celu'; inputs: r float32[2,4])"
    assert classify(err, None)[:2] == ("ClientError", "OperatorNotImplemented")


def test_onnx_missing_attribute_is_attribute_required(tmp_path):
    err = _onnx_failure(failing_graphs.depth_to_space_without_blocksize, tmp_path)
    assert isinstance(err, KeyError)
    node = locate(err).node
    assert (node.name, node.op_type, node.attributes) == ("/up/DepthToSpace", "DepthToSpace", ())
    assert classify(err, node) == ("ClientError", "OperatorAttributeRequired", "KeyError of an attribute the node lacks")


def test_torch_export_unsupported_functions_name_their_nodes():
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    class Grid(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", antialias=True)

    program = torch.export.export(Grid().eval(), (torch.zeros(1, 1, 4, 4),))
    buffer = io.BytesIO()  # round trip: the compiler reads a saved program
    torch.export.save(program, buffer)
    buffer.seek(0)
    with pytest.raises(AssertionError) as info:
        from_exported_program(torch.export.load(buffer), unwrap_unit_return_tuple=True)
    diagnosis = locate(info.value)
    assert diagnosis.framework == "torch" and diagnosis.stage == "check"
    assert diagnosis.unsupported == ("_upsample_bicubic2d_aa.default",)
    (node,) = diagnosis.nodes
    assert node.name == "_upsample_bicubic2d_aa"
    assert node.inputs == (("x", "float32[1,1,4,4]"),)
    assert ("align_corners", "False") in node.attributes
    assert node.module == "the model (Grid)"
    assert classify(info.value, None)[:2] == ("ClientError", "OperatorNotImplemented")


def test_an_error_outside_the_importers_has_no_node():
    try:
        raise ValueError("not from TVM")
    except ValueError as err:
        assert locate(err) is None
        assert classify(err, None) == ("ServerError", None, "no rule matched")


# Messages of TVM 0.27's ONNX converters, at a node (PAD: a Pad node that sets ``mode``).
PAD = NodeContext("/p", "Pad", (("x", "float32[1,3,4,4]"),), (("mode", "'wrap'"),))
RESIZE = NodeContext("/r", "Resize", (("x", "float32[1,3,4,4]"),))


@pytest.mark.parametrize(
    ("message", "node", "expected"),
    [
        ("Dynamic pads are not supported yet.", PAD, "OperatorAttributeNotImplemented"),
        ("RoiAlign in Relax only supports avg and max modes", RESIZE, "OperatorAttributeNotImplemented"),
        ("opset version 9 of Resize not implemented", RESIZE, "OperatorNotImplemented"),
        ("MaxRoiPool requires pooled_shape attribute", RESIZE, "OperatorAttributeRequired"),
        ("Optional without an input must specify the type attribute.", RESIZE, "OperatorAttributeRequired"),
        ("Pad axis 7 is out of range for rank 4.", PAD, "OperatorAttributeValueNotValid"),
        ("the mode 'wrap' needs opset 19", PAD, "OperatorAttributeNotImplemented"),  # names the node's attribute
        ("Node /r cannot handle ShapeExpr inputs.", RESIZE, None),  # a TVM limitation: ServerError
        ("Dynamic pads are not supported yet.", None, None),  # not at a node: nothing to pin on the model
    ],
)
def test_rule_table_on_tvm_messages(message, node, expected):
    kind, neo_class, _rule = classify(ValueError(message), node)
    assert neo_class == expected
    assert kind == ("ServerError" if expected is None else "ClientError")


def test_rules_have_unique_names_and_neo_classes():
    from airflow_neo.local.errors import NEO_CLASSES

    assert len({rule.name for rule in RULES}) == len(RULES)
    # InputConfiguration (requests) and AccuracyCheckFailed (verification) are never TVM importer failures
    assert {rule.neo_class for rule in RULES} == set(NEO_CLASSES) - {"InputConfiguration", "AccuracyCheckFailed"}


def test_a_tvm_failure_inside_a_converter_is_a_server_error_at_its_node(tmp_path):
    """BERT's failure in TVM 0.27 (briefing: "broadcast_to expects ..."), reduced: the node is the
    ConstantOfShape of an empty shape, not the Expand one would guess from the message."""
    from airflow_neo.local.failures import translate

    err = _onnx_failure(failing_graphs.constant_of_shape_scalar, tmp_path)
    node = locate(err).node
    assert node.describe() == (
        "node '/mask/ConstantOfShape' (ConstantOfShape; inputs: empty_shape int64[0]; attributes: value=float32[1]=[1.0])"
    )
    assert classify(err, node)[:2] == ("ServerError", None)
    reason = translate(err, "import").failure_reason
    assert reason.startswith(
        "ServerError: import failed at node '/mask/ConstantOfShape' (ConstantOfShape; inputs: empty_shape int64[0]; "
        "attributes: value=float32[1]=[1.0]): ValueError: broadcast_to expects the input shape"
    ), reason
    assert reason.endswith("if it persists, report it with the model")


def test_a_node_fed_by_a_data_dependent_count_names_its_source_and_what_to_do(tmp_path):
    """Detection post-processing (torchvision's ``_topk_min``: k from NonZero's count): the reason names
    the upstream NonZero and says to move the data-dependent step out, as a ClientError."""
    from airflow_neo.local.failures import translate

    err = _onnx_failure(failing_graphs.topk_of_data_dependent_count, tmp_path)
    node = locate(err).node
    assert node.name == "/post/TopK" and node.data_dependent == (("/post/NonZero", "NonZero"),)
    assert classify(err, node)[:2] == ("ClientError", "OperatorAttributeNotImplemented")
    reason = translate(err, "import").failure_reason
    assert reason.startswith("ClientError: OperatorAttributeNotImplemented: node '/post/TopK' (TopK; "), reason
    assert "depend on how many elements '/post/NonZero' (NonZero) finds at run time" in reason
    assert "run it outside the compiled model" in reason


def test_a_node_with_only_static_ancestors_has_no_data_dependent_sources(tmp_path):
    err = _onnx_failure(failing_graphs.constant_of_shape_scalar, tmp_path)
    assert locate(err).node.data_dependent == ()
