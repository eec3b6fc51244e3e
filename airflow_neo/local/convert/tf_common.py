"""What the TENSORFLOW and KERAS converters share: the imports, the input-shape rules, and the
tf2onnx call with its checks.

Invariants: an ONNX file written here (:func:`finish_onnx`) has no operator outside the ONNX
standard (tf2onnx leaves an op it cannot convert under its TensorFlow name: that is an
UnsupportedOperatorsError listing them) and has its inputs and outputs renamed to the names the
caller gives (an internal value that already holds such a name is moved aside first);
:func:`resolve_shapes` returns a static shape for every declared input, DataInputConfig's order
first, or raises a ModelInputError naming the input, what the model declares and what was given.
tensorflow and tf2onnx are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

from airflow_neo.local.convert import MissingExtra
from airflow_neo.local.errors import CompilationError, ModelInputError, UnsupportedOperatorsError
from airflow_neo.local.frontend_common import first_line

__all__ = [
    "EXTRA", "OPSET", "conversion_error", "finish_onnx", "first_line", "fits", "function_to_onnx", "import_tensorflow",
    "listing", "pin_threads", "reference_tensorflow", "resolve_shapes", "shape_of", "shape_text", "static_shape", "versions",
]

EXTRA = "pip install 'airflow-neo[tensorflow]'"
#: The ONNX opset tf2onnx writes (TVM 0.27's ONNX frontend reads it; LayerNormalization is 17).
OPSET = 17
_CHATTY_LOGGERS = ("tf2onnx", "tensorflow", "absl")


def import_tensorflow(framework: str = "TENSORFLOW"):
    """``(tensorflow, tf2onnx)``; :class:`MissingExtra` naming the extra when either is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ INFO/WARNING lines would flood the job log
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as err:
        raise MissingExtra(f"{framework} models are converted to ONNX with tensorflow and tf2onnx, which are not "
                           f"installed here ({err}): {EXTRA}") from err
    return tf, tf2onnx


def reference_tensorflow():
    """tensorflow for a reference run; NotVerifiable when it is not installed."""
    from airflow_neo.local.references import NotVerifiable

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as err:
        raise NotVerifiable(f"tensorflow is not installed ({EXTRA})") from err
    return tf


def pin_threads(tf, threads: int | None) -> int | None:
    """Pins TF's intra-op threads to ``threads``; None when not asked, or when TF's runtime already
    started in this process (TF fixes its thread pools then: the default stays)."""
    if not threads:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        return None
    return threads


def versions(tf, tf2onnx, **more) -> dict:
    return {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, **more}


# ----------------------------------------------------------------------------- shapes


def shape_of(tensor_shape) -> list | None:
    """A TensorShape as ``[int | None, ...]``; None when the rank is unknown."""
    return None if tensor_shape.rank is None else list(tensor_shape.as_list())


def shape_text(shape) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


def fits(declared: list | None, shape: list[int]) -> bool:
    return declared is None or (len(declared) == len(shape) and all(d is None or d == s for d, s in zip(declared, shape)))


def static_shape(framework: str, name: str, shape) -> list[int]:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ModelInputError(f"{framework} DataInputConfig {name!r}: the shape must be a list of positive integers; got {shape!r}")
    return list(shape)


def resolve_shapes(framework: str, declared: dict[str, list | None], given: dict, what: str) -> dict[str, list[int]]:
    """``{input name: static shape}``: DataInputConfig's (``given``) inputs in its order, then the
    other declared inputs with their declared shapes, which must be static."""
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise ModelInputError(f"{framework} DataInputConfig names {unknown}, which {what} does not have; "
                              f"its inputs are {list(declared)}")
    shapes = {}
    for name, shape in given.items():
        shape = static_shape(framework, name, shape)
        if not fits(declared[name], shape):
            raise ModelInputError(f"{framework} DataInputConfig {name!r}: {shape} does not fit the model's input "
                                  f"{name} {shape_text(declared[name])} (the rank and the fixed dims must match)")
        shapes[name] = shape
    for name, shape in declared.items():
        if name in shapes:
            continue
        if shape is None or any(dim is None for dim in shape):
            raise ModelInputError(f"{framework} DataInputConfig gives no shape for the input {name!r}, whose shape "
                                  f"{shape_text(shape)} is not static: add {name!r} to DataInputConfig")
        shapes[name] = list(shape)
    return shapes


