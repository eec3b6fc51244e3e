"""What the local compiler's frontends share: input specs, input matching, quiet imports.

Invariants: :func:`match_inputs` returns every model input with a fully static shape and a dtype,
or raises :class:`~airflow_neo.local.errors.ModelInputError` naming the input, what the model
declares and what the request gave; models are never cast. The one exception to "fully static":
with ``flexible_ok``, a DataInputConfig range (``"1..8"``) on a dim the model leaves dynamic gives a
:class:`~airflow_neo.local.flexible_shapes.FlexibleInputSpec` (None at that dim, its range in
``ranges``); without it a range is refused. Nothing here imports a framework or TVM, and nothing
here imports another frontend module (they import this one).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from airflow_neo.local.errors import ModelInputError

__all__ = ["DEFAULT_DTYPE", "Imported", "InputSpec", "Log", "dtype_for", "first_line", "flatten", "match_inputs", "quiet"]

DEFAULT_DTYPE = "float32"

Log = Callable[[str], Any]


@dataclass
class InputSpec:
    """One model input: ``shape`` entries are None for dynamic dims; ``shape`` None = rank unknown."""

    name: str
    shape: list[int | None] | None
    dtype: str | None

    @property
    def shape_text(self) -> str:
        """``[1, 3, ?, ?]`` (``?`` for a dynamic dim), or ``?`` when the rank is unknown."""
        return "?" if self.shape is None else "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def describe(self) -> str:
        return f"{self.name} {self.shape_text} {self.dtype or '?'}"


@dataclass
class Imported:
    """What an importer returns: the Relax module, the resolved inputs, output names, versions."""

    mod: Any  # tvm.IRModule
    inputs: list[InputSpec]
    output_names: list[str]
    framework_versions: dict


# --------------------------------------------------------------------------------------------
# input matching (shared by the frontends)


def _model_inputs_text(model_inputs: list[InputSpec]) -> str:
    return "; ".join(spec.describe() for spec in model_inputs) or "none"


def dtype_for(name: str, declared: str | None, dtype_option) -> str:
    wanted = dtype_option.get(name) if isinstance(dtype_option, dict) else dtype_option
    if declared is None:
        return wanted or DEFAULT_DTYPE
    if wanted and wanted != declared:
        raise ModelInputError(
            f"CompilerOptions dtype says {wanted} for input {name!r} but the model declares {declared}; "
            "the local backend does not cast models: drop the dtype option or convert the model"
        )
    return declared


def match_inputs(
    framework: str,
    model_inputs: list[InputSpec],
    data_input,
    dtype_option,
    *,
    positional_ok: bool = False,
    flexible_ok: bool = False,
) -> list[InputSpec]:
    """Resolve each model input's shape and dtype from DataInputConfig and the model's declarations.

    ``positional_ok``: a dict whose keys are not the model's input names is taken in order
    (Neo's PyTorch convention: input0, input1, ...). ``flexible_ok``: the importer keeps range
    dims symbolic (:mod:`airflow_neo.local.flexible_shapes`); else a range is a ModelInputError.
    """
    if isinstance(dtype_option, dict):
        unknown = sorted(set(dtype_option) - {spec.name for spec in model_inputs})
        if unknown and not positional_ok:
            raise ModelInputError(
                f"CompilerOptions dtype names {unknown}, which are not inputs of the {framework} model; "
                f"the model's inputs are: {_model_inputs_text(model_inputs)}"
            )
    given: dict[str, list[int]] = {}
    if data_input is None:
        pass
    elif isinstance(data_input, dict):
        names = [spec.name for spec in model_inputs]
        unknown = [key for key in data_input if key not in names]
        if unknown and positional_ok and len(data_input) == len(model_inputs) and not set(data_input) & set(names):
            given = dict(zip(names, data_input.values()))
        elif unknown:
            raise ModelInputError(
                f"DataInputConfig names {unknown}, which {'is not an input' if len(unknown) == 1 else 'are not inputs'} "
                f"of the {framework} model; the model's inputs are: {_model_inputs_text(model_inputs)}"
            )
        else:
            given = dict(data_input)
    elif isinstance(data_input, list):
        if data_input and not isinstance(data_input[0], list):
            data_input = [data_input]  # a single shape
        if len(data_input) != len(model_inputs):
            raise ModelInputError(
                f"DataInputConfig lists {len(data_input)} shape(s) but the {framework} model has "
                f"{len(model_inputs)} input(s): {_model_inputs_text(model_inputs)}"
            )
        given = {spec.name: shape for spec, shape in zip(model_inputs, data_input)}
    else:
        raise ModelInputError(f"DataInputConfig must be an object {{name: shape}} or a list of shapes; got {data_input!r}")

    resolved = []
    for spec in model_inputs:
        shape = given.get(spec.name)
        dims = _range_dims(spec, shape)
        if dims is not None:
            resolved.append(_flexible(spec, dims, framework, flexible_ok, dtype_option))
            continue
        if shape is not None:
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
                raise ModelInputError(f"DataInputConfig shape for {spec.name!r} must be a list of positive integers; got {shape!r}")
            if spec.shape is not None:
                if len(shape) != len(spec.shape):
                    raise ModelInputError(
                        f"DataInputConfig gives input {spec.name!r} rank {len(shape)} {shape}, but the model declares "
                        f"rank {len(spec.shape)} {spec.shape_text}; the model's inputs are: "
                        f"{_model_inputs_text(model_inputs)}"
                    )
                fixed = [(i, d, s) for i, (d, s) in enumerate(zip(shape, spec.shape)) if s is not None and d != s]
                if fixed:
                    i, d, s = fixed[0]
                    raise ModelInputError(
                        f"DataInputConfig gives input {spec.name!r} shape {shape}, but dimension {i} is fixed at {s} "
                        f"in the model ({spec.describe()}); change DataInputConfig or re-export the model with "
                        "that dimension dynamic"
                    )
        else:
            if spec.shape is None or any(d is None for d in spec.shape):
                raise ModelInputError(
                    f"input {spec.name!r} of the {framework} model has no static shape ({spec.describe()}); "
                    f"give its shape in DataInputConfig, e.g. {{{json.dumps(spec.name)}: [1, 3, 224, 224]}}; "
                    f"the model's inputs are: {_model_inputs_text(model_inputs)}"
                )
            shape = list(spec.shape)
        resolved.append(InputSpec(spec.name, [int(d) for d in shape], dtype_for(spec.name, spec.dtype, dtype_option)))
    return resolved


def _range_dims(spec: InputSpec, shape) -> list | None:
    """``shape``'s dims with its ranges parsed, its rank checked against the model's; None: no range."""
    from airflow_neo.local.flexible_shapes import parse_dims

    dims = parse_dims(spec.name, shape)
    if dims is not None and spec.shape is not None and len(dims) != len(spec.shape):
        raise ModelInputError(
            f"DataInputConfig gives input {spec.name!r} rank {len(dims)} {shape}, but the model declares "
            f"rank {len(spec.shape)} {spec.shape_text}"
        )
    return dims


def _flexible(spec: InputSpec, dims: list, framework: str, flexible_ok: bool, dtype_option) -> InputSpec:
    from airflow_neo.local.flexible_shapes import flexible_spec, is_range

    fixed = [(i, d, s) for i, (d, s) in enumerate(zip(dims, spec.shape or [])) if not is_range(d)
             and s is not None and d != s]
    if fixed:
        i, d, s = fixed[0]
        raise ModelInputError(
            f"DataInputConfig gives input {spec.name!r} size {d} at dimension {i}, which the model fixes at {s} "
            f"({spec.describe()})"
        )
    resolved = flexible_spec(spec, dims, framework, flexible_ok)
    resolved.dtype = dtype_for(spec.name, spec.dtype, dtype_option)
    return resolved


@contextlib.contextmanager
def quiet():
    """Silence frontend chatter (deprecation and renaming warnings) without hiding errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def first_line(err: Exception) -> str:
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    # TorchScript errors put the real message last, after the traceback of the scripted code.
    return (lines[-1] if len(lines) > 1 and "Traceback" in text else lines[0])[:500]


def flatten(value) -> list:
    """The leaves of nested lists, tuples and dicts (a model's outputs), in order."""
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in flatten(item)]
    return [value]
