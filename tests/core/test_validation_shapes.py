"""Request validation of DataInputConfig's flexible forms: range dimensions for every target, Core
ML's object form for TargetDevice coreml only; each problem names DataInputConfig and says why."""

from __future__ import annotations

import json

import pytest

from airflow_neo.core.exceptions import InvalidCompilationRequest
from airflow_neo.core.validation import normalize_request, validate_request
from tests.support.requests import valid_request

PATH = "InputConfig.DataInputConfig"
IMAGE_ENTRY = {
    "shape": [[1, 3, 224, 224], [1, 3, 160, 160]],
    "default_shape": [1, 3, 224, 224],
    "type": "Image",
    "bias": [-1, -1, -1],
    "scale": 0.007843137255,
}


def _request(data_input, framework="PYTORCH", device="ml_c5"):
    request = valid_request()
    request["InputConfig"].update(Framework=framework, DataInputConfig=data_input)
    request["OutputConfig"]["TargetDevice"] = device
    return request


def _problems(request) -> list:
    with pytest.raises(InvalidCompilationRequest) as err:
        normalize_request(request)
    return [p for p in err.value.problems if p.path == PATH]


@pytest.mark.parametrize("device", ["ml_c5", "coreml"])
def test_range_dimensions_pass_for_every_target(device):
    request = _request({"data": ["1..8", 3, 224, 224]}, framework="ONNX", device=device)
    assert json.loads(normalize_request(request)["InputConfig"]["DataInputConfig"]) == {"data": ["1..8", 3, 224, 224]}


def test_range_in_pytorch_list_form_passes():
    validated = validate_request(_request([["1..4", 3, 32, 32], [1, 10]]))
    assert validated.data_input_config == [["1..4", 3, 32, 32], [1, 10]]


@pytest.mark.parametrize("data_input", [{"input_1": IMAGE_ENTRY}, [IMAGE_ENTRY], [{"shape": ["1..10", 3, 8, 8]}]])
def test_object_form_passes_for_coreml(data_input):
    validated = validate_request(_request(data_input, device="coreml"))
    assert validated.data_input_config == data_input


@pytest.mark.parametrize("device", ["ml_c5", "jetson_nano"])
def test_object_form_is_refused_for_other_devices(device):
    (problem,) = _problems(_request({"input_1": IMAGE_ENTRY, "other": [1, 2]}, device=device))
    assert "['input_1']" in problem.allowed and "'coreml'" in problem.allowed and device in problem.allowed


def test_object_form_is_refused_for_a_target_platform():
    request = _request({"input_1": {"shape": [1, 3, 8, 8]}})
    del request["OutputConfig"]["TargetDevice"]
    request["OutputConfig"]["TargetPlatform"] = {"Os": "LINUX", "Arch": "X86_64"}
    (problem,) = _problems(request)
    assert "TargetPlatform" in problem.allowed and "'coreml' only" in problem.allowed


@pytest.mark.parametrize(
    "data_input,needle",
    [
        ({"data": [1, "1..-1", 8]}, "'data': dimension 1 is '1..-1'"),
        ({"data": [1, "10..2", 8]}, "dimension 1 is '10..2'"),
        ({"data": [1, 3.0, 8]}, "dimension 1 is 3.0"),
        ({"data": {"shape": ["1..4", 3], "default_shape": [5, 3]}}, "5 is not in 1..4"),
        ({"data": {"shape": [1, 3], "type": "Picture"}}, "allowed: ['Image', 'Tensor']"),
    ],
)
def test_bad_entries_name_the_input_and_value(data_input, needle):
    (problem,) = _problems(_request(data_input, device="coreml"))
    assert needle in problem.allowed and "PYTORCH" in problem.allowed


def test_list_form_still_pytorch_only():
    (problem,) = _problems(_request([{"shape": [1, 3, 8, 8]}], framework="TENSORFLOW", device="coreml"))
    assert "for TENSORFLOW must be of the form" in problem.allowed
