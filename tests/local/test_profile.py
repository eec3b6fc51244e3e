"""The profile of local compiles (airflow_neo.local.profile, .profile_memory), through the real compiler.

Only behaviour is asserted (fields present, ordered percentiles, the speedup computed from the two
p50s, the baseline pinned to the artifact's threads, kernels ranked, a peak RSS above the RSS after
imports, skips with their reason); the figures themselves are measured in benchmarks/, not here.
tests/conftest.py turns the profile off for every other test. A real job's ``profile_seconds``
reaching its compile is checked on a job test_verify.py runs anyway
(``test_a_cached_artifact_without_the_checks_a_job_asks_for_is_not_a_hit``).
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from airflow_neo import runtime
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.profile import child_timeout, latency, profile_build
from airflow_neo.local.profile_memory import peak_rss
from airflow_neo.local.settings import CompileSettings
from tests.local import models

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}
#: a TVM kernel: a PrimFunc's name (fused_conv2d_add_relu1_prepacked, max_pool2d1, ...)
KERNEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _compile(case, tmp_path: Path, lines: list, **kwargs) -> dict:
    request = models.make_request(case, target_platform=kwargs.pop("target_platform", LINUX_X86_64))
    return compile_model(request, str(case.archive), str(tmp_path / "artifact.tar.gz"), log=lines.append, **kwargs)


def _sane(figures: dict) -> None:
    ms = figures["latency_ms"]
    assert figures["runs"] >= 1 and figures["warmup_runs"] == 1
    assert 0 < ms["min"] <= ms["p50"] <= ms["p90"] <= ms["p99"]
    assert ms["mean"] > 0


def _speedup_and_baseline(profile: dict, name_prefix: str) -> dict:
    baseline = profile["baseline"]
    assert baseline["name"].startswith(name_prefix)
    _sane(baseline)
    assert profile["speedup"] == pytest.approx(baseline["latency_ms"]["p50"] / profile["latency_ms"]["p50"], rel=1e-2)
    assert "onnxruntime" not in profile and "speedup_vs_onnxruntime" not in profile  # the old keys are gone
    return baseline


def _memory_sane(figures: dict) -> None:
    assert "peak_rss_skipped" not in figures
    assert figures["peak_rss_mb"] > figures["rss_after_imports_mb"] > 0


@pytest.fixture(scope="module")
def onnx_build(tmp_path_factory):
    """One profiled compile of the ONNX CNN: (metadata, log lines, folder)."""
    folder = tmp_path_factory.mktemp("onnx-profile")
    lines: list[str] = []
    metadata = _compile(models.onnx_cnn(folder / "model"), folder, lines, profile_seconds=0.4)
    return metadata, lines, folder


def test_onnx_profile_has_the_artifact_and_onnxruntime_figures(onnx_build):
    metadata, lines, folder = onnx_build
    profile = metadata["profile"]
    assert profile["budget_seconds"] == 0.4 and profile["inputs"] == "random (seed 0)"
    assert profile["load_seconds"] >= 0 and profile["threads"] >= 1
    _sane(profile)
    baseline = _speedup_and_baseline(profile, "onnxruntime ")
    assert baseline["threads"] == profile["threads"]  # intra_op_num_threads pinned to TVM's count
    assert any(line.startswith("profile: p50 ") and "speedup" in line and "peak RSS" in line for line in lines)
    assert runtime.read_metadata(folder / "artifact.tar.gz")["profile"] == profile
    assert metadata["verification"]["passed"] is True  # the profile runs before, not instead of, the check


def test_onnx_profile_has_peak_rss_of_the_artifact_and_of_onnxruntime(onnx_build):
    profile = onnx_build[0]["profile"]
    _memory_sane(profile)
    _memory_sane(profile["baseline"])
    assert profile["rss_after_imports_mb"] > profile["baseline"]["rss_after_imports_mb"]  # import tvm is the heavy one


def test_onnx_profile_ranks_the_kernels_of_one_run(onnx_build):
    profile = onnx_build[0]["profile"]
    kernels = profile["top_kernels"]
    assert 1 <= len(kernels) <= 10
    assert [k["total_ms"] for k in kernels] == sorted((k["total_ms"] for k in kernels), reverse=True)
    for kernel in kernels:
        assert KERNEL_NAME.match(kernel["name"]) and not kernel["name"].startswith("vm.builtin.")
        assert kernel["calls"] >= 1 and kernel["total_ms"] > 0
        assert 0 < kernel["percent"] <= 100
    assert any("conv2d" in k["name"] for k in kernels)
    assert sum(k["percent"] for k in kernels) <= 100.5
    assert sum(k["total_ms"] for k in kernels) <= profile["kernels_total_ms"] * 1.01
    assert profile["kernels_total_ms"] + profile["builtins_ms"] <= profile["profiled_run_ms"] * 1.01


def test_pytorch_profile_has_a_torch_eager_baseline_with_the_same_threads(tmp_path):
    import torch

    threads_before = torch.get_num_threads()
    metadata = _compile(models.torchscript_cnn(tmp_path / "model"), tmp_path, [], profile_seconds=0.4)
    profile = metadata["profile"]
    _sane(profile)
    baseline = _speedup_and_baseline(profile, "torch ")
    assert "eager" in baseline["name"] and baseline["threads"] == profile["threads"]
    assert torch.get_num_threads() == threads_before  # torch.set_num_threads is restored
    _memory_sane(profile)
    assert any("conv2d" in k["name"] for k in profile["top_kernels"])


def test_xgboost_profile_has_an_xgboost_baseline_and_no_kernels(tmp_path):
    metadata = _compile(models.xgboost_classifier(tmp_path / "model"), tmp_path, [], profile_seconds=0.2)
    profile = metadata["profile"]
    _sane(profile)
    assert "top_kernels" not in profile and "tl2cgen" in profile["kernels_skipped"]
    assert profile["threads"] is None
    baseline = _speedup_and_baseline(profile, "xgboost ")
    assert baseline["threads"] is None  # nothing to pin to: the framework's default
    _memory_sane(profile)


def test_a_baseline_that_cannot_load_is_skipped_and_the_profile_stays(onnx_build, tmp_path):
    metadata, _lines, folder = onnx_build
    with tarfile.open(folder / "artifact.tar.gz") as archive:
        archive.extract("model.so", tmp_path, filter="data")
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an ONNX model")
    lines: list[str] = []
    profile = profile_build(metadata, tmp_path / "model.so", broken, tmp_path, 0.2, log=lines.append)
    assert "could not load model.onnx" in profile["baseline"]["skipped"]
    assert "speedup" not in profile
    _sane(profile)
    assert profile["top_kernels"] and profile["peak_rss_mb"] > 0
    assert "baseline skipped: " in lines[-1]


def test_peak_rss_failures_are_skipped_with_the_reason(onnx_build, tmp_path):
    metadata = onnx_build[0]
    import numpy as np

    inputs = {spec["name"]: np.zeros(spec["shape"], spec["dtype"]) for spec in metadata["inputs"]}
    late = peak_rss("artifact", metadata, tmp_path / "model.so", tmp_path / "model.onnx", inputs, timeout=0.01)
    assert late == {"peak_rss_skipped": "the child process took longer than 0.01 s"}
    missing = peak_rss("baseline", metadata, Path(), tmp_path / "absent.onnx", inputs, timeout=60)
    assert "peak_rss_mb" not in missing
    assert missing["peak_rss_skipped"].startswith("the child process exited with 1: ")
    assert "absent.onnx" in missing["peak_rss_skipped"]
    assert child_timeout(0.4) == 30 and child_timeout(10) == 50


def test_arm_target_profile_is_skipped_with_the_reason(tmp_path):
    import shutil

    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("no aarch64 cross compiler (gcc-aarch64-linux-gnu)")
    lines: list[str] = []
    metadata = _compile(models.onnx_cnn(tmp_path / "model"), tmp_path, lines, profile_seconds=0.5, verify="off",
                        target_platform={"Os": "LINUX", "Arch": "ARM64"})  # verified under emulation: test_emulation.py
    assert "this machine is x86_64: run it on the target device" in metadata["profile"]["skipped"]
    assert "latency_ms" not in metadata["profile"]
    assert any(line.startswith("profile: skipped: the artifact was compiled for") for line in lines)


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


def test_the_profile_runs_on_the_jobs_verify_inputs(tmp_path):
    """The profile times the inputs the verification uses: the user's .npz when the job names one."""
    import numpy as np

    case = models.onnx_cnn(tmp_path / "model")
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input0=np.full(models.CNN_SHAPE, 0.5, np.float32))
    metadata = _compile(case, tmp_path, [], profile_seconds=0.2, verify_inputs=inputs.as_uri())
    assert metadata["profile"]["inputs"] == metadata["verification"]["inputs"] == inputs.as_uri()
    _sane(metadata["profile"])
