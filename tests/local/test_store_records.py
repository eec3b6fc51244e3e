"""Tests of the job store's typed records (airflow_neo.local.store.records) and of get/status/create.

The API's payloads are shaped from a :class:`JobRecord` in one place: what ``describe``/``list``
return must be exactly the record's ``to_describe()``/``to_summary()``, key order included. Runs on
SQLite and, when configured, PostgreSQL (see tests/support/stores.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import CompilationJobNotFound, InvalidCompilationRequest
from airflow_neo.core.validation import validate_request
from airflow_neo.local.store import JobRecord, JobStore
from airflow_neo.local.store.records import new_job_row
from airflow_neo.local.store.times import dt_to_us
from tests.support.requests import valid_request

T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def store(store_target) -> JobStore:
    return JobStore(store_target, clock=lambda: T0)


def _jobs(store: JobStore) -> list[str]:
    """Jobs in every shape the payloads have: each optional field present in one of them."""
    store.create(valid_request("starting"))
    store.create(
        valid_request(
            "completed",
            VpcConfig={"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
            Tags=[{"Key": "team", "Value": "ml"}],
        )
    )
    assert store.mark_inprogress("completed", "far-host", 1, 60)
    assert store.complete("completed", "s3://models/compiled/model-ml_c5.tar.gz", "ab" * 64, '{"data": [1, 3, 224, 224]}', metadata={"x": 1})
    platform = {"S3OutputLocation": "s3://models/compiled", "TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
                "CompilerOptions": '{"gpu-code": "sm_72", "trt-ver": "8.4.0", "cuda-ver": "11.4"}'}
    store.create(valid_request("failed", OutputConfig=platform))
    assert store.fail("failed", "ClientError: bad model")
    store.create(valid_request("stopping"))
    store.request_stop("stopping")
    return ["starting", "completed", "failed", "stopping"]


def test_describe_is_the_records_payload(store):
    for name in _jobs(store):
        record = store.get(name)
        assert isinstance(record, JobRecord)
        payload = store.describe(name)
        assert payload == record.to_describe()
        assert list(payload) == list(record.to_describe())  # key order too
        assert store.status(name) == record.status == payload["CompilationJobStatus"]
    assert store.describe_many(["completed", "nope", "failed"]) == {
        "completed": store.get("completed").to_describe(),
        "failed": store.get("failed").to_describe(),
    }


def test_list_summaries_are_the_records_summaries(store):
    names = _jobs(store)
    summaries = store.list(SortBy="Name", SortOrder="Ascending")["CompilationJobSummaries"]
    assert summaries == [store.get(n).to_summary() for n in sorted(names)]
    assert [list(s) for s in summaries] == [list(store.get(n).to_summary()) for n in sorted(names)]
    failed = next(s for s in summaries if s["CompilationJobName"] == "failed")
    assert (failed["CompilationTargetPlatformOs"], failed["CompilationTargetPlatformArch"]) == ("LINUX", "ARM64")
    assert failed["CompilationTargetPlatformAccelerator"] == "NVIDIA"


def test_record_fields_are_typed(store):
    _jobs(store)
    done = store.get("completed")
    assert done.status == st.COMPLETED and done.creation_time == T0 and done.creation_time.tzinfo is not None
    assert done.start_time == done.end_time == done.last_modified_time == T0
    assert done.vpc_config == {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}
    assert done.tags == ({"Key": "team", "Value": "ml"},)
    assert done.compile_metadata == {"x": 1} and done.artifact_digest == "ab" * 64
    assert (done.owner_host, done.pid, done.lease_expires_us, done.lease_expires) == ("far-host", 1, None, None)
    assert done.stop_requested is False and store.get("stopping").stop_requested is True
    starting = store.get("starting")
    assert starting.start_time is None and starting.failure_reason == "" and starting.pid is None
    assert starting.lease_expires == T0 + dt.timedelta(seconds=120)  # the start lease
    assert store.get("failed").failure_reason == "ClientError: bad model"
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.status = st.FAILED  # type: ignore[misc]


def test_requests_and_runner_info_come_from_the_record(store):
    _jobs(store)
    record = store.get("completed")
    assert store.get_request("completed") == record.to_request()
    assert store.tags("completed") == [{"Key": "team", "Value": "ml"}]
    assert record.to_runner_info() == {"owner_host": "far-host", "pid": 1, "lease_expires_at": None, "stop_requested": False}


def test_payloads_are_fresh_copies(store):
    _jobs(store)
    record = store.get("completed")
    payload = record.to_describe()
    payload["OutputConfig"]["TargetDevice"] = "changed"
    payload["StoppingCondition"].clear()
    record.to_request()["Tags"].append({"Key": "x", "Value": "y"})
    assert record.output_config["TargetDevice"] == "ml_c5" and record.stopping_condition == {"MaxRuntimeInSeconds": 900}
    assert record.to_describe() == store.describe("completed") and record.tags == ({"Key": "team", "Value": "ml"},)


def test_get_and_status_see_a_dead_runner(store):
    store.create(valid_request("dead"))
    dead_pid = 2**22 + 12345  # above any pid_max: never a live process
    assert store.mark_inprogress("dead", store.host, dead_pid, 600)
    assert store.status("dead") == st.FAILED
    assert store.get("dead").failure_reason.startswith(f"ServerError: Compile worker lost: process {dead_pid} on host")
    with pytest.raises(CompilationJobNotFound, match="Could not find compilation job 'nope'."):
        store.status("nope")
    with pytest.raises(CompilationJobNotFound):
        store.get("nope")


def test_create_takes_a_validated_request_as_it_is(store, monkeypatch):
    validated = validate_request(valid_request("pre-validated", Tags=[{"Key": "k", "Value": "v"}]), allow_local_uris=True)

    def no_second_validation(*_args, **_kwargs):
        raise AssertionError("a ValidatedRequest was normalized again")

    monkeypatch.setattr("airflow_neo.core.validation.normalize_request", no_second_validation)
    assert store.create(validated) == {"CompilationJobArn": store.arn("pre-validated")}
    assert store.get_request("pre-validated") == validated.payload


def test_create_still_validates_a_dict(store):
    with pytest.raises(InvalidCompilationRequest):
        store.create(valid_request("bad_name!"))
    assert not store.exists("bad_name!")
    store.create(valid_request("as-dict", InputConfig={**valid_request()["InputConfig"], "DataInputConfig": {"data": [1, 3, 8, 8]}}))
    assert store.get("as-dict").input_config["DataInputConfig"] == '{"data": [1, 3, 8, 8]}'  # normalized to the API's string


def test_new_job_row_reads_back_as_the_same_job():
    request = validate_request(valid_request("row"), allow_local_uris=True).payload
    now = dt_to_us(T0)
    row = {column: None for column in ("start_us", "end_us", "inference_image", "artifact_digest", "derived_data_input_config",
                                       "owner_host", "pid", "pid_start", "pid_namespace", "owner_boot_id", "compile_metadata")}
    row.update(new_job_row(request, arn="arn:x", now_us=now, lease_expires_us=now + 5))
    record = JobRecord.from_row(row)
    assert record.status == st.STARTING and record.lease_expires_us == now + 5 and record.creation_time == T0
    assert record.s3_model_artifacts == "s3://models/compiled/model-ml_c5.tar.gz"
    assert record.to_request() == request
