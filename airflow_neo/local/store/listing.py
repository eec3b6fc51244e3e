"""ListCompilationJobs on the job store: argument checks, filters, sorting and keyset paging.

* Arguments are checked as the API checks them; a bad one raises :class:`InvalidListRequest` (the
  API's ValidationException) with the same message on every store, before anything is read.
* Time filters (datetimes, ISO-8601 strings or epoch seconds) are strict comparisons;
  ``NameContains`` is case-insensitive.
* Paging is by key, never by offset: results are ordered by the sort key plus the columns that
  make it unique (``name``; ``creation_us, name``; ``status, creation_us, name``), and a NextToken
  holds the key of the last job of its page. A job created or deleted between pages never shifts
  the next page, on SQLite and PostgreSQL alike (text keys sort byte by byte on both, see
  ``schema.py``).
* A NextToken carries a fingerprint of the filters and sort order that produced it: a token used
  with other filters, or not issued by this store, is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import NeoError
from airflow_neo.local.store.records import JobRecord
from airflow_neo.local.store.schema import JOBS
from airflow_neo.local.store.times import dt_to_us

DEFAULT_MAX_RESULTS = 100
LIST_FILTERS = (
    "NextToken",
    "MaxResults",
    "CreationTimeAfter",
    "CreationTimeBefore",
    "LastModifiedTimeAfter",
    "LastModifiedTimeBefore",
    "NameContains",
    "StatusEquals",
    "SortBy",
    "SortOrder",
)
SORT_BY = ("Name", "CreationTime", "Status")
SORT_ORDER = ("Ascending", "Descending")
_SORT_KEYS = {"Name": ("name",), "CreationTime": ("creation_us", "name"), "Status": ("status", "creation_us", "name")}
_NAME_CONTAINS = re.compile(r"[a-zA-Z0-9\-]+")
_TIME_FILTERS = (
    ("CreationTimeAfter", "creation_us", True),
    ("CreationTimeBefore", "creation_us", False),
    ("LastModifiedTimeAfter", "last_modified_us", True),
    ("LastModifiedTimeBefore", "last_modified_us", False),
)


class InvalidListRequest(NeoError, ValueError):
    """A ListCompilationJobs request the API would reject (its ValidationException)."""

    code = "ValidationException"


@dataclasses.dataclass(frozen=True)
class ListQuery:
    """One checked ListCompilationJobs request: what to select, in which order, and how to page."""

    where: tuple[Any, ...]
    key_names: tuple[str, ...]
    ascending: bool
    max_results: int
    fingerprint: str

    @classmethod
    def parse(cls, filters: Mapping[str, Any]) -> ListQuery:
        """Check the request's arguments (raising :class:`InvalidListRequest`) and build the query."""
        unknown = sorted(set(filters) - set(LIST_FILTERS))
        if unknown:
            raise InvalidListRequest(f"Unknown ListCompilationJobs parameter(s) {unknown}; allowed: {list(LIST_FILTERS)}")
        query = {k: v for k, v in filters.items() if v is not None}
        sort_by = query.get("SortBy", "CreationTime")
        sort_order = query.get("SortOrder", "Descending")
        if sort_by not in SORT_BY:
            raise InvalidListRequest(f"SortBy: got {sort_by!r}; must be one of {list(SORT_BY)}")
        if sort_order not in SORT_ORDER:
            raise InvalidListRequest(f"SortOrder: got {sort_order!r}; must be one of {list(SORT_ORDER)}")
        max_results = _max_results(query.get("MaxResults", DEFAULT_MAX_RESULTS))

        where: list[Any] = []
        for key, column, greater in _TIME_FILTERS:
            if key in query:
                value = parse_time(query[key], key)
                where.append(JOBS.c[column] > value if greater else JOBS.c[column] < value)
        contains = query.get("NameContains")
        if contains:
            if not isinstance(contains, str) or len(contains) > 63 or not _NAME_CONTAINS.fullmatch(contains):
                raise InvalidListRequest(
                    f"NameContains: got {contains!r}; must match [a-zA-Z0-9\\-]+ and be at most 63 characters"
                )
            where.append(sa.func.lower(JOBS.c.name).contains(contains.lower(), autoescape=True))
        status_equals = query.get("StatusEquals")
        if status_equals is not None:
            if status_equals not in st.ALL_STATES:
                raise InvalidListRequest(f"StatusEquals: got {status_equals!r}; must be one of {sorted(st.ALL_STATES)}")
            where.append(JOBS.c.status == status_equals)

        key_names = _SORT_KEYS[sort_by]
        key_columns = [JOBS.c[k] for k in key_names]
        ascending = sort_order == "Ascending"
        fingerprint = query_fingerprint(query)
        token = query.get("NextToken")
        if token:
            after = decode_token(token, fingerprint, len(key_columns))
            bound = sa.tuple_(*(sa.literal(v, type_=c.type) for v, c in zip(after, key_columns)))
            row_value = sa.tuple_(*key_columns)
            where.append(row_value > bound if ascending else row_value < bound)
        return cls(tuple(where), key_names, ascending, max_results, fingerprint)

    def statement(self) -> sa.Select:
        """The page's rows, one more than MaxResults (to tell whether another page follows)."""
        key_columns = [JOBS.c[k] for k in self.key_names]
        return (
            sa.select(JOBS)
            .where(*self.where)
            .order_by(*(c.asc() if self.ascending else c.desc() for c in key_columns))
            .limit(self.max_results + 1)
        )

    def page(self, rows: Sequence[Mapping[str, Any]]) -> dict:
        """The ListCompilationJobs response for the rows of :meth:`statement`."""
        result: dict[str, Any] = {
            "CompilationJobSummaries": [JobRecord.from_row(r).to_summary() for r in rows[: self.max_results]]
        }
        if len(rows) > self.max_results:
            last = rows[self.max_results - 1]
            result["NextToken"] = encode_token([last[k] for k in self.key_names], self.fingerprint)
        return result


