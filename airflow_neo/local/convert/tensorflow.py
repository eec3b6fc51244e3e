"""TENSORFLOW to ONNX with tf2onnx: a SavedModel's signature, or a frozen GraphDef.

The model file is ``saved_model.pb``/``saved_model.pbtxt`` (a SavedModel: its directory is
loaded with ``tf.saved_model.load``) or another ``.pb``/``.pbtxt`` (a frozen GraphDef).

Invariants (beyond the package's contract):

- CompilerOptions ``signature_def_key`` (SavedModel only; default ``serving_default``) and
  ``output_names`` (a list of names) are never both set (Neo's rule): both is a ModelInputError.
- ONNX inputs are named exactly as DataInputConfig names them (a SavedModel's signature input
  names, e.g. ``inputs``; a frozen graph's tensor names, ``input_tensor:0``, or node names), with
  DataInputConfig's static shapes in the graph's own layout (NHWC for images) and the dtype the
  model declares, in DataInputConfig's order; an input DataInputConfig leaves out follows (a
  signature's sorted by name) with the model's shape, which must be static.
- Outputs: a SavedModel's are the signature's outputs in the order of their keys, sorted (what
  ``tf.nest.flatten`` of the signature's dict gives), named by key, or the keys ``output_names``
  lists, in its order; a frozen graph's are ``output_names``' tensors in its order (without it, the
  graph's terminal tensors, sorted by name), named by tensor name.
- A graph operator tf2onnx leaves unconverted is an UnsupportedOperatorsError naming the TF ops.
- tensorflow and tf2onnx are imported inside functions only; their absence is a MissingExtra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow_neo.local.archive import listing
from airflow_neo.local.convert import Converted, Source
from airflow_neo.local.convert import tf_common as common
from airflow_neo.local.errors import ModelArchiveError, ModelInputError

__all__ = ["convert", "reference"]

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
DEFAULT_SIGNATURE = "serving_default"
#: GraphDef ops that hold variables: such a graph is not frozen, and tf2onnx cannot read its weights.
VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp", "ReadVariableOp"})
#: Terminal nodes that are not outputs (when output_names is not given).
NOT_OUTPUTS = frozenset({"Const", "NoOp", "Placeholder", "PlaceholderWithDefault", "Assert", "SaveV2", "RestoreV2"})


def convert(source: Source) -> Converted:
    """The SavedModel's signature or the frozen graph as ONNX in ``source.work``."""
    signature_key, output_names = _options(source.options)
    tf, tf2onnx = common.import_tensorflow()
    if is_saved_model(source.model_file):
        return _convert_saved_model(tf, tf2onnx, source, signature_key or DEFAULT_SIGNATURE, output_names)
    if signature_key is not None:
        raise ModelInputError(f"CompilerOptions signature_def_key ({signature_key!r}) is for a SavedModel; "
                              f"{source.model_file.name} is a frozen graph: name its outputs with output_names")
    return _convert_frozen_graph(tf, tf2onnx, source, output_names)


def is_saved_model(model_file: Path) -> bool:
    return model_file.name in SAVED_MODEL_FILES


def _options(options: dict) -> tuple[str | None, list[str] | None]:
    signature_key = options.get("signature_def_key")
    output_names = options.get("output_names")
    if signature_key is not None and output_names is not None:
        raise ModelInputError("CompilerOptions sets both signature_def_key and output_names; set at most one "
                              "(signature_def_key for a SavedModel, output_names for a frozen graph)")
    if signature_key is not None and (not isinstance(signature_key, str) or not signature_key):
        raise ModelInputError(f"CompilerOptions signature_def_key must be a non-empty string; got {signature_key!r}")
    if output_names is not None and (not isinstance(output_names, list) or not output_names
                                     or not all(isinstance(name, str) and name for name in output_names)):
        raise ModelInputError(f"CompilerOptions output_names must be a non-empty list of tensor names; got {output_names!r}")
    return signature_key, output_names


# ----------------------------------------------------------------------------- SavedModel


def _load_saved_model(tf, model_file: Path):
    try:
        return tf.saved_model.load(str(model_file.parent))
    except Exception as err:  # noqa: BLE001 - any load failure is the archive's
        raise ModelArchiveError(
            f"{model_file.name} is not a SavedModel TensorFlow can load ({type(err).__name__}: {common.first_line(err)}); "
            f"its directory holds {listing(model_file.parent)}; a SavedModel is saved_model.pb with its "
            f"variables/ folder beside it") from err


