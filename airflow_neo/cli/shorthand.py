"""The AWS CLI's shorthand syntax for structures: ``Key=value,Key2=value2``.

Grammar (as documented for the AWS CLI)::

    parameter  = keyval *("," keyval)
    keyval     = key "=" [values]
    values     = csv-list / explicit-list / hash-literal
    csv-list   = value *("," value)          ; "a=b,c" is {"a": ["b", "c"]}
    explicit-list = "[" [item *("," item)] "]"
    hash-literal  = "{" [key "=" item *("," key "=" item)] "}"
    item       = explicit-list / hash-literal / value
    value      = unquoted / 'single quoted' / "double quoted"

A comma inside an unquoted value is written ``\\,``. Parsing is purely syntactic: every
scalar comes out as a string; :func:`coerce` then walks the botocore shape to turn scalars
into integers, booleans and one-element lists where the model asks for them.
"""

from __future__ import annotations

import string
from typing import Any

_KEY_CHARS = frozenset(string.ascii_letters + string.digits)
# Characters that end an unquoted value. A value may not start with "=".
_FIRST_STOP = frozenset(",]}'\"")
_NEXT_STOP = frozenset(",'\"")


class ShorthandError(ValueError):
    """A value that is not valid shorthand; the message points at the offending character."""

    def __init__(self, text: str, expected: str, actual: str, index: int):
        line_start = text.rfind("\n", 0, index) + 1
        caret = " " * (index - line_start) + "^"
        super().__init__(f"Expected: '{expected}', received: '{actual}' for input:\n{text}\n{caret}")
        self.text, self.expected, self.actual, self.index = text, expected, actual, index


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    # -- helpers --------------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str | None:
        return None if self.at_end() else self.text[self.pos]

    def skip_space(self) -> None:
        while not self.at_end() and self.text[self.pos] in string.whitespace:
            self.pos += 1

    def expect(self, char: str, *, skip_space: bool = False) -> None:
        if skip_space:
            self.skip_space()
        if self.at_end():
            raise ShorthandError(self.text, char, "EOF", self.pos)
        if self.text[self.pos] != char:
            raise ShorthandError(self.text, char, self.text[self.pos], self.pos)
        self.pos += 1
        if skip_space:
            self.skip_space()

    # -- grammar --------------------------------------------------------------------

    def parameter(self) -> dict:
        result = {}
        result.update(self.keyval())
        while not self.at_end():
            self.expect(",", skip_space=True)
            result.update(self.keyval())
        return result

    def key(self) -> str:
        start = self.pos
        while not self.at_end() and self.text[self.pos] in _KEY_CHARS:
            self.pos += 1
        if start == self.pos:
            actual = "EOF" if self.at_end() else self.text[self.pos]
            raise ShorthandError(self.text, "<key>", actual, self.pos)
        return self.text[start : self.pos]

    def keyval(self) -> dict:
        self.skip_space()
        key = self.key()
        self.expect("=", skip_space=True)
        return {key: self.values()}

    def values(self) -> Any:
        if self.at_end():
            return ""
        if self.peek() == "[":
            return self.explicit_list()
        if self.peek() == "{":
            return self.hash_literal()
        return self.csv_values()

    def csv_values(self) -> Any:
        first = self.scalar(first=True)
        self.skip_space()
        if self.at_end() or self.peek() != ",":
            return first
        items = [first]
        while True:
            comma = self.pos
            self.expect(",", skip_space=True)
            if self._starts_keyval():
                # "a=b,c=d": the comma separates key/value pairs, not list items.
                self.pos = comma
                break
            items.append(self.scalar(first=False))
            self.skip_space()
            if self.at_end() or self.peek() != ",":
                break
        return items if len(items) > 1 else first

    def _starts_keyval(self) -> bool:
        probe = self.pos
        while probe < len(self.text) and self.text[probe] in _KEY_CHARS:
            probe += 1
        while probe < len(self.text) and self.text[probe] in string.whitespace:
            probe += 1
        return probe > self.pos and probe < len(self.text) and self.text[probe] == "="

    def explicit_list(self) -> list:
        self.expect("[", skip_space=True)
        items = []
        while self.peek() != "]":
            if self.at_end():
                raise ShorthandError(self.text, "]", "EOF", self.pos)
            items.append(self.item())
            self.skip_space()
            if self.peek() != "]":
                self.expect(",", skip_space=True)
        self.expect("]")
        return items

    def hash_literal(self) -> dict:
        self.expect("{", skip_space=True)
        result = {}
        while self.peek() != "}":
            if self.at_end():
                raise ShorthandError(self.text, "}", "EOF", self.pos)
            key = self.key()
            self.expect("=", skip_space=True)
            result[key] = self.item()
            self.skip_space()
            if self.peek() != "}":
                self.expect(",", skip_space=True)
        self.expect("}")
        return result

    def item(self) -> Any:
        if self.peek() == "[":
            return self.explicit_list()
        if self.peek() == "{":
            return self.hash_literal()
        return self.scalar(first=True)

    def scalar(self, *, first: bool) -> str:
        char = self.peek()
        if char in ("'", '"'):
            return self.quoted(char)
        stops = _FIRST_STOP if first else _NEXT_STOP
        start = self.pos
        chars: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            if char == "\\" and self.text.startswith("\\,", self.pos):
                chars.append(",")
                self.pos += 2
                continue
            if char in stops and not (char == "=" and chars):
                break
            chars.append(char)
            self.pos += 1
        if not first and self.pos == start:
            actual = "EOF" if self.at_end() else self.text[self.pos]
            raise ShorthandError(self.text, "<value>", actual, self.pos)
        return "".join(chars).rstrip()

    def quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while True:
            if self.at_end():
                raise ShorthandError(self.text, quote, "EOF", start)
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] in (quote, "\\"):
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if char == quote:
                return "".join(chars)
            chars.append(char)


def parse(text: str) -> dict:
    """Parse one shorthand expression into a dict of strings, lists and dicts."""
    parser = _Parser(text)
    parser.skip_space()
    if parser.at_end():
        raise ShorthandError(text, "<key>", "EOF", 0)
    return parser.parameter()


def coerce(value: Any, shape) -> Any:
    """Fit a parsed shorthand value to a botocore ``shape`` (integers, booleans, lists).

    A scalar given where the model wants a list becomes a one-element list; a list of scalars
    given for a list of one-member structures becomes a list of those structures (as the AWS
    CLI does). Values that cannot be converted are left as they are for validation to report.
    """
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return value
        return {k: coerce(v, shape.members[k]) if k in shape.members else v for k, v in value.items()}
    if kind == "list":
        if value is None:
            return value
        if not isinstance(value, list):
            value = [value]
        member = shape.member
        if member.type_name == "structure" and len(member.members) == 1:
            only = next(iter(member.members))
            value = [v if isinstance(v, dict) else {only: v} for v in value]
        return [coerce(v, member) for v in value]
    if kind == "map":
        if not isinstance(value, dict):
            return value
        return {k: coerce(v, shape.value) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    if kind in ("integer", "long"):
        try:
            return int(value)
        except ValueError:
            return value
    if kind in ("float", "double"):
        try:
            return float(value)
        except ValueError:
            return value
    if kind == "boolean":
        lowered = value.lower()
        return True if lowered == "true" else False if lowered == "false" else value
    return value
