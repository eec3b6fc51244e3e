"""The command line on the local backend. Jobs are put in the store directly (no compile):
the store is what the operators, the runner and the command line all read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from airflow_neo.cli.app import COMMANDS, WAITERS
from airflow_neo.cli.model import params_of
from airflow_neo.core.service_model import input_shape, output_shape
from tests.cli.reference import (
    PAGE_OPTIONS,
    PAGE_OUTPUT_FIELDS,
    PAGE_TIMESTAMPS,
    assert_api_order,
    assert_iso_utc,
    leaf_paths,
)
from tests.support.requests import ROLE_ARN, valid_request

DESCRIBE = "describe-compilation-job"


def _full_request(name: str) -> dict:
    """Every CreateCompilationJob member that can go together, TargetPlatform variant."""
    return valid_request(
        name,
        InputConfig={
            "S3Uri": "s3://models/cnn/model.tar.gz",
            "DataInputConfig": '{"input0": [1, 3, 224, 224]}',
            "Framework": "PYTORCH",
            "FrameworkVersion": "2.0",
        },
        OutputConfig={
            "S3OutputLocation": "s3://models/compiled",
            "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
            "CompilerOptions": '{"gpu-code": "sm_72", "trt-ver": "8.0.1", "cuda-ver": "11.0"}',
            "KmsKeyId": "alias/neo",
        },
        VpcConfig={"SecurityGroupIds": ["sg-1", "sg-2"], "Subnets": ["subnet-1"]},
        StoppingCondition={"MaxRuntimeInSeconds": 900, "MaxWaitTimeInSeconds": 1200},
        Tags=[{"Key": "team", "Value": "vision"}],
    )


def _complete(store, name: str) -> None:
    store.mark_inprogress(name, socket.gethostname(), os.getpid(), 600)
    store.complete(name, f"s3://models/compiled/{name}.tar.gz", "ab" * 64, '{"input0": [1, 3, 224, 224]}')


# --------------------------------------------------------------------------- help


def test_help_for_every_command(cli):
    top = cli("--help")
    assert top.code == 0
    for name in [*COMMANDS, *(f"wait {w}" for w in WAITERS)]:
        assert name in top.out
        result = cli(*name.split(), "--help")
        assert result.code == 0, name
        operation = COMMANDS[name].operation if name in COMMANDS else WAITERS[name.split()[1]].operation
        for param in params_of(operation):
            assert param.option in result.out, (name, param.option)
        for option in ("--cli-input-json", "--cli-input-yaml", "--generate-cli-skeleton", "--backend", "--query", "--output"):
            assert option in result.out
        assert "252" in result.out and "254" in result.out
    assert "--delay" in cli("wait", "compilation-job-completed", "--help").out
    assert "--max-items" in cli("list-compilation-jobs", "--help").out
    describe_help = cli(DESCRIBE, "--help").out
    for option in PAGE_OPTIONS:
        assert option in describe_help
    for field in PAGE_OUTPUT_FIELDS:
        assert f"{field.split('.')[-1]} -> (" in describe_help, field
    assert cli("wait", "--help").code == 0 and cli("--version").code == 0


def test_python_dash_m_and_fast_help():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, runpy; sys.argv=['airflow_neo','--help']; runpy.run_module('airflow_neo', run_name='__main__')\n"
         "import json; print(json.dumps(sorted(m for m in ('airflow', 'botocore', 'tvm') if m in sys.modules)))"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0 and "create-compilation-job" in result.stdout
    module = subprocess.run([sys.executable, "-m", "airflow_neo", "nope"], capture_output=True, text=True)
    assert module.returncode == 252 and "Invalid choice 'nope'" in module.stderr
    light = subprocess.run(
        [sys.executable, "-c", "import sys, json\nfrom airflow_neo.cli import main\ntry:\n  main(['--help'])\nexcept SystemExit: pass\n"
         "print(json.dumps([m for m in ('airflow', 'botocore', 'tvm') if m in sys.modules]))"],
        capture_output=True, text=True,
    )
    assert json.loads(light.stdout.strip().splitlines()[-1]) == []


# --------------------------------------------------------------------------- describe


def test_describe_has_every_page_field_in_api_order(local, store):
    store.create(_full_request("full"))
    _complete(store, "full")
    failed = valid_request(
        "from-package", ModelPackageVersionArn="arn:aws:sagemaker:us-east-1:123456789012:model-package/pkg/1"
    )
    del failed["InputConfig"]
    store.create(failed)
    store.fail("from-package", "ClientError: the model package could not be read")

    seen: set[str] = set()
    for name in ("full", "from-package"):
        result = local(DESCRIBE, "--compilation-job-name", name)
        assert result.code == 0 and result.err == ""
        payload = result.json
        assert_api_order(payload, output_shape("DescribeCompilationJob"))
        for field in PAGE_TIMESTAMPS:
            if field in payload:
                assert_iso_utc(payload[field])
        seen |= leaf_paths(payload)
    # InferenceImage is SageMaker's (the local backend has no inference image): see the SageMaker tests.
    assert set(PAGE_OUTPUT_FIELDS) - {"InferenceImage"} <= seen
    plain = local(DESCRIBE, "--compilation-job-name", "from-package").json
    assert plain["CompilationJobStatus"] == "FAILED" and plain["FailureReason"].startswith("ClientError")
    full = local(DESCRIBE, "--compilation-job-name", "full").json
    assert full["ModelDigests"]["ArtifactDigest"] == "ab" * 64
    assert full["OutputConfig"]["TargetPlatform"] == {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}
    assert full["VpcConfig"] == {"SecurityGroupIds": ["sg-1", "sg-2"], "Subnets": ["subnet-1"]}
    assert full["StoppingCondition"] == {"MaxRuntimeInSeconds": 900, "MaxWaitTimeInSeconds": 1200}


def test_describe_is_the_store_payload(local, store):
    store.create(valid_request("same"))
    assert local(DESCRIBE, "--compilation-job-name", "same").json == store.describe("same")


def test_output_formats_and_query(local, store):
    store.create(valid_request("fmt"))
    as_json = local(DESCRIBE, "--compilation-job-name", "fmt", "--output", "json").json
    assert yaml.safe_load(local(DESCRIBE, "--compilation-job-name", "fmt", "--output", "yaml").out) == as_json
    text = local(DESCRIBE, "--compilation-job-name", "fmt", "--output", "text").out.splitlines()
    scalars = [str(v) for k, v in sorted(as_json.items()) if not isinstance(v, (dict, list))]
    assert text[0].split("\t") == scalars
    assert "INPUTCONFIG\t" in "\n".join(text) and "STOPPINGCONDITION\t900" in text
    table = local(DESCRIBE, "--compilation-job-name", "fmt", "--output", "table").out
    assert "DescribeCompilationJob" in table and "fmt" in table and "InputConfig" in table
    status = local(DESCRIBE, "--compilation-job-name", "fmt", "--query", "CompilationJobStatus", "--output", "text")
    assert status.out == "STARTING\n"
    picked = local(DESCRIBE, "--compilation-job-name", "fmt", "--query", "{name: CompilationJobName, s3: InputConfig.S3Uri}")
    assert picked.json == {"name": "fmt", "s3": "s3://models/resnet/model.tar.gz"}
    bad = local(DESCRIBE, "--compilation-job-name", "fmt", "--query", "InputConfig.[")
    assert bad.code == 252 and "--query" in bad.err and bad.out == ""


def test_global_options_before_the_command(cli, store, store_path):
    store.create(valid_request("before"))
    result = cli("--backend", "local", "--local-store", store_path, "--output", "text", "--query", "CompilationJobName",
                 DESCRIBE, "--compilation-job-name", "before")
    assert (result.code, result.out) == (0, "before\n")
    after = cli("--output", "json", DESCRIBE, "--compilation-job-name", "before", "--backend", "local",
                "--local-store", store_path, "--output", "text", "--query", "CompilationJobStatus")
    assert after.out == "STARTING\n"


def test_default_backend_and_store_come_from_the_neo_config(cli, store, store_path, monkeypatch):
    store.create(valid_request("configured"))
    monkeypatch.setenv("AIRFLOW__NEO__DEFAULT_BACKEND", "local")
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_STORE", store_path)
    result = cli(DESCRIBE, "--compilation-job-name", "configured", "--query", "CompilationJobName", "--output", "text")
    assert (result.code, result.out) == (0, "configured\n")
    monkeypatch.setenv("AIRFLOW__NEO__DEFAULT_BACKEND", "azure")
    bad = cli(DESCRIBE, "--compilation-job-name", "configured")
    assert bad.code == 253 and "default_backend" in bad.err
    assert cli(DESCRIBE, "--compilation-job-name", "configured", "--backend", "local", "--local-store", store_path).code == 0


# --------------------------------------------------------------------------- cli input, skeletons


def test_cli_input_json_yaml_and_the_override_rule(local, store, tmp_path):
    store.create(valid_request("in-file"))
    store.create(valid_request("on-line"))
    query = ("--query", "CompilationJobName", "--output", "text")
    assert local(DESCRIBE, "--cli-input-json", '{"CompilationJobName": "in-file"}', *query).out == "in-file\n"
    path = tmp_path / "input.yaml"
    path.write_text("CompilationJobName: in-file\n")
    assert local(DESCRIBE, "--cli-input-yaml", f"file://{path}", *query).out == "in-file\n"
    json_path = tmp_path / "input.json"
    json_path.write_text(json.dumps({"CompilationJobName": "in-file"}))
    assert local(DESCRIBE, "--cli-input-json", f"file://{json_path}", *query).out == "in-file\n"
    # A value on the command line overrides the file's.
    assert local(DESCRIBE, "--cli-input-json", f"file://{json_path}", "--compilation-job-name", "on-line", *query).out == "on-line\n"
    assert local(DESCRIBE, "--cli-input-yaml", f"file://{path}", "--compilation-job-name", "on-line", *query).out == "on-line\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--cli-input-json", "{}", "--cli-input-yaml", "{}"), "not allowed with argument --cli-input-json"),
        (("--cli-input-json", '{"CompilationJobName": '), "Error parsing parameter '--cli-input-json': Invalid JSON"),
        (("--cli-input-json", "[]"), "Error parsing parameter '--cli-input-json'"),
        (("--cli-input-yaml", "a: [1"), "Error parsing parameter '--cli-input-yaml'"),
        (("--cli-input-json", "file:///nonexistent/input.json"), "Unable to load paramfile"),
        (("--cli-input-json", '{"Bogus": 1}'), 'Unknown parameter in input: "Bogus"'),
        (("--cli-input-json", "{}"), 'Missing required parameter in input: "CompilationJobName"'),
        ((), "the following arguments are required: --compilation-job-name"),
        (("--compilation-job-name", "x", "--generate-cli-skeleton", "json"), "--generate-cli-skeleton"),
    ],
)
def test_usage_errors_exit_252(local, args, message):
    result = local(DESCRIBE, *args)
    assert result.code == 252 and message in result.err and result.out == ""


@pytest.mark.parametrize("name", list(COMMANDS))
def test_input_skeletons_have_every_parameter_empty(cli, name):
    operation = COMMANDS[name].operation
    skeleton = cli(name, "--generate-cli-skeleton").json
    same = cli(name, "--generate-cli-skeleton", "input").json
    shape = input_shape(operation)
    assert skeleton == same and list(skeleton) == list(shape.members)
    for leaf in leaf_paths(skeleton):
        value = skeleton
        for part in leaf.split("."):
            value = value[part]
        assert value in ("", 0, [""], [{"Key": "", "Value": ""}], "1970-01-01T00:00:00"), (leaf, value)
    yaml_text = cli(name, "--generate-cli-skeleton", "yaml-input").out
    assert yaml.safe_load(yaml_text) == skeleton
    for member in shape.required_members:
        assert any(line.startswith(f"{member}:") and "[REQUIRED]" in line for line in yaml_text.splitlines())


def test_create_skeleton_lists_every_create_parameter(cli):
    skeleton = cli("create-compilation-job", "--generate-cli-skeleton").json
    assert set(leaf_paths(skeleton)) == {
        "CompilationJobName", "RoleArn", "ModelPackageVersionArn", "InputConfig.S3Uri", "InputConfig.DataInputConfig",
        "InputConfig.Framework", "InputConfig.FrameworkVersion", "OutputConfig.S3OutputLocation", "OutputConfig.TargetDevice",
        "OutputConfig.TargetPlatform.Os", "OutputConfig.TargetPlatform.Arch", "OutputConfig.TargetPlatform.Accelerator",
        "OutputConfig.CompilerOptions", "OutputConfig.KmsKeyId", "VpcConfig.SecurityGroupIds", "VpcConfig.Subnets",
        "StoppingCondition.MaxRuntimeInSeconds", "StoppingCondition.MaxWaitTimeInSeconds",
        "StoppingCondition.MaxPendingTimeInSeconds", "Tags",
    }
    assert cli(DESCRIBE, "--generate-cli-skeleton").json == {"CompilationJobName": ""}
    # An input skeleton is printed whatever else is on the command line.
    assert cli(DESCRIBE, "--generate-cli-skeleton", "--cli-input-json", "{bad", "--query", "[").json == {"CompilationJobName": ""}


def test_output_skeleton_has_every_page_field_and_calls_nothing(cli, tmp_path):
    # An unreachable endpoint: any call would fail.
    args = ("--backend", "sagemaker", "--endpoint-url", "http://127.0.0.1:9")
    result = cli(DESCRIBE, "--compilation-job-name", "any", "--generate-cli-skeleton", "output", *args)
    assert result.code == 0
    sample = result.json
    assert set(PAGE_OUTPUT_FIELDS) <= leaf_paths(sample)
    assert_api_order(sample, output_shape("DescribeCompilationJob"))
    yaml_sample = cli(DESCRIBE, "--compilation-job-name", "any", "--generate-cli-skeleton", "output", "--output", "yaml", *args)
    assert yaml.safe_load(yaml_sample.out) == sample
    queried = cli(DESCRIBE, "--compilation-job-name", "any", "--generate-cli-skeleton", "output", "--query", "InputConfig.S3Uri", *args)
    assert queried.json == "S3Uri"
    # "output" validates the inputs first.
    missing = cli(DESCRIBE, "--generate-cli-skeleton", "output", *args)
    assert missing.code == 252 and "CompilationJobName" in missing.err
    listing = cli("list-compilation-jobs", "--generate-cli-skeleton", "output", *args).json
    assert list(listing) == ["CompilationJobSummaries", "NextToken"]
    assert cli("stop-compilation-job", "--compilation-job-name", "x", "--generate-cli-skeleton", "output", *args).out == ""
    store = tmp_path / "never" / "jobs.sqlite"
    assert cli(DESCRIBE, "--generate-cli-skeleton", "--backend", "local", "--local-store", str(store)).code == 0
    assert not store.exists()


# --------------------------------------------------------------------------- list


def test_list_filters_sort_and_pagination(local, store):
    import time

    for name in ("alpha-1", "beta-1", "alpha-2"):
        store.create(valid_request(name))
        time.sleep(0.01)
    store.request_stop("beta-1")
    everything = local("list-compilation-jobs")
    assert everything.code == 0
    summaries = everything.json["CompilationJobSummaries"]
    assert [s["CompilationJobName"] for s in summaries] == ["alpha-2", "beta-1", "alpha-1"]
    assert "NextToken" not in everything.json
    assert_api_order(summaries[0], output_shape("ListCompilationJobs").members["CompilationJobSummaries"].member)

    def names(*args):
        result = local("list-compilation-jobs", "--query", "CompilationJobSummaries[].CompilationJobName", *args)
        assert result.code == 0, result.err
        return result.json

    assert names("--name-contains", "ALPHA") == ["alpha-2", "alpha-1"]
    assert names("--status-equals", "STOPPING") == ["beta-1"]
    assert names("--sort-by", "Name", "--sort-order", "Ascending") == ["alpha-1", "alpha-2", "beta-1"]
    middle = store.describe("beta-1")
    assert names("--creation-time-after", middle["CreationTime"]) == ["alpha-2"]
    assert names("--creation-time-before", middle["CreationTime"]) == ["alpha-1"]
    assert names("--last-modified-time-after", middle["LastModifiedTime"]) == []
    assert names("--last-modified-time-before", middle["LastModifiedTime"]) == ["alpha-2", "alpha-1"]

    first = local("list-compilation-jobs", "--max-items", "2", "--page-size", "1").json
    assert [s["CompilationJobName"] for s in first["CompilationJobSummaries"]] == ["alpha-2", "beta-1"]
    rest = local("list-compilation-jobs", "--max-items", "2", "--starting-token", first["NextToken"]).json
    assert [s["CompilationJobName"] for s in rest["CompilationJobSummaries"]] == ["alpha-1"] and "NextToken" not in rest

    page = local("list-compilation-jobs", "--max-results", "1").json
    assert len(page["CompilationJobSummaries"]) == 1 and page["NextToken"]
    after = local("list-compilation-jobs", "--max-results", "2", "--next-token", page["NextToken"]).json
    assert [s["CompilationJobName"] for s in after["CompilationJobSummaries"]] == ["beta-1", "alpha-1"]
    assert len(local("list-compilation-jobs", "--no-paginate").json["CompilationJobSummaries"]) == 3

    text = local("list-compilation-jobs", "--output", "text", "--sort-by", "Name", "--sort-order", "Ascending").out.splitlines()
    assert [line.split("\t")[0] for line in text] == ["COMPILATIONJOBSUMMARIES"] * 3
    table = local("list-compilation-jobs", "--output", "table").out
    assert "ListCompilationJobs" in table and "CompilationJobSummaries" in table and "alpha-1" in table
    assert yaml.safe_load(local("list-compilation-jobs", "--output", "yaml").out) == everything.json


def test_list_errors(local):
    bad_status = local("list-compilation-jobs", "--status-equals", "Done")
    assert bad_status.code == 254 and "(ValidationException) when calling the ListCompilationJobs operation" in bad_status.err
    assert local("list-compilation-jobs", "--max-results", "0").code == 252
    assert local("list-compilation-jobs", "--max-items", "zero").code == 252
    assert local("list-compilation-jobs", "--creation-time-after", "not a time").code == 252
    # A token the store did not issue is rejected by the "service", as SageMaker does.
    assert local("list-compilation-jobs", "--starting-token", "garbage!").code == 254
    assert local("list-compilation-jobs", "--next-token", "garbage").code == 254


# --------------------------------------------------------------------------- stop, delete, wait


def test_stop_and_delete(local, store):
    store.create(valid_request("runs"))
    stop = local("stop-compilation-job", "--compilation-job-name", "runs")
    assert (stop.code, stop.out, stop.err) == (0, "", "")
    assert store.describe("runs")["CompilationJobStatus"] == "STOPPING"
    busy = local("delete-compilation-job", "--compilation-job-name", "runs")
    assert busy.code == 254
    assert "An error occurred (ValidationException) when calling the DeleteCompilationJob operation:" in busy.err
    store.mark_stopped("runs")
    again = local("stop-compilation-job", "--compilation-job-name", "runs")
    assert again.code == 254 and "when calling the StopCompilationJob operation" in again.err
    delete = local("delete-compilation-job", "--compilation-job-name", "runs")
    assert (delete.code, delete.out) == (0, "")
    gone = local(DESCRIBE, "--compilation-job-name", "runs")
    assert gone.code == 254 and gone.out == ""
    assert gone.err.strip() == (
        "An error occurred (ResourceNotFound) when calling the DescribeCompilationJob operation: "
        "Could not find compilation job 'runs' in the local job store " + str(store.path) + "."
    )
    for command in ("stop-compilation-job", "delete-compilation-job"):
        missing = local(command, "--compilation-job-name", "runs")
        assert missing.code == 254 and "(ResourceNotFound)" in missing.err


def test_wait(local, store):
    store.create(valid_request("done"))
    _complete(store, "done")
    ok = local("wait", "compilation-job-completed", "--compilation-job-name", "done", "--delay", "0")
    assert (ok.code, ok.out, ok.err) == (0, "", "")

    store.create(valid_request("broken"))
    store.fail("broken", "ClientError: bad model")
    failed = local("wait", "compilation-job-completed", "--compilation-job-name", "broken", "--delay", "0")
    assert failed.code == 255 and failed.out == ""
    assert (
        'Waiter CompilationJobCompleted failed: Waiter encountered a terminal failure state: For expression '
        '"CompilationJobStatus" we matched expected path: "FAILED"'
    ) in failed.err
    assert "ClientError: bad model" in failed.err

    store.create(valid_request("halted"))
    store.mark_stopped("halted")
    stopped = local("wait", "compilation-job-completed", "--cli-input-json", '{"CompilationJobName": "halted"}', "--delay", "0")
    assert stopped.code == 255 and 'expected path: "STOPPED"' in stopped.err

    store.create(valid_request("slow"))
    slow = local("wait", "compilation-job-completed", "--compilation-job-name", "slow", "--delay", "0.01", "--max-attempts", "3")
    assert slow.code == 255 and "Waiter CompilationJobCompleted failed: Max attempts exceeded" in slow.err

    missing = local("wait", "compilation-job-completed", "--compilation-job-name", "nope", "--delay", "0")
    assert missing.code == 255 and "Waiter CompilationJobCompleted failed: An error occurred (ResourceNotFound)" in missing.err

    assert local("wait", "compilation-job-completed").code == 252
    assert local("wait", "job-done", "--compilation-job-name", "x").code == 252
    assert local("wait", "compilation-job-completed", "--compilation-job-name", "x", "--max-attempts", "0").code == 252
    skeleton = local("wait", "compilation-job-completed", "--generate-cli-skeleton")
    assert skeleton.json == {"CompilationJobName": ""}


def test_other_exit_codes(cli, local):
    assert cli().code == 252
    assert cli("frobnicate-compilation-job").code == 252
    assert cli(DESCRIBE, "--compilation-job-name", "x", "--backend", "azure").code == 252
    unknown_conn = cli(DESCRIBE, "--compilation-job-name", "x", "--backend", "sagemaker", "--aws-conn-id", "no_such_conn")
    assert unknown_conn.code == 253 and "no_such_conn" in unknown_conn.err


def test_create_validation_failure_is_a_service_error_and_creates_nothing(local, store):
    result = local(
        "create-compilation-job", "--compilation-job-name", "bad_name", "--role-arn", ROLE_ARN,
        "--input-config", "S3Uri=s3://models/m.tar.gz,Framework=ONNX,DataInputConfig='{\"data\": [1, 3, 8, 8]}'",
        "--output-config", "S3OutputLocation=s3://models/out,TargetDevice=ml_c99",
        "--stopping-condition", "MaxRuntimeInSeconds=900",
    )
    assert result.code == 254
    assert result.err.startswith("\nAn error occurred (ValidationException) when calling the CreateCompilationJob operation: ")
    assert "CompilationJobName" in result.err and "OutputConfig.TargetDevice" in result.err
    assert store.list()["CompilationJobSummaries"] == []
    client_side = local(
        "create-compilation-job", "--compilation-job-name", "ok", "--role-arn", ROLE_ARN,
        "--output-config", "S3OutputLocation=s3://models/out,TargetDevice=ml_c5",
        "--stopping-condition", "MaxRuntimeInSeconds=soon",
    )
    assert client_side.code == 252 and "Parameter validation failed" in client_side.err
    bad_tags = local(
        "create-compilation-job", "--compilation-job-name", "ok", "--role-arn", ROLE_ARN,
        "--output-config", "S3OutputLocation=s3://models/out,TargetDevice=ml_c5",
        "--stopping-condition", "MaxRuntimeInSeconds=900", "--tags", "Key=team,Value=a", "team",
    )
    assert bad_tags.code == 252 and "Error parsing parameter '--tags': Expected: '='" in bad_tags.err
    assert store.list()["CompilationJobSummaries"] == []