# ----------------------------------------------------------------------------- tf2onnx


@contextlib.contextmanager
def quiet_tf():
    """tf2onnx's INFO lines and TF's deprecation warnings off for the block; errors still raise."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def conversion_error(framework: str, err: BaseException) -> CompilationError:
    return CompilationError(f"tf2onnx could not convert the {framework} model: {type(err).__name__}: {first_line(err)}")


def function_to_onnx(tf2onnx, function, specs, path: Path, *, input_names: list[str], output_names: list[str],
                     framework: str) -> None:
    """``function`` (a tf.function over ``specs``) as ONNX at ``path``, its inputs and outputs named
    ``input_names`` and ``output_names`` in order."""
    with quiet_tf():
        try:
            proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=OPSET)
        except Exception as err:  # noqa: BLE001 - tf2onnx's failures name the op or tensor
            raise conversion_error(framework, err) from err
    graph_inputs = _graph_inputs(proto.graph)
    graph_outputs = [value.name for value in proto.graph.output]
    if len(graph_inputs) != len(input_names) or len(graph_outputs) != len(output_names):
        raise CompilationError(f"tf2onnx wrote a graph with inputs {graph_inputs} and outputs {graph_outputs}; "
                               f"expected {input_names} and {output_names}")
    finish_onnx(proto, path, dict(zip(graph_inputs, input_names)), dict(zip(graph_outputs, output_names)),
                framework=framework)


def _graph_inputs(graph) -> list[str]:
    initializers = {init.name for init in graph.initializer}
    return [value.name for value in graph.input if value.name not in initializers]


def finish_onnx(proto, path: Path, inputs: dict[str, str], outputs: dict[str, str], *, framework: str) -> None:
    """Checks ``proto`` for unconverted ops, renames its inputs and outputs, writes it to ``path``."""
    import onnx

    unconverted = sorted(_non_onnx_ops(proto.graph))
    if unconverted:
        raise UnsupportedOperatorsError(f"the {framework} model uses TensorFlow operators that tf2onnx cannot convert to "
                                        f"ONNX: {', '.join(unconverted)}", unconverted)
    graph_outputs = [value.name for value in proto.graph.output]
    if len(set(graph_outputs)) != len(graph_outputs) or len(set(outputs.values())) != len(outputs):
        outputs = {}  # one tensor returned twice, or two outputs of one name: the converter's names stay
    _rename(proto.graph, {**inputs, **outputs})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))


def _non_onnx_ops(graph) -> set[str]:
    import onnx

    found = set()
    for node in graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            found.add(node.op_type)
        for attr in node.attribute:
            if attr.HasField("g"):
                found |= _non_onnx_ops(attr.g)
            for sub in attr.graphs:
                found |= _non_onnx_ops(sub)
    return found


def _rename(graph, mapping: dict[str, str]) -> None:
    """Renames values everywhere in ``graph`` (a value that already holds a new name moves aside)."""
    mapping = {old: new for old, new in mapping.items() if old != new}
    if not mapping:
        return
    taken = _value_names(graph)
    for new in list(mapping.values()):
        if new in taken and new not in mapping:
            aside = new
            while aside in taken or aside in mapping.values():
                aside += "_"
            mapping[new] = aside
    _apply(graph, mapping)


def _value_names(graph) -> set[str]:
    names = {value.name for value in list(graph.input) + list(graph.output)} | {init.name for init in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _apply(graph, mapping: dict[str, str]) -> None:
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = mapping.get(value.name, value.name)
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _apply(sub, mapping)
