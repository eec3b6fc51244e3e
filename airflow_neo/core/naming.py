"""Job names for the operator's action_if_job_exists strategies."""

from __future__ import annotations

import datetime as dt
import re

MAX_NAME_LENGTH = 63
_SUFFIX = re.compile(r"^(?P<base>.*?)-(?P<n>\d+)$")


def incremented_name(name: str, existing: set[str] | frozenset[str]) -> str:
    """``name-1``, ``name-2``... the first one not in ``existing``, trimmed to the API's 63 chars."""
    base = name
    n = 1
    while True:
        suffix = f"-{n}"
        candidate = base[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if candidate not in existing:
            return candidate
        n += 1


def timestamped_name(name: str, now: dt.datetime | None = None) -> str:
    """``name-YYYYmmddHHMMSS`` (UTC), trimmed to the API's 63 chars."""
    now = now or dt.datetime.now(dt.timezone.utc)
    suffix = "-" + now.strftime("%Y%m%d%H%M%S")
    return name[: MAX_NAME_LENGTH - len(suffix)] + suffix
