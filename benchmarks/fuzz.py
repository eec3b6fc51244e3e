"""The big fuzz run (not a test): tests/fuzz/ under the ``soak`` Hypothesis profile, with counts.

CI runs tests/fuzz/ under the ``ci`` profile (derandomized, a few hundred examples per test,
about a minute). This script runs the same properties with the ``soak`` profile (random seeds,
thousands of examples per test: see the ``examples(ci, soak)`` of each test) and reports how
many generated inputs each test checked and what became of them (the tally of
tests/fuzz/conftest.py): for archives ``ModelArchiveError`` or a clean extraction, for requests
accepted or InvalidCompilationRequest, for ONNX models the LocalCompilationError class the
compile would fail with and the exception the importer raised before the translation.

Usage::

    .venv/bin/python benchmarks/fuzz.py [--out benchmarks/results_fuzz.json] [-- extra pytest arguments]

The same run by hand: ``AIRFLOW_NEO_FUZZ_PROFILE=soak .venv/bin/pytest tests/fuzz``. A failure
prints the shrunk input and a ``@reproduce_failure`` blob; add the input to the test as an
``@example`` once the bug is fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results_fuzz.json"))
    parser.add_argument("--profile", default="soak", choices=["soak", "ci"])
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tally_path = Path(scratch) / "tally.json"
        env = dict(os.environ, AIRFLOW_NEO_FUZZ_PROFILE=args.profile, AIRFLOW_NEO_FUZZ_TALLY=str(tally_path))
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fuzz", *args.pytest_args],
            cwd=ROOT, env=env,
        )
        seconds = time.monotonic() - started
        tally = json.loads(tally_path.read_text()) if tally_path.exists() else {}
    per_test = {name: {"inputs": sum(outcomes.values()), "outcomes": outcomes} for name, outcomes in sorted(tally.items())}
    report = {
        "profile": args.profile,
        "pytest_exit_status": result.returncode,
        "seconds": round(seconds, 1),
        "inputs": sum(entry["inputs"] for entry in per_test.values()),
        "tests": per_test,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({key: report[key] for key in ("profile", "pytest_exit_status", "seconds", "inputs")}))
    for name, entry in per_test.items():
        print(f"{entry['inputs']:7d}  {name}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
