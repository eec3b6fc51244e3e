"""The frameworks the local backend imports, and why it refuses the others: one table.

Both the create-time checks (:mod:`airflow_neo.local.preflight`) and the compiler read it, so a
refusal says the same thing wherever it happens. Nothing here imports Airflow or TVM.
"""

from __future__ import annotations

from airflow_neo.local.archive import MODEL_SUFFIXES

__all__ = ["SUPPORTED_FRAMEWORKS", "UNSUPPORTED_FRAMEWORKS", "framework_problem"]

#: Frameworks with an import path (model file suffixes in :data:`~airflow_neo.local.archive.MODEL_SUFFIXES`);
#: TENSORFLOW, KERAS, DARKNET and MXNET by way of a conversion to ONNX (:mod:`airflow_neo.local.convert`).
SUPPORTED_FRAMEWORKS: tuple[str, ...] = tuple(MODEL_SUFFIXES)
UNSUPPORTED_FRAMEWORKS: dict[str, str] = {
    "SKLEARN": "no scikit-learn frontend; convert tree models to XGBoost or the model to ONNX (skl2onnx)",
}


def framework_problem(framework: str) -> str:
    """Why ``framework`` is refused and what is supported (the text after the framework's name)."""
    reason = UNSUPPORTED_FRAMEWORKS.get(framework, "unknown framework")
    return f"is not supported by the local backend ({reason}); supported: {', '.join(SUPPORTED_FRAMEWORKS)}"
