"""CompilerOptions of a Core ML job: ``class_labels``, ``precision_mode`` and, for TensorFlow,
``signature_def_key`` / ``output_names``.

Invariants: :func:`parse_options` returns a :class:`CoreMLOptions` or raises
:class:`~airflow_neo.local.errors.ModelInputError` naming the option, the value and what is
allowed; an option outside :data:`ALLOWED_OPTIONS` is refused (a misspelt ``class_label`` would
otherwise give a model that is silently not a classifier). The labels file is read from inside the
extracted archive only (no absolute path, no ``..``), one label a line, blank lines dropped.
Pure Python: no framework or coremltools import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from airflow_neo.local.archive import is_junk, list_files, listing
from airflow_neo.local.errors import ModelInputError

__all__ = ["ALLOWED_OPTIONS", "DEFAULT_PRECISION", "PRECISIONS", "CoreMLOptions", "parse_options", "read_labels"]

#: precision_mode -> coremltools' ct.precision member name (Neo's default is FP32).
PRECISIONS = {"FP32": "FLOAT32", "FP16": "FLOAT16"}
DEFAULT_PRECISION = "FP32"
TF_OPTIONS = ("signature_def_key", "output_names")
ALLOWED_OPTIONS = ("class_labels", "precision_mode", *TF_OPTIONS)


@dataclass(frozen=True)
class CoreMLOptions:
    """The parsed options: ``precision`` is ``"FP32"`` or ``"FP16"``; ``labels`` None when the
    model is not a classifier; ``labels_file`` the archive path they came from."""

    precision: str = DEFAULT_PRECISION
    labels: tuple[str, ...] | None = None
    labels_file: str | None = None
    signature_def_key: str | None = None
    output_names: tuple[str, ...] | None = None


def parse_options(options: dict | None, model_dir: Path, framework: str) -> CoreMLOptions:
    """Check ``options`` (a job's CompilerOptions) for a Core ML job and read its labels file."""
    options = dict(options or {})
    unknown = sorted(str(key) for key in options if key not in ALLOWED_OPTIONS)
    if unknown:
        raise ModelInputError(
            f"CompilerOptions {unknown} are not options of the coreml target; allowed: {list(ALLOWED_OPTIONS)} "
            f"(class_labels: a labels file in the archive; precision_mode: {sorted(PRECISIONS)})"
        )
    tf_given = [key for key in TF_OPTIONS if options.get(key) is not None]
    if tf_given and framework != "TENSORFLOW":
        raise ModelInputError(f"CompilerOptions {tf_given} apply to TENSORFLOW models only; the job's Framework is {framework}")
    precision = _precision(options.get("precision_mode"))
    labels_file = options.get("class_labels")
    labels = None
    if labels_file is not None:
        labels = read_labels(labels_file, model_dir)
    return CoreMLOptions(
        precision=precision,
        labels=labels,
        labels_file=labels_file,
        signature_def_key=_signature_key(options.get("signature_def_key")),
        output_names=_output_names(options.get("output_names")),
    )


def _precision(value) -> str:
    if value is None:
        return DEFAULT_PRECISION
    if not isinstance(value, str) or value.upper() not in PRECISIONS:
        raise ModelInputError(f"CompilerOptions precision_mode is {value!r}; allowed: {sorted(PRECISIONS)} (default {DEFAULT_PRECISION})")
    return value.upper()


def _signature_key(value) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ModelInputError(f"CompilerOptions signature_def_key must be a non-empty string; got {value!r}")
    return value


def _output_names(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(name, str) and name for name in value):
        raise ModelInputError(f"CompilerOptions output_names must be a non-empty list of tensor names; got {value!r}")
    return tuple(value)


def read_labels(name, model_dir: Path) -> tuple[str, ...]:
    """The labels of the file ``name`` inside the extracted archive ``model_dir``, one a line.

    ``name`` is a path relative to the archive's root; a bare file name that is not at the root
    is looked up by name anywhere in the archive (it must be there once).
    """
    path = _labels_path(name, Path(model_dir))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ModelInputError(f"CompilerOptions class_labels file {name!r} cannot be read as UTF-8 text ({type(err).__name__}: {err})") from err
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise ModelInputError(f"CompilerOptions class_labels file {name!r} holds no labels; put one label a line")
    return labels


def _labels_path(name, model_dir: Path) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise ModelInputError(f"CompilerOptions class_labels must be the name of a labels file in the model archive; got {name!r}")
    relative = PurePosixPath(name.strip())
    if relative.is_absolute() or ".." in relative.parts:
        raise ModelInputError(
            f"CompilerOptions class_labels {name!r} must be a path inside the model archive (relative, without '..'); "
            f"the archive holds {listing(model_dir)}"
        )
    direct = model_dir / relative
    if direct.is_file():
        return direct
    if len(relative.parts) == 1:
        matches = [rel for rel in list_files(model_dir) if PurePosixPath(rel).name == relative.name and not is_junk(rel)]
        if len(matches) == 1:
            return model_dir / matches[0]
        if len(matches) > 1:
            raise ModelInputError(
                f"CompilerOptions class_labels {name!r} matches {len(matches)} files in the model archive ({', '.join(matches)}); "
                "give its path inside the archive"
            )
    raise ModelInputError(
        f"CompilerOptions class_labels names {name!r}, which is not in the model archive; the archive holds {listing(model_dir)}"
    )
