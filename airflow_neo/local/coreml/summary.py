"""What a converted Core ML model is, read back from its spec (the protobuf coremltools wrote), not
from the request: inputs with their shape constraints and image preprocessing, outputs, the
classifier, the model type, spec version and the precision of its weights.

Invariants: :func:`spec_summary` returns JSON-safe values only (str, int, float, bool, None,
lists, dicts); :func:`feature_specs` gives the artifact's inputs/outputs as
:class:`~airflow_neo.local.frontend_common.InputSpec` with None for every flexible dimension.
Nothing here imports coremltools: the spec is a protobuf message passed in.
"""

from __future__ import annotations

from collections import Counter

from airflow_neo.local.frontend_common import InputSpec

__all__ = ["classifier_labels", "feature_specs", "image_preprocessing", "main_block", "spec_summary", "weight_dtypes"]

#: Core ML's ArrayFeatureType data types (FeatureTypes.proto) as numpy names.
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32", 131080: "int8"}
#: MIL DataType enum values (MIL.proto) of floating point tensors.
_MIL_FLOATS = {10: "float16", 11: "float32", 12: "float64", 13: "bfloat16"}
_PREPROCESS_SUFFIXES = ("__scaled___y_0", "__biased___y_0")


def main_block(spec):
    """The ML Program's ``main`` block (None for a neural-network model)."""
    if spec.WhichOneof("Type") != "mlProgram":
        return None
    function = spec.mlProgram.functions["main"]
    return function.block_specializations[function.opset]


def _immediate(value) -> list:
    """The numbers or strings of a MIL immediate Value (``[]`` for a blob or an empty value)."""
    if value.WhichOneof("value") != "immediateValue":
        return []
    if value.immediateValue.WhichOneof("value") == "list":  # a list of Values (the classify op's classes)
        return [item for element in value.immediateValue.list.values for item in _immediate(element)]
    tensor = value.immediateValue.tensor
    kind = tensor.WhichOneof("value")
    if kind == "bytes":  # float16 immediates are raw little-endian bytes
        import numpy as np

        return [float(x) for x in np.frombuffer(tensor.bytes.values, dtype=np.float16)]
    return list(getattr(tensor, kind).values) if kind else []


def _consts(block) -> dict:
    return {op.outputs[0].name: op for op in block.operations if op.type == "const"}


def image_preprocessing(block, name: str) -> dict:
    """``{"scale": s, "bias": [..]}`` of the ops coremltools inserts after image input ``name``
    (``mul`` by the scale, then ``add`` of the bias: Core ML computes ``scale * x + bias``)."""
    found = {"scale": 1.0, "bias": None}
    if block is None:
        return found
    consts = _consts(block)
    for op in block.operations:
        if op.type not in ("mul", "add") or not op.outputs or op.outputs[0].name not in (f"{name}__scaled__", f"{name}__biased__"):
            continue
        argument = op.inputs["y"].arguments[0]
        values = _immediate(consts[argument.name].attributes["val"]) if argument.name in consts else _immediate(argument.value)
        if op.type == "mul":
            found["scale"] = float(values[0]) if values else None
        else:
            found["bias"] = [float(v) for v in values]
    return found


def weight_dtypes(block) -> dict:
    """``{dtype: count}`` of the floating-point constants (weights) of the program, the image
    preprocessing constants left out."""
    counts: Counter = Counter()
    if block is None:
        return {}
    for op in block.operations:
        if op.type != "const" or op.outputs[0].name.endswith(_PREPROCESS_SUFFIXES):
            continue
        dtype = _MIL_FLOATS.get(op.outputs[0].type.tensorType.dataType)
        if dtype:
            counts[dtype] += 1
    return dict(sorted(counts.items()))


def classifier_labels(block) -> list | None:
    """The class labels of the program's ``classify`` op (None when the model is no classifier)."""
    if block is None:
        return None
    consts = _consts(block)
    for op in block.operations:
        if op.type == "classify":
            argument = op.inputs["classes"].arguments[0]
            value = consts[argument.name].attributes["val"] if argument.name in consts else argument.value
            return list(_immediate(value))
    return None


