"""NeoVerifyArtifactOperator: a real artifact (the small CNN of tests/local/models.py, compiled
for this host), checked by ``execute`` for the gate, report mode, S3 through an Airflow AWS
connection (moto), a library that crashes its check process (the task fails naming the signal) and
argument checks. The operator in a real task context (``airflow dags test``: its template rendered
from the compile's XCom, the report pushed to XCom and pulled by a downstream task) runs in the DAG
of tests/operators/test_report_assets.py, which shares that run's Airflow database and DAG run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from airflow.sdk.exceptions import AirflowException
from airflow_neo.local.compiler import compile_model
from airflow_neo.operators.verify import NeoVerifyArtifactOperator
from tests.local import models, native_libraries
from tests.support.context import make_context

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict:
    """The compiled CNN, and a copy whose recorded reference output was scaled by 1.5."""
    root = tmp_path_factory.mktemp("verify-operator")
    case = models.onnx_cnn(root / "model")
    good = root / "good.tar.gz"
    compile_model(models.make_request(case, target_platform={"Os": "LINUX", "Arch": "X86_64"}), str(case.archive),
                  str(good), log=lambda line: None)
    with tarfile.open(good) as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
    with np.load(io.BytesIO(members["verification.npz"])) as data:
        record = {key: data[key] for key in data.files}
    record["output:0"] = record["output:0"] * np.float32(1.5)
    buffer = io.BytesIO()
    np.savez(buffer, **record)
    members["verification.npz"] = buffer.getvalue()
    wrong = root / "wrong.tar.gz"
    with tarfile.open(wrong, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {"good": good, "wrong": wrong}


def _operator(artifact_uri: str, **kwargs) -> NeoVerifyArtifactOperator:
    kwargs.setdefault("aws_conn_id", None)
    kwargs.setdefault("profile_seconds", 0)
    return NeoVerifyArtifactOperator(task_id="verify", artifact_uri=artifact_uri, **kwargs)


def test_the_gate_fails_the_task_with_the_figures_and_report_mode_returns_them(artifacts):
    with pytest.raises(AirflowException, match=r"failed verification on this worker: ClientError: AccuracyCheckFailed: "
                                               r"output output0: max abs diff \S+ > tolerance \S+ \(reference: onnxruntime"):
        _operator(str(artifacts["wrong"])).execute(make_context())
    report = _operator(str(artifacts["wrong"]), verify_mode="report").execute(make_context())
    assert report["verification"]["passed"] is False
    assert json.loads(json.dumps(report)) == report


def test_a_library_that_crashes_fails_the_task_and_not_the_worker(artifacts, tmp_path):
    with tarfile.open(artifacts["good"]) as tar:
        members = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
    members["model.so"] = native_libraries.misbehaving_library(tmp_path, "segfault")
    crashing = tmp_path / "crashing.tar.gz"
    with tarfile.open(crashing, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(AirflowException, match=r"failed verification on this worker: ServerError: the artifact's library "
                                               r"crashed the check process \(signal 11: SIGSEGV\)"):
        _operator(str(crashing), check_timeout_seconds=120).execute(make_context())


def test_s3_locations_go_through_the_aws_connection(artifacts, tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AIRFLOW_CONN_NEO_S3", json.dumps({"conn_type": "aws", "extra": {"region_name": "us-east-1"}}))
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, input0=np.ones(models.CNN_SHAPE, np.float32))
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="deploy")
        s3.upload_file(str(artifacts["good"]), "deploy", "cnn.tar.gz")
        s3.upload_file(str(inputs), "deploy", "inputs.npz")
        report = _operator("s3://deploy/cnn.tar.gz", verify_inputs="s3://deploy/inputs.npz",
                           aws_conn_id="neo_s3").execute(make_context())
    assert report["artifact"] == "s3://deploy/cnn.tar.gz"
    assert report["verification"]["inputs"] == "s3://deploy/inputs.npz" and report["verification"]["passed"] is None
    assert "no outputs were recorded for these inputs" in report["verification"]["not_compared"]


def test_arguments_are_checked_naming_them():
    with pytest.raises(ValueError, match=r"verify must be one of gate, report, off; got 'strict'"):
        _operator("/a.tar.gz", verify_mode="strict")
    with pytest.raises(ValueError, match=r"verify_inputs 'inputs.npz': only s3://"):
        _operator("/a.tar.gz", verify_inputs="inputs.npz")
    with pytest.raises(ValueError, match=r"profile_seconds must be a number >= 0; got -1"):
        _operator("/a.tar.gz", profile_seconds=-1)
    with pytest.raises(ValueError, match=r"verify_rtol must be a number > 0 \(or None\); got 0"):
        _operator("/a.tar.gz", verify_rtol=0)
    with pytest.raises(ValueError, match=r"check_timeout_seconds must be a number > 0; got 0"):
        _operator("/a.tar.gz", check_timeout_seconds=0)
    templated = _operator("{{ ti.xcom_pull('compile')['ModelArtifacts']['S3ModelArtifacts'] }}",
                          verify_inputs="{{ params.inputs }}", verify_mode="{{ params.mode }}")
    assert templated.verify_mode == "{{ params.mode }}"
    assert set(NeoVerifyArtifactOperator.template_fields) == {"artifact_uri", "verify_inputs", "verify_mode"}


def test_importing_the_operator_is_cheap():
    code = ("import sys, json\nimport airflow_neo.operators.verify\n"
            "print(json.dumps([m for m in ('tvm', 'onnx', 'onnxruntime', 'torch', 'boto3') if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
