"""The command line on the SageMaker backend, against a moto server (``--endpoint-url``).

The moto extension moves a job STARTING -> INPROGRESS -> COMPLETED one step per describe;
names starting with ``fail-`` end FAILED; StopCompilationJob is implemented.
"""

from __future__ import annotations

import json

import pytest
import yaml

from airflow_neo.core.service_model import output_shape
from tests.cli.reference import PAGE_OUTPUT_FIELDS, PAGE_TIMESTAMPS, assert_api_order, assert_iso_utc, leaf_paths
from tests.support.requests import ROLE_ARN, valid_request

DESCRIBE = "describe-compilation-job"
PACKAGE_ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/neo-pkg/1"


@pytest.fixture
def sm(cli, moto_reset, aws_env, shared_botocore_loader):
    """The CLI on the SageMaker backend of the moto server (no Airflow connection: the AWS environment)."""

    def run(*args: str):
        return cli(*args, "--backend", "sagemaker", "--endpoint-url", moto_reset)

    return run


def _create_full(sm, name: str):
    return sm(
        "create-compilation-job",
        "--compilation-job-name", name,
        "--role-arn", ROLE_ARN,
        "--input-config",
        '{"S3Uri": "s3://models/cnn/model.tar.gz", "DataInputConfig": "{\\"input0\\": [1, 3, 224, 224]}", '
        '"Framework": "PYTORCH", "FrameworkVersion": "2.0"}',
        "--output-config",
        "S3OutputLocation=s3://models/compiled,TargetPlatform={Os=LINUX,Arch=ARM64,Accelerator=NVIDIA},"
        "CompilerOptions='{\"gpu-code\": \"sm_72\", \"trt-ver\": \"8.0.1\", \"cuda-ver\": \"11.0\"}',KmsKeyId=alias/neo",
        "--vpc-config", "SecurityGroupIds=sg-1,sg-2,Subnets=subnet-1",
        "--stopping-condition", "MaxRuntimeInSeconds=900,MaxWaitTimeInSeconds=1200",
        "--tags", "Key=team,Value=vision", "Key=stage,Value=dev",
    )


def test_create_describe_every_field(sm):
    created = _create_full(sm, "full")
    assert created.code == 0, created.err
    assert created.json == {"CompilationJobArn": "arn:aws:sagemaker:us-east-1:123456789012:compilation-job/full"}
    statuses = [sm(DESCRIBE, "--compilation-job-name", "full", "--query", "CompilationJobStatus", "--output", "text").out
                for _ in range(2)]
    assert statuses == ["STARTING\n", "INPROGRESS\n"]
    done = sm(DESCRIBE, "--compilation-job-name", "full")
    assert done.code == 0 and done.err == ""
    payload = done.json
    assert payload["CompilationJobStatus"] == "COMPLETED"
    assert_api_order(payload, output_shape("DescribeCompilationJob"))
    for field in PAGE_TIMESTAMPS:
        assert_iso_utc(payload[field])
    assert payload["InputConfig"] == {
        "S3Uri": "s3://models/cnn/model.tar.gz", "DataInputConfig": '{"input0": [1, 3, 224, 224]}',
        "Framework": "PYTORCH", "FrameworkVersion": "2.0",
    }
    assert payload["OutputConfig"]["TargetPlatform"] == {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}
    assert json.loads(payload["OutputConfig"]["CompilerOptions"])["gpu-code"] == "sm_72"
    assert payload["VpcConfig"] == {"SecurityGroupIds": ["sg-1", "sg-2"], "Subnets": ["subnet-1"]}
    assert payload["StoppingCondition"] == {"MaxRuntimeInSeconds": 900, "MaxWaitTimeInSeconds": 1200}

    failing = sm(
        "create-compilation-job", "--compilation-job-name", "fail-pkg", "--role-arn", ROLE_ARN,
        "--model-package-version-arn", PACKAGE_ARN,
        "--output-config", "S3OutputLocation=s3://models/compiled,TargetDevice=ml_c5",
        "--stopping-condition", "MaxRuntimeInSeconds=900",
    )
    assert failing.code == 0, failing.err
    waited = sm("wait", "compilation-job-completed", "--compilation-job-name", "fail-pkg", "--delay", "0")
    assert waited.code == 255 and 'we matched expected path: "FAILED"' in waited.err
    failed = sm(DESCRIBE, "--compilation-job-name", "fail-pkg").json
    assert failed["CompilationJobStatus"] == "FAILED" and failed["FailureReason"]
    assert failed["ModelPackageVersionArn"] == PACKAGE_ARN
    assert_api_order(failed, output_shape("DescribeCompilationJob"))

    assert set(PAGE_OUTPUT_FIELDS) <= leaf_paths(payload) | leaf_paths(failed)
    # Every output format of the same payload.
    assert yaml.safe_load(sm(DESCRIBE, "--compilation-job-name", "full", "--output", "yaml").out) == payload
    text = sm(DESCRIBE, "--compilation-job-name", "full", "--output", "text").out.splitlines()
    assert "VPCCONFIG\tsg-1" not in text and "SECURITYGROUPIDS\tsg-1" in text and "TARGETPLATFORM\tNVIDIA\tARM64\tLINUX" in text
    table = sm(DESCRIBE, "--compilation-job-name", "full", "--output", "table").out
    assert "DescribeCompilationJob" in table and "TargetPlatform" in table and "alias/neo" in table


