"""Tests of the local backend's job store (airflow_neo.local.store), on SQLite and on PostgreSQL.

Every test that takes ``store`` (or ``store_target``) runs once per store kind; PostgreSQL needs
``AIRFLOW_NEO_TEST_PG_URL`` (see tests/support/stores.py), which CI always sets.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import CompilationJobExists, CompilationJobNotFound, CompilationJobStateError
from airflow_neo.core.service_model import output_shape, sagemaker_model
import sqlalchemy as sa

from airflow_neo.local.store import (
    JOBS,
    SCHEMA_VERSION,
    InvalidListRequest,
    JobStore,
    StoreConfigError,
    StoreSchemaError,
    archive_stem,
    artifact_uri_for,
    is_store_url,
    open_store,
    pid_alive,
    store_url,
    target_label,
)
from tests.support.stores import PG_URL_ENV, iter_all, pg_url, runner_info

T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self, start: dt.datetime = T0):
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def make_request(name: str, *, out: str = "/tmp/neo-out", device: str | None = "ml_c5", platform=None, **extra) -> dict:
    output: dict = {"S3OutputLocation": out}
    if platform:
        output["TargetPlatform"] = platform
    else:
        output["TargetDevice"] = device
    request = {
        "CompilationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": "s3://bucket/models/resnet.tar.gz", "DataInputConfig": {"input0": [1, 3, 8, 8]}, "Framework": "ONNX"},
        "OutputConfig": output,
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }
    request.update(extra)
    return request


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_kind, store_target, tmp_path, clock) -> JobStore:
    if store_kind == "sqlite":
        store_target = tmp_path / "nested" / "jobs.db"
    return JobStore(store_target, clock=clock)


def poke(store: JobStore, name: str, **values) -> None:
    """Change a job's row behind the store's back (as another process or host would)."""
    with store._write() as conn:
        conn.execute(sa.update(JOBS).where(JOBS.c.name == name).values(**values))


def _describe_order() -> list[str]:
    return list(output_shape("DescribeCompilationJob").members)


def _summary_order() -> list[str]:
    return list(sagemaker_model().shape_for("CompilationJobSummary").members)


def _is_ordered_subset(keys: list[str], order: list[str]) -> bool:
    positions = [order.index(k) for k in keys]
    return positions == sorted(positions)


# ----------------------------------------------------------------------------- CRUD and shapes


def test_create_and_describe_shape(store, store_kind, tmp_path):
    response = store.create(make_request("job-a", Tags=[{"Key": "team", "Value": "ml"}]))
    if store_kind == "sqlite":  # made by the first job (a read-only open creates nothing)
        assert (tmp_path / "nested" / "jobs.db").is_file()
    assert response == {"CompilationJobArn": "arn:aws:sagemaker:local:000000000000:compilation-job/job-a"}
    job = store.describe("job-a")
    assert list(job) == [
        "CompilationJobName",
        "CompilationJobArn",
        "CompilationJobStatus",
        "StoppingCondition",
        "CreationTime",
        "LastModifiedTime",
        "FailureReason",
        "ModelArtifacts",
        "RoleArn",
        "InputConfig",
        "OutputConfig",
    ]
    assert _is_ordered_subset(list(job), _describe_order())
    assert job["CompilationJobStatus"] == st.STARTING
    assert job["CreationTime"] == "2024-05-01T12:00:00+00:00" == job["LastModifiedTime"]
    assert job["FailureReason"] == ""
    assert job["ModelArtifacts"] == {"S3ModelArtifacts": "/tmp/neo-out/resnet-ml_c5.tar.gz"}
    assert job["InputConfig"]["DataInputConfig"] == '{"input0": [1, 3, 8, 8]}'  # normalized to a JSON string
    assert "InferenceImage" not in job and "VpcConfig" not in job
    json.dumps(job)  # JSON-safe
    assert store.tags("job-a") == [{"Key": "team", "Value": "ml"}]
    assert store.get_request("job-a")["Tags"] == [{"Key": "team", "Value": "ml"}]


def test_full_describe_after_completion_keeps_api_order(store, clock):
    store.create(make_request("job-b", VpcConfig={"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}))
    clock.advance(1)
    assert store.mark_inprogress("job-b", store.host, os.getpid(), 30)
    clock.advance(5)
    assert store.complete("job-b", "/tmp/neo-out/resnet-ml_c5.tar.gz", "ab" * 64, '{"input0": [1, 3, 8, 8]}', metadata={"x": 1})
    job = store.describe("job-b")
    assert _is_ordered_subset(list(job), _describe_order())
    assert set(_describe_order()) - set(job) == {"InferenceImage", "ModelPackageVersionArn"}
    assert job["CompilationJobStatus"] == st.COMPLETED
    assert job["CompilationStartTime"] == "2024-05-01T12:00:01+00:00"
    assert job["CompilationEndTime"] == "2024-05-01T12:00:06+00:00" == job["LastModifiedTime"]
    assert job["ModelDigests"] == {"ArtifactDigest": "ab" * 64}
    assert job["DerivedInformation"] == {"DerivedDataInputConfig": '{"input0": [1, 3, 8, 8]}'}
    assert store.compile_metadata("job-b") == {"x": 1}
    assert runner_info(store, "job-b")["lease_expires_at"] is None


def test_duplicate_name_is_resource_in_use(store):
    store.create(make_request("dup"))
    with pytest.raises(CompilationJobExists, match="Compilation job with name dup already exists") as info:
        store.create(make_request("dup"))
    assert info.value.code == "ResourceInUse"


def test_unknown_job_is_resource_not_found(store):
    for call in (store.describe, store.request_stop, store.delete, store.get_request):
        with pytest.raises(CompilationJobNotFound, match="Could not find compilation job 'nope'"):
            call("nope")
    with pytest.raises(CompilationJobNotFound):
        store.mark_inprogress("nope", "h", 1, 10)
    with pytest.raises(CompilationJobNotFound):
        store.fail("nope", "x")


def test_invalid_request_is_rejected(store):
    from airflow_neo.core.exceptions import InvalidCompilationRequest

    with pytest.raises(InvalidCompilationRequest):
        store.create(make_request("bad_name!"))


def test_arn_region_and_account(store_target):
    store = JobStore(store_target, region="eu-west-1", account="123456789012")
    assert store.create(make_request("a1"))["CompilationJobArn"] == (
        "arn:aws:sagemaker:eu-west-1:123456789012:compilation-job/a1"
    )


def test_artifact_naming():
    assert archive_stem("s3://b/p/model.tar.gz") == "model"
    assert archive_stem("/x/y/net.tgz") == "net"
    assert target_label({"TargetDevice": "ml_c5"}) == "ml_c5"
    assert target_label({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}) == "linux-x86_64"
    assert target_label({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"}}) == "linux-arm64-nvidia"
    request = make_request("n1", out="s3://out/prefix/", platform={"Os": "LINUX", "Arch": "ARM64", "Accelerator": "MALI"})
    assert artifact_uri_for(request) == "s3://out/prefix/resnet-linux-arm64-mali.tar.gz"


def test_schema_is_versioned(tmp_path):
    path = tmp_path / "s.db"
    store = JobStore(path)
    assert store.schema_version() == SCHEMA_VERSION == 3
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM neo_meta WHERE key='schema_version'").fetchone()[0] == "3"
        conn.execute("UPDATE neo_meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreSchemaError, match="schema version 99"):
        JobStore(path)


def test_postgres_schema_is_versioned(pg_schema_url):
    store = JobStore(pg_schema_url)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.is_shared_database and store.path is None
    JobStore(pg_schema_url)  # opening it again changes nothing
    engine = sa.create_engine(pg_schema_url)
    try:
        with engine.begin() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            assert tables == {"neo_jobs", "neo_meta"}
            conn.exec_driver_sql("UPDATE neo_meta SET value='99' WHERE key='schema_version'")
    finally:
        engine.dispose()
    with pytest.raises(StoreSchemaError, match="schema version 99"):
        JobStore(pg_schema_url)


# The schema airflow-neo 0.1 wrote (version 1, SQLite only), verbatim.
_SCHEMA_1 = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
    """
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY, arn TEXT NOT NULL, status TEXT NOT NULL, creation_us INTEGER NOT NULL,
        last_modified_us INTEGER NOT NULL, start_us INTEGER, end_us INTEGER, stopping_condition TEXT NOT NULL,
        inference_image TEXT, model_package_version_arn TEXT, failure_reason TEXT NOT NULL DEFAULT '',
        s3_model_artifacts TEXT, artifact_digest TEXT, role_arn TEXT NOT NULL, input_config TEXT,
        output_config TEXT NOT NULL, vpc_config TEXT, derived_data_input_config TEXT,
        tags TEXT NOT NULL DEFAULT '[]', target_device TEXT, target_os TEXT, target_arch TEXT,
        target_accelerator TEXT, owner_host TEXT, pid INTEGER, pid_start TEXT, pid_namespace TEXT,
        lease_expires_us INTEGER, stop_requested INTEGER NOT NULL DEFAULT 0, compile_metadata TEXT
    )
    """,
    "CREATE INDEX jobs_by_creation ON jobs (creation_us, name)",
    "CREATE INDEX jobs_by_status ON jobs (status, creation_us, name)",
    "INSERT INTO meta VALUES ('schema_version', '1')",
)


def test_schema_1_file_is_migrated_in_place(tmp_path, clock):
    path = tmp_path / "old" / "jobs.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        for statement in _SCHEMA_1:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO jobs (name, arn, status, creation_us, last_modified_us, start_us, end_us, stopping_condition,"
            " role_arn, output_config, s3_model_artifacts, artifact_digest, tags, target_device)"
            " VALUES ('old-job', 'arn:aws:sagemaker:local:000000000000:compilation-job/old-job', 'COMPLETED',"
            " 1714564800000000, 1714564805000000, 1714564801000000, 1714564805000000, '{\"MaxRuntimeInSeconds\": 900}',"
            " 'arn:aws:iam::123456789012:role/neo', '{\"S3OutputLocation\": \"/o\", \"TargetDevice\": \"ml_c5\"}',"
            " '/o/m-ml_c5.tar.gz', 'ab', '[]', 'ml_c5')"
        )
    store = JobStore(path, clock=clock)
    assert store.schema_version() == 3  # 1 -> 2 -> 3
    job = store.describe("old-job")
    assert job["CompilationJobStatus"] == st.COMPLETED
    assert job["CreationTime"] == "2024-05-01T12:00:00+00:00"
    assert job["ModelDigests"] == {"ArtifactDigest": "ab"}
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(neo_jobs)")}
        legacy_version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert {"neo_jobs", "neo_meta"} <= tables and "jobs" not in tables
    assert indexes == {"neo_jobs_by_creation", "neo_jobs_by_status", "neo_jobs_by_slot"}
    assert {"owner_boot_id", "slot_host", "slot_state"} <= columns
    assert legacy_version == "2"  # airflow-neo 0.1 now refuses the file instead of starting an empty table
    clock.advance(60)
    store.create(make_request("new-job"))  # and the migrated store works as a new one
    assert [s["CompilationJobName"] for s in iter_all(store)] == ["new-job", "old-job"]
    assert JobStore(path).schema_version() == 3  # a second open migrates nothing


def test_store_targets(tmp_path, monkeypatch):
    assert not is_store_url("/var/lib/neo/jobs.sqlite") and not is_store_url("file:///x/jobs.db")
    assert is_store_url("postgresql://u:p@db/neo") and is_store_url("sqlite:////tmp/x.db")
    assert store_url("postgres://u:p@db:5432/neo").drivername == "postgresql"  # Airflow's URI spelling
    assert store_url(tmp_path / "a.db").database == str(tmp_path / "a.db")
    monkeypatch.chdir(tmp_path)
    assert store_url("sqlite:///rel.db").database == str(tmp_path / "rel.db")  # absolute for the runner
    for bad in ("sqlite://", "sqlite:///:memory:", "", "nonsense://::"):
        with pytest.raises(StoreConfigError):
            store_url(bad)
    by_url = open_store(f"sqlite:///{tmp_path}/u/jobs.db")
    assert by_url.path == tmp_path / "u" / "jobs.db" and by_url.root == tmp_path / "u"
    assert by_url.target == str(tmp_path / "u" / "jobs.db")
    assert open_store(by_url) is by_url
    elsewhere = JobStore(tmp_path / "v" / "jobs.db", work_dir=tmp_path / "scratch")
    assert elsewhere.log_path("j") == tmp_path / "scratch" / "logs" / "j.log"


def test_database_store_keeps_logs_in_airflow_home(pg_schema_url, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    store = JobStore(pg_schema_url)
    assert store.root == tmp_path / "home" / "neo"
    assert store.log_path("j") == tmp_path / "home" / "neo" / "logs" / "j.log"
    assert store.target == pg_schema_url and "neo-test-password" not in store.display_target
    assert JobStore(pg_schema_url, work_dir=tmp_path / "w").work_dir == tmp_path / "w" / "work"


def test_ci_runs_the_postgres_store():
    """CI must not skip the PostgreSQL half of the store tests silently."""
    if os.environ.get("CI", "").lower() not in ("true", "1", "yes"):
        pytest.skip("not CI")
    assert pg_url(), f"CI=true but {PG_URL_ENV} is not set: .ci/run must start PostgreSQL (scripts/postgres.sh)"
    engine = sa.create_engine(pg_url())
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- concurrency


def _create_colliding(target: str, start_at: float, names: list[str]) -> list[str]:
    store = JobStore(target)
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    won = []
    for name in names:
        try:
            store.create(make_request(name))
            won.append(name)
        except CompilationJobExists:
            pass
    return won


def test_unique_names_under_concurrent_processes(store_target):
    """8 processes create the same 12 names at the same moment: each name is won exactly once.

    (tests/local/test_shared_store.py does the same with 16 processes on two "hosts".)
    """
    JobStore(store_target)
    names = [f"job-{i}" for i in range(12)]
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0
    with concurrent.futures.ProcessPoolExecutor(8, mp_context=ctx) as pool:
        futures = [pool.submit(_create_colliding, store_target, start_at, names[i % 3 :] + names[: i % 3]) for i in range(8)]
        results = [f.result(timeout=120) for f in futures]
    winners = [name for won in results for name in won]
    assert sorted(winners) == sorted(names)  # every name won exactly once
    store = JobStore(store_target)
    assert sorted(s["CompilationJobName"] for s in iter_all(store)) == sorted(names)


# ----------------------------------------------------------------------------- list


@pytest.fixture
def listed(store, clock):
    """Six jobs created one minute apart, with assorted statuses and targets."""
    specs = [
        ("alpha-resnet", {}),
        ("Beta-resnet", {"platform": {"Os": "LINUX", "Arch": "X86_64"}}),
        ("gamma-bert", {"platform": {"Os": "LINUX", "Arch": "ARM64", "Accelerator": "NVIDIA"},
                        "OutputConfig_opts": '{"gpu-code": "sm_72", "trt-ver": "8.0.1", "cuda-ver": "11.4"}'}),
        ("delta-bert", {}),
        ("epsilon-mobilenet", {}),
        ("zeta-resnet", {}),
    ]
    for name, spec in specs:
        options = spec.pop("OutputConfig_opts", None)
        request = make_request(name, **spec)
        if options:
            request["OutputConfig"]["CompilerOptions"] = options
        store.create(request, lease_seconds=3600)
        clock.advance(60)
    # statuses: alpha COMPLETED, Beta FAILED, gamma INPROGRESS, delta STOPPED, epsilon STARTING, zeta STARTING
    store.mark_inprogress("alpha-resnet", store.host, os.getpid(), 3600)
    store.complete("alpha-resnet", "/o/x.tar.gz", "00", None)
    store.fail("Beta-resnet", "boom")
    store.mark_inprogress("gamma-bert", store.host, os.getpid(), 3600)
    store.request_stop("delta-bert")
    store.mark_stopped("delta-bert")
    clock.advance(1)
    return store


def names(page: dict) -> list[str]:
    return [s["CompilationJobName"] for s in page["CompilationJobSummaries"]]


def test_list_default_sort_is_creation_time_descending(listed):
    page = listed.list()
    assert names(page) == ["zeta-resnet", "epsilon-mobilenet", "delta-bert", "gamma-bert", "Beta-resnet", "alpha-resnet"]
    assert "NextToken" not in page
    for summary in page["CompilationJobSummaries"]:
        assert _is_ordered_subset(list(summary), _summary_order())
    by_name = {s["CompilationJobName"]: s for s in page["CompilationJobSummaries"]}
    assert list(by_name["alpha-resnet"]) == [
        "CompilationJobName",
        "CompilationJobArn",
        "CreationTime",
        "CompilationStartTime",
        "CompilationEndTime",
        "CompilationTargetDevice",
        "LastModifiedTime",
        "CompilationJobStatus",
    ]
    assert by_name["Beta-resnet"]["CompilationTargetPlatformOs"] == "LINUX"
    assert "CompilationTargetPlatformAccelerator" not in by_name["Beta-resnet"]
    assert by_name["gamma-bert"]["CompilationTargetPlatformAccelerator"] == "NVIDIA"
    assert by_name["zeta-resnet"]["CompilationJobStatus"] == st.STARTING
    json.dumps(page)


def test_list_sorting(listed):
    assert names(listed.list(SortBy="CreationTime", SortOrder="Ascending"))[0] == "alpha-resnet"
    assert names(listed.list(SortBy="Name", SortOrder="Ascending")) == sorted(
        ["alpha-resnet", "Beta-resnet", "gamma-bert", "delta-bert", "epsilon-mobilenet", "zeta-resnet"]
    )
    by_status = names(listed.list(SortBy="Status", SortOrder="Ascending"))
    # COMPLETED < FAILED < INPROGRESS < STARTING (epsilon before zeta by creation) < STOPPED
    assert by_status == ["alpha-resnet", "Beta-resnet", "gamma-bert", "epsilon-mobilenet", "zeta-resnet", "delta-bert"]
    assert names(listed.list(SortBy="Status", SortOrder="Descending")) == list(reversed(by_status))


def test_list_filters(listed):
    assert names(listed.list(NameContains="resnet", SortOrder="Ascending")) == ["alpha-resnet", "Beta-resnet", "zeta-resnet"]
    assert names(listed.list(NameContains="BETA")) == ["Beta-resnet"]  # case-insensitive
    assert names(listed.list(StatusEquals="STARTING")) == ["zeta-resnet", "epsilon-mobilenet"]
    assert names(listed.list(StatusEquals="FAILED")) == ["Beta-resnet"]
    # Creation times are T0, T0+60, ... T0+300; comparisons are strict.
    after = T0 + dt.timedelta(seconds=120)
    assert names(listed.list(CreationTimeAfter=after)) == ["zeta-resnet", "epsilon-mobilenet", "delta-bert"]
    assert names(listed.list(CreationTimeAfter=after.isoformat(), CreationTimeBefore="2024-05-01T12:05:00Z")) == [
        "epsilon-mobilenet",
        "delta-bert",
    ]
    naive = dt.datetime(2024, 5, 1, 12, 1, 0)  # naive = UTC
    assert names(listed.list(CreationTimeBefore=naive)) == ["alpha-resnet"]
    # alpha, Beta, gamma, delta were modified at T0+360 (after the last create); the rest never
    modified_after = T0 + dt.timedelta(seconds=330)
    assert set(names(listed.list(LastModifiedTimeAfter=modified_after))) == {"alpha-resnet", "Beta-resnet", "gamma-bert", "delta-bert"}
    assert names(listed.list(LastModifiedTimeBefore=modified_after)) == ["zeta-resnet", "epsilon-mobilenet"]
    assert names(listed.list(NameContains="bert", StatusEquals="STOPPED")) == ["delta-bert"]


def test_list_paging(listed):
    for sort_by in ("Name", "CreationTime", "Status"):
        for order in ("Ascending", "Descending"):
            expected = names(listed.list(SortBy=sort_by, SortOrder=order))
            collected, token, pages = [], None, 0
            while True:
                page = listed.list(SortBy=sort_by, SortOrder=order, MaxResults=4 if pages else 2, NextToken=token)
                pages += 1
                assert len(page["CompilationJobSummaries"]) <= (4 if pages > 1 else 2)
                collected += names(page)
                token = page.get("NextToken")
                if not token:
                    break
            assert collected == expected, (sort_by, order)
            assert pages == 2  # 2 + 4 = all 6 jobs; no empty last page
    exact = listed.list(MaxResults=6)
    assert "NextToken" not in exact and len(exact["CompilationJobSummaries"]) == 6
    assert names(listed.list(MaxResults=5, NameContains="resnet")) == ["zeta-resnet", "Beta-resnet", "alpha-resnet"]


def test_list_paging_sees_no_duplicates_when_jobs_are_added(listed, clock):
    first = listed.list(MaxResults=3, SortOrder="Ascending")
    listed.create(make_request("late-job"))
    rest = listed.list(MaxResults=100, SortOrder="Ascending", NextToken=first["NextToken"])
    assert names(first) + names(rest) == [
        "alpha-resnet", "Beta-resnet", "gamma-bert", "delta-bert", "epsilon-mobilenet", "zeta-resnet", "late-job",
    ]


def test_list_validation(listed):
    token = listed.list(MaxResults=1)["NextToken"]
    with pytest.raises(InvalidListRequest, match="same filters"):
        listed.list(MaxResults=1, NextToken=token, StatusEquals="FAILED")
    with pytest.raises(InvalidListRequest, match="Invalid pagination token"):
        listed.list(NextToken="garbage!!")
    for bad in ({"MaxResults": 0}, {"MaxResults": 101}, {"SortBy": "Status2"}, {"SortOrder": "Up"},
                {"StatusEquals": "InProgress"}, {"NameContains": "a b"}, {"CreationTimeAfter": "yesterday"},
                {"Bogus": 1}):
        with pytest.raises(InvalidListRequest):
            listed.list(**bad)


def test_list_on_empty_store(store):
    assert store.list() == {"CompilationJobSummaries": []}


# ----------------------------------------------------------------------------- transitions


def test_transitions_are_conditional(store, clock):
    store.create(make_request("t1"))
    assert store.mark_inprogress("t1", store.host, os.getpid(), 30)
    assert not store.mark_inprogress("t1", store.host, os.getpid(), 30)  # already picked up
    assert store.describe("t1")["CompilationJobStatus"] == st.INPROGRESS
    assert store.renew_lease("t1", 30) is False
    assert store.fail("t1", "x" * 5000)
    job = store.describe("t1")
    assert job["CompilationJobStatus"] == st.FAILED
    assert len(job["FailureReason"]) == 1024 and job["FailureReason"].endswith("...")
    assert not store.complete("t1", "/o", "d", None)  # a terminal job never changes again
    assert not store.fail("t1", "again")
    assert not store.mark_stopped("t1")
    assert store.describe("t1")["CompilationJobStatus"] == st.FAILED
    with pytest.raises(CompilationJobStateError, match="FAILED"):
        store.renew_lease("t1", 30)


def test_stop_rules(store):
    store.create(make_request("s-start"))
    store.request_stop("s-start")  # STARTING -> STOPPING
    assert store.describe("s-start")["CompilationJobStatus"] == st.STOPPING
    assert not store.mark_inprogress("s-start", store.host, os.getpid(), 30)  # a runner must not start it
    store.request_stop("s-start")  # idempotent while STOPPING
    assert store.mark_stopped("s-start")
    assert store.describe("s-start")["CompilationJobStatus"] == st.STOPPED

    store.create(make_request("s-run"))
    store.mark_inprogress("s-run", store.host, os.getpid(), 30)
    assert store.renew_lease("s-run", 30) is False
    store.request_stop("s-run")
    assert store.describe("s-run")["CompilationJobStatus"] == st.STOPPING
    assert store.renew_lease("s-run", 30) is True
    assert runner_info(store, "s-run")["stop_requested"] is True
    assert store.mark_stopped("s-run")

    for name in ("s-start", "s-run"):
        with pytest.raises(CompilationJobStateError, match="in status STOPPED") as info:
            store.request_stop(name)
        assert info.value.code == "ValidationException"
    store.create(make_request("s-done"))
    store.mark_inprogress("s-done", store.host, os.getpid(), 30)
    store.complete("s-done", "/o", "d", None)
    with pytest.raises(CompilationJobStateError, match="COMPLETED"):
        store.request_stop("s-done")


def test_delete_rules(store):
    store.create(make_request("d1"))
    with pytest.raises(CompilationJobStateError, match="STARTING"):
        store.delete("d1")
    store.mark_inprogress("d1", store.host, os.getpid(), 30)
    with pytest.raises(CompilationJobStateError, match="INPROGRESS"):
        store.delete("d1")
    store.request_stop("d1")
    with pytest.raises(CompilationJobStateError, match="STOPPING"):
        store.delete("d1")
    store.mark_stopped("d1")
    store.delete("d1")
    assert not store.exists("d1")
    with pytest.raises(CompilationJobNotFound):
        store.delete("d1")
    store.create(make_request("d1"))  # the name is free again
    assert store.describe("d1")["CompilationJobStatus"] == st.STARTING


# ----------------------------------------------------------------------------- dead runners


def test_lease_expiry_marks_failed(store, clock):
    store.create(make_request("lease"))
    store.mark_inprogress("lease", "some-other-host", 4242, 10)
    clock.advance(9)
    assert store.describe("lease")["CompilationJobStatus"] == st.INPROGRESS
    clock.advance(2)
    job = store.describe("lease")
    assert job["CompilationJobStatus"] == st.FAILED
    assert job["FailureReason"] == (
        "ServerError: Compile worker lost: lease expired at 2024-05-01T12:00:10+00:00 "
        "(process 4242 on host some-other-host stopped renewing it)"
    )
    assert job["CompilationEndTime"] == "2024-05-01T12:00:11+00:00"


def test_renewed_lease_keeps_job_alive(store, clock):
    store.create(make_request("renew"))
    store.mark_inprogress("renew", "some-other-host", 4242, 10)
    for _ in range(5):
        clock.advance(8)
        store.renew_lease("renew", 10)
        assert store.describe("renew")["CompilationJobStatus"] == st.INPROGRESS


def test_start_lease_expiry_marks_failed(store, clock):
    store.create(make_request("never"), lease_seconds=60)
    clock.advance(61)
    job = store.list()["CompilationJobSummaries"][0]
    assert job["CompilationJobStatus"] == st.FAILED  # list reaps too
    assert "no runner picked up the job" in store.describe("never")["FailureReason"]


def test_dead_pid_on_this_host_marks_failed(store):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    store.create(make_request("dead"))
    store.mark_inprogress("dead", store.host, proc.pid, 3600)
    job = store.describe("dead")
    assert job["CompilationJobStatus"] == st.FAILED
    assert job["FailureReason"] == (
        f"ServerError: Compile worker lost: process {proc.pid} on host {store.host} exited without recording a result"
    )


def test_zombie_runner_counts_as_dead(store):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    store.create(make_request("zombie"))
    store.mark_inprogress("zombie", store.host, proc.pid, 3600)
    deadline = time.time() + 10
    while time.time() < deadline and pid_alive(proc.pid):
        time.sleep(0.05)
    assert store.list(StatusEquals="FAILED")["CompilationJobSummaries"][0]["CompilationJobName"] == "zombie"
    proc.wait()


def test_reused_pid_counts_as_dead(store):
    store.create(make_request("reused"))
    store.mark_inprogress("reused", store.host, os.getpid(), 3600)
    poke(store, "reused", pid_start="1")
    assert store.describe("reused")["CompilationJobStatus"] == st.FAILED


def test_live_runner_is_left_alone(store):
    store.create(make_request("alive"))
    store.mark_inprogress("alive", store.host, os.getpid(), 3600)
    assert store.describe("alive")["CompilationJobStatus"] == st.INPROGRESS
    assert store.reap() == []


def test_dead_runner_of_stopping_job_means_stopped(store):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store.create(make_request("stopping"))
    store.mark_inprogress("stopping", store.host, proc.pid, 3600)
    poke(store, "stopping", status="STOPPING", stop_requested=1)  # stop requested while the runner was still alive
    job = store.describe("stopping")
    assert job["CompilationJobStatus"] == st.STOPPED
    assert job["FailureReason"] == ""


def test_delete_of_dead_running_job_works(store):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store.create(make_request("gone"))
    store.mark_inprogress("gone", store.host, proc.pid, 3600)
    store.delete("gone")  # reaped to FAILED first, then deletable
    assert not store.exists("gone")


def test_dead_pid_in_another_pid_namespace_is_left_to_the_lease(store, clock):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store.create(make_request("other-ns"))
    store.mark_inprogress("other-ns", store.host, proc.pid, 30)
    poke(store, "other-ns", pid_namespace="pid:[1]")  # as if a container sharing our host name ran it
    assert store.describe("other-ns")["CompilationJobStatus"] == st.INPROGRESS
    clock.advance(31)
    assert "lease expired" in store.describe("other-ns")["FailureReason"]


def test_dead_pid_from_another_boot_is_left_to_the_lease(store, clock):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store.create(make_request("rebooted"))
    store.mark_inprogress("rebooted", store.host, proc.pid, 30)
    poke(store, "rebooted", owner_boot_id="another-kernel")  # same host name, another machine (or boot)
    assert store.describe("rebooted")["CompilationJobStatus"] == st.INPROGRESS
    clock.advance(31)
    assert "lease expired" in store.describe("rebooted")["FailureReason"]


# ----------------------------------------------------------------------------- many hosts, one store


def test_two_hosts_share_jobs_leases_and_stop_requests(store_target, store_kind, tmp_path, clock):
    """Host A runs a job; host B (another name, its own clock-free view) sees it, stops it, and reaps it."""
    if store_kind == "sqlite":
        store_target = tmp_path / "shared" / "jobs.db"
    host_a = JobStore(store_target, host="worker-a", clock=clock, work_dir=tmp_path / "a")
    host_b = JobStore(store_target, host="worker-b", clock=clock, work_dir=tmp_path / "b")
    host_a.create(make_request("shared"))
    with pytest.raises(CompilationJobExists):
        host_b.create(make_request("shared"))
    assert host_a.mark_inprogress("shared", "worker-a", 999_999, 10)
    # B never checks A's pid (it means nothing on B), only A's lease.
    assert host_b.describe("shared")["CompilationJobStatus"] == st.INPROGRESS
    assert host_b.reap() == []
    host_b.request_stop("shared")
    assert host_a.renew_lease("shared", 10) is True  # A's heartbeat sees B's stop request
    assert host_a.mark_stopped("shared")
    assert host_b.describe("shared")["CompilationJobStatus"] == st.STOPPED

    host_a.create(make_request("lost"))
    host_a.mark_inprogress("lost", "worker-a", 999_999, 10)
    clock.advance(5)
    host_a.renew_lease("lost", 10)
    clock.advance(9)
    assert host_b.describe("lost")["CompilationJobStatus"] == st.INPROGRESS
    clock.advance(2)  # A stopped renewing: lease ran out at T0+15
    job = host_b.describe("lost")
    assert job["CompilationJobStatus"] == st.FAILED
    assert job["FailureReason"] == (
        "ServerError: Compile worker lost: lease expired at 2024-05-01T12:00:15+00:00 "
        "(process 999999 on host worker-a stopped renewing it)"
    )
    with pytest.raises(CompilationJobStateError):
        host_a.renew_lease("lost", 10)  # A (if it comes back) learns the job is no longer its


def test_describe_many(store, clock):
    for name in ("m1", "m2", "m3"):
        store.create(make_request(name), lease_seconds=10)
    store.mark_inprogress("m1", "far-host", 1, 3600)
    clock.advance(11)  # m2 and m3 were never picked up
    payloads = store.describe_many(["m3", "m1", "missing", "m2", "m1"])
    assert list(payloads) == ["m3", "m1", "m2"]
    assert payloads["m1"] == store.describe("m1")
    assert payloads["m1"]["CompilationJobStatus"] == st.INPROGRESS
    assert payloads["m2"]["CompilationJobStatus"] == st.FAILED  # reaped like describe does
    assert "no runner picked up the job" in payloads["m3"]["FailureReason"]
    assert store.describe_many([]) == {}
    many = [f"bulk-{i}" for i in range(1200)]  # more than one IN (...) chunk
    with store._write() as conn:
        for name in many:
            conn.execute(sa.insert(JOBS).values(
                name=name, arn=store.arn(name), status=st.INPROGRESS, creation_us=0, last_modified_us=0,
                stopping_condition="{}", role_arn="r", output_config="{}", failure_reason="", tags="[]",
                stop_requested=0, owner_host="far-host", pid=1, lease_expires_us=10**18,
            ))
    assert len(store.describe_many(many)) == 1200
