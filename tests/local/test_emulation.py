"""ARM64 artifacts verified under emulation (:mod:`airflow_neo.local.emulation`).

A small ONNX CNN (:func:`tests.local.models.onnx_cnn`) is really compiled here (x86-64) for
TargetDevice ``ml_c6g`` (Graviton2, Neoverse N1), cross-linked with ``gcc-aarch64-linux-gnu``; the
verification of the compile runs the library in the emulated aarch64 Python (``qemu-aarch64
-cpu neoverse-n1`` and the root of ``scripts/arm_root.sh``) and compares it with onnxruntime run
here. Checked: the gate passes and names the emulator; a wrong reference is caught under the gate;
the profile stays skipped (latency under qemu is not the device's); an artifact for CPU features
the emulated CPU lacks (SVE), a guest past its time limit, an unavailable root and an armhf
artifact are "not verified: <why>".

Without the root (or qemu) the tests that need it skip saying why, except under ``CI=true``,
where they fail: ``scripts/test.sh`` builds the root in CI. armhf is never emulated: there is no
TVM runtime for armv7 to be had (see :mod:`tests.local.test_arm_emulation`).

Cost: three emulated runs (``import tvm`` under qemu dominates: 15-20 s each on an idle 2-core
machine) and four small compiles.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from airflow_neo.local import emulation
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.errors import AccuracyCheckError
from airflow_neo.local.verify import verify_build
from tests.local import models

pytestmark = pytest.mark.timeout(900)

EMULATOR = f"qemu-aarch64 -cpu {emulation.DEFAULT_CPU}"


def _fail_or_skip(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"ARM64 emulation is required under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _need_cross(cc: str) -> None:
    if shutil.which(cc) is None:
        _fail_or_skip(f"{cc} is not installed")


@pytest.fixture(scope="module")
def arm_root() -> emulation.ArmRoot:
    try:
        return emulation.find_root()
    except emulation.EmulationUnavailable as err:
        _fail_or_skip(str(err))


def _compile(case, out: Path, lines: list, **kwargs) -> tuple[Path, dict]:
    target = kwargs.pop("target_device", "ml_c6g")
    request = models.make_request(case, target_device=target, output_dir=out, job_name=f"emulated-{target}")
    artifact = out / f"model-{target}.tar.gz"
    return artifact, compile_model(request, str(case.archive), str(artifact), log=lines.append, **kwargs)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return models.onnx_cnn(tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="module")
def gated(arm_root, cnn, tmp_path_factory) -> dict:
    """The CNN compiled for ml_c6g under the gate (profile on), verified under emulation."""
    _need_cross("aarch64-linux-gnu-gcc")
    lines: list[str] = []
    started = time.monotonic()
    artifact, metadata = _compile(cnn, tmp_path_factory.mktemp("gated"), lines, verify="gate", profile_seconds=0.5)
    timings = metadata["timings_s"]
    print(f"\ncompile + emulated verification: {time.monotonic() - started:.1f} s (verification "
          f"{metadata['verification']['seconds']:.1f} s); timings {timings}")
    return {"artifact": artifact, "metadata": metadata, "lines": lines}


@pytest.fixture(scope="module")
def unverified(cnn, tmp_path_factory) -> dict:
    """The CNN compiled for ml_c6g with verification off, extracted: for verify_build calls."""
    _need_cross("aarch64-linux-gnu-gcc")
    out = tmp_path_factory.mktemp("unverified")
    artifact, _ = _compile(cnn, out, [], verify="off")
    with tarfile.open(artifact) as tar:
        tar.extractall(out / "x", filter="data")
    metadata = json.loads((out / "x" / "metadata.json").read_text())
    (out / "model").mkdir()
    with tarfile.open(cnn.archive) as tar:
        (out / "model" / "model.onnx").write_bytes(tar.extractfile("model.onnx").read())
    return {"metadata": metadata, "library": out / "x" / metadata["library"], "model_dir": out / "model",
            "model_file": out / "model" / "model.onnx"}


def _verify(built: dict, lines: list, *, model_file: Path | None = None, mode: str = "gate") -> dict:
    return verify_build(built["metadata"], built["library"], model_file or built["model_file"], built["model_dir"],
                        mode=mode, log=lines.append)


def test_an_arm64_artifact_passes_the_gate_under_emulation(gated):
    verification = gated["metadata"]["verification"]
    assert verification["passed"] is True, verification
    assert verification["emulated"] == EMULATOR
    assert verification["reference"].startswith("onnxruntime ")
    [output] = verification["outputs"]
    assert output["max_abs_diff"] <= output["tolerance"] and output["shape"] == [1, 10]
    assert any(line.startswith(f"verification (gate): passed under emulation ({EMULATOR}) against onnxruntime")
               for line in gated["lines"]), gated["lines"]
    with tarfile.open(gated["artifact"]) as tar:
        written = json.loads(tar.extractfile("metadata.json").read())
    assert written["verification"]["emulated"] == EMULATOR and written["target"]["machine"] == "aarch64"


def test_the_profile_stays_skipped_for_an_emulated_target(gated):
    profile = gated["metadata"]["profile"]
    assert "this machine is x86_64: run it on the target device" in profile["skipped"]
    assert "latency_ms" not in profile and "baseline" not in profile


def test_a_wrong_reference_is_caught_under_emulation(arm_root, unverified, tmp_path, monkeypatch):
    """The artifact against a model of the same signature whose classifier bias is off by one.

    The package is presented as installed in a virtualenv: its directory also holds an x86-64
    ``numpy`` (here one that refuses to import), which the guest must not see."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(unverified["model_file"]))
    bias = next(init for init in reversed(model.graph.initializer) if len(init.dims) == 1)
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1.0), bias.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(model, str(wrong))
    site = tmp_path / "site-packages"
    shutil.copytree(emulation.package_parent() / "airflow_neo", site / "airflow_neo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (site / "numpy").mkdir()
    (site / "numpy" / "__init__.py").write_text("raise ImportError('the x86-64 numpy of site-packages')\n")
    monkeypatch.setattr(emulation, "package_parent", lambda: site)
    lines: list[str] = []
    with pytest.raises(AccuracyCheckError, match=r"output output0: max abs diff .* > tolerance .*onnxruntime"):
        _verify(unverified, lines, model_file=wrong)
    assert any(line.startswith(f"verification (gate): FAILED under emulation ({EMULATOR})") for line in lines), lines


def test_a_guest_past_its_time_limit_is_not_verified(arm_root, unverified, monkeypatch):
    monkeypatch.setattr(emulation, "TIMEOUT_S", 2.0)
    lines: list[str] = []
    result = _verify(unverified, lines)  # the gate does not fail the job for it
    assert result["passed"] is None and "outputs" not in result
    assert result["not_verified"].startswith(f"the emulated run failed ({EMULATOR}): the emulated Python ran past 2 s")


def test_an_artifact_the_emulated_cpu_cannot_run_is_not_verified(arm_root, cnn, tmp_path):
    """mcpu neoverse-v1 (Graviton3) uses SVE, which the emulated Neoverse N1 lacks: the guest
    refuses it (instead of dying on an illegal instruction), and the gate does not fail the job."""
    _need_cross("aarch64-linux-gnu-gcc")
    request = models.make_request(cnn, target_platform={"Os": "LINUX", "Arch": "ARM64"},
                                  compiler_options={"mcpu": "neoverse-v1"}, output_dir=tmp_path, job_name="sve")
    metadata = compile_model(request, str(cnn.archive), str(tmp_path / "sve.tar.gz"), log=lambda line: None)
    verification = metadata["verification"]
    assert verification["passed"] is None and "outputs" not in verification
    why = verification["not_verified"]
    assert why.startswith(f"the emulated run failed ({EMULATOR}): the emulated CPU ({emulation.DEFAULT_CPU}) "
                          "cannot run it: "), why
    assert "sve" in why and "recompile for this CPU" in why


def test_without_the_root_it_is_not_verified_saying_how_to_build_it(unverified, tmp_path, monkeypatch):
    monkeypatch.setenv(emulation.ROOT_ENV, str(tmp_path / "no-root"))
    monkeypatch.delenv(emulation.LOG_ENV, raising=False)
    result = _verify(unverified, [])
    assert result["passed"] is None and "emulated" not in result
    assert result["not_verified"] == (
        "the artifact was compiled for TargetDevice ml_c6g (aarch64-linux-gnu, aarch64); this machine is x86_64: "
        f"run it on the target device; no emulation: no aarch64 root at ${emulation.ROOT_ENV}={tmp_path / 'no-root'}; "
        "build it with `bash scripts/arm_root.sh` (from an airflow-neo source checkout)"
    )
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64 either
    result = _verify(unverified, [])
    assert "; no emulation: qemu-aarch64 is not installed (Debian package qemu-user" in result["not_verified"]


def test_an_armhf_artifact_is_not_verified_there_is_no_armv7_runtime(cnn, tmp_path):
    _need_cross("arm-linux-gnueabihf-gcc")
    lines: list[str] = []
    _, metadata = _compile(cnn, tmp_path, lines, target_device="rasp3b")
    verification = metadata["verification"]
    assert verification["passed"] is None and "emulated" not in verification
    assert "run it on the target device; no emulation: armv7 (hard-float) artifacts cannot be emulated here: " \
           "there is no TVM runtime for armv7" in verification["not_verified"]
