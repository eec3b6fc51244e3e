"""Many workers, one job store: two worker processes share a PostgreSQL store and a moto S3 server.

The "workers" are separate processes (``tests/support/neo_worker.py``) with their own
``AIRFLOW_HOME`` and host name (``AIRFLOW_NEO_HOST``, so that each sees the other as another
machine: no pid checks across them, only leases), the job store from an Airflow Postgres
connection (``[neo] local_store_conn_id``) or a URL, and S3 through an Airflow AWS connection to a
moto server running as its own process. Real parts throughout: PostgreSQL, the detached runner,
the TVM compiler, the operator, the sensor and the CLI.

Needs ``AIRFLOW_NEO_TEST_PG_URL`` (CI always sets it; see tests/support/stores.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from sqlalchemy.engine import make_url

from airflow_neo.core import status as st
from airflow_neo.local.store import JobStore
from airflow_neo.samples import write_sample_archive
from tests.support.fixtures import aws_connection_json
from tests.support.stores import iter_all, runner_info
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 3
pytestmark = pytest.mark.timeout(900)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def moto_process() -> str:
    """A moto server as its own process (both workers talk to it over HTTP); yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.moto_server"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def sample_archive(tmp_path_factory) -> Path:
    return write_sample_archive(tmp_path_factory.mktemp("models") / "model.tar.gz")


