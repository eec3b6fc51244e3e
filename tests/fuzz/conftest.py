"""Hypothesis profiles for tests/fuzz/ and a tally of outcomes per test (benchmarks/fuzz.py reads it).

``AIRFLOW_NEO_FUZZ_TALLY=<path>``: at the end of the session the outcomes each test recorded
with :func:`tally` ({test: {outcome: count}}) are written there as JSON.
"""

from __future__ import annotations

import collections
import json
import os

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz import PROFILE

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture]
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=_SLOW_OK)
settings.register_profile("soak", deadline=None, derandomize=False, database=None, print_blob=True,
                          suppress_health_check=_SLOW_OK)
settings.load_profile(PROFILE)

_TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture
def tally(request):
    """``tally(outcome)`` counts one generated input of this test and what became of it."""
    counter = _TALLY[request.node.name]
    return lambda outcome: counter.update([outcome])


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("AIRFLOW_NEO_FUZZ_TALLY")
    if path:
        with open(path, "w") as out:
            json.dump({name: dict(counter) for name, counter in _TALLY.items()}, out, indent=1, sort_keys=True)
