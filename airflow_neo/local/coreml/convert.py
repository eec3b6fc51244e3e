"""``compile_coreml``: a PYTORCH, TENSORFLOW or KERAS model converted to a Core ML ML Program.

Choices (and why):

* **ML Program** (``convert_to="mlprogram"``, an ``.mlpackage`` directory) with
  ``minimum_deployment_target=iOS15`` (spec version 6): coremltools' default and the format
  Apple develops; it stores FP16 weights natively (the NeuralNetwork format would need
  post-hoc weight quantization for ``precision_mode`` FP16) and keeps range and enumerated
  shapes. Nothing in Neo's Core ML options forces the older NeuralNetwork ``.mlmodel``.
* **Precision**: ``CompilerOptions.precision_mode`` FP32 (default, as Neo's) or FP16 sets
  coremltools' ``compute_precision`` (coremltools' own default for ML Programs is FP16: always
  set explicitly).
* **Layout**: shapes in the model's own layout (NCHW for PyTorch, NHWC for TensorFlow/Keras), as
  Neo's Core ML examples give them. An Image input's preprocessing is ``scale * pixel + bias``
  per channel, the same formula Neo documents.
* Core ML models cannot run on Linux: nothing here runs the converted model. The artifact's
  spec is read back from the saved package and summarized (:mod:`.summary`).

Invariants: the model is converted once, saved to ``out_dir / MEMBER``, and read back from disk
for the summary. A Framework other than PYTORCH/TENSORFLOW/KERAS raises
:class:`~airflow_neo.local.errors.UnsupportedFrameworkError`; bad DataInputConfig or options a
:class:`~airflow_neo.local.errors.ModelInputError`; an unreadable model a
:class:`~airflow_neo.local.errors.ModelArchiveError`; an op coremltools has no converter for an
:class:`~airflow_neo.local.errors.UnsupportedOperatorsError` naming it; any other conversion
failure an :class:`~airflow_neo.local.errors.OperatorAttributeNotImplementedError` naming the op
being converted where coremltools logged one, else a :class:`CompilationError`. coremltools and
the framework packages are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from airflow_neo.core.input_shapes import InputShape, Range
from airflow_neo.local.convert import MissingExtra
from airflow_neo.local.coreml.inputs import ct_input, match_entries, parse_entries
from airflow_neo.local.coreml.options import PRECISIONS, CoreMLOptions, parse_options
from airflow_neo.local.coreml.sources import Loaded, load_source
from airflow_neo.local.coreml.summary import feature_specs, spec_summary
from airflow_neo.local.errors import (
    CompilationError,
    ModelInputError,
    OperatorAttributeNotImplementedError,
    UnsupportedFrameworkError,
    UnsupportedOperatorsError,
)
from airflow_neo.local.frontend_common import InputSpec

__all__ = ["DEPLOYMENT_TARGET", "MEMBER", "SUPPORTED_FRAMEWORKS", "CoreMLResult", "compile_coreml", "import_coremltools"]

Log = Callable[[str], Any]

SUPPORTED_FRAMEWORKS = ("PYTORCH", "TENSORFLOW", "KERAS")
MEMBER = "model.mlpackage"
DEPLOYMENT_TARGET = "iOS15"
_NOT_IMPLEMENTED = re.compile(r"(?:PyTorch convert function for op|Conversion for TF op) '([^']+)' not implemented")
_CONVERTING = re.compile(r"converting '([^']+)' op \(located at: '([^']*)'\)")


@dataclass
class CoreMLResult:
    """A converted model: ``member`` is the artifact member name (a directory: an ``.mlpackage``),
    ``path`` where it lies in ``out_dir``; ``inputs``/``outputs`` with None for flexible dims;
    ``spec_summary`` JSON-safe (:func:`airflow_neo.local.coreml.summary.spec_summary`)."""

    member: str
    path: Path
    inputs: list[InputSpec]
    outputs: list[InputSpec]
    spec_summary: dict
    versions: dict

    def files(self) -> list[tuple[str, Path]]:
        """``(member name, file)`` of every file of the package, sorted: what an artifact tar holds
        (``tar.add(file, arcname=name)`` each; the directories are implied)."""
        return sorted((f"{self.member}/{file.relative_to(self.path).as_posix()}", file)
                      for file in self.path.rglob("*") if file.is_file())


def compile_coreml(framework: str, model_file: Path, model_dir: Path, data_input, options: dict, out_dir: Path, log: Log) -> CoreMLResult:
    """Convert ``model_file`` (inside the extracted archive ``model_dir``) to ``out_dir / MEMBER``."""
    framework = str(framework).upper()
    if framework not in SUPPORTED_FRAMEWORKS:
        raise UnsupportedFrameworkError(
            f"Framework {framework} cannot be compiled for TargetDevice coreml: Neo's Core ML converter takes TensorFlow/Keras "
            f"and PyTorch models ({', '.join(SUPPORTED_FRAMEWORKS)}); convert the model to one of them or pick another target"
        )
    model_file, model_dir, out_dir = Path(model_file), Path(model_dir), Path(out_dir)
    settings = parse_options(options, model_dir, framework)
    entries = _entries(framework, data_input)
    ct = import_coremltools(log)
    loaded = load_source(framework, model_file, model_dir, settings)
    matched = match_entries(framework, entries, loaded.inputs, positional_ok=loaded.positional_ok)
    for entry in matched:
        log(f"coreml input {entry.name}: {entry.input_type} {entry.shape_text()}"
            + (f" default {list(entry.default_shape)}" if entry.default_shape else "")
            + (f" scale {entry.scale} bias {list(entry.bias or [])}" if entry.input_type == "Image" else ""))
    mlmodel = _convert(ct, loaded, [ct_input(ct, e, channel_first=loaded.channel_first) for e in matched], settings, matched, log)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MEMBER
    if path.exists():
        shutil.rmtree(path)
    mlmodel.save(str(path))
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    summary = spec_summary(spec, precision=settings.precision, labels_file=settings.labels_file, deployment_target=DEPLOYMENT_TARGET)
    inputs = feature_specs(summary["inputs"], {e.name: _flexible_dims(e) for e in matched})
    outputs = feature_specs(summary["outputs"], _output_shapes(mlmodel))
    log(f"coreml: {summary['model_type']} spec version {summary['spec_version']}, {settings.precision}, "
        f"inputs {', '.join(s.describe() for s in inputs)}; outputs {', '.join(s.describe() for s in outputs)}")
    return CoreMLResult(MEMBER, path, inputs, outputs, summary, {"coremltools": ct.__version__, **loaded.versions})


def _entries(framework: str, data_input) -> list[InputShape]:
    if isinstance(data_input, list) and data_input and framework != "PYTORCH":
        raise ModelInputError(f"DataInputConfig's list form is for PYTORCH only; for {framework} give an object keyed by input name, "
                              'e.g. {"input_1": {"shape": [1, 224, 224, 3]}}')
    entries = parse_entries(data_input)
    if framework == "PYTORCH" and not entries:
        raise ModelInputError('DataInputConfig is required for PYTORCH (TorchScript declares no input shapes), e.g. '
                              '[{"shape": [1, 3, 224, 224]}] or {"input0": [1, 3, 224, 224]}')
    if framework == "TENSORFLOW":  # a frozen graph's inputs may be given as tensor names (x:0)
        entries = [replace(e, name=e.name[:-2]) if e.name.endswith(":0") else e for e in entries]
    return entries


def _flexible_dims(entry: InputShape) -> list:
    if entry.enumerated is not None:
        return [dims[0] if len(set(dims)) == 1 else None for dims in zip(*entry.enumerated)]
    return [None if isinstance(dim, Range) else dim for dim in entry.dims]


def _output_shapes(mlmodel) -> dict:
    """Output shapes of the converted MIL program (None for symbolic dims); the ML Program's spec
    does not record them."""
    program = getattr(mlmodel, "_mil_program", None)
    if program is None:
        return {}
    shapes = {}
    for var in program.functions["main"].outputs:
        shape = getattr(var, "shape", None)
        if shape is not None:
            shapes[var.name] = [dim if isinstance(dim, int) else None for dim in shape]
    return shapes


# ----------------------------------------------------------------------------- coremltools


class _Records(logging.Handler):
    """Collects coremltools' log records (the op it was converting when a conversion fails)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _captured_logs():
    logger = logging.getLogger("coremltools")
    handler, level, propagate = _Records(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def import_coremltools(log: Log = lambda _line: None):
    """``coremltools``; its import-time chatter (untested framework versions, the native runtime
    it cannot load on Linux) goes to ``log`` once, as one line. A missing package is a
    :class:`~airflow_neo.local.convert.MissingExtra` (a CompilationError) naming the extra."""
    with _captured_logs() as records:
        try:
            import coremltools as ct
        except ImportError as err:
            raise MissingExtra(f"TargetDevice coreml needs coremltools, which is not installed here ({err}): "
                               "pip install 'airflow-neo[coreml]' (coremltools==9.0)") from err
    notes = [m for m in records.messages if "has not been tested" in m]
    if notes:
        log("coremltools: " + "; ".join(note.split(". You may")[0] for note in notes))
    return ct


def _convert(ct, loaded: Loaded, inputs: list, settings: CoreMLOptions, matched: list[InputShape], log: Log):
    kwargs = {
        "source": loaded.source,
        "inputs": inputs,
        "convert_to": "mlprogram",
        "minimum_deployment_target": getattr(ct.target, DEPLOYMENT_TARGET),
        "compute_precision": getattr(ct.precision, PRECISIONS[settings.precision]),
        "skip_model_load": True,  # Core ML cannot load models on Linux
    }
    if settings.labels:
        kwargs["classifier_config"] = ct.ClassifierConfig(list(settings.labels))
        log(f"coreml classifier: {len(settings.labels)} labels from {settings.labels_file}")
        repeated = sorted({label for label in settings.labels if settings.labels.count(label) > 1})
        if repeated:  # ImageNet's usual file repeats 'crane' and 'maillot': kept, as Neo keeps them
            log(f"coreml classifier: labels repeated in {settings.labels_file}: {repeated[:10]}; the model's "
                "probabilities output (a dictionary by label) holds one entry for each")
    with _captured_logs() as records:
        try:
            return ct.convert(loaded.model, **kwargs)
        except Exception as err:  # noqa: BLE001 - coremltools raises anything; each is translated
            raise _conversion_error(err, records.messages, matched, settings) from err


def _conversion_error(err: BaseException, messages: list[str], matched: list[InputShape], settings: CoreMLOptions) -> Exception:
    text = _first_line(err)
    missing = _NOT_IMPLEMENTED.search(str(err))
    if missing:
        op = missing.group(1)
        return UnsupportedOperatorsError(
            f"coremltools {_version()} has no converter for operator {op!r}{_where(messages)}; the coreml target cannot "
            "convert a model that uses it: rewrite the model without it or compile for a TVM target", [op])
    if settings.labels and "number of classes must match" in str(err):
        return ModelInputError(f"CompilerOptions class_labels {settings.labels_file!r} holds {len(settings.labels)} labels, which "
                               f"is not the size of the model's output ({text})")
    shapes = "; ".join(f"{e.name} {e.shape_text()}" for e in matched)
    converting = [m for m in messages if _CONVERTING.search(m)]
    if converting:
        op, where = _CONVERTING.search(converting[-1]).groups()
        return OperatorAttributeNotImplementedError(
            f"coremltools {_version()} failed converting operator {op!r} (at {where or 'top level'}) with the inputs {shapes}: "
            f"{type(err).__name__}: {text}; check that DataInputConfig gives the shapes the model takes", [op])
    return CompilationError(f"coremltools {_version()} failed to convert the model with the inputs {shapes}: {type(err).__name__}: {text}")


def _where(messages: list[str]) -> str:
    for message in reversed(messages):
        found = _CONVERTING.search(message)
        if found and found.group(2):
            return f" (at {found.group(2)})"
    return ""


def _version() -> str:
    import coremltools

    return coremltools.__version__


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[0][:500] if lines else "(no message)"
