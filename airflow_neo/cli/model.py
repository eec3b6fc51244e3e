"""What the command line knows about each operation, read from botocore's SageMaker model.

Nothing here lists an operation's parameters by hand: options, types, required members,
help text, skeletons and shorthand hints all come from
:mod:`airflow_neo.core.service_model`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)")


@dataclass(frozen=True)
class Param:
    """One member of an operation's input, as a command-line option."""

    member: str
    option: str
    dest: str
    shape: Any
    required: bool

    @property
    def kind(self) -> str:
        return self.shape.type_name


def operation_model(operation: str):
    from airflow_neo.core.service_model import sagemaker_model

    return sagemaker_model().operation_model(operation)


@lru_cache(maxsize=None)
def params_of(operation: str) -> tuple[Param, ...]:
    """The operation's input members as options, in the model's order."""
    from botocore import xform_name

    from airflow_neo.core.service_model import input_shape

    shape = input_shape(operation)
    if shape is None:
        return ()
    required = set(shape.required_members)
    result = []
    for member, member_shape in shape.members.items():
        option = "--" + xform_name(member, "-")
        result.append(Param(member, option, xform_name(member, "_"), member_shape, member in required))
    return tuple(result)


@lru_cache(maxsize=None)
def paginator_config(operation: str) -> dict | None:
    """botocore's paginator config of the operation (None when it does not paginate)."""
    from airflow_neo.core.service_model import sagemaker_model

    import botocore.session

    model = botocore.session.get_session().get_paginator_model(sagemaker_model().service_name)
    try:
        return dict(model.get_paginator(operation))
    except ValueError:
        return None


# --------------------------------------------------------------------------- documentation


def doc_text(documentation: str | None) -> str:
    """The model's HTML documentation as one line of plain text."""
    if not documentation:
        return ""
    text = html.unescape(_TAG.sub(" ", documentation))
    return _SPACE.sub(" ", text).strip().replace(" ,", ",").replace(" .", ".")


def first_sentence(documentation: str | None, limit: int = 240) -> str:
    text = doc_text(documentation)
    match = _SENTENCE.match(text)
    sentence = match.group(1) if match else text
    return sentence if len(sentence) <= limit else sentence[: limit - 3].rstrip() + "..."


def doc_paragraphs(documentation: str | None, count: int = 2) -> str:
    """The first ``count`` paragraphs of an operation's documentation, as plain text."""
    paragraphs = [p for p in (doc_text(part) for part in re.split(r"</p>", documentation or "")) if p]
    return "\n\n".join(paragraphs[:count])


def type_label(shape) -> str:
    kind = shape.type_name
    return "integer" if kind == "long" else kind


def shorthand_hint(shape, top: bool = True) -> str:
    """The AWS CLI's "Shorthand Syntax" line of a structure or list option."""
    kind = shape.type_name
    if kind == "structure":
        parts = []
        for name, member in shape.members.items():
            if member.type_name == "structure":
                parts.append(f"{name}={{{shorthand_hint(member, top=False)}}}")
            elif member.type_name == "list":
                inner = member.member
                if inner.type_name == "structure":
                    parts.append(f"{name}=[{{{shorthand_hint(inner, top=False)}}},...]")
                else:
                    parts.append(f"{name}={type_label(inner)},{type_label(inner)}")
            elif member.type_name == "map":
                parts.append(f"{name}={{KeyName1={type_label(member.value)},KeyName2={type_label(member.value)}}}")
            else:
                parts.append(f"{name}={type_label(member)}")
        return ",".join(parts)
    if kind == "list":
        inner = shape.member
        if inner.type_name == "structure":
            one = shorthand_hint(inner, top=False)
            return f"{one} {one}" if top else one
        return f"{type_label(inner)} {type_label(inner)}"
    if kind == "map":
        return f"KeyName1={type_label(shape.value)},KeyName2={type_label(shape.value)}"
    return type_label(shape)


def output_tree(shape, indent: int = 0) -> list[str]:
    """``Name -> (type)`` lines of every output member, nested like the AWS CLI's OUTPUT section."""
    lines: list[str] = []
    if shape is None:
        return lines
    pad = "  " * indent
    for name, member in shape.members.items():
        lines.append(f"{pad}{name} -> ({type_label(member)})")
        lines.extend(_member_tree(member, indent + 1))
    return lines


def _member_tree(shape, indent: int) -> list[str]:
    pad = "  " * indent
    if shape.type_name == "structure":
        return output_tree(shape, indent)
    if shape.type_name == "list":
        inner = shape.member
        lines = [f"{pad}({type_label(inner)})"]
        lines.extend(_member_tree(inner, indent + 1))
        return lines
    return []
