"""Reference runners: the source framework runs the model file on the verification's inputs.

:func:`reference_for` picks the runner of a job's framework and model file: onnxruntime for ONNX,
torch eager for PYTORCH (``torch.jit.load`` for TorchScript, ``torch.export.load(...).module()``
for ``.pt2`` programs), xgboost for XGBOOST, a TFLite interpreter (``ai_edge_litert``,
``tflite_runtime`` or ``tensorflow.lite``) for TFLITE; for the frameworks converted to ONNX
(:mod:`airflow_neo.local.convert`), the framework's runtime (tensorflow, OpenCV's DarkNet reader,
mxnet), else onnxruntime on the conversion. A runner takes ``{input name: array}`` in
the order of the compiled model's inputs and returns the outputs as numpy arrays, flattened in the
order the framework returns them. ``threads`` (the profile's baseline) pins the runner's thread
count where the framework sets it at load (onnxruntime ``intra_op_num_threads``, xgboost
``nthread``, TFLite ``num_threads``); torch's is process-wide and left to the caller; None (the
verification): the framework's defaults.

Invariants: a framework that is not installed, or a file the framework cannot load, raises
:class:`NotVerifiable` with the reason (the job is then "not verified: <why>", never failed by
this module); the frameworks are imported inside the functions only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from airflow_neo.local.frontend_common import flatten

__all__ = ["NotVerifiable", "Reference", "reference_for"]

#: ONNX op types whose presence makes a graph "quantized": its float outputs pass through integer
#: rounding, where a tie may land one step apart between two correct implementations
QUANTIZED_ONNX_OPS = frozenset({
    "QuantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
    "QLinearSoftmax", "QGemm", "MatMulInteger", "ConvInteger", "QLinearGlobalAveragePool", "QLinearSigmoid",
    "QLinearLeakyRelu", "QLinearConcat", "QLinearAveragePool",
})


class NotVerifiable(Exception):
    """The reference cannot run here; ``str(err)`` says why."""


@dataclass
class Reference:
    """A loaded reference: ``name`` says which framework and version ran it (e.g.
    ``onnxruntime 1.20.1``); ``quantized``: the graph rounds to integers inside."""

    name: str
    run: Callable[[dict], list]
    quantized: bool = False
    #: the thread count the runner was pinned to; None: the framework's default
    threads: int | None = None
    #: why the runner's latency and memory are not the framework's (each run starts a process, say):
    #: the profile then has no baseline; None: it can be timed
    not_timeable: str | None = None


def reference_for(framework: str, model_file: Path, *, threads: int | None = None,
                  metadata: dict | None = None) -> Reference:
    """The reference runner of ``framework`` for ``model_file``; :class:`NotVerifiable` when none runs here.

    ``metadata`` (the artifact's ``metadata.json``) tells the converted frameworks (TENSORFLOW,
    KERAS, DARKNET, MXNET) the job's DataInputConfig and CompilerOptions: their runner is the
    framework's own runtime (its converter module's ``reference``) or, where that runtime is not
    installed, onnxruntime on the model converted again, named as such.
    """
    loaders: dict[str, Callable[[Path, int | None], Reference]] = {
        "ONNX": _onnxruntime,
        "PYTORCH": _torch,
        "XGBOOST": _xgboost,
        "TFLITE": _tflite,
    }
    loader = loaders.get(framework)
    if loader is None and _converter_module(framework) is not None:
        loader = lambda path, count: _converted(framework, path, count, metadata or {})  # noqa: E731
    if loader is None:
        raise NotVerifiable(f"no reference runner for the framework {framework}")
    try:
        return loader(model_file, threads)
    except NotVerifiable:
        raise
    except Exception as err:  # noqa: BLE001 - a reference that cannot load leaves the job unverified
        raise NotVerifiable(f"the reference could not load {model_file.name}: {type(err).__name__}: {_short(err)}") from err


# ----------------------------------------------------------------------------- converted frameworks


def _converter_module(framework: str) -> str | None:
    from airflow_neo.local.convert import CONVERTERS

    return CONVERTERS.get(framework)


def _converted(framework: str, model_file: Path, threads: int | None, metadata: dict) -> Reference:
    """The framework's own runtime; without it, onnxruntime on a fresh conversion of ``model_file``
    (which checks the compile of the converted graph, not the conversion: the name says so)."""
    import importlib

    module = importlib.import_module(_converter_module(framework))
    try:
        return module.reference(model_file, metadata, threads)
    except NotVerifiable as own:
        why = str(own)
    try:
        reference = _on_conversion(framework, model_file, threads, metadata)
    except Exception as err:  # noqa: BLE001 - neither runner: the job is "not verified" with both reasons
        raise NotVerifiable(f"{why}; onnxruntime on a conversion failed too: {type(err).__name__}: {_short(err)}") from err
    reference.name = f"{reference.name} on the {framework} model converted to ONNX ({why})"
    return reference


def _on_conversion(framework: str, model_file: Path, threads: int | None, metadata: dict) -> Reference:
    import tempfile

    from airflow_neo.local.convert import Source, converter_for

    with tempfile.TemporaryDirectory(prefix="airflow-neo-reference-") as scratch:
        data_input = metadata.get("data_input_config")
        source = Source(framework, model_file, model_file.parent, data_input if isinstance(data_input, dict) else {},
                        metadata.get("compiler_options") or {}, Path(scratch), lambda _line: None)
        converted = converter_for(framework)(source)
        return _onnxruntime(converted.onnx_path, threads)  # the session holds the graph: the file can go


def _short(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else "")[:limit]


def _require(module: str, install: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise NotVerifiable(f"{module} is not installed ({install})") from err


# ----------------------------------------------------------------------------- ONNX


def _onnxruntime(model_file: Path, threads: int | None = None) -> Reference:
    ort = _require("onnxruntime", "pip install onnxruntime")
    quantized = _onnx_quantized(model_file)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if quantized:
        # Each node as written: onnxruntime's default run fuses DequantizeLinear -> op -> QuantizeLinear
        # into integer kernels that round differently (torchvision ResNet-18 QDQ: 2.9% of the output
        # range between its own two runs); the graph's semantics are what a compile must reproduce.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    declared = {value.name: value.type for value in session.get_inputs()}

    def run(inputs: dict) -> list:
        feeds = {name: _as_onnx_type(array, declared.get(name)) for name, array in inputs.items()}
        return [_numpy(value) for value in session.run(None, feeds)]

    name = f"onnxruntime {ort.__version__}" + (" (graph optimizations off)" if quantized else "")
    return Reference(name, run, quantized=quantized, threads=threads or None)


_ONNX_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16", "tensor(int64)": "int64",
    "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _as_onnx_type(array, onnx_type: str | None):
    import numpy as np

    dtype = _ONNX_TYPES.get(onnx_type or "")
    return np.asarray(array).astype(dtype) if dtype and str(np.asarray(array).dtype) != dtype else np.asarray(array)


def _onnx_quantized(model_file: Path) -> bool:
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    graphs = [model.graph]
    seen = set()
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            seen.add(node.op_type)
            graphs.extend(attr.g for attr in node.attribute if attr.HasField("g"))
    return bool(seen & QUANTIZED_ONNX_OPS)


def _numpy(value):
    import numpy as np

    return np.asarray(value)


# ----------------------------------------------------------------------------- PyTorch


def _torch(model_file: Path, threads: int | None = None) -> Reference:
    torch = _require("torch", "pip install torch")
    from airflow_neo.local.torch_import import register_torchvision_ops

    register_torchvision_ops()
    if model_file.suffix.lower() == ".pt2":
        module = torch.export.load(str(model_file)).module()
        route = "torch.export program"
    else:
        try:
            module = torch.jit.load(str(model_file), map_location="cpu")
            module.eval()
            route = "TorchScript"
        except Exception:  # noqa: BLE001 - a torch.export program saved as .pt (the importer does the same)
            module = torch.export.load(str(model_file)).module()
            route = "torch.export program"

    def run(inputs: dict) -> list:
        tensors = [torch.from_numpy(_writable(array)) for array in inputs.values()]
        with torch.no_grad():
            result = module(*tensors)
        return [leaf.detach().cpu().numpy() for leaf in flatten(result)]

    return Reference(f"torch {torch.__version__} ({route}, eager)", run)


def _writable(array):
    import numpy as np

    return np.array(array, copy=True)


# ----------------------------------------------------------------------------- XGBoost


def _xgboost(model_file: Path, threads: int | None = None) -> Reference:
    xgb = _require("xgboost", "pip install xgboost")
    booster = xgb.Booster()
    booster.load_model(str(model_file))
    if threads:
        booster.set_param({"nthread": threads})

    def run(inputs: dict) -> list:
        (data,) = inputs.values()
        return [booster.predict(xgb.DMatrix(data))]

    return Reference(f"xgboost {xgb.__version__}", run, threads=threads or None)


# ----------------------------------------------------------------------------- TFLite


def _tflite(model_file: Path, threads: int | None = None) -> Reference:
    interpreter_cls, name = _tflite_interpreter()
    interpreter = interpreter_cls(model_path=str(model_file), **({"num_threads": threads} if threads else {}))
    interpreter.allocate_tensors()
    inputs_detail = interpreter.get_input_details()
    outputs_detail = interpreter.get_output_details()

    def run(inputs: dict) -> list:
        for detail, array in zip(inputs_detail, inputs.values()):
            interpreter.set_tensor(detail["index"], array.astype(detail["dtype"]))
        interpreter.invoke()
        return [interpreter.get_tensor(detail["index"]) for detail in outputs_detail]

    return Reference(name, run, threads=threads or None)


def _tflite_interpreter():
    import importlib

    for module, label in (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"),
                          ("tensorflow.lite", "tensorflow")):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(found, "Interpreter"):  # TensorFlow 2.21's tensorflow.lite has none (moved to ai-edge-litert)
            return found.Interpreter, f"TFLite interpreter ({label})"
    raise NotVerifiable("no TFLite interpreter is installed (pip install ai-edge-litert, or tflite-runtime; TensorFlow 2.21's "
                        "tensorflow.lite has none)")