def _max_results(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise InvalidListRequest(f"MaxResults: got {value!r}; must be an integer in range 1..100")
    return value


def parse_time(value: Any, field: str) -> int:
    """Microseconds since the epoch for a datetime, an ISO-8601 string or epoch seconds."""
    if isinstance(value, dt.datetime):
        return dt_to_us(value)
    if isinstance(value, dt.date):
        return dt_to_us(dt.datetime(value.year, value.month, value.day))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(round(value * 1_000_000))
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            return dt_to_us(dt.datetime.fromisoformat(text))
        except ValueError:
            pass
    raise InvalidListRequest(f"{field}: got {value!r}; must be a datetime, an ISO-8601 string or epoch seconds")


# --------------------------------------------------------------------------- NextToken


def query_fingerprint(query: Mapping[str, Any]) -> str:
    """What a NextToken is bound to: the filters and sort order (not NextToken or MaxResults)."""
    basis = {k: (str(v) if not isinstance(v, (int, str)) else v) for k, v in query.items() if k not in ("NextToken", "MaxResults")}
    basis.setdefault("SortBy", "CreationTime")
    basis.setdefault("SortOrder", "Descending")
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def encode_token(after: list, fingerprint: str) -> str:
    """A NextToken: the sort key of the page's last job and the query's fingerprint."""
    raw = json.dumps({"v": 1, "a": after, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: Any, fingerprint: str, size: int) -> list:
    """The sort key in ``token``; raises :class:`InvalidListRequest` for a foreign or mismatched token."""
    try:
        text = str(token)
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        after = data["a"]
        valid = data.get("v") == 1 and isinstance(after, list) and len(after) == size
    except (ValueError, TypeError, KeyError):
        valid = False
    if not valid:
        raise InvalidListRequest("Invalid pagination token: NextToken was not issued by ListCompilationJobs on this store.")
    if data.get("f") != fingerprint:
        raise InvalidListRequest(
            "Invalid pagination token: use NextToken with the same filters and sort order as the request that returned it."
        )
    return after
