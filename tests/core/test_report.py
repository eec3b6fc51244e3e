"""The report of a job: built from metadata.json's verification and profile entries, as text, and gated."""

from __future__ import annotations

import copy
import json

import pytest

from airflow_neo.core.report import (
    TOP_KERNELS,
    build_report,
    check_max_slowdown,
    check_slowdown,
    format_report,
)

PAYLOAD = {
    "CompilationJobName": "cnn-x86",
    "CompilationJobStatus": "COMPLETED",
    "FailureReason": "",
    "InputConfig": {"S3Uri": "file:///models/cnn.tar.gz", "Framework": "ONNX"},
    "OutputConfig": {"S3OutputLocation": "file:///compiled/", "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
    "ModelArtifacts": {"S3ModelArtifacts": "file:///compiled/model-linux-x86_64.tar.gz"},
    "ModelDigests": {"ArtifactDigest": "ab" * 64},
}

LATENCY = {"p50": 2.5, "p90": 3.0, "p99": 4.25, "mean": 2.7, "min": 2.1}
METADATA = {
    "framework": "ONNX",
    "verification": {
        "mode": "gate", "inputs": "random (seed 0)", "reference": "onnxruntime 1.32.0", "passed": True, "seconds": 0.31,
        "outputs": [
            {"name": "logits", "dtype": "float32", "shape": [1, 10], "max_abs_diff": 1e-6, "max_rel_diff": 1e-7,
             "tolerance": 1e-4, "passed": True},
            {"name": "probs", "dtype": "float32", "shape": [1, 10], "max_abs_diff": 5e-5, "max_rel_diff": 5e-5,
             "tolerance": 1e-4, "passed": True},
        ],
    },
    "profile": {
        "budget_seconds": 2.0, "inputs": "random (seed 0)", "load_seconds": 0.012, "threads": 2, "runs": 180,
        "latency_ms": LATENCY, "peak_rss_mb": 231.4,
        "top_kernels": [{"name": f"fused_conv{i}", "calls": 1, "total_ms": 1.0 / (i + 1), "percent": 40.0 / (i + 1)}
                        for i in range(8)],
        "baseline": {"name": "onnxruntime 1.32.0", "latency_ms": {**LATENCY, "p50": 0.5}, "runs": 900, "threads": 2},
        "speedup": 0.2,
    },
}


def _strict_json(value):
    """The value through strict JSON (no NaN/Infinity), as XCom, asset extras and OpenLineage need."""
    return json.loads(json.dumps(value, allow_nan=False))


def test_report_of_a_local_artifact_holds_the_figures():
    report = build_report(PAYLOAD, METADATA)
    assert _strict_json(report) == report
    assert report["job"] == "cnn-x86" and report["status"] == "COMPLETED" and report["failure_reason"] is None
    assert report["target"] == "LINUX/X86_64" and report["framework"] == "ONNX"
    assert report["artifact"] == PAYLOAD["ModelArtifacts"]["S3ModelArtifacts"] and report["digest"] == "ab" * 64
    assert report["available"] is True and "reason" not in report
    verification = report["verification"]
    assert verification["mode"] == "gate" and verification["passed"] is True and verification["outputs"] == 2
    assert verification["reference"] == "onnxruntime 1.32.0" and verification["inputs"] == "random (seed 0)"
    assert verification["worst"] == {"name": "probs", "passed": True, "max_abs_diff": 5e-5, "max_rel_diff": 5e-5,
                                     "tolerance": 1e-4}
    profile = report["profile"]
    assert (profile["p50_ms"], profile["p90_ms"], profile["p99_ms"]) == (2.5, 3.0, 4.25)
    assert (profile["runs"], profile["threads"], profile["load_seconds"], profile["peak_rss_mb"]) == (180, 2, 0.012, 231.4)
    assert [k["name"] for k in profile["top_kernels"]] == [f"fused_conv{i}" for i in range(TOP_KERNELS)]
    assert profile["baseline"] == {"name": "onnxruntime 1.32.0", "p50_ms": 0.5, "runs": 900}
    assert profile["speedup"] == 0.2 and profile["slowdown"] == 5.0


def test_text_names_the_verdicts_and_figures():
    text = format_report(build_report(PAYLOAD, METADATA))
    assert text.splitlines()[0].startswith("Compilation job cnn-x86 COMPLETED: ONNX for LINUX/X86_64")
    assert "verification (gate): passed against onnxruntime 1.32.0" in text and "probs" in text
    assert "p50 2.500 ms" in text and "onnxruntime 1.32.0 p50 0.500 ms: speedup 0.2x (slowdown 5x)" in text
    assert "top kernels: fused_conv0 40.0%" in text


def test_older_artifacts_and_missing_keys():
    old = copy.deepcopy(METADATA)
    profile = old["profile"]
    for key in ("baseline", "speedup", "peak_rss_mb", "top_kernels", "budget_seconds"):
        profile.pop(key)
    profile["onnxruntime"] = {"latency_ms": {"p50": 5.0}, "runs": 100}
    profile["speedup_vs_onnxruntime"] = 2.0
    report = build_report(PAYLOAD, old)
    assert report["profile"]["baseline"] == {"name": "onnxruntime", "p50_ms": 5.0, "runs": 100}
    assert report["profile"]["speedup"] == 2.0 and report["profile"]["slowdown"] == 0.5
    assert report["profile"]["peak_rss_mb"] is None and report["profile"]["top_kernels"] == []
    format_report(report)

    bare = build_report({"CompilationJobName": "j", "CompilationJobStatus": "COMPLETED"}, {})
    assert bare["available"] is True and bare["target"] is None and bare["artifact"] is None
    assert bare["verification"]["passed"] is None and "no verification" in bare["verification"]["not_verified"]
    assert "profile_seconds" in bare["profile"]["skipped"]
    assert "not verified" in format_report(bare) and "profile: skipped" in format_report(bare)


def test_failed_outputs_skips_and_non_finite_figures_stay_strict_json():
    failed = copy.deepcopy(METADATA)
    failed["verification"].update(mode="report", passed=False)
    failed["verification"]["outputs"][0].update(
        passed=False, max_abs_diff=float("inf"), max_rel_diff=float("inf"), tolerance=0.0,
        problem="shape [1, 9] differs from the reference's [1, 10]")
    failed["profile"] = {"budget_seconds": 2.0, "skipped": "target aarch64 cannot run on this x86_64 host"}
    report = build_report(PAYLOAD, failed)
    assert _strict_json(report) == report
    worst = report["verification"]["worst"]
    assert worst["name"] == "logits" and worst["passed"] is False and worst["max_abs_diff"] == "inf"
    assert report["verification"]["passed"] is False
    assert report["profile"] == {"skipped": "target aarch64 cannot run on this x86_64 host"}
    text = format_report(report)
    assert "FAILED" in text and "shape [1, 9] differs" in text and "profile: skipped: target aarch64" in text

    not_verified = {"verification": {"mode": "gate", "inputs": None, "reference": None, "passed": None,
                                     "not_verified": "no onnxruntime here", "seconds": 0.0}}
    assert build_report(PAYLOAD, not_verified)["verification"]["not_verified"] == "no onnxruntime here"


def test_reports_without_metadata():
    failed = {**PAYLOAD, "CompilationJobStatus": "FAILED", "FailureReason": "ClientError: AccuracyCheckFailed: ...",
              "ModelArtifacts": {}}
    report = build_report(failed, None)
    assert report["available"] is False and report["verification"] is None and report["profile"] is None
    assert report["failure_reason"].startswith("ClientError: AccuracyCheckFailed") and "FAILED" in report["reason"]
    assert build_report({**failed, "ModelArtifacts": PAYLOAD["ModelArtifacts"]}, None)["artifact"] is None
    sagemaker = build_report({**PAYLOAD, "OutputConfig": {"TargetDevice": "ml_c5"}}, None,
                             unavailable_reason="SageMaker Neo jobs carry no verification or profile")
    assert sagemaker["target"] == "ml_c5" and sagemaker["reason"] == "SageMaker Neo jobs carry no verification or profile"
    assert "no report: SageMaker Neo jobs carry no verification or profile" in format_report(sagemaker)


def test_slowdown_gate_passes_fails_and_fails_closed():
    report = build_report(PAYLOAD, METADATA)  # 5x slower than onnxruntime
    assert check_slowdown(report, 5.0) is None and check_slowdown(report, 1e6) is None
    problem = check_slowdown(report, 1.0)
    assert "max_slowdown=1" in problem and "5x slower than onnxruntime 1.32.0" in problem
    assert "p50 2.500 ms vs 0.500 ms" in problem and "cnn-x86" in problem

    closed = {
        "no metadata": build_report(PAYLOAD, None, unavailable_reason="SageMaker Neo jobs carry no verification or profile"),
        "profile off": build_report(PAYLOAD, {"verification": METADATA["verification"]}),
        "profile skipped": build_report(PAYLOAD, {"profile": {"skipped": "cannot run here"}}),
        "baseline skipped": build_report(PAYLOAD, {"profile": {**METADATA["profile"], "speedup": None,
                                                               "baseline": {"skipped": "no torch here"}}}),
    }
    for case, gated in closed.items():
        problem = check_slowdown(gated, 1e6)
        assert problem and "profile_seconds > 0" in problem and "drop max_slowdown" in problem, case
    assert "SageMaker Neo jobs carry" in check_slowdown(closed["no metadata"], 2)
    assert "no torch here" in check_slowdown(closed["baseline skipped"], 2)


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "2", True])
def test_max_slowdown_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match=r"max_slowdown must be a finite number > 0 .*got " + repr(bad).replace("(", r"\(")):
        check_max_slowdown(bad)
    assert check_max_slowdown(None) is None and check_max_slowdown(2) == 2.0


