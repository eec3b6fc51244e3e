"""Verification of local compiles (airflow_neo.local.verify, airflow_neo.local.references).

Real models (tests/local/models.py) go through the real compiler and, for the job-level tests,
through real local jobs (the runner and its spawn compile child). A wrong reference is made by
scaling a weight of the ONNX graph the reference runs (:func:`compile_with_tampered_reference`, a
module-level compile function that the compile child imports by reference): the artifact is right,
the reference is not, so the outputs differ well beyond tolerance and the gate must see it.
"""

from __future__ import annotations

import json
import sys
import types
import tarfile
from pathlib import Path

import numpy as np
import pytest

from airflow_neo import runtime
from airflow_neo.core import status as st
from airflow_neo.local import errors, runner
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.settings import CompileSettings, check_verify
from airflow_neo.local.store import JobStore
from airflow_neo.local.verify import sample_inputs, tolerance_for, verify_build
from tests.local import models
from tests.support.requires import require

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}
POLL = 0.1


def _tampered_onnx(model_file: Path) -> Path:
    """A copy of the ONNX model with its largest initializer scaled by 1.5."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_file))
    largest = max(model.graph.initializer, key=lambda init: int(np.prod(init.dims)))
    scaled = numpy_helper.to_array(largest) * np.float32(1.5)
    largest.CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), largest.name))
    path = model_file.with_name("tampered-" + model_file.name)
    onnx.save(model, str(path))
    return path


def compile_with_tampered_reference(request, archive_path, artifact_path, **kwargs):
    """The real compiler, with onnxruntime running a tampered copy of the model as the reference."""
    from airflow_neo.local import references

    original = references._onnxruntime
    references._onnxruntime = lambda model_file, *args: original(_tampered_onnx(model_file), *args)
    return compile_model(request, archive_path, artifact_path, **kwargs)


def _compile(case, tmp_path: Path, lines: list | None = None, **kwargs) -> dict:
    request = models.make_request(case, target_platform=kwargs.pop("target_platform", LINUX_X86_64))
    log = lines.append if lines is not None else (lambda line: None)
    return compile_model(request, str(case.archive), str(tmp_path / "artifact.tar.gz"), log=log, **kwargs)


def _job(store_path, case, out: Path, name: str, settings: CompileSettings | None = None) -> tuple[str, dict]:
    store = JobStore(store_path)
    request = models.make_request(case, target_platform=LINUX_X86_64, output_dir=out, job_name=name)
    store.create(request)
    final = runner.run_job(store_path, name, compile_fn="tests.local.test_verify:compile_with_tampered_reference",
                           poll_interval=POLL, settings=settings)
    return final, store.describe(name)


# ----------------------------------------------------------------------------- jobs: gate and report


@pytest.fixture(scope="module")
def report_then_gate(tmp_path_factory) -> dict:
    """Two real jobs on one store and one compile cache, the reference tampered in both: "reported"
    (verify="report") publishes and is not cached; "gated" (verify="gate", the same model) then
    compiles again and fails. Shared by the three tests below (a job costs a compile child)."""
    root = tmp_path_factory.mktemp("report-then-gate")
    case = models.onnx_cnn(root / "model")
    store_path = root / "state" / "jobs.db"
    cache = str(root / "cache")
    reported = _job(store_path, case, root / "out-reported", "reported", CompileSettings(verify="report", cache_dir=cache))
    gated = _job(store_path, case, root / "out-gated", "gated", CompileSettings(verify="gate", cache_dir=cache))
    return {"store_path": store_path, "root": root, "reported": reported, "gated": gated}


def test_gate_fails_the_job_and_publishes_nothing(report_then_gate):
    final, job = report_then_gate["gated"]
    out = report_then_gate["root"] / "out-gated"
    assert final == st.FAILED
    reason = job["FailureReason"]
    assert reason.startswith("ClientError: AccuracyCheckFailed: output output0: max abs diff "), reason
    assert "> tolerance " in reason and "(reference: onnxruntime " in reason and "inputs: random (seed 0)" in reason
    assert "ModelDigests" not in job and "DerivedInformation" not in job
    assert not out.exists() or list(out.iterdir()) == []
    log = JobStore(report_then_gate["store_path"]).log_path("gated").read_text()
    assert "verification (gate): FAILED against onnxruntime" in log


def test_report_mode_publishes_with_the_failed_comparison(report_then_gate):
    final, job = report_then_gate["reported"]
    out = report_then_gate["root"] / "out-reported"
    assert final == st.COMPLETED, job.get("FailureReason")
    [artifact] = list(out.iterdir())
    verification = runtime.read_metadata(artifact)["verification"]
    assert verification["mode"] == "report" and verification["passed"] is False
    [output] = verification["outputs"]
    assert output["name"] == "output0" and output["passed"] is False
    assert output["max_abs_diff"] > output["tolerance"] > 0
    assert verification["reference"].startswith("onnxruntime ")
    assert JobStore(report_then_gate["store_path"]).compile_metadata("reported")["verification"]["passed"] is False


def test_an_artifact_that_failed_verification_is_never_a_cache_hit(report_then_gate):
    """Published under "report", not cached: a later identical job under "gate" compiles and is refused."""
    store = JobStore(report_then_gate["store_path"])
    assert report_then_gate["reported"][0] == st.COMPLETED
    assert "not cached: the artifact failed verification" in store.log_path("reported").read_text()
    final, job = report_then_gate["gated"]
    assert final == st.FAILED and job["FailureReason"].startswith("ClientError: AccuracyCheckFailed: ")
    assert "compile cache hit" not in store.log_path("gated").read_text()


# ----------------------------------------------------------------------------- the compiler


def test_default_compile_verifies_onnx_against_onnxruntime(tmp_path):
    lines: list[str] = []
    metadata = _compile(models.onnx_cnn(tmp_path / "model"), tmp_path, lines)
    verification = metadata["verification"]
    assert verification["mode"] == "gate" and verification["passed"] is True
    assert verification["inputs"] == "random (seed 0)"
    assert verification["reference"].startswith("onnxruntime ")
    [output] = verification["outputs"]
    assert output["name"] == "output0" and output["shape"] == [1, 10]
    assert 0 <= output["max_abs_diff"] <= output["tolerance"]
    assert output["max_rel_diff"] == pytest.approx(output["max_abs_diff"] / output["reference_scale"])
    assert any(line.startswith("verification (gate): passed against onnxruntime") for line in lines)
    with tarfile.open(tmp_path / "artifact.tar.gz") as tar:
        written = json.loads(tar.extractfile("metadata.json").read())
    assert written["verification"] == verification
    assert "check" in written["timings_s"] and "profile" not in written  # profile_seconds is 0 in the tests


def test_off_does_not_verify(tmp_path):
    lines: list[str] = []
    metadata = _compile(models.onnx_cnn(tmp_path / "model"), tmp_path, lines, verify="off")
    assert "verification" not in metadata
    assert "verification: off ([neo] verify)" in lines


def test_torchscript_is_verified_against_torch(tmp_path):
    metadata = _compile(models.torchscript_cnn(tmp_path / "model"), tmp_path)
    verification = metadata["verification"]
    assert verification["passed"] is True
    assert verification["reference"].startswith("torch ") and "(TorchScript, eager)" in verification["reference"]


def test_xgboost_is_verified_against_xgboost(tmp_path):
    metadata = _compile(models.xgboost_classifier(tmp_path / "model"), tmp_path)
    verification = metadata["verification"]
    assert verification["passed"] is True and verification["reference"].startswith("xgboost ")


#: where the TFLite reference looks for an interpreter (airflow_neo.local.references._tflite_interpreter)
TFLITE_INTERPRETERS = ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter",
                       "tensorflow", "tensorflow.lite")


def test_tflite_is_verified_by_an_interpreter(tmp_path):
    require("ai_edge_litert.interpreter", "pip install ai-edge-litert")  # in the test extra
    verification = _compile(models.tflite_cnn(tmp_path / "model"), tmp_path)["verification"]
    assert verification["passed"] is True and verification["reference"].startswith("TFLite interpreter ("), verification


@pytest.mark.parametrize("tensorflow_lite", ["absent", "without Interpreter"])
def test_tflite_without_an_interpreter_is_not_verified(tmp_path, monkeypatch, tensorflow_lite):
    for module in TFLITE_INTERPRETERS:  # None in sys.modules: the import raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    if tensorflow_lite != "absent":  # TensorFlow 2.21: tensorflow.lite imports, its Interpreter moved to ai-edge-litert
        monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
        monkeypatch.setitem(sys.modules, "tensorflow.lite", types.ModuleType("tensorflow.lite"))
    metadata = _compile(models.tflite_cnn(tmp_path / "model"), tmp_path)
    verification = metadata["verification"]
    assert verification["passed"] is None
    assert verification["not_verified"].startswith("no TFLite interpreter is installed")


def test_arm_target_is_not_verified_here(tmp_path, monkeypatch):
    import shutil

    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.skip("no aarch64 cross compiler (gcc-aarch64-linux-gnu)")
    monkeypatch.setenv("AIRFLOW_NEO_ARM64_ROOT", str(tmp_path / "no-root"))  # else it runs under emulation
    lines: list[str] = []
    metadata = _compile(models.onnx_cnn(tmp_path / "model"), tmp_path, lines,
                        target_platform={"Os": "LINUX", "Arch": "ARM64"})
    verification = metadata["verification"]
    assert verification["passed"] is None and "outputs" not in verification
    assert "this machine is x86_64: run it on the target device" in verification["not_verified"]
    assert any(line.startswith("verification: not verified: the artifact was compiled for") for line in lines)


def test_the_archives_npz_inputs_are_used(tmp_path):
    case = models.onnx_cnn(tmp_path / "model")
    onnx_bytes = _member(case.archive, "model.onnx")
    data = np.full(models.CNN_SHAPE, 3.0, dtype=np.float32)
    buffer = _npz(input0=data)
    archive = models.write_archive(tmp_path / "with-npz", {"model.onnx": onnx_bytes, "samples/inputs.npz": buffer})
    case = models.ModelCase(archive, case.reference, framework="ONNX", data_input_config=case.data_input_config,
                            inputs=case.inputs, model_file="model.onnx")
    verification = _compile(case, tmp_path)["verification"]
    assert verification["inputs"] == "samples/inputs.npz" and verification["passed"] is True
    expected_scale = float(np.max(np.abs(case.reference({"input0": data})[0])))
    assert verification["outputs"][0]["reference_scale"] == pytest.approx(expected_scale, rel=1e-6)


def test_an_npz_that_does_not_match_the_inputs_fails_naming_both(tmp_path):
    case = models.onnx_cnn(tmp_path / "model")
    archive = models.write_archive(tmp_path / "bad-npz", {
        "model.onnx": _member(case.archive, "model.onnx"),
        "inputs.npz": _npz(image=np.zeros(models.CNN_SHAPE, np.float32)),
    })
    case = models.ModelCase(archive, case.reference, framework="ONNX", data_input_config=case.data_input_config,
                            inputs=case.inputs, model_file="model.onnx")
    with pytest.raises(errors.ModelInputError, match=r"inputs.npz in the model archive hold arrays \['image'\]; "
                                                      r"the model's inputs are \['input0'\]"):
        _compile(case, tmp_path)


def _member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read()


def _npz(**arrays) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- verify_build on a wrong reference


def test_verify_build_against_another_models_reference(tmp_path):
    case = models.onnx_cnn(tmp_path / "model")
    _compile(case, tmp_path, verify="off")
    extracted = tmp_path / "extracted"
    loaded = runtime.load(tmp_path / "artifact.tar.gz", workdir=extracted)
    model_dir = tmp_path / "model-files"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(_member(case.archive, "model.onnx"))
    wrong = _tampered_onnx(model_dir / "model.onnx")
    with pytest.raises(errors.AccuracyCheckError) as info:
        verify_build(loaded.metadata, loaded.library_path, wrong, model_dir, mode="gate", log=lambda line: None)
    assert errors.failure_reason(info.value).startswith("ClientError: AccuracyCheckFailed: output output0: max abs diff ")
    report = verify_build(loaded.metadata, loaded.library_path, wrong, model_dir, mode="report", log=lambda line: None)
    assert report["passed"] is False
    right = verify_build(loaded.metadata, loaded.library_path, model_dir / "model.onnx", model_dir, mode="gate",
                         log=lambda line: None)
    assert right["passed"] is True
    # a looser tolerance, as [neo] verify_rtol gives, lets the same difference pass
    loose = verify_build(loaded.metadata, loaded.library_path, wrong, model_dir, mode="gate", rtol=10.0,
                         log=lambda line: None)
    assert loose["passed"] is True


# ----------------------------------------------------------------------------- units


def test_sample_inputs_are_seeded_and_follow_the_dtypes():
    specs = [{"name": "x", "shape": [2, None], "dtype": "float32"}, {"name": "ids", "shape": [4], "dtype": "int64"},
             {"name": "q", "shape": [3], "dtype": "uint8"}, {"name": "m", "shape": [2], "dtype": "bool"}]
    first, second = sample_inputs(specs), sample_inputs(specs)
    assert all(np.array_equal(first[name], second[name]) for name in first)
    assert first["x"].shape == (2, 1) and first["x"].dtype == np.float32
    assert first["ids"].dtype == np.int64 and set(first["ids"].tolist()) == {1}
    assert first["q"].dtype == np.uint8 and first["m"].dtype == np.bool_


def test_tolerances_per_dtype():
    assert tolerance_for("float32", 10.0) == pytest.approx(1e-5 + 1e-2)
    assert tolerance_for("float16", 1.0) > tolerance_for("float32", 1.0)
    assert tolerance_for("float32", 1.0, quantized=True) == pytest.approx(1e-5 + 3e-2)
    assert tolerance_for("int8", 100.0) == 1.0 and tolerance_for("uint8", 0.0) == 1.0
    assert tolerance_for("float32", 1.0, rtol=0.5) == pytest.approx(0.5 + 1e-5)


def test_modes_are_checked_naming_the_value():
    assert check_verify("Report") == "report"
    with pytest.raises(ValueError, match=r"verify must be one of gate, report, off; got 'strict'"):
        check_verify("strict")
    with pytest.raises(ValueError, match="verify must be one of"):
        CompileSettings(verify="yes")
    with pytest.raises(ValueError, match=r"verify_rtol must be a number > 0"):
        CompileSettings(verify_rtol=-1.0)
    assert CompileSettings().verify_arguments() == {}
    assert CompileSettings(verify="off", verify_rtol=0.1).verify_arguments() == {"verify": "off", "verify_rtol": 0.1}


# ----------------------------------------------------------------------------- the operator's verify_mode


def test_the_operators_verify_mode_reaches_the_compile(tmp_path):
    from airflow_neo.operators.neo import NeoCompilationOperator
    from airflow_neo.samples import write_sample_archive
    from tests.support.context import make_context
    from tests.support.requests import ROLE_ARN

    archive = write_sample_archive(tmp_path / "models" / "model.tar.gz")
    store = str(tmp_path / "store" / "jobs.sqlite")
    config = {
        "CompilationJobName": "verify-off",
        "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": archive.as_uri(), "Framework": "ONNX", "DataInputConfig": {"data": [1, 3, 32, 32]}},
        "OutputConfig": {"S3OutputLocation": (tmp_path / "out").as_uri(), "TargetPlatform": LINUX_X86_64},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }

    def operator(**kwargs):
        return NeoCompilationOperator(task_id="compile", backend="local", local_store=store, config=config,
                                      aws_conn_id=None, check_interval=0.5, **kwargs)

    with pytest.raises(ValueError, match=r"verify must be one of gate, report, off; got 'strict'"):
        operator(verify_mode="strict")
    assert operator(verify_mode="Report").verify_mode == "report"
    payload = operator(verify_mode="off").execute(make_context())
    assert payload["CompilationJobStatus"] == "COMPLETED"
    metadata = runtime.read_metadata(payload["ModelArtifacts"]["S3ModelArtifacts"])
    assert "verification" not in metadata and "profile" not in metadata  # off; tests/conftest.py: profile_seconds 0


def test_a_cached_artifact_without_the_checks_a_job_asks_for_is_not_a_hit(tmp_path):
    """A hit keeps the first compile's metadata: one compiled with the profile (or verification) off
    must not answer a job that asks for it (its max_slowdown gate would have no figures)."""
    case = models.onnx_cnn(tmp_path / "model")
    store_path = tmp_path / "state" / "jobs.db"
    cache = str(tmp_path / "cache")

    def job(name: str, **settings) -> tuple[dict, str]:
        final, payload = _real_job(store_path, case, tmp_path / name, name, CompileSettings(cache_dir=cache, **settings))
        assert final == st.COMPLETED, payload.get("FailureReason")
        [artifact] = list((tmp_path / name).iterdir())
        return runtime.read_metadata(artifact), JobStore(store_path).log_path(name).read_text()

    metadata, _ = job("unchecked", verify="off", profile_seconds=0)
    assert "verification" not in metadata and "profile" not in metadata
    metadata, log = job("profiled", profile_seconds=0.2)
    assert "lacks the verification and the profile this job asks for" in log
    assert metadata["verification"]["passed"] is True and metadata["profile"]["latency_ms"]["p50"] > 0
    # the job's profile_seconds reaches its compile (was test_profile.test_a_job_profiles_with_its_settings)
    profile = JobStore(store_path).compile_metadata("profiled")["profile"]
    assert profile["budget_seconds"] == 0.2 and profile["runs"] >= 1 and profile["warmup_runs"] == 1
    ms = profile["latency_ms"]
    assert 0 < ms["min"] <= ms["p50"] <= ms["p90"] <= ms["p99"] and ms["mean"] > 0
    metadata, log = job("profiled-again", profile_seconds=0.2)
    assert "compile cache hit" in log and "lacks" not in log
    assert metadata["profile"]["latency_ms"]["p50"] > 0


# ----------------------------------------------------------------------------- the user's sample inputs (verify_inputs)


def _real_job(store_path, case, out: Path, name: str, settings: CompileSettings, **kwargs) -> tuple[str, dict]:
    """A real local job (the TVM compiler in its spawn child)."""
    store = JobStore(store_path)
    store.create(models.make_request(case, target_platform=LINUX_X86_64, output_dir=out, job_name=name))
    final = runner.run_job(store_path, name, poll_interval=POLL, settings=settings, **kwargs)
    return final, store.describe(name)


def _record(artifact: Path) -> dict:
    import io

    with tarfile.open(artifact) as tar:
        with np.load(io.BytesIO(tar.extractfile("verification.npz").read())) as data:
            return {key: data[key] for key in data.files}


def test_verify_inputs_from_a_file_uri_are_used_recorded_and_part_of_the_cache_key(tmp_path):
    case = models.onnx_cnn(tmp_path / "model")
    store_path = tmp_path / "state" / "jobs.db"
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    np.savez(first, input0=np.full(models.CNN_SHAPE, 2.0, np.float32))
    np.savez(second, input0=np.full(models.CNN_SHAPE, -1.0, np.float32))
    cache = str(tmp_path / "cache")
    final, _ = _real_job(store_path, case, tmp_path / "out1", "user-inputs",
                         CompileSettings(verify_inputs=first.as_uri(), cache_dir=cache))
    assert final == st.COMPLETED
    [artifact] = list((tmp_path / "out1").iterdir())
    verification = runtime.read_metadata(artifact)["verification"]
    assert verification["inputs"] == first.as_uri() and verification["passed"] is True
    assert verification["record"] == "verification.npz"
    record = _record(artifact)
    assert sorted(record) == ["input:input0", "output:0"]
    assert np.array_equal(record["input:input0"], np.full(models.CNN_SHAPE, 2.0, np.float32))
    np.testing.assert_allclose(record["output:0"], case.reference({"input0": record["input:input0"]})[0], rtol=1e-6)
    # other sample inputs: not the artifact verified (and recorded) on the first ones
    final, _ = _real_job(store_path, case, tmp_path / "out2", "other-inputs",
                         CompileSettings(verify_inputs=str(second), cache_dir=cache))
    assert final == st.COMPLETED
    assert "compile cache miss" in JobStore(store_path).log_path("other-inputs").read_text()
    [artifact] = list((tmp_path / "out2").iterdir())
    assert runtime.read_metadata(artifact)["verification"]["inputs"] == str(second)
    # the same inputs again: a hit
    final, _ = _real_job(store_path, case, tmp_path / "out3", "same-inputs",
                         CompileSettings(verify_inputs=first.as_uri(), cache_dir=cache))
    assert final == st.COMPLETED
    assert "compile cache hit" in JobStore(store_path).log_path("same-inputs").read_text()


def test_verify_inputs_from_s3_and_a_uri_that_cannot_be_fetched(tmp_path):
    import boto3
    from moto import mock_aws

    case = models.onnx_cnn(tmp_path / "model")
    store_path = tmp_path / "state" / "jobs.db"
    local = tmp_path / "samples.npz"
    np.savez(local, input0=np.full(models.CNN_SHAPE, 0.5, np.float32))
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="samples")
        client.upload_file(str(local), "samples", "cnn/inputs.npz")
        missing = "s3://samples/cnn/missing.npz"
        final, job = _real_job(store_path, case, tmp_path / "out-missing", "missing-inputs",
                               CompileSettings(verify_inputs=missing), s3_client_factory=lambda: client)
        assert final == st.FAILED
        assert job["FailureReason"].startswith(f"ClientError: verify_inputs: could not download {missing}: "), job
        final, job = _real_job(store_path, case, tmp_path / "out", "s3-inputs",
                               CompileSettings(verify_inputs="s3://samples/cnn/inputs.npz"), s3_client_factory=lambda: client)
    assert final == st.COMPLETED, job.get("FailureReason")
    [artifact] = list((tmp_path / "out").iterdir())
    verification = runtime.read_metadata(artifact)["verification"]
    assert verification["inputs"] == "s3://samples/cnn/inputs.npz" and verification["passed"] is True
    assert np.array_equal(_record(artifact)["input:input0"], np.full(models.CNN_SHAPE, 0.5, np.float32))


def test_a_local_verify_inputs_uri_that_does_not_exist_fails_the_job(tmp_path):
    case = models.onnx_cnn(tmp_path / "model")
    store_path = tmp_path / "state" / "jobs.db"
    uri = (tmp_path / "nowhere.npz").as_uri()
    # fetched even with the compile cache off (its lookup is where the job fetches them)
    final, job = _real_job(store_path, case, tmp_path / "out", "no-inputs",
                           CompileSettings(verify_inputs=uri, cache_max_bytes=0))
    assert final == st.FAILED
    assert job["FailureReason"] == f"ClientError: verify_inputs: {uri} does not exist"
    assert not (tmp_path / "out").exists()


def test_verify_inputs_that_do_not_match_the_model_fail_naming_the_uri(tmp_path):
    case = models.onnx_cnn(tmp_path / "model")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input0=np.zeros([1, 3, 8, 8], np.float32))
    with pytest.raises(errors.ModelInputError, match=r"the sample input 'input0' in /.*/wrong.npz has shape \[1, 3, 8, 8\]; "
                                                      r"the model's input is \[1, 3, 16, 16\]"):
        _compile(case, tmp_path, verify_inputs=str(wrong))
    np.savez(wrong, image=np.zeros(models.CNN_SHAPE, np.float32))
    with pytest.raises(errors.ModelInputError, match=r"the sample inputs verify_inputs /.*/wrong.npz hold arrays \['image'\]"):
        _compile(case, tmp_path, verify_inputs=str(wrong))


def test_the_record_is_skipped_over_its_size_cap():
    from airflow_neo.local.verify import RECORD_MAX_BYTES, verification_record

    small = {"x": np.zeros(4, np.float32)}
    arrays, name, skipped = verification_record(small, [np.ones(2, np.float32)])
    assert name == "verification.npz" and skipped is None and sorted(arrays) == ["input:x", "output:0"]
    big = {"x": np.zeros(RECORD_MAX_BYTES // 4, np.float32)}
    arrays, name, skipped = verification_record(big, [np.ones(2, np.float32)])
    assert arrays is None and name is None
    assert skipped.startswith("the sample inputs and reference outputs take 16.0 MiB, more than the 16 MiB")


def test_verify_inputs_are_checked_naming_the_field():
    from airflow_neo.local.config import LocalJobConfig

    config = LocalJobConfig(store="/tmp/jobs.db", compile=CompileSettings(verify_inputs="file:///data/in.npz"))
    assert LocalJobConfig.from_json(config.to_json()) == config
    assert CompileSettings(verify_inputs="s3://samples/a/b.npz").verify_arguments() == {"verify_inputs": "s3://samples/a/b.npz"}
    for bad, why in (("inputs.npz", "only s3://, file:// URIs and absolute paths"), ("s3://samples/", "not an s3://bucket/key"),
                     ("/data/inputs.json", "does not end in .npz"), ("https://x/a.npz", "only s3://")):
        with pytest.raises(ValueError, match=rf"verify_inputs '{bad}'.*{why}"):
            CompileSettings(verify_inputs=bad)
