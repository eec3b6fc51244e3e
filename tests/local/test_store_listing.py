"""Tests of ListCompilationJobs argument checks and NextToken (airflow_neo.local.store.listing), without a database."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_neo.local.store.listing import InvalidListRequest, ListQuery, decode_token, encode_token, parse_time, query_fingerprint


def test_token_round_trip_and_binding():
    fingerprint = query_fingerprint({"SortBy": "Name"})
    token = encode_token(["job-b"], fingerprint)
    assert decode_token(token, fingerprint, 1) == ["job-b"]
    with pytest.raises(InvalidListRequest, match="same filters and sort order"):
        decode_token(token, query_fingerprint({"SortBy": "Name", "NameContains": "x"}), 1)
    for bad in ("garbage", encode_token(["a", 1], fingerprint)):
        with pytest.raises(InvalidListRequest, match="was not issued by ListCompilationJobs on this store"):
            decode_token(bad, fingerprint, 1)


def test_fingerprint_ignores_paging_and_fills_defaults():
    assert query_fingerprint({"MaxResults": 5, "NextToken": "t"}) == query_fingerprint({}) == query_fingerprint(
        {"SortBy": "CreationTime", "SortOrder": "Descending"}
    )


def test_first_bad_argument_is_reported_in_the_apis_order():
    with pytest.raises(InvalidListRequest, match=r"Unknown ListCompilationJobs parameter\(s\) \['Bogus'\]"):
        ListQuery.parse({"Bogus": 1, "SortBy": "Size"})
    with pytest.raises(InvalidListRequest, match="SortBy: got 'Size'"):
        ListQuery.parse({"SortBy": "Size", "MaxResults": 0})
    with pytest.raises(InvalidListRequest, match="MaxResults: got 0; must be an integer in range 1..100"):
        ListQuery.parse({"MaxResults": 0, "NameContains": "a b"})
    assert ListQuery.parse({"MaxResults": "7", "SortBy": None}).max_results == 7


def test_times_in_every_accepted_form():
    t = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    expected = 1_714_521_600_000_000
    for value in (t, "2024-05-01T00:00:00Z", "2024-05-01T00:00:00+00:00", 1_714_521_600, dt.date(2024, 5, 1)):
        assert parse_time(value, "CreationTimeAfter") == expected
    with pytest.raises(InvalidListRequest, match="CreationTimeAfter: got 'yesterday'"):
        parse_time("yesterday", "CreationTimeAfter")
