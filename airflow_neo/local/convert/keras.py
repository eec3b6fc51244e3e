"""KERAS to ONNX: a Keras model file (``.keras``, or legacy HDF5 ``.h5``/``.hdf5``, both read by
Keras 3's ``keras.models.load_model``) through tf2onnx.

Invariants (beyond the package's contract):

- DataInputConfig is NCHW for rank-4 inputs (Neo's form for KERAS: the model is channels-last,
  the shapes channels-first); the ONNX graph takes NCHW and transposes it (perm [0, 2, 3, 1]) to
  the model's NHWC first (tf2onnx folds that Transpose into the convolutions that follow); inputs
  of other ranks are taken as given. A rank-4 shape that does not fit the model read as NCHW is a
  ModelInputError that says so and shows the NCHW shape the model takes.
- Inputs are the Keras model's inputs, named by their InputLayers (DataInputConfig keys must be
  those names, e.g. ``input_1``), in the model's order; outputs are the model's outputs in Keras' order
  (``model.outputs``: a dict of outputs sorted by key), named by the layers that give them.
- Models load with Keras' safe mode (no deserialised Python lambdas); a file Keras cannot load is
  a ModelArchiveError.
"""

from __future__ import annotations

from pathlib import Path

from airflow_neo.local.archive import listing
from airflow_neo.local.convert import Converted, MissingExtra, Source
from airflow_neo.local.convert import tf_common as common
from airflow_neo.local.errors import ModelArchiveError, ModelInputError

__all__ = ["convert", "load_model", "model_inputs", "output_names", "reference", "to_nhwc"]

#: NCHW -> NHWC, the Transpose at the front of a rank-4 input.
TO_NHWC = [0, 2, 3, 1]


def convert(source: Source) -> Converted:
    """The Keras model as ONNX in ``source.work``, taking NCHW for its rank-4 inputs."""
    tf, tf2onnx = common.import_tensorflow("KERAS")
    model = load_model(source.model_file)
    declared = model_inputs(model)
    nhwc = common.resolve_shapes("KERAS", {name: shape for name, (shape, _) in declared.items()},
                                 to_nhwc(declared, source.data_input), f"the Keras model {source.model_file.name}")
    order = [name for name in declared if name in nhwc]  # the model's order: its call takes them so
    specs = [tf.TensorSpec(_nchw(nhwc[name]), declared[name][1], name=name) for name in order]
    outputs = output_names(model)

    @tf.function(input_signature=specs)
    def run(*args):
        tensors = [tf.transpose(arg, TO_NHWC) if arg.shape.rank == 4 else arg for arg in args]
        result = model(tensors[0] if len(tensors) == 1 else tensors, training=False)
        return tf.nest.flatten(result)

    path = source.work / "keras.onnx"
    common.function_to_onnx(tf2onnx, run, specs, path, input_names=order, output_names=outputs, framework="KERAS")
    source.log("KERAS inputs (NCHW, transposed to the model's NHWC in the graph): "
               + "; ".join(f"{name} {_nchw(nhwc[name])}" for name in order) + f"; outputs {', '.join(outputs)}")
    import keras

    return Converted(path, order, common.versions(tf, tf2onnx, keras=keras.__version__))


def load_model(model_file: Path):
    try:
        import keras
    except ImportError as err:  # tensorflow without keras (a tf-nightly or a trimmed install)
        raise MissingExtra(f"KERAS models need keras, which is not installed ({err}): {common.EXTRA}") from err
    try:
        with common.quiet_tf():
            model = keras.models.load_model(str(model_file), compile=False)
    except Exception as err:  # noqa: BLE001 - any load failure is the archive's
        raise ModelArchiveError(
            f"{model_file.name} is not a Keras model Keras {keras.__version__} can load ({type(err).__name__}: "
            f"{common.first_line(err)}); the archive holds {listing(model_file.parent)}; KERAS takes one "
            f".keras or .h5 file of a Sequential or Functional model") from err
    try:
        model.inputs and model.outputs  # noqa: B018 - a subclassed model that was never built has neither
    except (AttributeError, ValueError) as err:
        raise ModelArchiveError(f"{model_file.name} is a Keras model without defined inputs and outputs (a subclassed "
                                f"model); save a Sequential or Functional model") from err
    return model


