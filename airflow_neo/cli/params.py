"""Turning command-line values into an API request, as the AWS CLI does.

* Any value may be ``file://path`` (the file's text is used instead).
* Structures (and maps) are JSON when they start with ``{``, shorthand otherwise.
* Lists take one or more values (``--tags Key=a,Value=b Key=c,Value=d``), or one JSON list.
* ``--cli-input-json`` / ``--cli-input-yaml`` supply members; options on the command line
  replace the file's value of the same member.
* The merged request is validated with botocore's own client-side validator (required
  members, unknown members, types, minimums): a failure is a usage error (252).
"""

from __future__ import annotations

import json
import os
from typing import Any

from airflow_neo.cli import shorthand
from airflow_neo.cli.errors import ParamError, ParamValidationError
from airflow_neo.cli.model import Param

PARAMFILE_PREFIX = "file://"


def read_paramfile(option: str, value: str) -> str:
    """The value itself, or the text of the file a ``file://`` value names."""
    if not isinstance(value, str) or not value.startswith(PARAMFILE_PREFIX):
        return value
    path = os.path.expanduser(value[len(PARAMFILE_PREFIX) :])
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ParamError(option, f"Unable to load paramfile {value}: {err}") from None


def _load_json(option: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise ParamError(option, f"Invalid JSON: {err}\nJSON received: {text}") from None


def _unpack_complex(option: str, text: str, shape) -> Any:
    """A structure or map: JSON when it looks like JSON, otherwise shorthand."""
    stripped = text.lstrip()
    if stripped.startswith("{") or (shape.type_name == "list" and stripped.startswith("[")):
        return _load_json(option, text)
    try:
        return shorthand.coerce(shorthand.parse(text), shape)
    except shorthand.ShorthandError as err:
        raise ParamError(option, str(err)) from None


def _unpack_scalar(option: str, text: str, shape) -> Any:
    kind = shape.type_name
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise ParamError(option, f"invalid literal for int() with base 10: {text!r}") from None
    if kind in ("float", "double"):
        try:
            return float(text)
        except ValueError:
            raise ParamError(option, f"could not convert string to float: {text!r}") from None
    if kind == "timestamp":
        return parse_timestamp(option, text)
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ParamError(option, f"expected true or false, got {text!r}")
        return lowered == "true"
    return text


def parse_timestamp(option: str, value: Any):
    """A timezone-aware datetime from ISO-8601 text, epoch seconds or a datetime."""
    from botocore.utils import parse_timestamp as botocore_parse

    try:
        return botocore_parse(value)
    except (ValueError, TypeError, OverflowError) as err:
        raise ParamError(option, f"Invalid timestamp value {value!r}: {err}") from None


def unpack(param: Param, raw: Any) -> Any:
    """The API value of one option as given on the command line (a string, or strings for a list)."""
    shape = param.shape
    if param.kind == "list":
        values = [read_paramfile(param.option, v) for v in (raw if isinstance(raw, list) else [raw])]
        if len(values) == 1 and values[0].lstrip().startswith("["):
            return _load_json(param.option, values[0])
        member = shape.member
        if member.type_name in ("structure", "map", "list"):
            items = [_unpack_complex(param.option, v, member) for v in values]
        else:
            items = [_unpack_scalar(param.option, v, member) for v in values]
        return shorthand.coerce(items, shape)
    text = read_paramfile(param.option, raw)
    if param.kind in ("structure", "map"):
        return _unpack_complex(param.option, text, shape)
    return _unpack_scalar(param.option, text, shape)


def load_cli_input(json_value: str | None, yaml_value: str | None) -> dict:
    """The members given by ``--cli-input-json`` or ``--cli-input-yaml`` (a string or ``file://``)."""
    if json_value is not None:
        option, text = "--cli-input-json", read_paramfile("--cli-input-json", json_value)
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ParamError(option, f"Invalid JSON received: {err}\nJSON received: {text}") from None
    elif yaml_value is not None:
        import yaml

        option, text = "--cli-input-yaml", read_paramfile("--cli-input-yaml", yaml_value)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ParamError(option, f"Invalid YAML received: {err}") from None
    else:
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamError(option, f"Invalid type: the input must be a mapping of parameter names to values, got {type(data).__name__}")
    return data


def build_request(params: tuple[Param, ...], given: dict[str, Any], cli_input: dict) -> dict:
    """The request: the file's members, replaced by the options given on the command line.

    ``given`` maps member names to raw command-line values (only the options that were used).
    """
    request = dict(cli_input)
    by_member = {p.member: p for p in params}
    for member, raw in given.items():
        request[member] = unpack(by_member[member], raw)
    return request


def validate(operation: str, request: dict) -> dict:
    """botocore's client-side validation of ``request``; returns it with timestamps as datetimes."""
    from botocore.validate import ParamValidator

    from airflow_neo.core.service_model import input_shape

    shape = input_shape(operation)
    if shape is None:
        if request:
            raise ParamValidationError(f'Unknown parameter(s) in input: {", ".join(map(repr, request))}')
        return request
    report = ParamValidator().validate(request, shape)
    if report.has_errors():
        raise ParamValidationError(report.generate_report())
    import datetime as dt

    result = dict(request)
    for member, member_shape in shape.members.items():
        if member_shape.type_name == "timestamp" and member in result and not isinstance(result[member], dt.datetime):
            result[member] = parse_timestamp(member, result[member])
    return result
