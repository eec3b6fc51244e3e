"""``airflow-neo describe-compilation-report`` on local jobs (artifacts on disk and in S3) and SageMaker."""

from __future__ import annotations

import json
import os
import socket

import boto3
import pytest
from botocore.config import Config

from tests.local.models import write_archive
from tests.support.requests import valid_request

REPORT = "describe-compilation-report"
LATENCY = {"p50": 4.0, "p90": 5.0, "p99": 6.0, "mean": 4.2, "min": 3.9}
METADATA = {
    "schema_version": 1,
    "framework": "ONNX",
    "verification": {
        "mode": "gate", "inputs": "random (seed 0)", "reference": "onnxruntime 1.32.0", "passed": True, "seconds": 0.2,
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 10], "max_abs_diff": 2e-7,
                     "max_rel_diff": 1e-7, "tolerance": 1e-4, "passed": True}],
    },
    "profile": {
        "budget_seconds": 2.0, "load_seconds": 0.01, "threads": 2, "runs": 250, "latency_ms": LATENCY,
        "peak_rss_mb": 300.0, "top_kernels": [{"name": "fused_conv2d", "calls": 1, "total_ms": 3.0, "percent": 75.0}],
        "baseline": {"name": "onnxruntime 1.32.0", "latency_ms": {**LATENCY, "p50": 2.0}, "runs": 500}, "speedup": 0.5,
    },
}


def _artifact(directory) -> bytes:
    path = write_archive(directory, {"model.so": b"\x7fELF", "metadata.json": json.dumps(METADATA).encode()},
                         name="model-ml_c5.tar.gz")
    return path.read_bytes()


def _completed(store, name: str, artifact: str) -> None:
    store.create(valid_request(name))
    store.mark_inprogress(name, socket.gethostname(), os.getpid(), 600)
    store.complete(name, artifact, "ab" * 64, '{"input0": [1, 3, 224, 224]}')


def test_report_of_a_local_job_as_json_text_and_query(local, store, tmp_path):
    _artifact(tmp_path)
    _completed(store, "rep", (tmp_path / "model-ml_c5.tar.gz").as_uri())
    result = local(REPORT, "--compilation-job-name", "rep")
    assert result.code == 0, result.err
    report = result.json
    assert report["job"] == "rep" and report["available"] is True and report["target"] == "ml_c5"
    assert report["verification"]["passed"] is True and report["profile"]["p50_ms"] == 4.0
    assert report["profile"]["speedup"] == 0.5 and report["profile"]["slowdown"] == 2.0

    text = local(REPORT, "--compilation-job-name", "rep", "--output", "text")
    assert text.code == 0 and text.out.startswith("Compilation job rep COMPLETED: ONNX for ml_c5")
    assert "verification (gate): passed against onnxruntime 1.32.0" in text.out
    assert "speedup 0.5x (slowdown 2x)" in text.out and "top kernels: fused_conv2d 75.0%" in text.out
    assert local(REPORT, "--compilation-job-name", "rep", "--query", "profile.slowdown", "--output", "text").out == "2.0\n"


def test_report_of_a_job_that_did_not_complete_and_a_missing_job(local, store):
    failed = valid_request("rep-failed")
    store.create(failed)
    store.fail("rep-failed", "ClientError: InputConfiguration: not a valid .tar.gz")
    report = local(REPORT, "--compilation-job-name", "rep-failed").json
    assert report["status"] == "FAILED" and report["available"] is False and "FAILED" in report["reason"]
    assert report["failure_reason"] == "ClientError: InputConfiguration: not a valid .tar.gz"
    missing = local(REPORT, "--compilation-job-name", "nope")
    assert missing.code == 254 and "ResourceNotFound" in missing.err and "DescribeCompilationJob" in missing.err


def test_report_of_an_s3_artifact_reads_through_the_aws_connection(local, store, tmp_path, aws_conn_env, moto_reset):
    s3 = boto3.client("s3", endpoint_url=moto_reset, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}))
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="compiled/model-ml_c5.tar.gz", Body=_artifact(tmp_path))
    _completed(store, "rep-s3", "s3://models/compiled/model-ml_c5.tar.gz")
    result = local(REPORT, "--compilation-job-name", "rep-s3", "--aws-conn-id", aws_conn_env)
    assert result.code == 0, result.err
    assert result.json["available"] is True and result.json["profile"]["baseline"]["p50_ms"] == 2.0


@pytest.mark.parametrize("skeleton", ["input", "output"])
def test_help_and_skeletons(cli, skeleton):
    help_text = cli(REPORT, "--help").out
    assert "--compilation-job-name" in help_text and "neo_report" in help_text and "Not an AWS operation" in help_text
    assert REPORT in cli("--help").out
    printed = cli(REPORT, "--generate-cli-skeleton", skeleton, "--compilation-job-name", "x").json
    if skeleton == "input":
        assert printed == {"CompilationJobName": ""}
    else:
        assert {"job", "status", "available", "verification", "profile"} <= set(printed)
        assert {"p50_ms", "speedup", "slowdown", "baseline", "top_kernels"} <= set(printed["profile"])
