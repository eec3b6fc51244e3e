"""The jobs list's query string, checked once: ListCompilationJobs' filters, sort and paging.

Every member maps to one ListCompilationJobs argument; a bad value raises :class:`ValueError`
naming the field, the value and what is allowed (the route answers 400 with it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from airflow_neo.core.status import ALL_STATES

SORT_BY = ("CreationTime", "Name", "Status")
SORT_ORDER = ("Descending", "Ascending")
MAX_PAGE = 100
DEFAULT_PAGE = 20


@dataclass(frozen=True)
class ListQuery:
    """One page of the jobs list (None: no filter)."""

    status: str | None = None
    name_contains: str | None = None
    created_after: str | None = None
    created_before: str | None = None
    max_results: int = DEFAULT_PAGE
    next_token: str | None = None
    sort_by: str = "CreationTime"
    sort_order: str = "Descending"

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in ALL_STATES:
            raise ValueError(f"status: got {self.status!r}; must be one of {sorted(ALL_STATES)}")
        if self.name_contains is not None and not 1 <= len(self.name_contains) <= 63:
            raise ValueError(f"name_contains: got {self.name_contains!r}; must be 1 to 63 characters")
        for field in ("created_after", "created_before"):
            parse_time(field, getattr(self, field))
        if not 1 <= self.max_results <= MAX_PAGE:
            raise ValueError(f"max_results: got {self.max_results!r}; must be 1 to {MAX_PAGE}")
        _one_of("sort_by", self.sort_by, SORT_BY)
        _one_of("sort_order", self.sort_order, SORT_ORDER)

    def api_arguments(self) -> dict[str, Any]:
        """The ListCompilationJobs arguments of this query."""
        arguments: dict[str, Any] = {
            "StatusEquals": self.status,
            "NameContains": self.name_contains,
            "CreationTimeAfter": parse_time("created_after", self.created_after),
            "CreationTimeBefore": parse_time("created_before", self.created_before),
            "MaxResults": self.max_results,
            "NextToken": self.next_token,
            "SortBy": self.sort_by,
            "SortOrder": self.sort_order,
        }
        return {key: value for key, value in arguments.items() if value is not None}


def parse_time(field: str, value: str | None) -> dt.datetime | None:
    """An ISO 8601 time or date (UTC when it names no zone), or None."""
    if value is None or value == "":
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: got {value!r}; must be an ISO 8601 time such as 2026-12-01T08:00:00Z "
                         "or a date such as 2026-12-01") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field}: got {value!r}; must be one of {list(allowed)}")