class Cluster:
    """Two workers' environments around one PostgreSQL schema and one moto S3."""

    def __init__(self, store_url: str, moto_url: str, root: Path):
        self.store_url = store_url
        self.moto_url = moto_url
        self.root = root
        url = make_url(store_url)
        store_connection = {
            "conn_type": "postgres",
            "host": url.host,
            "port": url.port,
            "login": url.username,
            "password": url.password,
            "schema": url.database,
            "extra": {key: value for key, value in url.query.items()},  # search_path of the test's schema
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__NEO__", "AIRFLOW_CONN_"))}
        base.update(
            {
                "PYTHONPATH": str(REPO),
                "AIRFLOW_CONN_AWS_NEO_TEST": aws_connection_json(moto_url),
                "AIRFLOW_CONN_NEO_STORE": json.dumps(store_connection),
                "AIRFLOW__NEO__LOCAL_STORE_CONN_ID": "neo_store",
                "AIRFLOW__NEO__LOCAL_LEASE_SECONDS": str(LEASE_SECONDS),
                # no latency profile: its peak-RSS children (about 15 s a compile) are not what these
                # tests are about (tests/local/test_profile.py and the example DAGs' batch test profile)
                "AIRFLOW__NEO__PROFILE_SECONDS": "0",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        self.base_env = base

    def home(self, worker: str) -> Path:
        return self.root / f"home-{worker}"

    def env(self, worker: str) -> dict[str, str]:
        home = self.home(worker)
        home.mkdir(exist_ok=True)
        return {**self.base_env, "AIRFLOW_HOME": str(home), "AIRFLOW_NEO_HOST": worker}

    def start(self, worker: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.support.neo_worker", *args],
            cwd=REPO, env={**self.env(worker), **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )

    def observer(self) -> JobStore:
        """The store as a third machine sees it (reads reap by lease only)."""
        return JobStore(self.store_url, host="observer", work_dir=self.root / "observer")

    def s3(self):
        return boto3.client(
            "s3", endpoint_url=self.moto_url, region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}),
        )


def result_of(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"worker printed nothing; stderr:\n{err[-4000:]}"
    result = json.loads(lines[-1])
    assert "crash" not in result, result["crash"] + err[-4000:]
    return result


@pytest.fixture
def cluster(pg_schema_url, moto_process, sample_archive, tmp_path) -> Cluster:
    cluster = Cluster(pg_schema_url, moto_process, tmp_path)
    s3 = cluster.s3()
    bucket = f"models-{tmp_path.name.lower().replace('_', '-')[-30:]}"
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(sample_archive), bucket, "in/model.tar.gz")
    cluster.bucket = bucket
    return cluster


# ----------------------------------------------------------------------------- configuration


def test_store_from_an_airflow_postgres_connection(monkeypatch, tmp_path):
    from airflow_neo.hooks.local import LocalNeoHook, local_job_config

    def default_store_path() -> str:
        return local_job_config().store

    def default_work_dir() -> str | None:
        return local_job_config().work_dir
    from airflow_neo.local.store import StoreConfigError

    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_STORE", str(tmp_path / "ignored.sqlite"))
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_STORE_CONN_ID", "neo_store")
    monkeypatch.setenv("AIRFLOW_CONN_NEO_STORE", json.dumps({
        "conn_type": "postgres", "host": "db.internal", "port": 5433, "login": "neo", "password": "p@ss/w:rd",
        "schema": "neo", "extra": {"sslmode": "require", "unrelated": "x"},
    }))
    url = make_url(default_store_path())
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.username, url.password, url.database) == ("db.internal", 5433, "neo", "p@ss/w:rd", "neo")
    assert dict(url.query) == {"sslmode": "require"}
    monkeypatch.setenv("AIRFLOW_CONN_NEO_STORE", json.dumps({
        "conn_type": "generic", "extra": {"sqlalchemy_url": "postgresql+psycopg://u:p@h/d"},
    }))
    assert default_store_path() == "postgresql+psycopg://u:p@h/d"
    monkeypatch.setenv("AIRFLOW_CONN_NEO_STORE", json.dumps({"conn_type": "mysql", "host": "h"}))
    with pytest.raises(StoreConfigError, match="needs a Postgres connection"):
        default_store_path()
    monkeypatch.delenv("AIRFLOW__NEO__LOCAL_STORE_CONN_ID")
    assert default_store_path() == str(tmp_path / "ignored.sqlite")  # [neo] local_store then applies
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_STORE", "postgresql://u:p@h/d")
    assert default_store_path() == "postgresql://u:p@h/d"
    assert default_work_dir() is None
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_WORK_DIR", str(tmp_path / "scratch"))
    assert default_work_dir() == str(tmp_path / "scratch")
    hook = LocalNeoHook(store_path=str(tmp_path / "s" / "jobs.sqlite"))
    assert hook.store.log_path("j") == tmp_path / "scratch" / "logs" / "j.log"


# ----------------------------------------------------------------------------- the tests


def test_one_worker_compiles_the_other_sees_job_and_artifact(cluster):
    name = "shared-ok"
    bucket = cluster.bucket
    sensor = cluster.start("worker-b", "sense", name, "--local-store", cluster.store_url)
    compiler = cluster.start("worker-a", "compile", name, f"s3://{bucket}/in/model.tar.gz", f"s3://{bucket}/compiled")
    compiled = result_of(compiler)
    sensed = result_of(sensor)
    assert "payload" in compiled, compiled
    payload = compiled["payload"]
    assert payload["CompilationJobStatus"] == "COMPLETED", payload["FailureReason"]
    assert payload["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/compiled/model-linux-x86_64.tar.gz"

    # Worker B's sensor (another AIRFLOW_HOME, another host name, the store given as a URL) saw the
    # job complete and read the artifact back from S3: the digest is the one worker A recorded.
    assert "payload" in sensed, sensed
    assert sensed["payload"] == payload
    assert sensed["artifact_digest"] == payload["ModelDigests"]["ArtifactDigest"]
    assert sensed["artifact_bytes"] > 1000

    observer = cluster.observer()
    assert runner_info(observer, name)["owner_host"] == "worker-a"
    assert observer.describe(name) == payload
    # The compile log stays on the machine that compiled.
    assert "job COMPLETED" in (cluster.home("worker-a") / "neo" / "logs" / f"{name}.log").read_text()
    assert not (cluster.home("worker-b") / "neo" / "logs" / f"{name}.log").exists()

    if importlib.util.find_spec("airflow_neo.cli") is not None:  # the CLI on worker B sees it too
        cli = subprocess.run(
            [sys.executable, "-m", "airflow_neo", "--backend", "local", "describe-compilation-job",
             "--compilation-job-name", name],
            cwd=REPO, env=cluster.env("worker-b"), capture_output=True, text=True, timeout=300,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == payload
        listed = subprocess.run(
            [sys.executable, "-m", "airflow_neo", "--backend", "local", "list-compilation-jobs",
             "--name-contains", "shared"],
            cwd=REPO, env=cluster.env("worker-b"), capture_output=True, text=True, timeout=300,
        )
        assert listed.returncode == 0, listed.stderr
        summaries = json.loads(listed.stdout)["CompilationJobSummaries"]
        assert [(s["CompilationJobName"], s["CompilationJobStatus"]) for s in summaries] == [(name, "COMPLETED")]


def test_killed_worker_is_reported_failed_by_the_other_after_its_lease(cluster):
    name = "shared-killed"
    bucket = cluster.bucket
    sensor = cluster.start("worker-b", "sense", name, "--local-store", cluster.store_url)
    started = result_of(cluster.start(
        "worker-a", "compile", name, f"s3://{bucket}/in/model.tar.gz", f"s3://{bucket}/compiled", "--no-wait"
    ))
    assert "payload" in started, started
    observer = cluster.observer()
    log = cluster.home("worker-a") / "neo" / "logs" / f"{name}.log"
    wait_for(lambda: log.exists() and "phase compile: started" in log.read_text(), timeout=120)
    info = runner_info(observer, name)
    assert info["owner_host"] == "worker-a" and info["pid"]
    os.kill(info["pid"], signal.SIGKILL)  # the runner dies mid-compile, as with a lost machine
    killed_at = time.time()

    sensed = result_of(sensor)
    reported_at = time.time()
    assert "error" in sensed, sensed
    assert "FAILED" in sensed["error"] and "Compile worker lost: lease expired at" in sensed["error"]
    assert "process %d on host worker-a stopped renewing it" % info["pid"] in sensed["error"]
    job = observer.describe(name)
    assert job["CompilationJobStatus"] == st.FAILED
    assert job["FailureReason"].startswith("ServerError: Compile worker lost: lease expired at")
    # Found through the lease (worker B cannot see worker A's processes), within a lease and a poke.
    assert reported_at - killed_at <= LEASE_SECONDS + 10
    assert "ModelDigests" not in job
    listing = cluster.s3().list_objects_v2(Bucket=bucket, Prefix="compiled/")
    assert listing.get("KeyCount", 0) == 0  # nothing published


def test_sixteen_concurrent_creates_leave_one_job_per_name(cluster):
    names = [f"race-{i}" for i in range(6)]
    go = cluster.root / "go"
    procs = []
    for i in range(16):
        rotated = names[i % len(names) :] + names[: i % len(names)]
        procs.append(cluster.start(
            "worker-a" if i % 2 else "worker-b",
            "create", "--store", cluster.store_url, "--names", ",".join(rotated), "--go", str(go),
        ))
    for proc in procs:  # every process is connected and waiting: then all go at once
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    go.touch()
    results = [result_of(proc, timeout=120) for proc in procs]
    winners = sorted(name for result in results for name in result["won"])
    assert winners == sorted(names)  # each name created exactly once
    assert sum(result["lost"] for result in results) == 16 * len(names) - len(names)
    assert {result["host"] for result in results} == {"worker-a", "worker-b"}
    observer = cluster.observer()
    assert sorted(s["CompilationJobName"] for s in iter_all(observer, NameContains="race")) == sorted(names)


def test_second_worker_reuses_what_the_first_tuned_and_compiled(cluster, tmp_path):
    """Tuning database and compile cache on S3: worker A tunes and compiles; worker B (another
    AIRFLOW_HOME, nothing on its disk) gets A's artifact from the shared cache, and with the cache
    off recompiles with A's tuning records, measuring nothing new.

    The model is the tiny conv-relu-dense CNN of tests/local/test_tuning.py (two tunable kernels,
    8x8 inputs), not the sample CNN (six kernels, each measured before tuning starts)."""
    from tests.local.test_tuning import _tiny_cnn_archive

    bucket = cluster.bucket
    archive, _reference = _tiny_cnn_archive(tmp_path / "tiny.tar.gz")
    cluster.s3().upload_file(str(archive), bucket, "in/tiny.tar.gz")
    model = f"s3://{bucket}/in/tiny.tar.gz"
    inputs = json.dumps({"input0": [1, 3, 8, 8]})
    shared = {
        "AIRFLOW__NEO__TUNING_TRIALS": "8",
        "AIRFLOW__NEO__TUNING_DATABASE": f"s3://{bucket}/neo/tuning",
        "AIRFLOW__NEO__CACHE_DIR": f"s3://{bucket}/neo/cache",
    }
    observer = cluster.observer()
    s3 = cluster.s3()

    def compiled(worker: str, name: str, **extra: str) -> tuple[dict, dict, str]:
        result = result_of(cluster.start(worker, "compile", name, model, f"s3://{bucket}/{name}",
                                         "--data-input-config", inputs, env={**shared, **extra}))
        assert "payload" in result, result
        assert result["payload"]["CompilationJobStatus"] == "COMPLETED", result["payload"]["FailureReason"]
        log = (cluster.home(worker) / "neo" / "logs" / f"{name}.log").read_text()
        return result["payload"], observer.compile_metadata(name), log

    first, first_meta, first_log = compiled("worker-a", "reuse-a")
    tuned = first_meta["tuning"]
    assert 0 < tuned["new_trials"] <= 8
    assert "compile cache miss" in first_log and "tuning records: push" in first_log
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="neo/").get("Contents", [])]
    assert any(k.startswith("neo/tuning/") and "/batches/" in k for k in keys), keys
    assert any(k.startswith("neo/cache/entries/") and k.endswith("/entry.json") for k in keys), keys

    second, second_meta, second_log = compiled("worker-b", "reuse-b")
    assert second_meta["cache"]["tier"] == "shared" and second_meta["cache"]["hit"] is True
    assert second["ModelDigests"]["ArtifactDigest"] == first["ModelDigests"]["ArtifactDigest"]
    assert f"compile cache hit (s3://{bucket}/neo/cache)" in second_log
    assert "phase compile: started" not in second_log
    assert "pulled 1" in second_log  # A's batch, before the cache key was computed

    third, third_meta, third_log = compiled("worker-b", "reuse-c", AIRFLOW__NEO__CACHE_MAX_BYTES="0")
    assert "phase compile: started" in third_log
    assert third_meta["tuning"]["new_trials"] == 0  # all of A's trials are in B's mirror now
    assert third_meta["tuning"]["records_digest"] == tuned["records_digest"]
    # A's records reached B for the same kernels (each is applied only where it beats B's default schedule)
    assert _kernels_with_records(third_meta) == _kernels_with_records(first_meta) != []
    assert str(cluster.home("worker-b")) in third_meta["tuning"]["database"]


def _kernels_with_records(metadata: dict) -> list[str]:
    kernels = metadata["tuning"].get("kernels") or {}
    return sorted(key for key, k in kernels.items() if k.get("record_secs") is not None)


def test_a_stop_from_another_worker_is_honoured_by_the_owner(cluster):
    """The stop is a row in the shared store: worker B's CLI asks, worker A's runner (the owner,
    on another host) ends its compile and leaves the job STOPPED with nothing published."""
    name = "shared-stop"
    bucket = cluster.bucket
    long_compile = {"AIRFLOW__NEO__TUNING_TRIALS": "5000"}  # minutes of tuning: the stop comes first
    started = result_of(cluster.start(
        "worker-a", "compile", name, f"s3://{bucket}/in/model.tar.gz", f"s3://{bucket}/stopped", "--no-wait",
        env=long_compile,
    ))
    assert "payload" in started, started
    log = cluster.home("worker-a") / "neo" / "logs" / f"{name}.log"
    wait_for(lambda: log.exists() and "phase compile: started" in log.read_text(), timeout=120)

    stop = subprocess.run(
        [sys.executable, "-m", "airflow_neo", "--backend", "local", "stop-compilation-job",
         "--compilation-job-name", name],
        cwd=REPO, env=cluster.env("worker-b"), capture_output=True, text=True, timeout=300,
    )
    assert stop.returncode == 0, stop.stderr
    observer = cluster.observer()
    assert observer.describe(name)["CompilationJobStatus"] in (st.STOPPING, st.STOPPED)
    wait_for(lambda: observer.describe(name)["CompilationJobStatus"] == st.STOPPED, timeout=120)
    assert "job STOPPED on request" in log.read_text()
    assert runner_info(observer, name)["owner_host"] == "worker-a"
    listing = cluster.s3().list_objects_v2(Bucket=bucket, Prefix="stopped/")
    assert listing.get("KeyCount", 0) == 0
