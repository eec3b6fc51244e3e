"""Fuzzing CreateCompilationJob requests through the public validation and the local hook.

``airflow_neo.core.validation.validate_request`` and ``LocalNeoHook.validate`` (validation plus
the local backend's preflight: framework, target, model file, confinement) get generated
DataInputConfig and CompilerOptions values and whole requests with members replaced by hostile
values (wrong types, unicode digits, NaN, huge numbers, nested garbage), deleted or added.

Property: a valid request is accepted; an invalid one raises InvalidCompilationRequest whose
problems name the member (a ValueError subclass); never another exception. Invalid requests
also go through ``LocalNeoHook.create_compilation_job``: refused, nothing recorded in the store.
"""

from __future__ import annotations

import atexit
import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from airflow_neo.core.exceptions import InvalidCompilationRequest
from airflow_neo.core.validation import ValidatedRequest, validate_request
from tests.fuzz import examples
from tests.local.models import write_archive

_DIR = Path(tempfile.mkdtemp(prefix="neo-request-fuzz-"))
atexit.register(shutil.rmtree, _DIR, True)
ARCHIVE = write_archive(_DIR, {"model.onnx": b"not really onnx; preflight only checks the file exists"})
BASE = {
    "CompilationJobName": "fuzz-job",
    "RoleArn": "arn:aws:iam::123456789012:role/neo",
    "InputConfig": {"S3Uri": f"file://{ARCHIVE}", "Framework": "ONNX", "DataInputConfig": '{"input0": [1, 3, 16, 16]}'},
    "OutputConfig": {"S3OutputLocation": f"file://{_DIR}/out", "TargetDevice": "ml_c5"},
    "StoppingCondition": {"MaxRuntimeInSeconds": 900},
}

# ----------------------------------------------------------------------------------------------
# strategies

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_ODD_STRINGS = st.sampled_from([
    "", " ", "\x00", "²", "١٢", "--5", "-", "+5", " 7 ", "1e3", "0x10", "9" * 400, "NaN", "null", "{}", "[]", "[[]]",
    "{\"a\": [1, -1]}", "{\"a\": [true]}", "{\"a\": [1.5]}", "[[1, 2]]", "{\"\": [1]}", "\ud7ff", "s3://", "file://",
    "file://relative.tar.gz", "file:///nonexistent/model.tar.gz", "/etc/passwd", "file:///tmp/a%00b", "s3://b/" + "k" * 2000,
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    _TEXT, _ODD_STRINGS, st.binary(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple), st.dictionaries(_TEXT | _ODD_STRINGS, inner, max_size=4),
        st.dictionaries(st.integers(), inner, max_size=2), st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=12,
)
SHAPES = st.lists(st.integers(1, 4096), min_size=1, max_size=6)
VALID_DATA_INPUT = st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20), SHAPES,
                                   min_size=1, max_size=5)
DATA_INPUT = st.one_of(
    VALID_DATA_INPUT, VALID_DATA_INPUT.map(json.dumps), st.lists(SHAPES, min_size=1, max_size=3),
    st.lists(SHAPES, min_size=1, max_size=3).map(json.dumps), VALUES, VALUES.map(lambda v: json.dumps(v, default=repr)),
    _ODD_STRINGS,
)
COMPILER_OPTIONS = st.one_of(
    st.dictionaries(st.sampled_from(["dtype", "mcpu", "gpu-code", "trt-ver", "cuda-ver", "x", ""]), VALUES, max_size=4),
    VALUES, VALUES.map(lambda v: json.dumps(v, default=repr)), _ODD_STRINGS,
)
FRAMEWORKS = ["ONNX", "PYTORCH", "TFLITE", "XGBOOST"]
MEMBER_PATHS = [
    ("CompilationJobName",), ("RoleArn",), ("InputConfig",), ("InputConfig", "S3Uri"), ("InputConfig", "Framework"),
    ("InputConfig", "DataInputConfig"), ("InputConfig", "FrameworkVersion"), ("OutputConfig",),
    ("OutputConfig", "S3OutputLocation"), ("OutputConfig", "TargetDevice"), ("OutputConfig", "TargetPlatform"),
    ("OutputConfig", "TargetPlatform", "Os"), ("OutputConfig", "TargetPlatform", "Accelerator"),
    ("OutputConfig", "CompilerOptions"), ("StoppingCondition",), ("StoppingCondition", "MaxRuntimeInSeconds"),
    ("StoppingCondition", "MaxWaitTimeInSeconds"), ("StoppingCondition", "MaxPendingTimeInSeconds"), ("Tags",),
    ("VpcConfig",), ("VpcConfig", "Subnets"), ("ModelPackageVersionArn",), ("UnknownMember",), ("InputConfig", "Bogus"),
]


@st.composite
def mutated_requests(draw):
    """(request, the member paths changed) from BASE with 1-4 members replaced, deleted or added."""
    request = copy.deepcopy(BASE)
    changed = []
    for path in draw(st.lists(st.sampled_from(MEMBER_PATHS), min_size=1, max_size=4, unique=True)):
        holder = request
        for key in path[:-1]:
            if not isinstance(holder.get(key), dict):
                holder[key] = {}
            holder = holder[key]
        action = draw(st.sampled_from(["replace", "replace", "delete"]))
        if action == "delete":
            holder.pop(path[-1], None)
        elif path[-1] == "DataInputConfig":
            holder[path[-1]] = draw(DATA_INPUT)
        elif path[-1] == "CompilerOptions":
            holder[path[-1]] = draw(COMPILER_OPTIONS)
        else:
            holder[path[-1]] = draw(VALUES)
        changed.append(path)
    return request, changed


