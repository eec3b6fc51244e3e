"""Validation of CreateCompilationJob requests.

Member types, required members, enums, patterns, lengths and ranges are read from botocore's
service model; the semantic rules that the model cannot express are added on top. Every
problem is collected, so one error lists all of them.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from airflow_neo.core.exceptions import InvalidCompilationRequest, Problem
from airflow_neo.core.input_shapes import parse_data_input
from airflow_neo.core.service_model import input_shape

OPERATION = "CreateCompilationJob"
JSON_STRING_MEMBERS = ("DataInputConfig", "CompilerOptions")
NVIDIA_REQUIRED_OPTIONS = ("gpu-code", "trt-ver", "cuda-ver")
# Neo accepts the list form of DataInputConfig only for PyTorch.
LIST_FORM_FRAMEWORKS = frozenset({"PYTORCH"})
# The only target that takes Core ML's object form of DataInputConfig entries.
COREML_DEVICE = "coreml"
# Schemes the local backend reads and writes besides those of the API's S3Uri pattern.
LOCAL_URI_PREFIXES = ("file://", "/")
# An integer given as a string (Jinja renders strings): ASCII digits only ("²".isdigit() is True).
_INTEGER_TEXT = re.compile(r"-?[0-9]+")


@lru_cache(maxsize=None)
def _compiled(pattern: str):
    # Tag patterns use \p{L}-style classes that only the `regex` module understands.
    import regex

    return regex.compile(pattern)


@dataclass(frozen=True)
class ValidatedRequest:
    """A CreateCompilationJob request that passed :func:`validate_request`: validated once.

    The store, the compiler and the cache key take it as it is, without normalizing again.

    :param payload: the normalized request in the API's member names (DataInputConfig and
        CompilerOptions as JSON strings, as the API stores them).
    :param data_input_config: DataInputConfig parsed (None when absent).
    :param compiler_options: CompilerOptions parsed ({} when absent).
    """

    payload: dict
    data_input_config: dict | list | None = None
    compiler_options: dict = field(default_factory=dict)

    @classmethod
    def from_normalized(cls, payload: dict) -> ValidatedRequest:
        """A request that was validated before (read back from the job store): parsed, not re-checked."""
        return cls(payload=payload, data_input_config=parse_data_input_config(payload), compiler_options=parse_compiler_options(payload))

    @property
    def name(self) -> str:
        return self.payload["CompilationJobName"]

    @property
    def input_config(self) -> dict:
        return self.payload.get("InputConfig") or {}

    @property
    def output_config(self) -> dict:
        return self.payload.get("OutputConfig") or {}

    @property
    def framework(self) -> str:
        return str(self.input_config.get("Framework") or "").upper()


def validate_request(config: dict | ValidatedRequest, *, allow_local_uris: bool = False) -> ValidatedRequest:
    """Validate and normalize a CreateCompilationJob request once; a ValidatedRequest is returned as it is.

    Raises :class:`InvalidCompilationRequest` listing every problem.
    """
    if isinstance(config, ValidatedRequest):
        return config
    return ValidatedRequest.from_normalized(normalize_request(config, allow_local_uris=allow_local_uris))


def normalize_request(config: dict, *, allow_local_uris: bool = False) -> dict:
    """Return a validated, normalized copy of a CreateCompilationJob request.

    DataInputConfig and CompilerOptions given as dicts or lists are serialized to JSON strings,
    integers given as strings (Jinja templating renders strings) are cast. Raises
    :class:`InvalidCompilationRequest` listing every problem.

    :param config: the request, in the API's member names.
    :param allow_local_uris: also accept ``file://`` URIs and absolute paths for S3 locations
        (the local backend).
    """
    problems: list[Problem] = []
    if not isinstance(config, dict):
        raise InvalidCompilationRequest([Problem("<request>", config, "must be a dict of CreateCompilationJob members")])
    request = copy.deepcopy(config)
    _serialize_json_members(request, problems)
    request = _check_shape(input_shape(OPERATION), request, "", problems, allow_local_uris)
    _check_semantics(request, problems)
    if problems:
        raise InvalidCompilationRequest(problems)
    return request


def _serialize_json_members(request: dict, problems: list[Problem]) -> None:
    for section, member in (("InputConfig", "DataInputConfig"), ("OutputConfig", "CompilerOptions")):
        block = request.get(section)
        if isinstance(block, dict) and isinstance(block.get(member), (dict, list)):
            try:
                block[member] = json.dumps(block[member])
            except (TypeError, ValueError) as err:
                problems.append(Problem(f"{section}.{member}", block[member], f"must be JSON-serializable ({err})"))


def _check_shape(shape, value: Any, path: str, problems: list[Problem], allow_local: bool) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return _check_structure(shape, value, path, problems, allow_local)
    if kind == "list":
        return _check_list(shape, value, path, problems, allow_local)
    if kind in ("integer", "long"):
        return _check_integer(shape, value, path, problems)
    if kind == "string":
        return _check_string(shape, value, path, problems, allow_local)
    if kind == "boolean" and not isinstance(value, bool):
        problems.append(Problem(path, value, "must be a boolean"))
    return value


def _check_structure(shape, value, path, problems, allow_local):
    if not isinstance(value, dict):
        problems.append(Problem(path or "<request>", value, f"must be a structure (dict) with members {sorted(shape.members)}"))
        return value
    prefix = f"{path}." if path else ""
    for name in shape.required_members:
        if value.get(name) is None:
            problems.append(Problem(prefix + name, None, "is required"))
    result = {}
    for name, member_value in value.items():
        if name not in shape.members:
            problems.append(Problem(prefix + str(name), member_value, f"unknown member; allowed: {sorted(shape.members)}"))
            continue
        if member_value is None:
            continue
        result[name] = _check_shape(shape.members[name], member_value, prefix + name, problems, allow_local)
    return result


def _check_list(shape, value, path, problems, allow_local):
    if not isinstance(value, (list, tuple)):
        problems.append(Problem(path, value, "must be a list"))
        return value
    _check_bounds(shape.metadata, len(value), path, value, problems, "items")
    return [_check_shape(shape.member, item, f"{path}[{i}]", problems, allow_local) for i, item in enumerate(value)]


def _check_integer(shape, value, path, problems):
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(Problem(path, value, "must be an integer"))
        return value
    meta = shape.metadata
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        problems.append(Problem(path, value, f"must be in range {_range_text(low, high)}"))
    return value


def _check_string(shape, value, path, problems, allow_local):
    if not isinstance(value, str):
        problems.append(Problem(path, value, "must be a string"))
        return value
    enum = shape.enum
    if enum:
        if value not in enum:
            problems.append(Problem(path, value, f"must be one of {list(enum)}{_did_you_mean(value, enum)}"))
        return value
    meta = shape.metadata
    if allow_local and shape.name == "S3Uri" and value.startswith(LOCAL_URI_PREFIXES):
        _check_bounds(meta, len(value), path, value, problems, "characters")
        relative = _relative_file_uri(value)
        if relative is not None:
            problems.append(Problem(path, value, relative))
        return value
    _check_bounds(meta, len(value), path, value, problems, "characters")
    pattern = meta.get("pattern")
    if pattern and not _compiled(pattern).fullmatch(value):
        if shape.name == "S3Uri" and allow_local:
            allowed = f"must be an s3://bucket/key URI, a {LOCAL_URI_FORMS} (the local backend's locations)"
        else:
            allowed = f"must match the pattern {pattern!r}"
            if shape.name == "S3Uri":
                allowed += " (file:// and local paths need backend='local')"
        problems.append(Problem(path, value, allowed))
    return value


LOCAL_URI_FORMS = "file:///absolute/path URI (three slashes) or an absolute path"


def _relative_file_uri(value: str) -> str | None:
    """What is wrong with a ``file://`` URI that does not name an absolute path, else None.

    ``file://model.tar.gz`` reads as host ``model.tar.gz`` with an empty path: a relative path
    written with two slashes. Only ``file:///path`` and ``file://localhost/path`` name a local file.
    """
    if not value.startswith("file://"):
        return None
    rest = value[len("file://") :]
    if rest.startswith("/") or rest.startswith("localhost/"):
        return None
    return (
        f"is not an absolute path: a file URI needs three slashes and an absolute path, "
        f"e.g. file:///absolute/path/{rest.rsplit('/', 1)[-1] or 'model.tar.gz'}"
    )


def _did_you_mean(value: str, allowed) -> str:
    """``"; did you mean 'ONNX'?"`` for a near miss (another case, a typo), else ``""``."""
    import difflib

    by_case = [a for a in allowed if a.lower() == value.lower()]
    close = by_case or difflib.get_close_matches(value.lower(), [a.lower() for a in allowed], n=1, cutoff=0.75)
    if not close:
        return ""
    match = next(a for a in allowed if a.lower() == close[0].lower())
    return f"; did you mean {match!r}?"


def _check_bounds(meta, size, path, value, problems, unit):
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and size < low) or (high is not None and size > high):
        problems.append(Problem(path, value, f"length must be {_range_text(low, high)} {unit} (got {size})"))


def _range_text(low, high) -> str:
    if high is None:
        return f">= {low}"
    if low is None:
        return f"<= {high}"
    return f"{low}..{high}"


def _check_semantics(request: dict, problems: list[Problem]) -> None:
    has_input = request.get("InputConfig") is not None
    has_package = request.get("ModelPackageVersionArn") is not None
    if has_input == has_package:
        problems.append(
            Problem(
                "InputConfig|ModelPackageVersionArn",
                {"InputConfig": request.get("InputConfig"), "ModelPackageVersionArn": request.get("ModelPackageVersionArn")},
                "exactly one of InputConfig and ModelPackageVersionArn is required",
            )
        )
    input_config = request.get("InputConfig") if isinstance(request.get("InputConfig"), dict) else {}
    output_config = request.get("OutputConfig") if isinstance(request.get("OutputConfig"), dict) else {}
    if isinstance(request.get("OutputConfig"), dict):
        if ("TargetDevice" in output_config) == ("TargetPlatform" in output_config):
            problems.append(
                Problem(
                    "OutputConfig.TargetDevice|TargetPlatform",
                    {k: output_config.get(k) for k in ("TargetDevice", "TargetPlatform")},
                    "exactly one of TargetDevice and TargetPlatform is required",
                )
            )
    _check_data_input_config(input_config, problems, output_config.get("TargetDevice"))
    options = _check_compiler_options(output_config, problems)
    platform = output_config.get("TargetPlatform")
    if isinstance(platform, dict) and platform.get("Accelerator") == "NVIDIA":
        missing = [key for key in NVIDIA_REQUIRED_OPTIONS if not isinstance(options, dict) or key not in options]
        if missing:
            problems.append(
                Problem(
                    "OutputConfig.CompilerOptions",
                    output_config.get("CompilerOptions"),
                    f"TargetPlatform.Accelerator NVIDIA needs the compiler options {list(NVIDIA_REQUIRED_OPTIONS)}; missing {missing}",
                )
            )
    _check_stopping_condition(request.get("StoppingCondition"), problems)


def _check_data_input_config(input_config: dict, problems: list[Problem], target_device: Any = None) -> None:
    """DataInputConfig's form: shapes whose dimensions are positive integers or ``"lo..hi"`` ranges
    (every target), Core ML's object form only for TargetDevice ``coreml``
    (:mod:`airflow_neo.core.input_shapes` parses both)."""
    raw = input_config.get("DataInputConfig")
    if not isinstance(raw, str):
        return
    path = "InputConfig.DataInputConfig"
    framework = input_config.get("Framework")
    try:
        parsed = json.loads(raw)
    except ValueError as err:
        problems.append(Problem(path, raw, f"must be valid JSON ({err})"))
        return
    list_ok = isinstance(framework, str) and framework in LIST_FORM_FRAMEWORKS
    forms = '{"input_name": [1, 3, 224, 224], ...}' + (" or [[1, 3, 224, 224], ...]" if list_ok else "")
    if not isinstance(parsed, dict) and not (isinstance(parsed, list) and list_ok):
        problems.append(Problem(path, raw, f"for {framework} must be of the form {forms}"))
        return
    try:
        entries = parse_data_input(parsed)
    except ValueError as err:
        problems.append(Problem(path, raw, f"for {framework}: {err}; DataInputConfig is of the form {forms}"))
        return
    if target_device == COREML_DEVICE:
        return
    objects = [entry.name for entry in entries if entry.object_form]
    if objects:
        problems.append(
            Problem(
                path,
                raw,
                f"inputs {objects} use Core ML's object form ({{\"shape\": ..., \"type\": ...}}), which is for "
                f"OutputConfig.TargetDevice {COREML_DEVICE!r} only; for {target_device or 'TargetPlatform'} give each "
                f"input a plain shape of the form {forms} (dimensions may be ranges such as \"1..10\")",
            )
        )


def _check_compiler_options(output_config: dict, problems: list[Problem]) -> dict | None:
    raw = output_config.get("CompilerOptions")
    if not isinstance(raw, str):
        return None
    try:
        parsed = json.loads(raw)
    except ValueError as err:
        problems.append(Problem("OutputConfig.CompilerOptions", raw, f"must be valid JSON ({err})"))
        return None
    if not isinstance(parsed, dict):
        problems.append(Problem("OutputConfig.CompilerOptions", raw, "must be a JSON object"))
        return None
    return parsed


def _check_stopping_condition(condition: Any, problems: list[Problem]) -> None:
    if not isinstance(condition, dict):
        return
    runtime, wait = condition.get("MaxRuntimeInSeconds"), condition.get("MaxWaitTimeInSeconds")
    if isinstance(runtime, int) and isinstance(wait, int) and wait < runtime:
        problems.append(
            Problem(
                "StoppingCondition.MaxWaitTimeInSeconds",
                wait,
                f"must be >= StoppingCondition.MaxRuntimeInSeconds ({runtime})",
            )
        )


def parse_compiler_options(request: dict) -> dict:
    """The request's CompilerOptions as a dict ({} when absent); a dict given as such is kept."""
    raw = (request.get("OutputConfig") or {}).get("CompilerOptions")
    if isinstance(raw, (dict, list)):
        return raw
    return json.loads(raw) if raw else {}


def parse_data_input_config(request: dict) -> dict | list | None:
    """The request's DataInputConfig parsed (None when absent); a dict or list given as such is kept."""
    raw = (request.get("InputConfig") or {}).get("DataInputConfig")
    if isinstance(raw, (dict, list)):
        return raw
    return json.loads(raw) if raw else None