def model_inputs(model) -> dict[str, tuple[list | None, str]]:
    """``{input name: (NHWC shape with None for dynamic dims, dtype)}`` in the model's order."""
    return {layer_name(tensor): (list(tensor.shape), str(tensor.dtype)) for tensor in model.inputs}


def output_names(model) -> list[str]:
    """The names of the layers that give the model's outputs, in ``model.outputs``' order."""
    names = getattr(model, "output_names", None)  # Functional models; Sequential has none
    if names and len(names) == len(model.outputs):
        return [str(name) for name in names]
    return [layer_name(tensor) for tensor in model.outputs]


def layer_name(tensor) -> str:
    """The name of the layer that gives a KerasTensor (an input's is its InputLayer's, e.g. ``input_1``);
    the tensor's own name is an automatic ``keras_tensor_N`` in a model built in this process."""
    operation = getattr(getattr(tensor, "_keras_history", None), "operation", None)
    return getattr(operation, "name", None) or tensor.name


def to_nhwc(declared: dict[str, tuple], given: dict) -> dict:
    """DataInputConfig's NCHW rank-4 shapes as the model's NHWC (other ranks and unknown names as
    given, for :func:`~.tf_common.resolve_shapes` to check)."""
    nhwc = {}
    for name, shape in given.items():
        model_shape = declared[name][0] if name in declared else None
        if model_shape is None or len(model_shape) != 4:
            nhwc[name] = shape  # other ranks as given; unknown names for resolve_shapes to report
            continue
        shape = common.static_shape("KERAS", name, shape)
        candidate = [shape[0], shape[2], shape[3], shape[1]] if len(shape) == 4 else shape
        if not common.fits(model_shape, candidate):
            raise ModelInputError(
                f"KERAS DataInputConfig is NCHW (channels first, as Neo documents for KERAS): {name!r} {shape} does "
                f"not fit the model's NHWC input {common.shape_text(model_shape)} read as NCHW; the NCHW shape it takes "
                f"is {_expected_nchw(model_shape, shape[0] if len(shape) == 4 else 1)}")
        nhwc[name] = candidate
    return nhwc


def _expected_nchw(model_shape: list, batch: int) -> str:
    n, h, w, c = model_shape
    return common.shape_text([batch if n is None else n, c, h, w])


def _nchw(shape: list[int]) -> list[int]:
    return [shape[0], shape[3], shape[1], shape[2]] if len(shape) == 4 else list(shape)


# ----------------------------------------------------------------------------- reference


def reference(model_file: Path, metadata: dict, threads: int | None):
    """Keras runs the model on ``{input name: array}`` (NCHW for rank 4, transposed back to NHWC)."""
    import numpy as np

    from airflow_neo.local.references import NotVerifiable, Reference

    tf = common.reference_tensorflow()
    pinned = common.pin_threads(tf, threads)
    try:
        import keras
    except ImportError as err:
        raise NotVerifiable(f"keras is not installed ({common.EXTRA})") from err
    model = load_model(model_file)
    names = list(model_inputs(model))

    # a graph function, as the model serves (the eager call pays Python dispatch per layer, which
    # would make the profile's baseline a strawman); traced once for the job's fixed shapes
    call = tf.function(lambda args: model(args, training=False))

    def run(inputs: dict) -> list:
        arrays = [np.asarray(inputs[name]) for name in names]
        arrays = [array.transpose(TO_NHWC) if array.ndim == 4 else array for array in arrays]
        result = call(arrays[0] if len(arrays) == 1 else arrays)
        return [np.asarray(leaf) for leaf in tf.nest.flatten(result)]

    return Reference(f"keras {keras.__version__} on tensorflow {tf.__version__}", run, threads=pinned)
