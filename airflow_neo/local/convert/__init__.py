"""Converters: the frameworks TVM 0.27 has no frontend for, turned into ONNX for the ONNX import path.

One module per framework (:mod:`.tensorflow`, :mod:`.keras`, :mod:`.darknet`,
:mod:`.mxnet`), each with ``convert(source: Source) -> Converted``; :data:`CONVERTERS` maps the
Framework to its converter's module path, imported only when a job of that framework runs.

The contract every converter keeps (what :func:`airflow_neo.local.frontends.import_converted` and
the verification rely on):

- the ONNX graph it writes (``Converted.onnx_path``, inside ``source.work``) takes inputs named
  exactly as the job's DataInputConfig names them (or, when DataInputConfig is empty, the names
  :attr:`Converted.input_names` gives), with the shapes DataInputConfig gives in the framework's
  layout as Neo documents it (TENSORFLOW: NHWC as the graph declares; KERAS: NCHW, transposed to
  the model's NHWC inside the graph; DARKNET and MXNET: NCHW); outputs in the framework's order;
- a file that is not a model of the framework, or a missing or ambiguous companion file (the
  ``.weights`` of a ``.cfg``, the ``.params`` of a symbol file, a SavedModel's ``variables``),
  raises :class:`~airflow_neo.local.errors.ModelArchiveError` (``ClientError: InputConfiguration``)
  naming the files the archive holds and what it must hold;
  an input name or shape that does not fit raises
  :class:`~airflow_neo.local.errors.ModelInputError`; a layer or operator the converter does not
  handle raises :class:`~airflow_neo.local.errors.UnsupportedOperatorsError` naming it; a missing
  optional package raises :class:`MissingExtra` naming the extra to install;
- nothing here imports Airflow; the framework packages are imported inside ``convert`` only.

Each module also has ``reference(model_file, metadata, threads) -> Reference`` (see
:mod:`airflow_neo.local.references`): the framework's own runtime running the original model file
on the inputs the artifact takes (``{DataInputConfig name: array}``, in the artifact's layout),
outputs flattened in the framework's order, its thread count pinned to ``threads`` where the
runtime allows; it raises :class:`~airflow_neo.local.references.NotVerifiable` with the reason
(the package to install) when that runtime is not here. ``metadata`` is the artifact's
``metadata.json`` (``compiler_options``, ``data_input_config``, ``inputs``, ``model_file``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from airflow_neo.local.errors import CompilationError

__all__ = ["CONVERTERS", "Converted", "MissingExtra", "Source", "converter_for"]

Log = Callable[[str], Any]

#: Framework -> the module whose ``convert`` turns its model files into ONNX.
CONVERTERS: dict[str, str] = {
    "TENSORFLOW": "airflow_neo.local.convert.tensorflow",
    "KERAS": "airflow_neo.local.convert.keras",
    "DARKNET": "airflow_neo.local.convert.darknet",
    "MXNET": "airflow_neo.local.convert.mxnet",
}


class MissingExtra(CompilationError):
    """A converter's optional packages are not installed: the message names the extra
    (``pip install 'airflow-neo[tensorflow]'``)."""


@dataclass(frozen=True)
class Source:
    """What a converter gets: the model file :func:`~airflow_neo.local.archive.find_model_file`
    found, the extracted archive it lies in, the job's parsed DataInputConfig (``{name: shape}``,
    possibly empty) and CompilerOptions, a scratch directory for its output, and the job log."""

    framework: str
    model_file: Path
    model_dir: Path
    data_input: dict
    options: dict
    work: Path
    log: Log


@dataclass
class Converted:
    """A converter's result: the ONNX file, the input names it takes (in order) and the versions of
    what converted it (``{"tensorflow": "2.21.0", "tf2onnx": "1.17.0"}``,
    ``{"darknet_reader": "airflow-neo 0.1.0"}``), recorded in the artifact's metadata."""

    onnx_path: Path
    input_names: list[str]
    versions: dict = field(default_factory=dict)


def converter_for(framework: str) -> Callable[[Source], Converted]:
    """The ``convert`` function of ``framework``'s converter module."""
    return importlib.import_module(CONVERTERS[framework]).convert