def _signature(tf, model_file: Path, key: str):
    loaded = _load_saved_model(tf, model_file)
    signatures = dict(loaded.signatures)
    if key not in signatures:
        raise ModelInputError(f"CompilerOptions signature_def_key {key!r} is not a signature of the SavedModel; "
                              f"it has {sorted(signatures) or 'none'}")
    return loaded, signatures[key]


def _convert_saved_model(tf, tf2onnx, source: Source, key: str, output_names: list[str] | None) -> Converted:
    function, specs, outputs = _saved_model_function(tf, source, key, output_names)
    path = source.work / "tensorflow.onnx"
    names = [spec.name for spec in specs]
    common.function_to_onnx(tf2onnx, function, specs, path, input_names=names, output_names=outputs,
                            framework="TENSORFLOW")
    source.log(f"TENSORFLOW SavedModel signature {key!r}: inputs {', '.join(names)}; outputs {', '.join(outputs)}")
    return Converted(path, names, common.versions(tf, tf2onnx))


def _saved_model_function(tf, source: Source, key: str, output_names: list[str] | None):
    loaded, signature = _signature(tf, source.model_file, key)
    specs_by_name = signature.structured_input_signature[1]
    # keyword inputs have no order of their own (a loaded signature's dict order varies): sorted by name
    declared = {name: (common.shape_of(specs_by_name[name].shape), specs_by_name[name].dtype) for name in sorted(specs_by_name)}
    shapes = common.resolve_shapes("TENSORFLOW", {name: shape for name, (shape, _) in declared.items()},
                                   source.data_input, f"the signature {key!r}")
    keys = sorted(signature.structured_outputs)
    outputs = keys
    if output_names is not None:
        unknown = [name for name in output_names if name not in keys]
        if unknown:
            raise ModelInputError(f"CompilerOptions output_names {unknown} are not outputs of the signature {key!r}; "
                                  f"it has {keys}")
        outputs = list(output_names)
    specs = [tf.TensorSpec(shape, declared[name][1], name=name) for name, shape in shapes.items()]
    names = list(shapes)

    @tf.function(input_signature=specs)
    def run(*args):
        result = loaded.signatures[key](**dict(zip(names, args)))  # through `loaded`: it owns the variables
        return [result[name] for name in outputs]

    return run, specs, outputs


# ----------------------------------------------------------------------------- frozen graph


def load_graph_def(tf, model_file: Path):
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        if model_file.suffix.lower() == ".pbtxt":
            text_format.Parse(model_file.read_text(encoding="utf-8"), graph_def)
        else:
            graph_def.ParseFromString(model_file.read_bytes())
    except (DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError) as err:
        raise ModelArchiveError(f"{model_file.name} is not a TensorFlow GraphDef ({type(err).__name__}: {common.first_line(err)}); "
                                f"the archive holds {listing(model_file.parent)}; TENSORFLOW takes a SavedModel "
                                f"(saved_model.pb beside variables/) or one frozen graph .pb/.pbtxt") from err
    if not graph_def.node:
        raise ModelArchiveError(f"{model_file.name} holds no graph nodes: it is not a frozen TensorFlow graph")
    variables = sorted({node.op for node in graph_def.node} & VARIABLE_OPS)
    if variables:
        raise ModelArchiveError(f"{model_file.name} is a graph with variables ({', '.join(variables)} ops), not a frozen "
                                f"graph: freeze it (constants for variables) or upload a SavedModel")
    return graph_def


def placeholders(tf, graph_def) -> dict[str, tuple[list | None, str]]:
    """``{tensor name (with :0): (shape or None, dtype name)}`` of the graph's Placeholders."""
    found = {}
    for node in graph_def.node:
        if node.op == "Placeholder":
            shape_proto = node.attr["shape"].shape
            shape = None if shape_proto.unknown_rank or "shape" not in node.attr else [
                None if dim.size < 0 else dim.size for dim in shape_proto.dim]
            found[node.name + ":0"] = (shape, tf.dtypes.as_dtype(node.attr["dtype"].type).name)
    return found


