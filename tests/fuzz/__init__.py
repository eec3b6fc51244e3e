"""Property-based fuzzing (Hypothesis) of the local backend's hostile-input boundaries.

Profiles (tests/fuzz/conftest.py), chosen with ``AIRFLOW_NEO_FUZZ_PROFILE``: ``ci`` (the default:
derandomized, a bounded number of examples per test, no deadline) and ``soak`` (random, many
examples; ``benchmarks/fuzz.py`` runs it and reports the counts).
"""

from __future__ import annotations

import os

PROFILE = os.environ.get("AIRFLOW_NEO_FUZZ_PROFILE", "ci")


def examples(ci: int, soak: int) -> int:
    """The number of examples a test runs under the active profile."""
    return soak if PROFILE == "soak" else ci
