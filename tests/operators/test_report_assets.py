"""The report on the asset events of the compile task's outlets, read by a downstream task in a
real ``airflow dags test`` run (tests/operators/dags/neo_report_assets.py); in the same run (one
Airflow database, one DAG run: each costs tens of seconds), NeoVerifyArtifactOperator in a real task
context: its templated artifact_uri rendered from the compile's XCom, its report pushed to XCom and
pulled by a downstream task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from airflow_neo.samples import write_sample_archive

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def _line(output: str, marker: str):
    lines = [line for line in output.splitlines() if marker in line]
    assert lines, output[-8000:]
    return json.loads(lines[-1].split(marker, 1)[1].strip())


def test_outlet_asset_events_carry_the_report(tmp_path):
    home = tmp_path / "home"
    out = tmp_path / "out"
    archive = write_sample_archive(tmp_path / "model" / "model.tar.gz", seed=15)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).with_name("dags")),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": str(REPO),
        "NEO_REPORT_TEST_ARCHIVE": str(archive),
        "NEO_REPORT_TEST_OUT": str(out),
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    result = subprocess.run([AIRFLOW, "dags", "test", "neo_report_assets"], env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in output, output[-8000:]

    events = _line(output, "NEO_REPORT_EVENTS")
    artifact = (out / "model-linux-x86_64.tar.gz").as_uri()
    [artifact_event] = events[artifact]
    report = artifact_event["neo_report"]
    assert report == _line(output, "NEO_REPORT_XCOM")
    assert report["job"] == "report-assets" and report["artifact"] == artifact and report["available"] is True
    assert report["verification"]["passed"] is True and report["verification"]["reference"].startswith("onnxruntime")
    assert "profile_seconds" in report["profile"]["skipped"]  # the suite runs without profiles
    assert events[(tmp_path / "elsewhere").as_uri()] == [{}], "an outlet that is not the artifact gets no report"

    verified = _line(output, "NEO_VERIFY_REPORT")
    assert verified["artifact"] == artifact  # the template was rendered
    assert verified["verification"]["passed"] is True
    assert verified["verification"]["reference"].endswith("(recorded at compile)")
    assert verified["profile"]["runs"] >= 1 and verified["host"]["machine"] == "x86_64"
