"""Time in the job store: every instant is kept as integer microseconds since the Unix epoch (UTC).

Integers compare and sort the same on SQLite and PostgreSQL and round-trip exactly; the API's
payloads show them as ISO-8601 strings in UTC (:func:`us_to_iso`).
"""

from __future__ import annotations

import datetime as dt

from airflow_neo.core.payload import to_utc_iso

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def dt_to_us(value: dt.datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_dt(us: int) -> dt.datetime:
    """The aware UTC datetime of ``us`` microseconds since the epoch."""
    return EPOCH + dt.timedelta(microseconds=us)


def us_to_dt_or_none(us: int | None) -> dt.datetime | None:
    return None if us is None else us_to_dt(us)


def us_to_iso(us: int | None) -> str | None:
    """ISO-8601 in UTC (the payloads' time format), None for None."""
    return None if us is None else to_utc_iso(us_to_dt(us))
