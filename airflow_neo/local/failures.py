"""A failure inside a compile phase as one of our errors, in SageMaker Neo's classes.

:func:`translate` is how :func:`airflow_neo.local.compiler.compile_model` reports every exception
that is not already a :class:`~airflow_neo.local.errors.LocalCompilationError`: a missing Python
package is a ServerError saying what to install; a failure inside TVM's importers names the node
(:func:`~airflow_neo.local.diagnose.locate`) and takes the Neo class of the rule table
(:func:`~airflow_neo.local.diagnose.classify`), and every message ends with what to do; anything
else is a ServerError with TVM's message. Nothing here imports TVM at module level.
"""

from __future__ import annotations

import re

from airflow_neo.local.diagnose import Diagnosis, NodeContext, classify, locate, unsupported_summary
from airflow_neo.local.errors import (
    OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED,
    OPERATOR_ATTRIBUTE_REQUIRED,
    OPERATOR_ATTRIBUTE_VALUE_NOT_VALID,
    OPERATOR_NOT_IMPLEMENTED,
    CompilationError,
    LocalCompilationError,
    OperatorAttributeNotImplementedError,
    OperatorAttributeRequiredError,
    OperatorAttributeValueNotValidError,
    UnsupportedOperatorsError,
)

__all__ = ["ADVICE", "translate"]

_PACKAGES = {"tvm": "apache-tvm", "torch": "torch", "onnx": "onnx", "tflite": "tflite", "treelite": "treelite",
             "tl2cgen": "tl2cgen"}
_UNSUPPORTED_TORCH = re.compile(r"Unsupported function types? \[?([^\]\n]+)")
_MAX_TEXT = 2000

#: What to do, per Neo class of a failure at a node (None: a TVM failure we cannot pin on the model).
ADVICE = {
    OPERATOR_NOT_IMPLEMENTED: "TVM {tvm} has no converter for it: re-export the model with another opset, or "
                              "replace the layer with operators TVM converts",
    OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED: "TVM {tvm} converts {op} but not in this form: give static shapes in "
                                        "DataInputConfig, fold constants (onnxsim), or export the layer with "
                                        "another setting",
    OPERATOR_ATTRIBUTE_REQUIRED: "the node lacks an attribute that TVM {tvm} needs: re-export the model "
                                 "(onnx.checker.check_model names the attributes {op} requires)",
    OPERATOR_ATTRIBUTE_VALUE_NOT_VALID: "the value is not one that {op} allows: fix it in the exporter and "
                                        "re-export (onnx.checker.check_model validates the model)",
    None: "TVM {tvm} could not convert this node: give static shapes in DataInputConfig or simplify the graph "
          "(onnxsim); if it persists, report it with the model",
}
_NODE_ERRORS = {
    OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED: OperatorAttributeNotImplementedError,
    OPERATOR_ATTRIBUTE_REQUIRED: OperatorAttributeRequiredError,
    OPERATOR_ATTRIBUTE_VALUE_NOT_VALID: OperatorAttributeValueNotValidError,
}


def translate(err: BaseException, phase: str) -> LocalCompilationError:
    """``err``, raised in the compile phase ``phase`` (``import``, ``build``, ...), as our error."""
    if isinstance(err, ModuleNotFoundError):
        package = _PACKAGES.get((err.name or "").split(".")[0], err.name)
        return CompilationError(
            f"{phase} failed: the Python package {package!r} is not installed on this worker; "
            f"install it (pip install {package}) or the airflow-neo[local] extra"
        )
    diagnosis = locate(err)
    node = diagnosis.node if diagnosis is not None else None
    _kind, neo_class, _rule = classify(err, node)
    if neo_class == OPERATOR_NOT_IMPLEMENTED:
        return _unsupported_operators(err, diagnosis, node)
    if node is not None:
        return _at_node(err, phase, node, neo_class)
    text = str(err).strip()
    if len(text) > _MAX_TEXT:
        text = text[: _MAX_TEXT // 2] + "\n...\n" + text[-_MAX_TEXT // 2:]
    return CompilationError(f"{phase} failed: {type(err).__name__}: {text}")


def _at_node(err: BaseException, phase: str, node: NodeContext, neo_class: str | None) -> LocalCompilationError:
    """``node '...' (Op; inputs: ...): <TVM's first line>. <what to do>`` in the node's Neo class."""
    advice = _data_dependent_advice(node) if node.data_dependent else _advice(neo_class, node.op_type)
    what = _first_line(err) or type(err).__name__
    if isinstance(err, KeyError) and neo_class == OPERATOR_ATTRIBUTE_REQUIRED:
        what = f"TVM's {node.op_type} converter needs the attribute {err.args[0]!r}, which the node does not set"
    if neo_class in _NODE_ERRORS:
        return _NODE_ERRORS[neo_class](f"{node.describe()}: {what}. {advice}", [node.op_type])
    return CompilationError(f"{phase} failed at {node.describe()}: {type(err).__name__}: {what}. {advice}")


def _unsupported_operators(err: BaseException, diagnosis: Diagnosis | None, node: NodeContext | None) -> UnsupportedOperatorsError:
    """OperatorNotImplemented: every operator TVM lacks, with the nodes that use it when known."""
    advice = _advice(OPERATOR_NOT_IMPLEMENTED, "")
    prefix = f"the model uses operators that TVM {_tvm_version()} cannot convert"
    if diagnosis is not None and diagnosis.unsupported:
        return UnsupportedOperatorsError(f"{prefix}: {unsupported_summary(diagnosis)}. {advice}", list(diagnosis.unsupported))
    if node is not None:  # no converter for this node's opset
        return UnsupportedOperatorsError(f"{prefix}: {node.describe()}: {_first_line(err)}. {advice}", [node.op_type])
    text = str(err).strip()
    match = _UNSUPPORTED_TORCH.search(text)
    if match:
        operators = [op.strip(" '\"") for op in match.group(1).split(",") if op.strip(" '\"")]
    else:
        operators = [op.strip() for op in text.rsplit(":", 1)[-1].split(",") if op.strip()] if ":" in text else []
    return UnsupportedOperatorsError(f"{prefix}: {', '.join(operators) or text}. {advice}", operators)


def _data_dependent_advice(node: NodeContext) -> str:
    sources = ", ".join(f"{name!r} ({op})" for name, op in node.data_dependent)
    return (
        f"Its inputs depend on how many elements {sources} finds at run time, and TVM {_tvm_version()} compiles "
        f"{node.op_type} only for sizes that DataInputConfig fixes: export the model without that data-dependent "
        "post-processing (score filtering, NMS) and run it outside the compiled model, or use an architecture "
        "with a fixed number of outputs (e.g. DETR)"
    )


def _advice(neo_class: str | None, op: str) -> str:
    text = ADVICE.get(neo_class, ADVICE[None]).format(tvm=_tvm_version(), op=op)
    return text[:1].upper() + text[1:]


def _first_line(err: BaseException) -> str:
    """The first non-empty line of ``err``'s message (at most 500 characters), without its final period."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:500].rstrip(". ") if lines else ""


def _tvm_version() -> str:
    try:
        import tvm

        return tvm.__version__
    except ImportError:  # pragma: no cover - tvm is installed wherever TVM failed
        return "?"
