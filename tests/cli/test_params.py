"""Shorthand syntax, value unpacking (JSON, file://, lists), cli-input loading and output formats."""

from __future__ import annotations

import json

import pytest
import yaml

from airflow_neo.cli import output, shorthand
from airflow_neo.cli.errors import ParamError
from airflow_neo.cli.model import params_of
from airflow_neo.cli.params import build_request, load_cli_input, unpack


def _param(operation: str, member: str):
    return next(p for p in params_of(operation) if p.member == member)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("S3Uri=s3://b/m.tar.gz,Framework=ONNX", {"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX"}),
        ("a=b,c", {"a": ["b", "c"]}),
        ("a=b,c,d=e", {"a": ["b", "c"], "d": "e"}),
        ("T={Os=LINUX,Arch=X86_64},D=x", {"T": {"Os": "LINUX", "Arch": "X86_64"}, "D": "x"}),
        ("a=[1,2],b={c=[x,y]}", {"a": ["1", "2"], "b": {"c": ["x", "y"]}}),
        ("D='{\"data\": [1, 3]}',F=ONNX", {"D": '{"data": [1, 3]}', "F": "ONNX"}),
        ('D="{\\"data\\": [1]}"', {"D": '{"data": [1]}'}),
        ("a=x\\,y", {"a": "x,y"}),
        ("a=", {"a": ""}),
        (" a = b , c = d ", {"a": "b", "c": "d"}),
        ("url=https://h/p?x=1", {"url": "https://h/p?x=1"}),
    ],
)
def test_shorthand_parses(text, expected):
    assert shorthand.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected", "actual"),
    [("foo", "=", "EOF"), ("a=b,", "<value>", "EOF"), ("=x", "<key>", "="), ('a="x', '"', "EOF"), ("", "<key>", "EOF")],
)
def test_shorthand_errors_point_at_the_problem(text, expected, actual):
    with pytest.raises(shorthand.ShorthandError) as info:
        shorthand.parse(text)
    assert info.value.expected == expected and info.value.actual == actual
    assert str(info.value).startswith(f"Expected: '{expected}', received: '{actual}' for input:\n{text}\n")


def test_shorthand_is_fitted_to_the_model():
    stopping = unpack(_param("CreateCompilationJob", "StoppingCondition"), "MaxRuntimeInSeconds=900,MaxWaitTimeInSeconds=1200")
    assert stopping == {"MaxRuntimeInSeconds": 900, "MaxWaitTimeInSeconds": 1200}
    vpc = unpack(_param("CreateCompilationJob", "VpcConfig"), "SecurityGroupIds=sg-1,Subnets=s-1,s-2")
    assert vpc == {"SecurityGroupIds": ["sg-1"], "Subnets": ["s-1", "s-2"]}
    tags = unpack(_param("CreateCompilationJob", "Tags"), ["Key=a,Value=b", "Key=c,Value=d"])
    assert tags == [{"Key": "a", "Value": "b"}, {"Key": "c", "Value": "d"}]


def test_json_list_and_structure_values():
    tags = unpack(_param("CreateCompilationJob", "Tags"), ['[{"Key": "a", "Value": "b"}]'])
    assert tags == [{"Key": "a", "Value": "b"}]
    config = unpack(_param("CreateCompilationJob", "InputConfig"), '{"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX"}')
    assert config == {"S3Uri": "s3://b/m.tar.gz", "Framework": "ONNX"}


def test_file_values(tmp_path):
    path = tmp_path / "output.json"
    path.write_text('{"S3OutputLocation": "s3://b/out", "TargetDevice": "ml_c5"}')
    assert unpack(_param("CreateCompilationJob", "OutputConfig"), f"file://{path}")["TargetDevice"] == "ml_c5"
    (tmp_path / "name.txt").write_text("from-file")
    assert unpack(_param("DescribeCompilationJob", "CompilationJobName"), f"file://{tmp_path / 'name.txt'}") == "from-file"
    with pytest.raises(ParamError, match=r"Unable to load paramfile file://.*missing"):
        unpack(_param("CreateCompilationJob", "OutputConfig"), f"file://{tmp_path / 'missing'}")


def test_bad_values_are_param_errors():
    with pytest.raises(ParamError, match=r"^Error parsing parameter '--input-config': Invalid JSON: .*\nJSON received: \{bad"):
        unpack(_param("CreateCompilationJob", "InputConfig"), "{bad")
    with pytest.raises(ParamError, match="--max-results"):
        unpack(_param("ListCompilationJobs", "MaxResults"), "ten")
    with pytest.raises(ParamError, match="Invalid timestamp"):
        unpack(_param("ListCompilationJobs", "CreationTimeAfter"), "yesterday-ish")


def test_timestamps_accept_iso_and_epoch():
    param = _param("ListCompilationJobs", "CreationTimeAfter")
    assert unpack(param, "2024-01-02T03:04:05Z") == unpack(param, "1704164645")


def test_cli_input_loading_and_override(tmp_path):
    path = tmp_path / "in.yaml"
    path.write_text("CompilationJobName: from-yaml\n")
    assert load_cli_input(None, f"file://{path}") == {"CompilationJobName": "from-yaml"}
    assert load_cli_input('{"CompilationJobName": "j"}', None) == {"CompilationJobName": "j"}
    assert load_cli_input(None, None) == {}
    with pytest.raises(ParamError, match="--cli-input-json"):
        load_cli_input("[1, 2]", None)
    with pytest.raises(ParamError, match="--cli-input-yaml"):
        load_cli_input(None, "a: [1")
    merged = build_request(params_of("DescribeCompilationJob"), {"CompilationJobName": "cli"}, {"CompilationJobName": "file"})
    assert merged == {"CompilationJobName": "cli"}


SAMPLE = {"Name": "j", "Status": "COMPLETED", "Config": {"B": "2", "A": "1"}, "Items": [{"K": "x", "V": 1}, {"K": "y", "V": 2}]}


def test_output_formats():
    assert json.loads(output.render(SAMPLE, "json")) == SAMPLE
    assert output.render(SAMPLE, "json").startswith('{\n    "Name"')
    assert yaml.safe_load(output.render(SAMPLE, "yaml")) == SAMPLE
    assert output.render(SAMPLE, "text").splitlines() == ["j\tCOMPLETED", "CONFIG\t1\t2", "ITEMS\tx\t1", "ITEMS\ty\t2"]
    table = output.render(SAMPLE, "table", title="Op").splitlines()
    assert "Op" in table[1] and len({len(line) for line in table}) == 1
    assert any("COMPLETED" in line for line in table) and any(line.startswith("||") and "Items" in line for line in table)
    assert output.render({}, "json") == "" and output.render({}, "table") == ""


def test_query_then_format():
    query = output.compile_query("Items[].K")
    assert output.render(SAMPLE, "text", query) == "x\ty\n"
    assert output.render(SAMPLE, "json", output.compile_query("Status")) == '"COMPLETED"\n'
    assert output.render(SAMPLE, "yaml", output.compile_query("Status")) == "COMPLETED\n"
    with pytest.raises(ParamError, match="--query"):
        output.compile_query("Items[")
