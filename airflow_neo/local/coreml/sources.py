"""The model file of a Core ML job loaded as coremltools' converter takes it, with the inputs it declares.

* PYTORCH: a TorchScript file (``.pt``/``.pth``, from ``torch.jit.save`` of a traced or scripted
  module) loaded with ``torch.jit.load``; its inputs are ``forward``'s arguments (no shapes: they
  come from DataInputConfig). ``.pt2`` (``torch.export``) is refused: Neo's Core ML converter takes
  TorchScript.
* KERAS: ``.keras``/``.h5`` loaded with Keras 3 (:func:`airflow_neo.local.convert.keras.load_model`);
  coremltools 9 does not recognise Keras 3 models, so the model is wrapped in a ``tf.function``
  whose concrete function (inputs named after the model's input layers, NHWC as declared) is what
  coremltools converts.
* TENSORFLOW: a SavedModel (``saved_model.pb`` beside ``variables/``): the concrete function of
  its signature (``signature_def_key``, default ``serving_default``), inputs named by the
  signature; or a frozen GraphDef ``.pb``/``.pbtxt`` (its Placeholders are the inputs;
  ``output_names`` picks outputs).

Invariants: a file its framework cannot load raises
:class:`~airflow_neo.local.errors.ModelArchiveError` naming the file and what the archive holds;
the framework packages are imported inside the loaders only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_neo.local.archive import listing
from airflow_neo.local.coreml.inputs import ModelInput
from airflow_neo.local.errors import ModelArchiveError, ModelInputError

__all__ = ["Loaded", "load_source"]

DEFAULT_SIGNATURE = "serving_default"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass
class Loaded:
    """What ``ct.convert`` takes (``model``, ``source``), the model's inputs in order, whether they
    are channel-first, and framework versions.
    ``keep`` holds objects that must outlive the conversion (a SavedModel owns its variables)."""

    model: Any
    source: str
    inputs: list[ModelInput]
    channel_first: bool
    versions: dict
    positional_ok: bool = False
    keep: list = field(default_factory=list)


def load_source(framework: str, model_file: Path, model_dir: Path, options) -> Loaded:
    """Load ``model_file`` (in the extracted archive ``model_dir``) for coremltools."""
    if framework == "PYTORCH":
        return _load_torchscript(model_file, model_dir)
    if framework == "KERAS":
        return _load_keras(model_file)
    if model_file.name in SAVED_MODEL_FILES:
        return _load_saved_model(model_file, options.signature_def_key or DEFAULT_SIGNATURE, options.output_names)
    if options.signature_def_key is not None:
        raise ModelInputError(f"CompilerOptions signature_def_key ({options.signature_def_key!r}) is for a SavedModel; "
                              f"{model_file.name} is a frozen graph: name its outputs with output_names")
    return _load_frozen_graph(model_file, options.output_names)


# ----------------------------------------------------------------------------- PyTorch


def _load_torchscript(model_file: Path, model_dir: Path) -> Loaded:
    import torch

    if model_file.suffix.lower() == ".pt2":
        raise ModelArchiveError(
            f"{model_file.name} is a torch.export program (.pt2); the coreml target converts TorchScript, as Neo's Core ML "
            "converter does: save the model with torch.jit.save(torch.jit.trace(model, example)) as a .pt or .pth file"
        )
    try:
        module = torch.jit.load(str(model_file), map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any load failure is the archive's
        raise ModelArchiveError(
            f"{model_file.name} is not a TorchScript model torch {torch.__version__} can load ({type(err).__name__}: "
            f"{_first_line(err)}); the archive holds {listing(model_dir)}; PYTORCH for coreml takes one .pt/.pth file "
            "saved with torch.jit.save (a traced or scripted module, not a state_dict)"
        ) from err
    module.eval()
    arguments = [argument.name for argument in module.forward.schema.arguments[1:]]
    inputs = [ModelInput(name) for name in arguments]
    return Loaded(module, "pytorch", inputs, True, {"torch": torch.__version__}, positional_ok=True)


# ----------------------------------------------------------------------------- TensorFlow / Keras


def _import_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def _load_keras(model_file: Path) -> Loaded:
    from airflow_neo.local.convert.keras import layer_name, load_model

    tf = _import_tf()
    import keras

    model = load_model(model_file)
    specs = [tf.TensorSpec(tensor.shape, tensor.dtype, name=layer_name(tensor)) for tensor in model.inputs]
    single = len(specs) == 1

    def run(*args):
        return model(args[0] if single else list(args), training=False)

    function = tf.function(run, input_signature=specs).get_concrete_function()
    inputs = [ModelInput(spec.name, tuple(spec.shape.as_list())) for spec in specs]
    return Loaded([function], "tensorflow", inputs, False, {"tensorflow": tf.__version__, "keras": keras.__version__},
                  keep=[model])


def _load_saved_model(model_file: Path, key: str, output_names) -> Loaded:
    tf = _import_tf()
    try:
        loaded = tf.saved_model.load(str(model_file.parent))
    except Exception as err:  # noqa: BLE001 - any load failure is the archive's
        raise ModelArchiveError(
            f"{model_file.name} is not a SavedModel TensorFlow can load ({type(err).__name__}: {_first_line(err)}); its "
            f"directory holds {listing(model_file.parent)}; a SavedModel is saved_model.pb with its variables/ folder beside it"
        ) from err
    signatures = dict(loaded.signatures)
    if key not in signatures:
        raise ModelInputError(f"CompilerOptions signature_def_key {key!r} is not a signature of the SavedModel; it has {sorted(signatures) or 'none'}")
    function = signatures[key]
    by_name = function.structured_input_signature[1]
    inputs = [ModelInput(name, _shape_of(by_name[name].shape)) for name in sorted(by_name)]
    outputs = sorted(function.structured_outputs)
    if output_names is not None:
        unknown = [name for name in output_names if name not in outputs]
        if unknown:
            raise ModelInputError(f"CompilerOptions output_names {unknown} are not outputs of the signature {key!r}; it has {outputs}")
        function = _select_outputs(tf, function, by_name, list(output_names))
    return Loaded([function], "tensorflow", inputs, False, {"tensorflow": tf.__version__}, keep=[loaded])


def _select_outputs(tf, function, by_name: dict, names: list[str]):
    """A concrete function giving only the signature outputs ``names``, in that order."""
    specs = [tf.TensorSpec(by_name[name].shape, by_name[name].dtype, name=name) for name in sorted(by_name)]
    order = sorted(by_name)

    def run(*args):
        result = function(**dict(zip(order, args)))
        return [result[name] for name in names]

    return tf.function(run, input_signature=specs).get_concrete_function()


def _load_frozen_graph(model_file: Path, output_names) -> Loaded:
    """coremltools' TF2 frontend takes no GraphDef file: the graph is imported into a wrapped
    function pruned from its Placeholders to its outputs (``output_names``, else its terminal
    tensors), which keeps the graph's tensor names as the Core ML input and output names."""
    from airflow_neo.local.convert.tensorflow import load_graph_def, placeholders, tensor_name, terminal_tensors

    tf = _import_tf()
    graph_def = load_graph_def(tf, model_file)
    declared = placeholders(tf, graph_def)
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    outputs = [tensor_name(name) for name in output_names] if output_names else terminal_tensors(graph_def)
    try:
        fetches = [wrapped.graph.get_tensor_by_name(name) for name in outputs]
    except (KeyError, ValueError) as err:
        raise ModelInputError(f"CompilerOptions output_names {list(output_names or [])} names a tensor the graph "
                              f"{model_file.name} does not have ({_first_line(err)})") from err
    function = wrapped.prune([wrapped.graph.get_tensor_by_name(name) for name in declared], fetches)
    inputs = [ModelInput(name.split(":")[0], None if shape is None else tuple(shape)) for name, (shape, _) in declared.items()]
    return Loaded([function], "tensorflow", inputs, False, {"tensorflow": tf.__version__}, keep=[wrapped])


def _shape_of(tensor_shape) -> tuple | None:
    return None if tensor_shape.rank is None else tuple(tensor_shape.as_list())


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""
