"""Shape API responses into JSON-safe payloads for XCom, keeping every field as returned."""

from __future__ import annotations

import datetime as dt
from typing import Any

DROPPED_KEYS = frozenset({"ResponseMetadata"})


def to_utc_iso(value: dt.datetime) -> str:
    """ISO-8601 in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat()


def json_safe(value: Any) -> Any:
    """Recursively convert datetimes to UTC ISO strings and drop ResponseMetadata."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items() if k not in DROPPED_KEYS}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dt.datetime):
        return to_utc_iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def describe_payload(response: dict) -> dict:
    """A DescribeCompilationJob response, JSON-safe, every field kept."""
    return json_safe(response)
