"""The latency profile of local compiles (airflow_neo.local.profile), through the real compiler.

Only behaviour is asserted (fields present, ordered percentiles, the speedup computed from the two
p50s, the budget's runs counted, skips with their reason); the figures themselves are measured in
benchmarks/, not here. tests/conftest.py turns the profile off for every other test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_neo import runtime
from airflow_neo.core import status as st
from airflow_neo.local import runner
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.profile import latency
from airflow_neo.local.settings import CompileSettings
from airflow_neo.local.store import JobStore
from tests.local import models

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}


def _compile(case, tmp_path: Path, lines: list, **kwargs) -> dict:
    request = models.make_request(case, target_platform=kwargs.pop("target_platform", LINUX_X86_64))
    return compile_model(request, str(case.archive), str(tmp_path / "artifact.tar.gz"), log=lines.append, **kwargs)


def _sane(figures: dict) -> None:
    ms = figures["latency_ms"]
    assert figures["runs"] >= 1 and figures["warmup_runs"] == 1
    assert 0 < ms["min"] <= ms["p50"] <= ms["p90"] <= ms["p99"]
    assert ms["mean"] > 0


def test_onnx_profile_has_the_artifact_and_onnxruntime_figures(tmp_path):
    lines: list[str] = []
    metadata = _compile(models.onnx_cnn(tmp_path / "model"), tmp_path, lines, profile_seconds=0.4)
    profile = metadata["profile"]
    assert profile["budget_seconds"] == 0.4 and profile["inputs"] == "random (seed 0)"
    assert profile["load_seconds"] >= 0 and profile["threads"] >= 1
    _sane(profile)
    assert profile["onnxruntime"]["version"].startswith("onnxruntime ")
    _sane(profile["onnxruntime"])
    expected = profile["onnxruntime"]["latency_ms"]["p50"] / profile["latency_ms"]["p50"]
    assert profile["speedup_vs_onnxruntime"] == pytest.approx(expected, rel=1e-2)
    assert any(line.startswith("profile: p50 ") and "speedup" in line for line in lines)
    assert runtime.read_metadata(tmp_path / "artifact.tar.gz")["profile"] == profile
    assert metadata["verification"]["passed"] is True  # the profile runs before, not instead of, the check


def test_xgboost_profile_has_no_onnxruntime_baseline(tmp_path):
    metadata = _compile(models.xgboost_classifier(tmp_path / "model"), tmp_path, [], profile_seconds=0.2)
    profile = metadata["profile"]
    _sane(profile)
    assert "onnxruntime" not in profile and "speedup_vs_onnxruntime" not in profile


def test_arm_target_profile_is_skipped_with_the_reason(tmp_path):
    import shutil

    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("no aarch64 cross compiler (gcc-aarch64-linux-gnu)")
    lines: list[str] = []
    metadata = _compile(models.onnx_cnn(tmp_path / "model"), tmp_path, lines, profile_seconds=0.5,
                        target_platform={"Os": "LINUX", "Arch": "ARM64"})
    assert "this machine is x86_64: run it on the target device" in metadata["profile"]["skipped"]
    assert "latency_ms" not in metadata["profile"]
    assert any(line.startswith("profile: skipped: the artifact was compiled for") for line in lines)


def test_a_job_profiles_with_its_settings(tmp_path):
    case = models.onnx_cnn(tmp_path / "model")
    out = tmp_path / "out"
    store_path = tmp_path / "state" / "jobs.db"
    store = JobStore(store_path)
    store.create(models.make_request(case, target_platform=LINUX_X86_64, output_dir=out, job_name="profiled"))
    settings = CompileSettings(profile_seconds=0.3, cache_max_bytes=0)
    assert runner.run_job(store_path, "profiled", poll_interval=0.1, settings=settings) == st.COMPLETED
    profile = store.compile_metadata("profiled")["profile"]
    assert profile["budget_seconds"] == 0.3
    _sane(profile)


def test_latency_runs_at_least_once_and_orders_percentiles():
    calls = []
    figures = latency(lambda: calls.append(1), 0.0)
    assert figures["runs"] == 1 and len(calls) == 2  # the warm-up and one timed run
    assert figures["latency_ms"]["p50"] == figures["latency_ms"]["p99"]


def test_profile_seconds_is_checked_and_passed_on():
    with pytest.raises(ValueError, match=r"profile_seconds must be a number of seconds >= 0 \(0: no profile\); got -1"):
        CompileSettings(profile_seconds=-1)
    assert CompileSettings(profile_seconds=0).verify_arguments() == {}
    assert CompileSettings(profile_seconds=2).verify_arguments() == {"profile_seconds": 2.0}
