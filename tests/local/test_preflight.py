"""Create-time refusals of the local backend: each names the field, the value and what is allowed."""

from __future__ import annotations

import pytest

from airflow_neo.core.exceptions import InvalidCompilationRequest
from airflow_neo.core.validation import validate_request
from airflow_neo.local.preflight import check_local_request, local_path
from airflow_neo.samples import write_sample_archive
from tests.support.requests import valid_request


def _local_request(tmp_path, **changes):
    archive = write_sample_archive(tmp_path / "model.tar.gz")
    request = valid_request("pre")
    request["InputConfig"].update(S3Uri=archive.as_uri(), Framework="ONNX", DataInputConfig={"data": [1, 3, 32, 32]})
    request["OutputConfig"] = {"S3OutputLocation": (tmp_path / "out").as_uri(), "TargetDevice": "ml_c5"}
    for path, value in changes.items():
        section, _, member = path.partition("__")
        if value is None:
            request[section].pop(member, None)
        else:
            request[section][member] = value
    return validate_request(request, allow_local_uris=True)


def _refusal(request) -> str:
    with pytest.raises(InvalidCompilationRequest) as err:
        check_local_request(request)
    return str(err.value)


def test_a_buildable_request_passes(tmp_path):
    check_local_request(_local_request(tmp_path))
    check_local_request(_local_request(tmp_path, OutputConfig__TargetDevice=None, OutputConfig__TargetPlatform={"Os": "LINUX", "Arch": "ARM64"}))


@pytest.mark.parametrize("framework, reason", [("SKLEARN", "no scikit-learn frontend")])
def test_unsupported_framework(tmp_path, framework, reason):
    message = _refusal(_local_request(tmp_path, InputConfig__Framework=framework))
    assert f"InputConfig.Framework: got {framework!r}" in message
    assert reason in message and "supported: ONNX, PYTORCH, TFLITE, XGBOOST, TENSORFLOW, KERAS, DARKNET, MXNET" in message


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("TargetDevice", "ml_p2", ["OutputConfig.TargetDevice", "ml_p2", "not supported by the local backend"]),
        ("TargetDevice", "ml_inf1", ["OutputConfig.TargetDevice", "ml_inf1", "not supported by the local backend"]),
    ],
)
def test_unsupported_target_device(tmp_path, field, value, words):
    message = _refusal(_local_request(tmp_path, **{f"OutputConfig__{field}": value}))
    for word in words:
        assert word in message
    assert "The local backend supports TargetDevice" in message


def test_unsupported_target_platform(tmp_path):
    platform = {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "MALI"}
    request = _local_request(tmp_path, OutputConfig__TargetDevice=None, OutputConfig__TargetPlatform=platform)
    message = _refusal(request)
    assert "OutputConfig.TargetPlatform" in message and "Accelerator MALI" in message and "OpenCL runtime" in message


def test_nvidia_platform_passes_preflight(tmp_path):
    platform = {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}
    check_local_request(_local_request(
        tmp_path, OutputConfig__TargetDevice=None, OutputConfig__TargetPlatform=platform,
        OutputConfig__CompilerOptions='{"gpu-code": "sm_72", "trt-ver": "8.4.0", "cuda-ver": "11.4"}',
    ))


@pytest.mark.parametrize("form", ["uri", "path"])
def test_missing_model_file(tmp_path, form):
    missing = tmp_path / "nowhere" / "model.tar.gz"
    uri = missing.as_uri() if form == "uri" else str(missing)
    message = _refusal(_local_request(tmp_path, InputConfig__S3Uri=uri))
    assert f"InputConfig.S3Uri: got {uri!r}" in message
    assert f"{missing} does not exist on this machine" in message and "file:///absolute/path" in message


def test_a_directory_is_not_a_model_archive(tmp_path):
    message = _refusal(_local_request(tmp_path, InputConfig__S3Uri=tmp_path.as_uri()))
    assert "is a directory, not a file" in message


def test_every_problem_at_once(tmp_path):
    request = _local_request(
        tmp_path, InputConfig__Framework="SKLEARN", InputConfig__S3Uri="/nowhere/model.tar.gz", OutputConfig__TargetDevice="ml_trn1"
    )
    with pytest.raises(InvalidCompilationRequest) as err:
        check_local_request(request)
    assert [p.path for p in err.value.problems] == ["InputConfig.Framework", "InputConfig.S3Uri", "OutputConfig.TargetDevice"]


def test_s3_inputs_are_not_looked_up(tmp_path):
    check_local_request(_local_request(tmp_path, InputConfig__S3Uri="s3://bucket/never/looked/up.tar.gz"))


def test_local_path_forms():
    assert local_path("/a/b.tar.gz") == "/a/b.tar.gz"
    assert local_path("file:///a/b%20c.tar.gz") == "/a/b c.tar.gz"
    assert local_path("file://localhost/a/b.tar.gz") == "/a/b.tar.gz"
    assert local_path("s3://bucket/key") is None
