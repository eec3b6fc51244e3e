"""``--query`` and the four ``--output`` formats of the AWS CLI: json, yaml, text and table."""

from __future__ import annotations

import json
from typing import Any

from airflow_neo.cli.errors import ParamError

FORMATS = ("json", "yaml", "text", "table")


def compile_query(expression: str | None):
    """The compiled JMESPath expression (a usage error when it does not parse)."""
    if expression is None:
        return None
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.compile(expression)
    except JMESPathError as err:
        raise ParamError("--query", f"Bad value for --query {expression}: {err}") from None


def render(data: Any, output: str = "json", query=None, title: str = "") -> str:
    """The text the AWS CLI prints for ``data`` (an empty response prints nothing)."""
    if query is not None:
        data = query.search(data)
    if data == {}:
        return ""
    if output == "json":
        return json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    if output == "yaml":
        return _yaml(data)
    if output == "text":
        lines: list[str] = []
        _text(data, lines)
        return "".join(line + "\n" for line in lines)
    if output == "table":
        return _table(data, title)
    raise ValueError(f"unknown output format {output!r}")


# --------------------------------------------------------------------------- yaml


def _yaml(data: Any) -> str:
    import yaml

    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1_000_000)
    if not isinstance(data, (dict, list)) and text.endswith("\n...\n"):
        text = text[: -len("...\n")]
    return text


# --------------------------------------------------------------------------- text
# Scalars of a structure on one tab-separated line (keys in sorted order), each nested
# structure or list after it, prefixed with its key in upper case.


def _scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _text(item: Any, lines: list[str], identifier: str | None = None, scalar_keys: list[str] | None = None) -> None:
    if isinstance(item, dict):
        _text_dict(item, lines, identifier, scalar_keys)
    elif isinstance(item, list):
        _text_list(item, lines, identifier)
    else:
        lines.append(str(item))


def _text_list(items: list, lines: list[str], identifier: str | None) -> None:
    if not items:
        return
    if any(isinstance(el, dict) for el in items):
        keys = sorted({k for el in items if isinstance(el, dict) for k, v in el.items() if _scalar(v)})
        for element in items:
            _text(element, lines, identifier, keys)
        return
    scalars = [el for el in items if _scalar(el)]
    if scalars:
        if identifier is not None:
            lines.extend(f"{identifier.upper()}\t{el}" for el in scalars)
        else:
            lines.append("\t".join(str(el) for el in scalars))
    for element in items:
        if not _scalar(element):
            _text(element, lines, identifier)


def _text_dict(item: dict, lines: list[str], identifier: str | None, scalar_keys: list[str] | None) -> None:
    if scalar_keys is None:
        scalars = [str(v) for k, v in sorted(item.items()) if _scalar(v)]
        rest = [(k, v) for k, v in sorted(item.items()) if not _scalar(v)]
    else:
        scalars = [str(item.get(k, "")) for k in scalar_keys]
        rest = [(k, item[k]) for k in sorted(set(item) - set(scalar_keys))]
    if scalars:
        if identifier is not None:
            scalars.insert(0, identifier.upper())
        lines.append("\t".join(scalars))
    for key, value in rest:
        _text(value, lines, key)


# --------------------------------------------------------------------------- table
# Sections like the AWS CLI's: a title, then a header row and value rows for the scalar
# members of a structure (a single scalar is a key | value row), nested structures and lists
# as indented sub-sections framed by one more "|" on each side per level.


class _Section:
    def __init__(self, title: str, indent: int):
        self.title = title
        self.indent = indent
        self.headers: list[str] = []
        self.rows: list[list[str]] = []

    def widths(self) -> list[int]:
        columns = max([len(self.headers)] + [len(r) for r in self.rows] + [0])
        widths = [0] * columns
        for row in ([self.headers] if self.headers else []) + self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell) + 4)
        return widths

    def needed(self) -> int:
        widths = self.widths()
        body = sum(widths) + len(widths) + 1 if widths else 0
        return max(body, len(self.title) + 6) + 2 * self.indent


class _TableBuilder:
    def __init__(self):
        self.sections: list[_Section] = []

    def section(self, title: str, indent: int) -> _Section:
        section = _Section(title, indent)
        self.sections.append(section)
        return section

    def build(self, title: str, value: Any, indent: int) -> None:
        if value in ({}, [], None):
            return
        current = self.section(title, indent)
        if isinstance(value, dict):
            self._dict(current, value, indent)
        elif isinstance(value, list):
            if any(isinstance(el, dict) for el in value):
                self._list_of_dicts(current, title, value, indent)
            else:
                for element in value:
                    if _scalar(element):
                        current.rows.append([str(element)])
                    elif all(_scalar(el) for el in element):
                        current.rows.append([str(el) for el in element])
                    else:
                        self.build(title, element, indent + 1)
        else:
            current.rows.append([str(value)])

    def _dict(self, current: _Section, value: dict, indent: int) -> None:
        scalars = sorted(k for k, v in value.items() if _scalar(v))
        nested = sorted(k for k, v in value.items() if not _scalar(v))
        if len(scalars) == 1:
            current.rows.append([scalars[0], str(value[scalars[0]])])
        elif scalars:
            current.headers = scalars
            current.rows.append([str(value[k]) for k in scalars])
        for key in nested:
            self.build(key, value[key], indent + 1)

    def _list_of_dicts(self, current: _Section, title: str, items: list, indent: int) -> None:
        dicts = [el for el in items if isinstance(el, dict)]
        headers = sorted({k for el in dicts for k, v in el.items() if _scalar(v)})
        nested = sorted({k for el in dicts for k, v in el.items() if not _scalar(v)})
        current.headers = headers
        for index, element in enumerate(dicts):
            if index and nested:
                current = self.section(title, indent)
                current.headers = headers
            current.rows.append([str(element.get(h, "")) for h in headers])
            for key in nested:
                if key in element:
                    self.build(key, element[key], indent + 1)


def _table(data: Any, title: str) -> str:
    builder = _TableBuilder()
    builder.build(title or "Result", data, 0)
    if not builder.sections:
        return ""
    total = max(s.needed() for s in builder.sections)
    out = ["-" * total]
    for section in builder.sections:
        side = "|" * section.indent
        inner = total - 2 * section.indent
        out.append(f"{side}|{section.title.center(inner - 2)}|{side}")
        widths = _fit(section.widths(), inner)
        if not widths:
            out.append(f"{side}+{'-' * (inner - 2)}+{side}")
            continue
        rule = f"{side}+{'+'.join('-' * w for w in widths)}+{side}"
        out.append(rule)
        if section.headers:
            out.append(f"{side}|{'|'.join(h.center(w) for h, w in zip(section.headers, widths))}|{side}")
            out.append(rule)
        for row in section.rows:
            cells = row + [""] * (len(widths) - len(row))
            out.append(f"{side}|{'|'.join(('  ' + c).ljust(w) for c, w in zip(cells, widths))}|{side}")
        out.append(rule)
    return "\n".join(out) + "\n"


def _fit(widths: list[int], inner: int) -> list[int]:
    """Column widths stretched so that the row fills ``inner`` characters (borders included)."""
    if not widths:
        return []
    room = inner - (len(widths) + 1)
    extra = room - sum(widths)
    if extra > 0:
        share, left = divmod(extra, len(widths))
        widths = [w + share + (1 if i < left else 0) for i, w in enumerate(widths)]
    return widths