def _array_shape(array) -> tuple[list, dict]:
    """The array feature's default shape and its constraint: static, range or enumerated."""
    shape = [int(d) for d in array.shape]
    kind = array.WhichOneof("ShapeFlexibility")
    if kind == "shapeRange":
        ranges = [[int(r.lowerBound), int(r.upperBound)] for r in array.shapeRange.sizeRanges]
        flexible = [lo != hi for lo, hi in ranges]
        return shape, {"kind": "range" if any(flexible) else "static", "ranges": ranges, "default": shape}
    if kind == "enumeratedShapes":
        shapes = [[int(d) for d in s.shape] for s in array.enumeratedShapes.shapes]
        return shape, {"kind": "enumerated", "shapes": shapes, "default": shape}
    return shape, {"kind": "static" if shape else "unknown", "default": shape or None}


def _image(image) -> dict:
    layout = {10: "GRAYSCALE", 20: "RGB", 30: "BGR", 40: "GRAYSCALE_FLOAT16"}.get(image.colorSpace, str(image.colorSpace))
    found = {"color_layout": layout, "width": int(image.width), "height": int(image.height)}
    kind = image.WhichOneof("SizeFlexibility")
    if kind == "imageSizeRange":
        size = image.imageSizeRange
        found["size_constraint"] = {
            "kind": "range",
            "width": [int(size.widthRange.lowerBound), int(size.widthRange.upperBound)],
            "height": [int(size.heightRange.lowerBound), int(size.heightRange.upperBound)],
        }
    elif kind == "enumeratedSizes":
        found["size_constraint"] = {"kind": "enumerated", "sizes": [[int(s.width), int(s.height)] for s in image.enumeratedSizes.sizes]}
    else:
        found["size_constraint"] = {"kind": "static"}
    return found


def _feature(feature, block) -> dict:
    kind = feature.type.WhichOneof("Type")
    entry = {"name": feature.name}
    if kind == "multiArrayType":
        shape, constraint = _array_shape(feature.type.multiArrayType)
        entry.update(type="Tensor", dtype=_ARRAY_DTYPES.get(feature.type.multiArrayType.dataType, "unknown"),
                     shape=shape or None, shape_constraint=constraint)
    elif kind == "imageType":
        entry.update(type="Image", dtype="uint8", image=_image(feature.type.imageType),
                     preprocessing=image_preprocessing(block, feature.name))
    elif kind == "stringType":
        entry.update(type="String", dtype="string")
    elif kind == "dictionaryType":
        entry.update(type="Dictionary", dtype="dict[string, float64]")
    else:
        entry.update(type=str(kind), dtype="unknown")
    return entry


def spec_summary(spec, *, precision: str, labels_file: str | None = None, deployment_target: str | None = None) -> dict:
    """A JSON-safe summary of the Core ML ``spec`` (``MLModel.get_spec()``)."""
    block = main_block(spec)
    description = spec.description
    classifier = None
    if description.predictedFeatureName:
        classifier = {
            "labels": len(classifier_labels(block) or []),
            "labels_file": labels_file,
            "predicted_feature": description.predictedFeatureName,
            "probabilities_output": description.predictedProbabilitiesName or None,
        }
    return {
        "model_type": spec.WhichOneof("Type"),
        "spec_version": int(spec.specificationVersion),
        "minimum_deployment_target": deployment_target,
        "compute_precision": precision,
        "weights": weight_dtypes(block),
        "inputs": [_feature(feature, block) for feature in description.input],
        "outputs": [_feature(feature, block) for feature in description.output],
        "classifier": classifier,
    }


def feature_specs(summary_features: list[dict], shapes: dict | None = None) -> list[InputSpec]:
    """InputSpecs of summarized features; ``shapes`` (name -> dims with None for flexible ones)
    takes precedence over the spec, which omits an image's batch and channel dims and an ML
    Program's output shapes."""
    shapes = shapes or {}
    specs = []
    for feature in summary_features:
        shape = shapes.get(feature["name"])
        if shape is None and feature.get("shape_constraint"):
            shape = _flexible_shape(feature["shape_constraint"])
        if shape is None and feature["type"] == "String":
            shape = []
        specs.append(InputSpec(feature["name"], None if shape is None else list(shape), feature["dtype"]))
    return specs


def _flexible_shape(constraint: dict) -> list | None:
    if constraint["kind"] == "range":
        return [lo if lo == hi else None for lo, hi in constraint["ranges"]]
    if constraint["kind"] == "enumerated":
        shapes = constraint["shapes"]
        return [dims[0] if len(set(dims)) == 1 else None for dims in zip(*shapes)]
    return constraint.get("default")