# ----------------------------------------------------------------------------------------------
# properties


def _outcome(request, *, hook=False):
    """validate (core, or the local hook's validate + preflight); ("accepted", ValidatedRequest) or ("invalid", error)."""
    from airflow_neo.hooks.local import LocalNeoHook

    try:
        validated = LocalNeoHook.validate(request) if hook else validate_request(request, allow_local_uris=True)
    except InvalidCompilationRequest as err:
        assert err.problems and all(problem.path and problem.allowed for problem in err.problems), err
        assert all(problem.path in str(err) for problem in err.problems)
        return "invalid", err
    assert isinstance(validated, ValidatedRequest)
    # accepted means usable: normalized once, parsed, and stable when validated again
    assert validate_request(validated.payload, allow_local_uris=True).payload == validated.payload
    assert ValidatedRequest.from_normalized(validated.payload).compiler_options == validated.compiler_options
    return "accepted", validated


def _top(path: str) -> set[str]:
    return {part.split(".")[0].split("[")[0] for part in path.split("|")}


@example(value="²")  # unicode digits: int("²") raised a bare ValueError naming no member
@example(value="--5")
@example(value="١٢")
@settings(max_examples=examples(150, 2000))
@given(value=VALUES)
def test_integer_members_take_any_value(value, tally):
    request = copy.deepcopy(BASE)
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": value}
    kind, result = _outcome(request)
    if kind == "invalid":
        assert any(p.path.startswith("StoppingCondition") for p in result.problems), result
    elif value is not None:  # None: the member is absent
        assert isinstance(result.payload["StoppingCondition"]["MaxRuntimeInSeconds"], int)
    tally(kind)


@example(value='{"x": [1]}', framework=["PYTORCH"])  # an unhashable Framework: TypeError before the fix
@settings(max_examples=examples(150, 2000))
@given(value=DATA_INPUT, framework=st.sampled_from(FRAMEWORKS) | VALUES)
def test_data_input_config(value, framework, tally):
    request = copy.deepcopy(BASE)
    request["InputConfig"].update(DataInputConfig=value, Framework=framework)
    kind, result = _outcome(request)
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
    shape_ok = lambda s: isinstance(s, list) and s and all(type(d) is int and d > 0 for d in s)  # noqa: E731
    well_formed = (isinstance(parsed, dict) and parsed and all(shape_ok(s) for s in parsed.values())) or (
        framework == "PYTORCH" and isinstance(parsed, list) and parsed and all(shape_ok(s) for s in parsed))
    text = value if isinstance(value, str) else json.dumps(value) if well_formed else ""
    framework_ok = isinstance(framework, str) and framework in FRAMEWORKS
    valid = framework_ok and (value is None or (bool(well_formed) and 1 <= len(text) <= 16384))  # None: absent
    if well_formed and not isinstance(value, str):
        parsed = json.loads(text)  # a dict given as such is serialized (int keys become strings)
    assert (kind == "accepted") == valid, (value, result)
    if kind == "invalid":
        field = "InputConfig.DataInputConfig" if framework_ok else "InputConfig.Framework"
        assert any(p.path == field for p in result.problems), result
    elif value is not None:
        assert result.data_input_config == parsed
    tally(kind)


@settings(max_examples=examples(150, 2000))
@given(value=COMPILER_OPTIONS)
def test_compiler_options(value, tally):
    request = copy.deepcopy(BASE)
    request["OutputConfig"]["CompilerOptions"] = value
    kind, result = _outcome(request)
    if kind == "invalid":
        assert any(p.path.startswith("OutputConfig.CompilerOptions") for p in result.problems), result
    else:
        assert isinstance(result.compiler_options, dict)
    tally(kind)


@example(mutated=({**BASE, "OutputConfig": {0: None}}, [("OutputConfig",)]))  # a non-string member name: TypeError before the fix
@settings(max_examples=examples(200, 3000))
@given(mutated=mutated_requests())
def test_whole_requests_through_the_local_hook(mutated, tally):
    request, changed = mutated
    kind, result = _outcome(request, hook=True)
    if kind == "invalid":
        named = set().union(*(_top(p.path) for p in result.problems))
        assert named & ({path[0] for path in changed} | {"InputConfig", "ModelPackageVersionArn"}), (changed, result)
    tally(kind)


_HOOK = {}


def _hook():
    from airflow_neo.hooks.local import LocalNeoHook

    if "hook" not in _HOOK:
        _HOOK["hook"] = LocalNeoHook(store_path=str(_DIR / "jobs.sqlite"), work_dir=str(_DIR / "work"))
    return _HOOK["hook"]


@settings(max_examples=examples(40, 300))
@given(mutated=mutated_requests())
def test_invalid_requests_are_refused_by_create_with_nothing_recorded(mutated, tally):
    request, _changed = mutated
    hook = _hook()
    try:
        hook.validate(request)
    except InvalidCompilationRequest:
        with pytest.raises(InvalidCompilationRequest):
            hook.create_compilation_job(request)
        assert hook.list_compilation_jobs_page()["CompilationJobSummaries"] == []
        tally("refused by create")
    else:
        tally("valid (not launched)")


def test_nan_and_infinity_shapes_are_refused():
    for value in ({"x": [1, math.nan]}, {"x": [math.inf]}, '{"x": [NaN]}', '{"x": [Infinity]}'):
        request = copy.deepcopy(BASE)
        request["InputConfig"]["DataInputConfig"] = value
        assert _outcome(request)[0] == "invalid"