def test_wait_success_and_override_rule_for_create(sm, tmp_path):
    request = valid_request("from-file", Tags=[{"Key": "team", "Value": "vision"}])
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    created = sm("create-compilation-job", "--cli-input-json", f"file://{path}",
                 "--compilation-job-name", "on-line", "--stopping-condition", "MaxRuntimeInSeconds=1800")
    assert created.code == 0, created.err
    assert created.json["CompilationJobArn"].endswith("/on-line")
    ok = sm("wait", "compilation-job-completed", "--compilation-job-name", "on-line", "--delay", "0")
    assert (ok.code, ok.out) == (0, "")
    job = sm(DESCRIBE, "--compilation-job-name", "on-line").json
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800}  # the command line's value
    assert job["InputConfig"] == request["InputConfig"] and job["RoleArn"] == ROLE_ARN  # the file's values
    assert sm(DESCRIBE, "--compilation-job-name", "from-file").code == 254

    yaml_path = tmp_path / "request.yaml"
    yaml_path.write_text(yaml.safe_dump(valid_request("from-yaml")))
    assert sm("create-compilation-job", "--cli-input-yaml", f"file://{yaml_path}").code == 0
    assert sm(DESCRIBE, "--compilation-job-name", "from-yaml", "--query", "CompilationJobName").json == "from-yaml"


def test_service_errors(sm):
    missing = sm(DESCRIBE, "--compilation-job-name", "nope")
    assert missing.code == 254 and missing.out == ""
    assert missing.err == (
        "\nAn error occurred (ResourceNotFound) when calling the DescribeCompilationJob operation: "
        "Could not find compilation job 'nope'.\n"
    )
    assert sm("create-compilation-job", "--cli-input-json", json.dumps(valid_request("dup"))).code == 0
    duplicate = sm("create-compilation-job", "--cli-input-json", json.dumps(valid_request("dup")))
    assert duplicate.code == 254
    assert "An error occurred (ResourceInUse) when calling the CreateCompilationJob operation" in duplicate.err
    invalid = sm("create-compilation-job", "--cli-input-json", json.dumps(valid_request("bad", RoleArn="not-an-arn-but-long-enough")))
    assert invalid.code == 254 and "(ValidationException) when calling the CreateCompilationJob operation" in invalid.err
    assert "RoleArn" in invalid.err
    names = sm("list-compilation-jobs", "--query", "CompilationJobSummaries[].CompilationJobName").json
    assert names == ["dup"]


def test_stop_and_delete(sm):
    assert sm("create-compilation-job", "--cli-input-json", json.dumps(valid_request("stop-me"))).code == 0
    assert sm(DESCRIBE, "--compilation-job-name", "stop-me").json["CompilationJobStatus"] == "STARTING"
    stop = sm("stop-compilation-job", "--compilation-job-name", "stop-me")
    assert (stop.code, stop.out, stop.err) == (0, "", "")
    early = sm("delete-compilation-job", "--compilation-job-name", "stop-me")
    assert early.code == 254 and "when calling the DeleteCompilationJob operation" in early.err
    seen = [sm(DESCRIBE, "--compilation-job-name", "stop-me", "--query", "CompilationJobStatus").json for _ in range(2)]
    assert seen == ["STOPPING", "STOPPED"]
    stopped_wait = sm("wait", "compilation-job-completed", "--compilation-job-name", "stop-me", "--delay", "0")
    assert stopped_wait.code == 255 and '"STOPPED"' in stopped_wait.err
    again = sm("stop-compilation-job", "--compilation-job-name", "stop-me")
    assert again.code == 254 and "(ValidationException) when calling the StopCompilationJob operation" in again.err
    assert sm("delete-compilation-job", "--compilation-job-name", "stop-me").code == 0
    assert "(ResourceNotFound)" in sm("delete-compilation-job", "--compilation-job-name", "stop-me").err


