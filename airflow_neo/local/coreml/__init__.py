"""The ``coreml`` target of the local backend: PYTORCH (TorchScript), TENSORFLOW (SavedModel or
frozen graph) and KERAS models converted with coremltools to a Core ML ML Program (``.mlpackage``).

:func:`compile_coreml` is the entry point (:mod:`.convert` documents the choices: ML Program,
iOS15, FP32/FP16 from ``precision_mode``, shapes in the model's own layout); :mod:`.inputs` turns
DataInputConfig entries (ranges, enumerated shapes, Image with bias/scale) into coremltools input
types; :mod:`.options` reads ``class_labels`` and ``precision_mode``; :mod:`.sources` loads the
model file; :mod:`.summary` describes the saved spec. Core ML models cannot run on Linux, so a
converted model is described, never run. Nothing in this package imports Airflow, and
coremltools and the frameworks are imported inside functions only.
"""

from airflow_neo.local.coreml.convert import MEMBER, SUPPORTED_FRAMEWORKS, CoreMLResult, compile_coreml

__all__ = ["MEMBER", "SUPPORTED_FRAMEWORKS", "CoreMLResult", "compile_coreml"]
