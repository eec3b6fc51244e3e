from __future__ import annotations

import json

import pytest

from airflow_neo.core.exceptions import InvalidCompilationRequest
from airflow_neo.core.service_model import frameworks, target_devices
from airflow_neo.core.validation import normalize_request
from tests.support.requests import valid_request


def _with(path: str, value):
    """A valid request with one member (dotted path) set to ``value`` (None deletes it)."""
    request = valid_request()
    *parents, leaf = path.split(".")
    node = request
    for key in parents:
        node = node[key]
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return request


PLATFORM = {"Os": "LINUX", "Arch": "X86_64"}

# (case id, request, field path the error must name)
BAD_REQUESTS = [
    ("name-missing", _with("CompilationJobName", None), "CompilationJobName"),
    ("name-too-long", _with("CompilationJobName", "a" * 64), "CompilationJobName"),
    ("name-bad-chars", _with("CompilationJobName", "bad_name!"), "CompilationJobName"),
    ("name-leading-dash", _with("CompilationJobName", "-abc"), "CompilationJobName"),
    ("role-missing", _with("RoleArn", None), "RoleArn"),
    ("role-not-arn", _with("RoleArn", "arn:aws:iam::12:user/x-long-enough-value"), "RoleArn"),
    ("input-and-package", _with("ModelPackageVersionArn", "arn:aws:sagemaker:us-east-1:123456789012:model-package/p/1"), "InputConfig|ModelPackageVersionArn"),
    ("neither-input-nor-package", _with("InputConfig", None), "InputConfig|ModelPackageVersionArn"),
    ("s3uri-missing", _with("InputConfig.S3Uri", None), "InputConfig.S3Uri"),
    ("s3uri-bad-scheme", _with("InputConfig.S3Uri", "ftp://bucket/model.tar.gz"), "InputConfig.S3Uri"),
    ("s3uri-local-path-on-sagemaker", _with("InputConfig.S3Uri", "/tmp/model.tar.gz"), "InputConfig.S3Uri"),
    ("s3uri-too-long", _with("InputConfig.S3Uri", "s3://b/" + "k" * 1100), "InputConfig.S3Uri"),
    ("framework-unknown", _with("InputConfig.Framework", "CAFFE"), "InputConfig.Framework"),
    ("framework-lowercase", _with("InputConfig.Framework", "onnx"), "InputConfig.Framework"),
    ("data-input-not-json", _with("InputConfig.DataInputConfig", "{data: [1,3]}"), "InputConfig.DataInputConfig"),
    ("data-input-list-form-for-onnx", _with("InputConfig.DataInputConfig", "[[1, 3, 224, 224]]"), "InputConfig.DataInputConfig"),
    ("data-input-negative-dim", _with("InputConfig.DataInputConfig", {"data": [1, -3, 224, 224]}), "InputConfig.DataInputConfig"),
    ("data-input-empty", _with("InputConfig.DataInputConfig", "{}"), "InputConfig.DataInputConfig"),
    ("framework-version-pattern", _with("InputConfig.FrameworkVersion", "latest"), "InputConfig.FrameworkVersion"),
    ("framework-version-too-long", _with("InputConfig.FrameworkVersion", "1.2.3.4.5.6.7"), "InputConfig.FrameworkVersion"),
    ("output-missing", _with("OutputConfig", None), "OutputConfig"),
    ("output-location-missing", _with("OutputConfig.S3OutputLocation", None), "OutputConfig.S3OutputLocation"),
    ("device-and-platform", _with("OutputConfig.TargetPlatform", PLATFORM), "OutputConfig.TargetDevice|TargetPlatform"),
    ("neither-device-nor-platform", _with("OutputConfig.TargetDevice", None), "OutputConfig.TargetDevice|TargetPlatform"),
    ("device-unknown", _with("OutputConfig.TargetDevice", "ml_c99"), "OutputConfig.TargetDevice"),
    ("compiler-options-not-json", _with("OutputConfig.CompilerOptions", "{mcpu: x}"), "OutputConfig.CompilerOptions"),
    ("compiler-options-not-object", _with("OutputConfig.CompilerOptions", '["a"]'), "OutputConfig.CompilerOptions"),
    ("compiler-options-too-short", _with("OutputConfig.CompilerOptions", "{}"), "OutputConfig.CompilerOptions"),
    ("kms-pattern", _with("OutputConfig.KmsKeyId", "key with spaces"), "OutputConfig.KmsKeyId"),
    ("stopping-condition-missing", _with("StoppingCondition", None), "StoppingCondition"),
    ("max-runtime-zero", _with("StoppingCondition.MaxRuntimeInSeconds", 0), "StoppingCondition.MaxRuntimeInSeconds"),
    ("max-runtime-not-int", _with("StoppingCondition.MaxRuntimeInSeconds", "fifteen minutes"), "StoppingCondition.MaxRuntimeInSeconds"),
    ("max-wait-below-runtime", _with("StoppingCondition.MaxWaitTimeInSeconds", 60), "StoppingCondition.MaxWaitTimeInSeconds"),
    ("max-pending-below-min", _with("StoppingCondition.MaxPendingTimeInSeconds", 60), "StoppingCondition.MaxPendingTimeInSeconds"),
    ("vpc-no-security-groups", _with("VpcConfig", {"SecurityGroupIds": [], "Subnets": ["subnet-1"]}), "VpcConfig.SecurityGroupIds"),
    ("vpc-too-many-subnets", _with("VpcConfig", {"SecurityGroupIds": ["sg-1"], "Subnets": [f"subnet-{i}" for i in range(17)]}), "VpcConfig.Subnets"),
    ("tags-too-many", _with("Tags", [{"Key": f"k{i}", "Value": "v"} for i in range(51)]), "Tags"),
    ("tag-key-bad-char", _with("Tags", [{"Key": "team!", "Value": "ml"}]), "Tags[0].Key"),
    ("tag-value-missing", _with("Tags", [{"Key": "team"}]), "Tags[0].Value"),
    ("unknown-member", _with("Priority", "high"), "Priority"),
    ("platform-arch-unknown", _with("OutputConfig", {"S3OutputLocation": "s3://b/o", "TargetPlatform": {"Os": "LINUX", "Arch": "RISCV"}}), "OutputConfig.TargetPlatform.Arch"),
    (
        "nvidia-without-options",
        _with(
            "OutputConfig",
            {"S3OutputLocation": "s3://b/o", "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}, "CompilerOptions": '{"gpu-code": "sm_72"}'},
        ),
        "OutputConfig.CompilerOptions",
    ),
]


@pytest.mark.parametrize(("case", "request_", "field"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_names_the_field_and_value(case, request_, field):
    with pytest.raises(InvalidCompilationRequest) as info:
        normalize_request(request_)
    paths = [p.path for p in info.value.problems]
    assert field in paths, f"{case}: {paths}"
    assert f"{field}:" in str(info.value)
    problem = next(p for p in info.value.problems if p.path == field)
    assert problem.allowed  # says what is allowed


def test_table_is_large_enough():
    assert len(BAD_REQUESTS) >= 25


def test_one_error_lists_every_problem():
    request = valid_request(name="bad name")
    request["InputConfig"]["Framework"] = "CAFFE"
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 0}
    with pytest.raises(InvalidCompilationRequest) as info:
        normalize_request(request)
    paths = {p.path for p in info.value.problems}
    assert {"CompilationJobName", "InputConfig.Framework", "StoppingCondition.MaxRuntimeInSeconds"} <= paths
    assert "'CAFFE'" in str(info.value) and "TENSORFLOW" in str(info.value)


def test_valid_request_is_unchanged():
    request = valid_request()
    assert normalize_request(request) == request


def test_dicts_are_serialized_and_templated_integers_cast():
    request = valid_request()
    request["InputConfig"]["DataInputConfig"] = {"data": [1, 3, 224, 224]}
    request["OutputConfig"]["CompilerOptions"] = {"mcpu": "skylake-avx512"}
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": "900", "MaxWaitTimeInSeconds": " 1200 "}
    normalized = normalize_request(request)
    assert json.loads(normalized["InputConfig"]["DataInputConfig"]) == {"data": [1, 3, 224, 224]}
    assert json.loads(normalized["OutputConfig"]["CompilerOptions"]) == {"mcpu": "skylake-avx512"}
    assert normalized["StoppingCondition"] == {"MaxRuntimeInSeconds": 900, "MaxWaitTimeInSeconds": 1200}
    assert isinstance(request["InputConfig"]["DataInputConfig"], dict), "the caller's dict is not mutated"


def test_pytorch_accepts_list_form():
    request = valid_request()
    request["InputConfig"].update(Framework="PYTORCH", DataInputConfig=[[1, 3, 224, 224], [1, 10]])
    assert json.loads(normalize_request(request)["InputConfig"]["DataInputConfig"]) == [[1, 3, 224, 224], [1, 10]]


def test_nvidia_with_all_options_passes():
    request = valid_request()
    request["OutputConfig"] = {
        "S3OutputLocation": "s3://b/o",
        "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
        "CompilerOptions": {"gpu-code": "sm_72", "trt-ver": "8.4.0", "cuda-ver": "11.4"},
    }
    normalized = normalize_request(request)
    assert json.loads(normalized["OutputConfig"]["CompilerOptions"]) == {"gpu-code": "sm_72", "trt-ver": "8.4.0", "cuda-ver": "11.4"}


def test_local_uris_only_with_local_backend():
    request = _with("InputConfig.S3Uri", "file:///data/model.tar.gz")
    request["OutputConfig"]["S3OutputLocation"] = "/data/compiled"
    with pytest.raises(InvalidCompilationRequest, match="backend='local'"):
        normalize_request(request)
    assert normalize_request(request, allow_local_uris=True)["InputConfig"]["S3Uri"] == "file:///data/model.tar.gz"


def test_enums_come_from_the_botocore_model():
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    assert frameworks() == list(model.shape_for("Framework").enum)
    assert target_devices() == list(model.shape_for("TargetDevice").enum)
    for device in target_devices():
        normalize_request(_with("OutputConfig.TargetDevice", device))


def test_not_a_dict():
    with pytest.raises(InvalidCompilationRequest, match="<request>"):
        normalize_request("CompilationJobName=x")


def test_local_location_errors_name_the_local_forms():
    """On the local backend a bad location names the forms it accepts, not only the API's pattern."""
    request = _with("InputConfig.S3Uri", "ftp://bucket/model.tar.gz")
    with pytest.raises(InvalidCompilationRequest) as err:
        normalize_request(request, allow_local_uris=True)
    message = str(err.value)
    assert "InputConfig.S3Uri" in message
    assert "file:///absolute/path" in message and "absolute path" in message
    assert "must match the pattern" not in message


@pytest.mark.parametrize("uri", ["file://model.tar.gz", "file://models/cnn/model.tar.gz"])
def test_relative_file_uri_is_refused_with_the_absolute_form(uri):
    with pytest.raises(InvalidCompilationRequest) as err:
        normalize_request(_with("InputConfig.S3Uri", uri), allow_local_uris=True)
    message = str(err.value)
    assert "InputConfig.S3Uri" in message and repr(uri) in message
    assert "three slashes" in message and "file:///absolute/path/model.tar.gz" in message


@pytest.mark.parametrize("uri", ["file:///data/model.tar.gz", "file://localhost/data/model.tar.gz", "/data/model.tar.gz"])
def test_absolute_local_locations_pass(uri):
    assert normalize_request(_with("InputConfig.S3Uri", uri), allow_local_uris=True)["InputConfig"]["S3Uri"] == uri


def test_validate_request_validates_once():
    from airflow_neo.core.validation import ValidatedRequest, validate_request

    validated = validate_request(_with("InputConfig.DataInputConfig", {"data": [1, 3, 32, 32]}))
    assert isinstance(validated, ValidatedRequest)
    assert validated.data_input_config == {"data": [1, 3, 32, 32]}
    assert json.loads(validated.payload["InputConfig"]["DataInputConfig"]) == {"data": [1, 3, 32, 32]}
    assert validate_request(validated) is validated  # never normalized again
    with pytest.raises(InvalidCompilationRequest, match="CompilationJobName"):
        validate_request(_with("CompilationJobName", "bad_name!"))


@pytest.mark.parametrize(
    "path, value, suggestion",
    [("InputConfig.Framework", "onnx", "ONNX"), ("OutputConfig.TargetDevice", "ml_c55", "ml_c5"), ("InputConfig.Framework", "pytorh", "PYTORCH")],
)
def test_near_miss_enum_values_get_a_suggestion(path, value, suggestion):
    with pytest.raises(InvalidCompilationRequest) as err:
        normalize_request(_with(path, value))
    assert f"{path}: got {value!r}; must be one of" in str(err.value)
    assert f"did you mean {suggestion!r}?" in str(err.value)


def test_far_enum_values_get_no_suggestion():
    with pytest.raises(InvalidCompilationRequest) as err:
        normalize_request(_with("InputConfig.Framework", "CAFFE2000"))
    assert "did you mean" not in str(err.value)
