"""Verifying an existing artifact on this host (airflow_neo.local.verify_artifact).

Two real compiles of the small CNN (tests/local/models.py): the model, and the same model with its
largest weight scaled by 1.5 (same inputs and outputs), compiled without verification (so it is also
the artifact without a record). A wrong artifact is the first artifact's
metadata and recorded verification with the second's library swapped in, or with a recorded
reference output tampered with: both must be caught. All of them run in the check process; so do
libraries that crash (SIGSEGV, an exit) or hang when loaded (tests/local/native_libraries.py):
the check names what happened and this process goes on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from airflow_neo.local import errors
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.verify_artifact import verify_artifact
from tests.local import models, native_libraries
from tests.local.test_verify import _member, _tampered_onnx

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}
QUIET = {"log": lambda line: None}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("verify-artifact")
    case = models.onnx_cnn(root / "model")
    good = root / "good.tar.gz"
    compile_model(models.make_request(case, target_platform=LINUX_X86_64), str(case.archive), str(good), **QUIET)
    (root / "files").mkdir()
    (root / "files" / "model.onnx").write_bytes(_member(case.archive, "model.onnx"))
    tampered = _tampered_onnx(root / "files" / "model.onnx")
    other_case = models.ModelCase(models.write_archive(root / "other", {"model.onnx": tampered.read_bytes()}),
                                  case.reference, framework="ONNX", data_input_config=case.data_input_config,
                                  inputs=case.inputs, model_file="model.onnx")
    other = root / "other.tar.gz"
    compile_model(models.make_request(other_case, target_platform=LINUX_X86_64), str(other_case.archive), str(other),
                  verify="off", **QUIET)
    return {"root": root, "good": good, "other": other, "case": case}


def _rewrite(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the artifact ``source`` with the members in ``replace`` swapped."""
    with tarfile.open(source) as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
    members.update(replace)
    with tarfile.open(target, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _record(artifact: Path) -> dict:
    with np.load(io.BytesIO(_member(artifact, "verification.npz"))) as data:
        return {key: data[key] for key in data.files}


def test_a_good_artifact_passes_with_a_json_safe_report(built):
    lines: list[str] = []
    report = verify_artifact(built["good"].as_uri(), profile_seconds=0.05, log=lines.append)
    assert json.loads(json.dumps(report)) == report
    assert report["artifact"] == built["good"].as_uri()
    assert report["metadata_blake2b"] == hashlib.blake2b(_member(built["good"], "metadata.json"), digest_size=32).hexdigest()
    assert report["host"]["machine"] == "x86_64" and "sse4_2" in report["host"]["cpu_flags"]
    assert report["model"]["framework"] == "ONNX" and report["model"]["target"] == "linux-x86_64"
    verification = report["verification"]
    assert verification["passed"] is True and verification["mode"] == "gate"
    assert verification["inputs"] == "random (seed 0) (recorded at compile)"
    assert verification["reference"].startswith("onnxruntime ") and verification["reference"].endswith(" (recorded at compile)")
    [output] = verification["outputs"]
    assert output["name"] == "output0" and 0 <= output["max_abs_diff"] <= output["tolerance"]
    profile = report["profile"]
    assert profile["runs"] >= 1 and profile["load_seconds"] > 0
    assert 0 < profile["latency_ms"]["p50"] <= profile["latency_ms"]["p99"]
    assert profile["top_kernels"] and 0 < profile["top_kernels"][0]["percent"] <= 100
    assert any(line.startswith("verification (gate): passed against onnxruntime") for line in lines)
    assert any(line.startswith("profile: p50 ") for line in lines)


def test_another_models_library_swapped_in_is_caught(built, tmp_path):
    wrong = _rewrite(built["good"], tmp_path / "swapped.tar.gz", {"model.so": _member(built["other"], "model.so")})
    with pytest.raises(errors.AccuracyCheckError) as info:
        verify_artifact(str(wrong), profile_seconds=0, **QUIET)
    reason = errors.failure_reason(info.value)
    assert reason.startswith("ClientError: AccuracyCheckFailed: output output0: max abs diff "), reason
    assert "> tolerance" in reason and "(recorded at compile)" in reason and "do not deploy it" in reason
    report = verify_artifact(str(wrong), mode="report", profile_seconds=0, **QUIET)
    [output] = report["verification"]["outputs"]
    assert report["verification"]["passed"] is False and output["max_abs_diff"] > output["tolerance"]
    # a looser tolerance than the compile's lets the same difference pass
    assert verify_artifact(str(wrong), rtol=10.0, profile_seconds=0, **QUIET)["verification"]["passed"] is True


def test_a_tampered_recorded_output_is_caught(built, tmp_path):
    record = _record(built["good"])
    record["output:0"] = record["output:0"] * np.float32(1.5)
    wrong = _rewrite(built["good"], tmp_path / "tampered.tar.gz", {"verification.npz": _npz(**record)})
    with pytest.raises(errors.AccuracyCheckError, match=r"output output0: max abs diff .* > tolerance"):
        verify_artifact(str(wrong), profile_seconds=0, **QUIET)
    # report mode on a failed comparison: test_another_models_library_swapped_in_is_caught


def test_the_users_inputs_from_s3(built, tmp_path):
    import boto3
    from moto import mock_aws

    recorded = _record(built["good"])["input:input0"]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="deploy")
        s3.upload_file(str(built["good"]), "deploy", "models/cnn.tar.gz")
        s3.put_object(Bucket="deploy", Key="same.npz", Body=_npz(input0=recorded))
        s3.put_object(Bucket="deploy", Key="other.npz", Body=_npz(input0=np.ones(models.CNN_SHAPE, np.float32)))
        same = verify_artifact("s3://deploy/models/cnn.tar.gz", inputs_uri="s3://deploy/same.npz", s3_client=s3,
                               profile_seconds=0, **QUIET)
        other = verify_artifact("s3://deploy/models/cnn.tar.gz", inputs_uri="s3://deploy/other.npz", s3_client=s3,
                                profile_seconds=0, **QUIET)
        with pytest.raises(errors.ModelInputError, match=r"inputs_uri s3://deploy/missing.npz: could not download it"):
            verify_artifact("s3://deploy/models/cnn.tar.gz", inputs_uri="s3://deploy/missing.npz", s3_client=s3, **QUIET)
    assert same["artifact"] == "s3://deploy/models/cnn.tar.gz"
    assert same["verification"]["inputs"] == "s3://deploy/same.npz" and same["verification"]["passed"] is True
    verification = other["verification"]
    assert verification["passed"] is None and verification["reference"] is None
    assert verification["not_compared"] == "no outputs were recorded for these inputs (the record holds other inputs)"
    [output] = verification["outputs"]
    assert output == {"name": "output0", "dtype": "float32", "shape": [1, 10], "finite": True, "passed": True}