def terminal_tensors(graph_def) -> list[str]:
    consumed = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}
    return sorted(node.name + ":0" for node in graph_def.node if node.name not in consumed and node.op not in NOT_OUTPUTS)


def tensor_name(name: str) -> str:
    """``name:0`` for a node name, the name itself for a tensor name."""
    return name if ":" in name else name + ":0"


def _convert_frozen_graph(tf, tf2onnx, source: Source, output_names: list[str] | None) -> Converted:
    graph_def = load_graph_def(tf, source.model_file)
    declared = placeholders(tf, graph_def)
    given = {tensor_name(name): shape for name, shape in source.data_input.items()}
    by_tensor = {tensor_name(name): name for name in source.data_input}
    shapes = common.resolve_shapes("TENSORFLOW", {name: shape for name, (shape, _) in declared.items()}, given,
                                   f"the graph {source.model_file.name} (its Placeholders)")
    outputs = _frozen_outputs(graph_def, source.model_file, output_names)
    source.log(f"TENSORFLOW frozen graph: inputs {', '.join(shapes)}; outputs {', '.join(outputs)}"
               + ("" if output_names else " (its terminal tensors: CompilerOptions output_names not given)"))
    path = source.work / "tensorflow.onnx"
    names = [by_tensor.get(name, name) for name in shapes]
    with common.quiet_tf():
        try:
            proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=list(shapes), output_names=outputs,
                                                      opset=common.OPSET, shape_override=dict(shapes))
        except Exception as err:  # noqa: BLE001 - tf2onnx's failures name the op or tensor
            raise common.conversion_error("TENSORFLOW", err) from err
    common.finish_onnx(proto, path, dict(zip(shapes, names)), {}, framework="TENSORFLOW")
    return Converted(path, names, common.versions(tf, tf2onnx))


def _frozen_outputs(graph_def, model_file: Path, output_names: list[str] | None) -> list[str]:
    nodes = {node.name for node in graph_def.node}
    terminal = terminal_tensors(graph_def)
    if output_names is None:
        if not terminal:
            raise ModelInputError(f"{model_file.name} has no terminal tensors: name the outputs in CompilerOptions output_names")
        return terminal
    unknown = [name for name in output_names if name.split(":")[0] not in nodes]
    if unknown:
        raise ModelInputError(f"CompilerOptions output_names {unknown} are not tensors of {model_file.name}; "
                              f"its terminal tensors are {terminal[:20]}")
    return [tensor_name(name) for name in output_names]


# ----------------------------------------------------------------------------- reference


def reference(model_file: Path, metadata: dict, threads: int | None):
    """TensorFlow runs the SavedModel's signature (or the frozen graph) on ``{DataInputConfig name: array}``."""
    from airflow_neo.local.references import Reference

    tf = common.reference_tensorflow()
    pinned = common.pin_threads(tf, threads)
    options = metadata.get("compiler_options") or {}
    signature_key, output_names = _options(options)
    if is_saved_model(model_file):
        key = signature_key or DEFAULT_SIGNATURE
        loaded, signature = _signature(tf, model_file, key)
        keys = list(output_names or sorted(signature.structured_outputs))

        def run(inputs: dict) -> list:
            result = loaded.signatures[key](**{name: tf.constant(array) for name, array in inputs.items()})
            return [result[name].numpy() for name in keys]

        name = f"tensorflow {tf.__version__} (SavedModel signature {key!r})"
    else:
        run = _frozen_runner(tf, model_file, output_names, threads)
        name = f"tensorflow {tf.__version__} (frozen graph)"
        pinned = threads or None  # the session's own thread pools
    return Reference(name, run, threads=pinned)


def _frozen_runner(tf, model_file: Path, output_names: list[str] | None, threads: int | None):
    graph_def = load_graph_def(tf, model_file)
    outputs = _frozen_outputs(graph_def, model_file, output_names)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto()
    if threads:
        config.intra_op_parallelism_threads = threads
        config.inter_op_parallelism_threads = 1
    session = tf.compat.v1.Session(graph=graph, config=config)

    def run(inputs: dict) -> list:
        feeds = {tensor_name(name): array for name, array in inputs.items()}
        return [_numpy(value) for value in session.run(outputs, feed_dict=feeds)]

    return run


def _numpy(value) -> Any:
    import numpy as np

    return np.asarray(value)

