"""``--generate-cli-skeleton``: input (JSON), yaml-input (YAML with comments) and output samples."""

from __future__ import annotations

import json

from airflow_neo.cli.model import first_sentence

EPOCH = "1970-01-01T00:00:00"


def input_skeleton(shape) -> dict:
    """Every member of ``shape`` with an empty value: ``""``, ``0``, one-element lists, nested structures."""
    if shape is None:
        return {}
    return _empty(shape, ())


def _empty(shape, stack: tuple[str, ...]):
    if shape.name in stack:  # a recursive shape: stop here
        return {} if shape.type_name == "structure" else ""
    stack = (*stack, shape.name)
    kind = shape.type_name
    if kind == "structure":
        return {name: _empty(member, stack) for name, member in shape.members.items()}
    if kind == "list":
        return [_empty(shape.member, stack)]
    if kind == "map":
        return {"KeyName": _empty(shape.value, stack)}
    if kind in ("integer", "long"):
        return 0
    if kind in ("float", "double"):
        return 0.0
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return EPOCH
    return ""


def input_skeleton_json(shape) -> str:
    return json.dumps(input_skeleton(shape), indent=4) + "\n"


def input_skeleton_yaml(shape) -> str:
    """The input skeleton as YAML, each member commented with [REQUIRED], its summary and valid values."""
    if shape is None or not shape.members:
        return "{}\n"
    lines: list[str] = []
    _yaml_structure(shape, 0, lines, list_item=False)
    return "\n".join(lines) + "\n"


def _comment(shape, required: bool) -> str:
    parts = []
    if required:
        parts.append("[REQUIRED]")
    summary = first_sentence(shape.documentation, limit=160)
    if summary:
        parts.append(summary)
    enum = getattr(shape, "enum", None)
    if enum:
        parts.append("Valid values are: " + ", ".join(enum) + ".")
    return ("  # " + " ".join(parts)) if parts else ""


def _yaml_scalar(shape) -> str:
    value = _empty(shape, ())
    if isinstance(value, str):
        return "''" if value == "" else f"'{value}'"
    return json.dumps(value)


def _yaml_structure(shape, indent: int, lines: list[str], list_item: bool) -> None:
    required = set(shape.required_members)
    for index, (name, member) in enumerate(shape.members.items()):
        if list_item:
            pad = " " * (indent - 2) + "- " if index == 0 else " " * indent
        else:
            pad = " " * indent
        comment = _comment(member, name in required)
        kind = member.type_name
        if kind == "structure":
            lines.append(f"{pad}{name}:{comment}")
            _yaml_structure(member, indent + 2, lines, list_item=False)
        elif kind == "list":
            lines.append(f"{pad}{name}:{comment}")
            _yaml_list(member, indent, lines)
        elif kind == "map":
            lines.append(f"{pad}{name}:{comment}")
            lines.append(f"{' ' * (indent + 2)}KeyName: {_yaml_scalar(member.value)}")
        else:
            lines.append(f"{pad}{name}: {_yaml_scalar(member)}{comment}")


def _yaml_list(shape, indent: int, lines: list[str]) -> None:
    inner = shape.member
    if inner.type_name == "structure":
        _yaml_structure(inner, indent + 2, lines, list_item=True)
    elif inner.type_name == "list":
        lines.append(f"{' ' * indent}- - {_yaml_scalar(inner.member)}")
    else:
        lines.append(f"{' ' * indent}- {_yaml_scalar(inner)}")


def output_skeleton(shape) -> dict:
    """A sample response with every output member (strings hold their member's name), as the AWS CLI's."""
    if shape is None:
        return {}
    from botocore.utils import ArgumentGenerator

    from airflow_neo.core.payload import json_safe

    return json_safe(ArgumentGenerator(use_member_names=True).generate_skeleton(shape))
