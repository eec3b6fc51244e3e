"""The hook contract (airflow_neo.hooks.base), the factory and the connection parameters (hooks.params)."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect

import pytest

from airflow_neo.core.backends import Backend
from airflow_neo.core.exceptions import (
    CompilationJobNotFound,
    CompilationJobTimeout,
    InvalidCompilationRequest,
    UnknownBackendError,
)
from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.hooks.base import CompilationJobHook
from airflow_neo.hooks.factory import get_neo_hook
from airflow_neo.hooks.local import LocalNeoHook
from airflow_neo.hooks.neo import NeoHook
from airflow_neo.hooks.params import CONNECTION_FIELDS, NeoConnectionParams, neo_template_fields
from tests.support.requests import valid_request


class _Log:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, message, *args):
        self.lines.append(message % args if args else message)


class FakeHook(CompilationJobHook):
    """The contract over a dict of jobs, with pages of ``page_size`` summaries."""

    backend = Backend.SAGEMAKER

    def __init__(self, jobs: dict[str, list[str]] | None = None, page_size: int = 2):
        self.jobs = jobs or {}  # name -> statuses still to be read (the last one stays)
        self.page_size = page_size
        self.page_calls: list[dict] = []
        self.described: list[str] = []
        self.log = _Log()

    @classmethod
    def from_connection_params(cls, params):
        return cls()

    def create_compilation_job(self, request, *, tuning_trials=None):
        request = self.validate(request)
        self.jobs[request.name] = ["STARTING"]
        return {"CompilationJobArn": f"arn:fake:{request.name}"}

    def describe_compilation_job(self, name):
        self.described.append(name)
        if name not in self.jobs:
            raise CompilationJobNotFound(name)
        statuses = self.jobs[name]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return {"CompilationJobName": name, "CompilationJobStatus": status}

    def list_compilation_jobs_page(self, **kwargs):
        self.page_calls.append(kwargs)
        names = sorted(n for n in self.jobs if kwargs.get("NameContains", "") in n)
        start = int(kwargs.get("NextToken") or 0)
        end = start + kwargs.get("MaxResults", self.page_size)
        page = {
            "CompilationJobSummaries": [
                {"CompilationJobName": n, "CreationTime": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)}
                for n in names[start:end]
            ]
        }
        if end < len(names):
            page["NextToken"] = str(end)
        return page

    def stop_compilation_job(self, name):
        self.jobs[name] = ["STOPPING", "STOPPED"]

    def delete_compilation_job(self, name):
        del self.jobs[name]

    def list_compilation_job_tags(self, name):
        return []

    async def adescribe_compilation_job(self, name):
        return self.describe_compilation_job(name)

    async def astop_compilation_job(self, name):
        self.stop_compilation_job(name)

    def job_log(self, name):
        return ""


# ----------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("hook_class", [NeoHook, LocalNeoHook])
def test_both_hooks_implement_the_contract(hook_class):
    assert issubclass(hook_class, CompilationJobHook)
    assert not inspect.isabstract(hook_class), hook_class.__abstractmethods__
    # paging, waiting and validation are written once, in the contract
    for method in ("list_compilation_jobs", "wait_for_compilation_job", "validate"):
        assert getattr(hook_class, method).__qualname__ == f"CompilationJobHook.{method}"


def test_a_backend_must_implement_every_operation():
    class Partial(CompilationJobHook):
        def describe_compilation_job(self, name):
            return {}

    with pytest.raises(TypeError, match="abstract"):
        Partial()


def test_factory_returns_the_contract_for_each_backend(tmp_path):
    sagemaker = get_neo_hook(
        NeoConnectionParams(aws_conn_id=None, region_name="eu-west-1", verify="/ca.pem", botocore_config={"read_timeout": 5})
    )
    assert isinstance(sagemaker, NeoHook) and isinstance(sagemaker, CompilationJobHook)
    assert (sagemaker.aws_conn_id, sagemaker.region_name, sagemaker.verify) == (None, "eu-west-1", "/ca.pem")
    assert sagemaker.config.read_timeout == 5
    store = str(tmp_path / "jobs.sqlite")
    local = get_neo_hook(NeoConnectionParams(backend="local", aws_conn_id="c", region_name="r", local_store=store))
    assert isinstance(local, LocalNeoHook) and local.backend is Backend.LOCAL
    assert (local.aws_conn_id, local.region_name, local.store_path) == ("c", "r", store)
    # the backend and the other parameters by name work too
    assert isinstance(get_neo_hook("local", local_store=store), LocalNeoHook)
    assert isinstance(get_neo_hook(), NeoHook)
    with pytest.raises(TypeError, match="not both"):
        get_neo_hook(NeoConnectionParams(), region_name="x")
    with pytest.raises(UnknownBackendError):
        get_neo_hook("azure")


def test_validate_once_per_backend(tmp_path):
    request = valid_request("v")
    model = tmp_path / "resnet.tar.gz"  # the local backend refuses a model file that does not exist
    model.write_bytes(b"model")
    request["InputConfig"]["S3Uri"] = model.as_uri()
    with pytest.raises(InvalidCompilationRequest, match="InputConfig.S3Uri"):
        NeoHook.validate(request)
    validated = LocalNeoHook.validate(request)
    assert isinstance(validated, ValidatedRequest) and validated.name == "v"
    assert LocalNeoHook.validate(validated) is validated  # never normalized twice
    assert NeoHook.validate(validated) is validated


@pytest.mark.parametrize("given", ["dict", "validated"])
def test_local_create_path_validates_once(tmp_path, monkeypatch, given):
    """Hook and store take a ValidatedRequest as it is: a dict is validated once, a ValidatedRequest never again."""
    from airflow_neo.core import validation
    from airflow_neo.local import runner

    model = tmp_path / "models" / "m.tar.gz"  # create refuses a model file that does not exist
    model.parent.mkdir()
    model.write_bytes(b"model")
    request = valid_request(
        "once",
        InputConfig={"S3Uri": model.as_uri(), "Framework": "ONNX"},
        OutputConfig={"S3OutputLocation": str(tmp_path / "out"), "TargetDevice": "ml_c5"},
    )
    if given == "validated":
        request = LocalNeoHook.validate(request)
    calls = []
    original = validation.normalize_request
    monkeypatch.setattr(validation, "normalize_request", lambda config, **kw: calls.append(1) or original(config, **kw))
    monkeypatch.setattr(runner, "launch_detached", lambda store, name, **kwargs: 4242)
    hook = get_neo_hook("local", aws_conn_id=None, local_store=str(tmp_path / "jobs.sqlite"))
    assert hook.create_compilation_job(request)["CompilationJobArn"].endswith("compilation-job/once")
    assert hook.describe_compilation_job("once")["InputConfig"]["S3Uri"] == model.as_uri()
    assert len(calls) == (1 if given == "dict" else 0)


# ----------------------------------------------------------------------------- paging and waiting, once


def test_list_reads_every_page_and_is_json_safe():
    hook = FakeHook({f"job-{i}": ["COMPLETED"] for i in range(5)})
    summaries = hook.list_compilation_jobs(NameContains="job", StatusEquals=None)
    assert [s["CompilationJobName"] for s in summaries] == [f"job-{i}" for i in range(5)]
    assert summaries[0]["CreationTime"] == "2026-01-01T00:00:00+00:00"
    assert [call.get("NextToken") for call in hook.page_calls] == [None, "2", "4"]
    assert all("StatusEquals" not in call for call in hook.page_calls)  # None filters are left out


def test_list_stops_at_max_results():
    hook = FakeHook({f"job-{i}": ["COMPLETED"] for i in range(5)})
    assert len(hook.list_compilation_jobs(max_results=3)) == 3
    assert len(hook.page_calls) == 2


def test_sagemaker_refuses_unknown_filters_before_any_call():
    hook = NeoHook(aws_conn_id=None, region_name="us-east-1")
    with pytest.raises(ValueError, match="NameLike"):
        hook.list_compilation_jobs(NameLike="x")


def test_wait_returns_the_terminal_payload_and_logs_changes():
    hook = FakeHook({"j": ["STARTING", "INPROGRESS", "INPROGRESS", "FAILED"]})
    payload = hook.wait_for_compilation_job("j", check_interval=0)
    assert payload["CompilationJobStatus"] == "FAILED"
    assert hook.log.lines == [f"Compilation job j is {s}" for s in ("STARTING", "INPROGRESS", "FAILED")]


def test_wait_times_out_with_the_last_payload():
    hook = FakeHook({"j": ["INPROGRESS"]})
    with pytest.raises(CompilationJobTimeout) as info:
        hook.wait_for_compilation_job("j", check_interval=0, max_wait=0)
    assert info.value.payload["CompilationJobStatus"] == "INPROGRESS"


# ----------------------------------------------------------------------------- batch reads (shared polling)


def test_default_batch_describe_leaves_missing_jobs_out():
    hook = FakeHook({"a": ["STARTING"], "b": ["COMPLETED"]})
    payloads = hook.describe_compilation_jobs(["a", "missing", "b", "a"])
    assert {n: p["CompilationJobStatus"] for n, p in payloads.items()} == {"a": "STARTING", "b": "COMPLETED"}
    assert hook.described == ["a", "missing", "b"]  # each name once


async def test_default_async_batch_reads_and_session():
    hook = FakeHook({f"job-{i}": ["COMPLETED"] for i in range(3)})
    assert set(await hook.adescribe_compilation_jobs(["job-0", "nope"])) == {"job-0"}
    pages = [page async for page in hook.alist_compilation_jobs_pages(NameContains="job")]
    assert [len(p["CompilationJobSummaries"]) for p in pages] == [2, 1]
    async with hook.async_session() as session:
        assert session is hook


def test_local_batch_describe_is_one_store_query(tmp_path, monkeypatch):
    from airflow_neo.local.store import JobStore

    store_path = str(tmp_path / "jobs.sqlite")
    store = JobStore(store_path)
    for name in ("l-1", "l-2"):
        store.create(LocalNeoHook.validate(valid_request(name)), lease_seconds=3600)
    queries = []
    original = JobStore.describe_many
    monkeypatch.setattr(JobStore, "describe_many", lambda self, names: queries.append(list(names)) or original(self, names))
    hook = get_neo_hook("local", local_store=store_path)
    payloads = asyncio.run(hook.adescribe_compilation_jobs(["l-1", "l-2", "l-3"]))
    assert sorted(payloads) == ["l-1", "l-2"] and payloads["l-1"]["CompilationJobStatus"] == "STARTING"
    assert queries == [["l-1", "l-2", "l-3"]]


async def test_sagemaker_session_shares_one_client(aws_conn_env, monkeypatch):
    hook = NeoHook(aws_conn_id=aws_conn_env)
    for name in ("s-1", "s-2"):
        hook.create_compilation_job(valid_request(name))
    opened = []
    original = NeoHook.get_async_conn

    async def counting(self):
        opened.append(1)
        return await original(self)

    monkeypatch.setattr(NeoHook, "get_async_conn", counting)
    async with hook.async_session() as session:
        assert session is hook
        statuses = [(await hook.adescribe_compilation_job(n))["CompilationJobStatus"] for n in ("s-1", "s-2")]
        pages = [page async for page in hook.alist_compilation_jobs_pages(MaxResults=1)]
        with pytest.raises(CompilationJobNotFound):
            await hook.adescribe_compilation_job("missing")
    assert statuses == ["STARTING", "STARTING"]
    assert len(pages) >= 2  # one summary a page, NextToken followed
    assert sorted(s["CompilationJobName"] for p in pages for s in p["CompilationJobSummaries"]) == ["s-1", "s-2"]
    assert len(opened) == 1
    await hook.adescribe_compilation_job("s-1")  # outside a session: a client of its own
    assert len(opened) == 2


# ----------------------------------------------------------------------------- NeoConnectionParams


def test_params_defaults_match_the_operators():
    params = NeoConnectionParams()
    assert params.backend is Backend.SAGEMAKER and params.aws_conn_id == "aws_default"
    assert (params.region_name, params.verify, params.botocore_config, params.local_store) == (None, None, None, None)
    assert CONNECTION_FIELDS == ("backend", "aws_conn_id", "region_name", "verify", "botocore_config", "local_store")


def test_params_round_trip_through_a_dict():
    params = NeoConnectionParams(
        backend="LOCAL", aws_conn_id="c", region_name="eu-west-1", verify=False,
        botocore_config={"retries": {"mode": "adaptive"}}, local_store="postgresql://u@h/d",
    )
    data = params.to_dict()
    assert data == {
        "backend": "local", "aws_conn_id": "c", "region_name": "eu-west-1", "verify": False,
        "botocore_config": {"retries": {"mode": "adaptive"}}, "local_store": "postgresql://u@h/d",
    }
    assert type(data["backend"]) is str
    assert NeoConnectionParams.from_dict(data) == params
    assert NeoConnectionParams.from_dict({"backend": "local"}) == NeoConnectionParams(backend=Backend.LOCAL)
    assert params.key == NeoConnectionParams.from_dict(data).key != NeoConnectionParams().key


def test_params_are_checked_when_made():
    with pytest.raises(UnknownBackendError, match="'azure'"):
        NeoConnectionParams(backend="azure")
    with pytest.raises(TypeError, match="unknown connection parameter.*'region'"):
        NeoConnectionParams.from_dict({"region": "eu-west-1"})
    with pytest.raises(TypeError, match="verify"):
        NeoConnectionParams(verify=1)
    with pytest.raises(TypeError, match="botocore_config"):
        NeoConnectionParams(botocore_config="retries=3")
    with pytest.raises(TypeError, match="region_name"):
        NeoConnectionParams(region_name=["eu-west-1"])


def test_params_hold_their_own_copy():
    config = {"read_timeout": 5}
    params = NeoConnectionParams(botocore_config=config)
    config["read_timeout"] = 60
    params.to_dict()["botocore_config"]["read_timeout"] = 99
    assert params.botocore_config == {"read_timeout": 5}
    with pytest.raises(AttributeError):
        params.region_name = "x"


def test_params_from_attributes():
    class Rendered:
        backend, aws_conn_id, region_name, verify, botocore_config, local_store = "local", None, "r", True, None, "/s"

    assert NeoConnectionParams.from_attributes(Rendered()) == NeoConnectionParams(
        backend="local", aws_conn_id=None, region_name="r", verify=True, local_store="/s"
    )


def test_template_fields_helper():
    assert neo_template_fields() == CONNECTION_FIELDS
    assert neo_template_fields("config", "region_name", "config") == (*CONNECTION_FIELDS, "config")
    with pytest.raises(TypeError, match="strings"):
        neo_template_fields("config", 3)


def test_tasks_template_every_connection_parameter():
    from airflow_neo.operators.neo import (
        NeoCompilationOperator,
        NeoDescribeCompilationJobOperator,
        NeoListCompilationJobsOperator,
        NeoStopCompilationJobOperator,
    )
    from airflow_neo.sensors.neo import NeoCompilationJobSensor

    for task in (
        NeoCompilationOperator, NeoDescribeCompilationJobOperator, NeoListCompilationJobsOperator,
        NeoStopCompilationJobOperator, NeoCompilationJobSensor,
    ):
        assert task.template_fields[: len(CONNECTION_FIELDS)] == CONNECTION_FIELDS, task
    assert NeoCompilationOperator.template_fields[len(CONNECTION_FIELDS):] == ("config", "verify_inputs")


def test_a_runner_that_cannot_start_leaves_a_failed_job_in_neo_form(tmp_path, monkeypatch):
    """The job is recorded before the runner starts; when the start fails, it ends FAILED with a ServerError."""
    from airflow_neo.local import runner

    model = tmp_path / "m.tar.gz"
    model.write_bytes(b"model")
    request = valid_request(
        "nostart",
        InputConfig={"S3Uri": model.as_uri(), "Framework": "ONNX"},
        OutputConfig={"S3OutputLocation": str(tmp_path / "out"), "TargetDevice": "ml_c5"},
    )

    def cannot_fork(store, name, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(runner, "launch_detached", cannot_fork)
    hook = get_neo_hook("local", aws_conn_id=None, local_store=str(tmp_path / "jobs.sqlite"))
    with pytest.raises(OSError):
        hook.create_compilation_job(request)
    job = hook.describe_compilation_job("nostart")
    assert job["CompilationJobStatus"] == "FAILED"
    assert job["FailureReason"] == (
        "ServerError: Could not start the local compile runner: [Errno 11] Resource temporarily unavailable"
    )
