"""Every example DAG, run for real with ``airflow dags test`` in a fresh AIRFLOW_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.support.requests import valid_request
from tests.support.stores import iter_all

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": str(REPO),
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return home, env


def _dags_test(env, dag_id, *extra, timeout=900):
    result = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, *extra], env=env, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "state=success" in output, output[-8000:]
    return output


def _jobs(home) -> list[tuple[str, str]]:
    from airflow_neo.local.store import JobStore

    store = JobStore(home / "neo" / "jobs.sqlite")
    return sorted((s["CompilationJobName"], s["CompilationJobStatus"]) for s in iter_all(store))


def test_dagbag_imports_every_dag_and_records_parse_time(airflow_home, record_property):
    _, env = airflow_home
    code = (
        "import json, time\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"import pathlib\nresults = {{}}\n"
        f"for f in sorted(pathlib.Path({str(DAGS)!r}).glob('*.py')):\n"
        "    t = time.perf_counter(); bag = DagBag(dag_folder=str(f))\n"
        "    results[f.name] = {'seconds': time.perf_counter() - t, 'dags': sorted(bag.dag_ids), 'errors': {k: str(v) for k, v in bag.import_errors.items()}}\n"
        "print(json.dumps(results))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=300)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for name, result in results.items():
        record_property(f"parse_seconds[{name}]", round(result["seconds"], 4))
        print(f"{name}: parsed in {result['seconds'] * 1000:.0f} ms -> {result['dags']}")
    assert {d for r in results.values() for d in r["dags"]} == {"neo_local_compile", "neo_batch_compile", "neo_sagemaker_pipeline"}
    assert all(not r["errors"] for r in results.values()), results


# The batch DAG's profile budget (its max_slowdown gate needs the figures); the local DAG's runs use
# it too, so that their compile-cache entry of the sample CNN (seed 0: cnn-small's bytes) carries a
# profile and answers the batch's cnn-small x86-64 job.
PROFILED = {"AIRFLOW__NEO__PROFILE_SECONDS": "1"}


@pytest.fixture(scope="module")
def local_compile_run(airflow_home) -> str:
    """One run of neo_local_compile (its output), shared by the tests of its first and its second
    run and by the batch test (whose cnn-small x86-64 job it compiled)."""
    _, env = airflow_home
    return _dags_test({**env, **PROFILED}, "neo_local_compile")


def test_neo_local_compile(airflow_home, local_compile_run):
    home, _ = airflow_home
    output = local_compile_run
    assert '"CompilationJobStatus": "COMPLETED"' in output
    assert "Ran once: output shapes [[1, 10]]" in output
    assert "Report from the asset event: verification gate: passed=True against onnxruntime" in output
    artifacts = list((home / "neo" / "artifacts").glob("*.tar.gz"))
    assert [a.name for a in artifacts] == ["model-linux-x86_64.tar.gz"]
    assert ("sample-cnn-x86-64", "COMPLETED") in _jobs(home)
    assert "XCom not found" not in output, "a local task's log must not show the console link's failed lookup"


def test_rerunning_the_local_compile_hits_the_cache_and_keeps_every_digest_true(airflow_home, local_compile_run):
    """The sample archive is byte-stable: a second run (after the module's first, which compiled)
    is a cache hit whose artifact has the same bytes, so the first job's ArtifactDigest still
    describes the file its payload points to."""
    import hashlib

    from airflow_neo.local.store import JobStore

    home, env = airflow_home
    _dags_test({**env, **PROFILED}, "neo_local_compile")
    store = JobStore(home / "neo" / "jobs.sqlite")
    names = [n for n, status in _jobs(home) if n.startswith("sample-cnn-x86-64") and status == "COMPLETED"]
    assert len(names) >= 2, names
    payloads = [store.describe(n) for n in names]
    newest = max(payloads, key=lambda p: p["CreationTime"])
    log = store.log_path(newest["CompilationJobName"]).read_text()
    assert "compile cache hit" in log, log[-3000:]
    for payload in payloads:
        path = Path(payload["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://"))
        assert hashlib.blake2b(path.read_bytes()).hexdigest() == payload["ModelDigests"]["ArtifactDigest"], payload


def test_neo_batch_compile(airflow_home, local_compile_run, tmp_path):
    """Six jobs, each verified and profiled (profile_seconds 1: the DAG's max_slowdown gate needs
    the figures); the summary tabulates every report and the gated x86-64 rows pass the gate.

    cnn-small is the sample CNN that neo_local_compile compiled for x86-64 with the same profile
    budget (``local_compile_run``): that job is a compile-cache hit whose row carries the cached
    verification and profile, and passes the gate on them; cnn-alt's x86-64 job compiles and profiles.

    The aarch64 root is withheld (``AIRFLOW_NEO_ARM64_ROOT`` names an empty directory), so the ARM64
    jobs complete "not verified" and their rows say ``unverified``: the emulated verification
    (15-20 s of qemu per job) is the subject of tests/local/test_emulation.py (an ARM64 artifact
    passes the gate under emulation, a wrong one is caught) and test_arm_emulation.py."""
    home, env = airflow_home
    no_arm_root = tmp_path / "no-arm64-root"
    no_arm_root.mkdir()
    env = {**env, **PROFILED, "AIRFLOW_NEO_ARM64_ROOT": str(no_arm_root)}
    output = _dags_test(env, "neo_batch_compile", "2026-11-20")
    jobs = [job for job in _jobs(home) if job[0].endswith("-20261120")]
    assert len(jobs) == 6 and {status for _, status in jobs} == {"COMPLETED"}, jobs
    for model in ("cnn-small", "cnn-alt"):
        names = sorted(p.name for p in (home / "neo" / "batch" / model).glob("*.tar.gz"))
        assert names == ["model-linux-arm64.tar.gz", "model-linux-x86_64.tar.gz", "model-ml_c5.tar.gz"]
    assert "did not complete" not in output
    rows = {line.split()[0]: line.split() for line in output.splitlines()
            if line.split() and line.split()[0].endswith("-20261120")}
    for model in ("cnn-small", "cnn-alt"):
        job, status, target, verified, p50, speedup, gate = rows[f"{model}-x86-64-20261120"][:7]
        assert (status, target, verified, gate) == ("COMPLETED", "LINUX/X86_64", "passed", "passed"), rows
        assert float(p50) > 0 and float(speedup.rstrip("x")) > 0
        arm = rows[f"{model}-arm64-20261120"]
        assert arm[1:3] == ["COMPLETED", "LINUX/ARM64"], rows
        assert arm[3] == "unverified", rows  # a job that could not be verified completes, and says so
        assert arm[6] == "-"  # no gate: ARM artifacts are profiled on the device
    from airflow_neo.local.store import JobStore

    store = JobStore(home / "neo" / "jobs.sqlite")
    small_log = store.log_path("cnn-small-x86-64-20261120").read_text()
    assert "compile cache hit (" in small_log and "; not compiling" in small_log, small_log[-3000:]
    alt_log = store.log_path("cnn-alt-x86-64-20261120").read_text()
    assert "compile cache miss" in alt_log and "profile: p50 " in alt_log, alt_log[-3000:]
    arm_log = store.log_path("cnn-small-arm64-20261120").read_text()
    assert "verification: not verified: " in arm_log and f"no aarch64 root at $AIRFLOW_NEO_ARM64_ROOT={no_arm_root}" in arm_log, arm_log[-3000:]


@pytest.fixture
def moto_server_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.moto_server"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_neo_sagemaker_pipeline_against_moto_server(airflow_home, moto_server_process):
    _, env = airflow_home
    url = moto_server_process
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": url, "config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 2}}},
    }
    env = {**env, "AIRFLOW_CONN_NEO_MOTO": json.dumps(conn), "AIRFLOW_VAR_NEO_AWS_CONN_ID": "neo_moto",
           "AIRFLOW_VAR_NEO_EXTERNAL_JOB": "started-elsewhere", "NEO_EXAMPLE_POLL_SECONDS": "0.2",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    client = boto3.client(
        "sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}),
    )
    client.create_compilation_job(**valid_request("started-elsewhere"))
    started = time.monotonic()
    output = _dags_test(env, "neo_sagemaker_pipeline", "2026-11-21")
    assert time.monotonic() - started < 600
    assert "NeoCompilationJobTrigger" in output, "the deferrable path really ran the trigger"
    compiled = client.describe_compilation_job(CompilationJobName="resnet18-c5-20261121")
    assert compiled["CompilationJobStatus"] == "COMPLETED"
    assert "started-elsewhere" in output and "resnet18-c5-20261121" in output
    canary = client.describe_compilation_job(CompilationJobName="resnet18-c6g-20261121")
    assert canary["CompilationJobStatus"] == "STOPPED"


def test_airflow_lists_the_provider(airflow_home):
    _, env = airflow_home
    out = subprocess.run([AIRFLOW, "providers", "list", "-o", "json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    start = out.stdout.index("[")
    providers = {p["package_name"]: p for p in json.loads(out.stdout[start:])}
    assert providers["airflow-neo"]["version"] == "0.1.0"
