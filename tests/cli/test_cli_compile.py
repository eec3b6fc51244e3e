"""One real local compile driven through the installed ``airflow-neo`` console script."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_neo.samples import sample_data_input_config, write_sample_archive
from tests.cli.reference import PAGE_TIMESTAMPS, assert_api_order, assert_iso_utc
from tests.support.requests import ROLE_ARN

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tvm") is None, reason="the local backend needs apache-tvm")


def _console_script() -> str:
    script = Path(sys.executable).with_name("airflow-neo")
    if script.exists():
        return str(script)
    found = shutil.which("airflow-neo")
    if not found:
        pytest.skip("the airflow-neo console script is not installed (pip install -e .)")
    return found


def test_console_script_creates_waits_and_describes_a_local_compile(tmp_path, local, store_path):
    archive = write_sample_archive(tmp_path / "model.tar.gz")
    store = Path(store_path)
    script = _console_script()
    env = {**os.environ, "AIRFLOW__NEO__DEFAULT_BACKEND": "local", "AIRFLOW__NEO__LOCAL_STORE": str(store)}
    data_input = json.dumps(json.dumps(sample_data_input_config()))  # a JSON string, quoted for shorthand
    created = subprocess.run(
        [
            script, "create-compilation-job",
            "--compilation-job-name", "cli-cnn",
            "--role-arn", ROLE_ARN,
            "--input-config", f"S3Uri=file://{archive},DataInputConfig={data_input},Framework=ONNX",
            "--output-config", f"S3OutputLocation=file://{tmp_path / 'out'},TargetDevice=ml_c5",
            "--stopping-condition", "MaxRuntimeInSeconds=300",
            "--tags", "Key=team,Value=vision",
        ],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {"CompilationJobArn": "arn:aws:sagemaker:local:000000000000:compilation-job/cli-cnn"}
    assert created.stderr == ""

    waited = subprocess.run(
        [script, "wait", "compilation-job-completed", "--compilation-job-name", "cli-cnn", "--delay", "1", "--max-attempts", "120",
         "--debug"],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert waited.returncode == 0, waited.stderr + (tmp_path / "store" / "logs" / "cli-cnn.log").read_text()
    assert waited.stdout == "" and "Compilation job cli-cnn is COMPLETED" in waited.stderr  # --debug: logs on stderr

    # The same job, read in-process from the store the console script wrote to.
    described = local("describe-compilation-job", "--compilation-job-name", "cli-cnn")
    payload = described.json
    assert payload["CompilationJobStatus"] == "COMPLETED"
    from airflow_neo.core.service_model import output_shape

    assert_api_order(payload, output_shape("DescribeCompilationJob"))
    for field in PAGE_TIMESTAMPS:
        assert_iso_utc(payload[field])
    artifact = payload["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact.startswith("file://") and Path(artifact[len("file://"):]).is_file()
    assert len(payload["ModelDigests"]["ArtifactDigest"]) == 128
    assert json.loads(payload["InputConfig"]["DataInputConfig"]) == sample_data_input_config()

    listed = local("list-compilation-jobs", "--output", "text", "--query", "CompilationJobSummaries[].[CompilationJobName,CompilationJobStatus]")
    assert (listed.code, listed.out) == (0, "cli-cnn\tCOMPLETED\n")
    deleted = local("delete-compilation-job", "--compilation-job-name", "cli-cnn")
    assert (deleted.code, deleted.out) == (0, "")
    missing = local("describe-compilation-job", "--compilation-job-name", "cli-cnn")
    assert missing.code == 254 and "(ResourceNotFound)" in missing.err