def test_list_pagination_and_filters(sm):
    for name in ("job-a", "job-b", "other-c"):
        assert sm("create-compilation-job", "--cli-input-json", json.dumps(valid_request(name))).code == 0
    listed = sm("list-compilation-jobs", "--sort-by", "Name", "--sort-order", "Ascending")
    assert [s["CompilationJobName"] for s in listed.json["CompilationJobSummaries"]] == ["job-a", "job-b", "other-c"]
    assert_api_order(listed.json["CompilationJobSummaries"][0],
                     output_shape("ListCompilationJobs").members["CompilationJobSummaries"].member)
    first = sm("list-compilation-jobs", "--sort-by", "Name", "--sort-order", "Ascending", "--max-items", "2", "--page-size", "1").json
    assert [s["CompilationJobName"] for s in first["CompilationJobSummaries"]] == ["job-a", "job-b"]
    rest = sm("list-compilation-jobs", "--sort-by", "Name", "--sort-order", "Ascending", "--starting-token", first["NextToken"]).json
    assert [s["CompilationJobName"] for s in rest["CompilationJobSummaries"]] == ["other-c"]
    contains = sm("list-compilation-jobs", "--name-contains", "job", "--query", "length(CompilationJobSummaries)")
    assert contains.json == 2
    page = sm("list-compilation-jobs", "--max-results", "1").json
    assert len(page["CompilationJobSummaries"]) == 1 and page["NextToken"]


def test_connection_options(cli, moto_reset, aws_conn_env, shared_botocore_loader):
    """--aws-conn-id alone, with --endpoint-url on top, and --region."""
    created = cli("create-compilation-job", "--cli-input-json", json.dumps(valid_request("via-conn")),
                  "--backend", "sagemaker", "--aws-conn-id", aws_conn_env)
    assert created.code == 0, created.err
    both = cli(DESCRIBE, "--compilation-job-name", "via-conn", "--backend", "sagemaker",
               "--aws-conn-id", aws_conn_env, "--endpoint-url", moto_reset, "--query", "CompilationJobName")
    assert both.json == "via-conn"
    regional = cli("create-compilation-job", "--cli-input-json", json.dumps(valid_request("in-eu")),
                   "--backend", "sagemaker", "--endpoint-url", moto_reset, "--region", "eu-west-1")
    assert ":eu-west-1:" in regional.json["CompilationJobArn"]
    import os

    assert "AIRFLOW_CONN_AIRFLOW_NEO_CLI" not in os.environ


def test_default_backend_is_sagemaker(cli, moto_reset, aws_env, shared_botocore_loader):
    assert cli("create-compilation-job", "--cli-input-json", json.dumps(valid_request("default")),
               "--endpoint-url", moto_reset).code == 0
    assert cli(DESCRIBE, "--compilation-job-name", "default", "--endpoint-url", moto_reset).code == 0


def test_debug_logs_go_to_stderr_and_no_verify_ssl(sm):
    quiet = sm("create-compilation-job", "--cli-input-json", json.dumps(valid_request("quiet")))
    assert quiet.code == 0 and quiet.err == ""
    loud = sm("create-compilation-job", "--cli-input-json", json.dumps(valid_request("loud")), "--debug", "--no-verify-ssl")
    assert loud.code == 0
    assert json.loads(loud.out) == {"CompilationJobArn": "arn:aws:sagemaker:us-east-1:123456789012:compilation-job/loud"}
    # (Where the log lines go under pytest is pytest's business; the console-script test checks stderr.)


def test_connection_from_the_metadata_database(cli, moto_reset, aws_env, shared_botocore_loader, monkeypatch):
    """The Task SDK's lookup does not read the metadata database outside a task; the CLI falls back to it."""
    from airflow.models.connection import Connection

    stored = Connection(conn_id="db_only", conn_type="aws", extra=json.dumps({"endpoint_url": moto_reset}))
    looked_up = []

    def from_database(cls, conn_id):
        looked_up.append(conn_id)
        if conn_id != "db_only":
            raise LookupError(conn_id)
        return stored

    monkeypatch.setattr(Connection, "get_connection_from_secrets", classmethod(from_database))
    created = cli("create-compilation-job", "--cli-input-json", json.dumps(valid_request("from-db")),
                  "--backend", "sagemaker", "--aws-conn-id", "db_only")
    assert created.code == 0, created.err
    assert created.json["CompilationJobArn"].endswith("/from-db") and "db_only" in looked_up
    missing = cli("list-compilation-jobs", "--backend", "sagemaker", "--aws-conn-id", "not_anywhere")
    assert missing.code == 253 and "not_anywhere" in missing.err


def test_no_region_points_a_local_user_to_the_local_backend(cli, monkeypatch, tmp_path):
    """The default backend is sagemaker: without a region the error says how to reach local jobs."""
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    missing = cli(DESCRIBE, "--compilation-job-name", "sample-cnn-x86-64", "--aws-conn-id", "")
    assert missing.code == 253, missing.err
    assert "You must specify a region." in missing.err
    assert "--backend local" in missing.err and "AIRFLOW__NEO__DEFAULT_BACKEND=local" in missing.err