def test_an_artifact_without_a_record_runs_on_random_inputs_uncompared(built):
    plain = built["other"]  # compiled with verify="off"
    with tarfile.open(plain) as tar:
        assert "verification.npz" not in tar.getnames()
    verification = verify_artifact(str(plain), profile_seconds=0, **QUIET)["verification"]
    assert verification["inputs"] == "random (seed 0)" and verification["passed"] is None
    assert verification["not_compared"] == "the artifact holds no verification record (its compile did not verify it)"


def test_an_artifact_for_another_host_fails_the_gate_and_is_reported_otherwise(built, tmp_path):
    metadata = json.loads(_member(built["good"], "metadata.json"))
    metadata["target"].update(machine="aarch64", triple="aarch64-linux-gnu", source="TargetPlatform LINUX/ARM64")
    arm = _rewrite(built["good"], tmp_path / "arm.tar.gz", {"metadata.json": json.dumps(metadata).encode()})
    with pytest.raises(errors.IncompatibleArtifactError, match=r"the artifact cannot run on this host: .*this machine is "
                                                                r"x86_64: run it on the target device"):
        verify_artifact(str(arm), **QUIET)
    report = verify_artifact(str(arm), mode="report", profile_seconds=1, **QUIET)
    assert report["verification"]["passed"] is None
    assert "this machine is x86_64" in report["verification"]["not_verified"]
    assert "this machine is x86_64" in report["profile"]["skipped"]


def test_a_library_that_does_not_load_fails_the_gate_and_is_reported_otherwise(built, tmp_path):
    broken = _rewrite(built["good"], tmp_path / "broken.tar.gz", {"model.so": b"not a shared library"})
    with pytest.raises(errors.ModelArchiveError, match=r"the artifact cannot run on this host: its library could not be loaded: "):
        verify_artifact(str(broken), **QUIET)
    report = verify_artifact(str(broken), mode="report", profile_seconds=0, **QUIET)
    assert report["verification"]["passed"] is None
    assert report["verification"]["not_verified"].startswith("its library could not be loaded: ")