def test_device_code_of_artifacts_that_cannot_run_here():
    """CUDA and Core ML artifacts: the report says what the compile checked of their code."""
    unverified = {"mode": "gate", "passed": None, "not_verified": "this machine has no CUDA driver (libcuda.so.1)"}
    cuda = {"framework": "ONNX", "verification": unverified,
            "cuda": {"arch": "sm_75", "kernels": 5, "float16_kernels": 4, "nvrtc": "12.9",
                     "driver_note": "the device's driver must support CUDA 12.9 or newer (cuda-ver 10.2 was asked)"}}
    report = _strict_json(build_report({**PAYLOAD, "OutputConfig": {"TargetDevice": "ml_g4dn"}}, cuda))
    assert report["device_code"] == {"kind": "cuda", "arch": "sm_75", "kernels": 5, "float16_kernels": 4,
                                     "nvrtc": "12.9", "driver_note": cuda["cuda"]["driver_note"]}
    text = format_report(report)
    assert "device code: sm_75 cubin, 5 kernels (4 in half), NVRTC 12.9; TensorRT not used" in text
    assert "not verified: this machine has no CUDA driver" in text
    coreml = {"framework": "PYTORCH", "verification": unverified,
              "coreml": {"model_type": "mlProgram", "compute_precision": "FP16", "classifier": {"labels": 1000}}}
    report = build_report({**PAYLOAD, "OutputConfig": {"TargetDevice": "coreml"}}, coreml)
    assert report["device_code"] == {"kind": "coreml", "model_type": "mlProgram", "precision": "FP16", "labels": 1000}
    assert "device code: Core ML mlProgram (FP16, 1000 labels)" in format_report(report)
    assert build_report(PAYLOAD, METADATA)["device_code"] is None
    assert build_report(PAYLOAD, None)["device_code"] is None


def test_emulated_and_flexible_verification_say_so():
    verification = {**METADATA["verification"], "emulated": "qemu-aarch64 -cpu neoverse-n1",
                    "shapes": [{"inputs": {"x": [n, 3, 16, 16]}, "passed": True} for n in (1, 2, 4)]}
    report = build_report(PAYLOAD, {**METADATA, "verification": verification})
    assert report["verification"]["emulated"] == "qemu-aarch64 -cpu neoverse-n1"
    assert report["verification"]["input_sizes"] == 3
    assert "passed under emulation (qemu-aarch64 -cpu neoverse-n1) against onnxruntime 1.32.0 on random (seed 0) at 3 input sizes" \
        in format_report(report)
    plain = build_report(PAYLOAD, METADATA)["verification"]
    assert "emulated" not in plain and "input_sizes" not in plain
