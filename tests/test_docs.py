"""The documentation builds without warnings, and its code samples are the example DAGs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_sphinx_builds_with_warnings_as_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(REPO / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert (tmp_path / "html" / "howto" / "compilation.html").exists()
    targets = (tmp_path / "html" / "local_backend.html").read_text()
    assert "ml_c6g" in targets and "gcc-aarch64-linux-gnu" in targets


def test_every_docs_marker_exists_in_the_dags():
    markers = set()
    for page in (REPO / "docs").rglob("*.rst"):
        markers |= set(re.findall(r":start-after: \[START (\w+)\]", page.read_text()))
    dag_text = "".join(p.read_text() for p in (REPO / "dags").glob("*.py"))
    assert markers, "the how-to pages include example DAG code"
    for marker in markers:
        assert f"[START {marker}]" in dag_text and f"[END {marker}]" in dag_text, marker