def test_bad_locations_and_inputs_are_named(built, tmp_path):
    with pytest.raises(errors.ModelArchiveError, match=r"artifact_uri file:///nowhere/model.tar.gz: /nowhere/model.tar.gz "
                                                        r"does not exist"):
        verify_artifact("file:///nowhere/model.tar.gz", **QUIET)
    with pytest.raises(ValueError, match=r"inputs_uri 'inputs.txt'"):
        verify_artifact(str(built["good"]), inputs_uri="inputs.txt", **QUIET)
    with pytest.raises(ValueError, match=r"verify must be one of gate, report, off; got 'strict'"):
        verify_artifact(str(built["good"]), mode="strict", **QUIET)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input0=np.zeros([2, 3, 16, 16], np.float32))
    with pytest.raises(errors.ModelInputError, match=r"the sample input 'input0' in /.*wrong.npz has shape \[2, 3, 16, 16\]"):
        verify_artifact(str(built["good"]), inputs_uri=str(wrong), **QUIET)


# ----------------------------------------------------------------------------- a library that takes its process down


def _misbehaving(built, tmp_path: Path, behaviour: str) -> Path:
    """The good artifact with its library replaced by one that does ``behaviour`` when loaded."""
    library = native_libraries.misbehaving_library(tmp_path, behaviour)
    return _rewrite(built["good"], tmp_path / f"{behaviour}.tar.gz", {"model.so": library})


def test_a_library_that_segfaults_fails_the_gate_and_is_reported_otherwise(built, tmp_path, monkeypatch):
    crashing = _misbehaving(built, tmp_path, "segfault")
    pid_file = tmp_path / "pid"
    monkeypatch.setenv(native_libraries.PID_FILE_ENV, str(pid_file))
    with pytest.raises(errors.ArtifactCheckCrashed) as info:
        verify_artifact(str(crashing), profile_seconds=0, **QUIET)
    message = str(info.value)
    assert message.startswith("the artifact's library crashed the check process (signal 11: SIGSEGV)"), message
    assert "misbehaving library loaded: segfault" in message  # the tail of the check process's stderr
    assert errors.failure_reason(info.value).startswith("ServerError: the artifact's library crashed")
    # the library ran, and crashed, in another process: this one goes on
    assert int(pid_file.read_text()) != os.getpid()
    lines: list[str] = []
    report = verify_artifact(str(crashing), mode="report", profile_seconds=1, log=lines.append)
    assert json.loads(json.dumps(report)) == report
    why = report["verification"]["not_verified"]
    assert report["verification"]["passed"] is None and why.startswith("the check process crashed (signal 11: SIGSEGV)")
    assert report["profile"] == {"skipped": why}
    assert any(line.startswith("verification: not verified: the check process crashed (signal 11: SIGSEGV)")
               for line in lines)


def test_a_library_that_exits_is_named(built, tmp_path):
    """An exit without a result; a library that aborts (SIGABRT) takes the segfault's path above (a
    signal, named)."""
    with pytest.raises(errors.ArtifactCheckCrashed, match=r"crashed the check process \(exit code 3 without a result\)"
                                                          r".*\n.*misbehaving library loaded: exit"):
        verify_artifact(str(_misbehaving(built, tmp_path, "exit")), profile_seconds=0, **QUIET)


def test_a_library_that_hangs_is_killed_at_the_time_limit(built, tmp_path, monkeypatch):
    hanging = _misbehaving(built, tmp_path, "hang")
    pid_file = tmp_path / "pid"
    monkeypatch.setenv(native_libraries.PID_FILE_ENV, str(pid_file))
    # long enough for the check process to import TVM and load the library, which then sleeps
    with pytest.raises(errors.ArtifactCheckTimedOut, match=r"the check process did not finish within 12 s "
                                                           r"\(timeout_seconds\) and was killed: .*\n"
                                                           r"misbehaving library loaded: hang"):
        verify_artifact(str(hanging), timeout_seconds=12, profile_seconds=0, **QUIET)
    with pytest.raises(ProcessLookupError):  # the check process is gone, not left sleeping
        os.kill(int(pid_file.read_text()), 0)
    report = verify_artifact(str(hanging), mode="report", timeout_seconds=3, profile_seconds=0, **QUIET)
    assert report["verification"]["not_verified"].startswith("the check process did not finish within 3 s (killed)")
    with pytest.raises(ValueError, match=r"timeout_seconds must be a number of seconds > 0; got 0"):
        verify_artifact(str(hanging), timeout_seconds=0, **QUIET)
