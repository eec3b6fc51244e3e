"""Tests of the local backend's supervisor (airflow_neo.local.runner) with fake compile functions.

The fake compile functions are module-level so that the ``spawn`` compile child can import them
by reference (``tests.local.test_runner.fake_ok``); they read test parameters from the job's Tags.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import tarfile
import threading
import time
from pathlib import Path

import pytest

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import CompilationJobNotFound, NeoError
from airflow_neo.local import runner
from airflow_neo.local.store import JobStore, pid_alive
from tests.support.waiting import wait_for

POLL = 0.1

#: The supervisor's paths that read and write the store as every other path does (create, claim,
#: one terminal transition): run on SQLite only. The store-specific ones (the record of a success,
#: stop requests, a lost runner, concurrent runners, the detached runner given a URL through its
#: environment) keep both stores; the store itself is tested in tests/local/test_store*.py.
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])


# ----------------------------------------------------------------------------- fake compilers


class FakeInputError(NeoError):
    kind = "ClientError"


def _tag(request, key: str) -> str | None:
    """A tag of the job (``request`` is the ValidatedRequest the runner gives compile functions)."""
    for tag in request.payload.get("Tags", []):
        if tag["Key"] == key:
            return tag["Value"]
    return None


def _write_tar_gz(path: str, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _mark_started(request) -> None:
    marker = _tag(request, "marker")
    if marker:
        Path(marker + ".tmp").write_text(str(os.getpid()))
        os.replace(marker + ".tmp", marker)


def fake_ok(request, archive_path, artifact_path, *, log=print, **_):
    log("compiling", Path(archive_path).name, "for", request.output_config.get("TargetDevice", "platform"))
    model = Path(archive_path).read_bytes()
    _write_tar_gz(artifact_path, {"compiled.so": b"compiled:" + hashlib.sha256(model).hexdigest().encode()})
    return {"framework": request.input_config["Framework"], "DerivedDataInputConfig": {"input0": [1, 3, 8, 8]}}


def fake_input_error(request, archive_path, artifact_path, *, log=print, **_):
    Path(artifact_path).write_bytes(b"half-written")
    raise FakeInputError("DataInputConfig names input 'data' but the model's inputs are ['input0']")


def fake_value_error(request, archive_path, artifact_path, *, log=print, **_):
    raise ValueError("shape mismatch in conv1")


def fake_sleep(request, archive_path, artifact_path, *, log=print, **_):
    _mark_started(request)
    log("sleeping")
    time.sleep(60)
    _write_tar_gz(artifact_path, {"late": b"x"})
    return {}


def fake_segv(request, archive_path, artifact_path, *, log=print, **_):
    log("about to crash")
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)


def fake_hog(request, archive_path, artifact_path, *, log=print, **_):
    hog = bytearray(3 * 1024**3)  # 3 GiB of address space
    hog[-1] = 1
    _write_tar_gz(artifact_path, {"x": b"x"})
    return {}


def fake_exit(request, archive_path, artifact_path, *, log=print, **_):
    os._exit(3)


def fake_no_artifact(request, archive_path, artifact_path, *, log=print, **_):
    return {"note": "forgot to write"}


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def model_archive(tmp_path) -> Path:
    path = tmp_path / "models" / "resnet.tar.gz"
    path.parent.mkdir()
    _write_tar_gz(str(path), {"model.onnx": b"not really onnx" * 100})
    return path


@pytest.fixture
def store_path(store_kind, store_target, tmp_path) -> Path | str:
    """The job store: a SQLite file, or (``[postgres]``) a URL of a private PostgreSQL schema."""
    return tmp_path / "state" / "jobs.db" if store_kind == "sqlite" else store_target


def make_request(name, archive, out, *, runtime=900, tags=None, platform=None, kms=None) -> dict:
    output = {"S3OutputLocation": out}
    if platform:
        output["TargetPlatform"] = platform
    else:
        output["TargetDevice"] = "ml_c5"
    if kms:
        output["KmsKeyId"] = kms
    request = {
        "CompilationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": archive, "DataInputConfig": '{"input0": [1, 3, 8, 8]}', "Framework": "ONNX"},
        "OutputConfig": output,
        "StoppingCondition": {"MaxRuntimeInSeconds": runtime},
    }
    if tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return request


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def blake2b(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- success and publishing


def test_success_publishes_atomically_to_file_uri(store_path, model_archive, tmp_path):
    out = tmp_path / "out"
    store = JobStore(store_path)
    store.create(make_request("ok-1", f"file://{model_archive}", f"file://{out}"))
    final = runner.run_job(store_path, "ok-1", compile_fn=fake_ok, poll_interval=POLL)
    assert final == st.COMPLETED
    job = store.describe("ok-1")
    assert job["CompilationJobStatus"] == st.COMPLETED
    artifact = out / "resnet-ml_c5.tar.gz"
    assert job["ModelArtifacts"] == {"S3ModelArtifacts": f"file://{artifact}"}
    assert files_in(out) == ["resnet-ml_c5.tar.gz"]  # no temporary file left behind
    assert job["ModelDigests"] == {"ArtifactDigest": blake2b(artifact)}
    assert len(job["ModelDigests"]["ArtifactDigest"]) == 128
    assert job["DerivedInformation"] == {"DerivedDataInputConfig": '{"input0": [1, 3, 8, 8]}'}
    assert job["CompilationStartTime"] <= job["CompilationEndTime"]
    with tarfile.open(artifact) as tar:
        assert tar.getnames() == ["compiled.so"]
    assert store.compile_metadata("ok-1")["framework"] == "ONNX"
    assert files_in(store.work_dir) == []  # work dir cleaned
    log_text = store.log_path("ok-1").read_text()
    assert store.log_path("ok-1") == store.root / "logs" / "ok-1.log"
    if store.path is not None:
        assert store.root == store_path.parent
    for expected in ("job INPROGRESS", "phase fetch: done", "[compiler] compiling resnet.tar.gz for ml_c5",
                     "phase compile: done", "phase publish: done", "job COMPLETED", "phase timings:"):
        assert expected in log_text

@SQLITE_ONLY

def test_success_to_plain_path_with_target_platform(store_path, model_archive, tmp_path):
    out = tmp_path / "deep" / "out"
    store = JobStore(store_path)
    store.create(make_request("ok-2", str(model_archive), str(out), platform={"Os": "LINUX", "Arch": "X86_64"}))
    assert runner.run_job(store_path, "ok-2", compile_fn="tests.local.test_runner:fake_ok", poll_interval=POLL) == st.COMPLETED
    assert files_in(out) == ["resnet-linux-x86_64.tar.gz"]
    assert store.describe("ok-2")["ModelArtifacts"]["S3ModelArtifacts"] == f"{out}/resnet-linux-x86_64.tar.gz"


def test_run_of_finished_job_is_a_no_op(store_path, model_archive, tmp_path):
    store = JobStore(store_path)
    store.create(make_request("again", str(model_archive), str(tmp_path / "out")))
    assert runner.run_job(store_path, "again", compile_fn=fake_ok, poll_interval=POLL) == st.COMPLETED
    assert runner.run_job(store_path, "again", compile_fn=fake_ok, poll_interval=POLL) == st.COMPLETED
    with pytest.raises(CompilationJobNotFound):
        runner.run_job(store_path, "missing", compile_fn=fake_ok)


# ----------------------------------------------------------------------------- failures


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("fn", "reason"),
    [
        (fake_input_error, "ClientError: DataInputConfig names input 'data' but the model's inputs are ['input0']"),
        (fake_value_error, "ServerError: ValueError: shape mismatch in conv1"),
        (fake_exit, "ServerError: Compilation failed: the compile process exited with code 3 without reporting a result; "
                    "the job log holds its last lines. Retry the job; if it fails again, report it with the model"),
        (fake_no_artifact, "ServerError: The compiler reported success but wrote no artifact (expected model.tar.gz)"),
    ],
)
def test_compile_error_fails_and_publishes_nothing(store_path, model_archive, tmp_path, fn, reason):
    out = tmp_path / "out"
    store = JobStore(store_path)
    store.create(make_request("err", str(model_archive), str(out)))
    assert runner.run_job(store_path, "err", compile_fn=fn, poll_interval=POLL) == st.FAILED
    job = store.describe("err")
    assert job["CompilationJobStatus"] == st.FAILED
    assert job["FailureReason"] == reason
    assert "ModelDigests" not in job and "DerivedInformation" not in job
    assert files_in(out) == []
    assert files_in(store.work_dir) == []

@SQLITE_ONLY

def test_supervisor_error_is_a_server_error(store_path, model_archive, tmp_path):
    # A compile function the spawned child cannot receive fails in the supervisor, not the child.
    store = JobStore(store_path)
    store.create(make_request("unpicklable", str(model_archive), str(tmp_path / "out")))
    final = runner.run_job(store_path, "unpicklable", compile_fn=lambda *args, **kwargs: {}, poll_interval=POLL)
    assert final == st.FAILED
    reason = store.describe("unpicklable")["FailureReason"]
    assert reason.startswith("ServerError: Compile worker error: AttributeError: Can't pickle local object"), reason
    assert "<lambda>" in reason
    assert files_in(tmp_path / "out") == []
    assert files_in(store.work_dir) == []

@SQLITE_ONLY

def test_missing_input_fails_clearly(store_path, tmp_path):
    store = JobStore(store_path)
    store.create(make_request("noinput", f"file://{tmp_path}/absent.tar.gz", str(tmp_path / "out")))
    assert runner.run_job(store_path, "noinput", compile_fn=fake_ok, poll_interval=POLL) == st.FAILED
    assert store.describe("noinput")["FailureReason"] == f"ClientError: InputConfiguration: InputConfig.S3Uri: file://{tmp_path}/absent.tar.gz does not exist"

@SQLITE_ONLY

def test_publish_failure_fails_without_partial_artifact(store_path, model_archive, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output directory should be")
    store = JobStore(store_path)
    store.create(make_request("nopub", str(model_archive), str(blocker / "out")))
    assert runner.run_job(store_path, "nopub", compile_fn=fake_ok, poll_interval=POLL) == st.FAILED
    reason = store.describe("nopub")["FailureReason"]
    assert reason.startswith(f"ClientError: Could not publish the compiled model to {blocker}/out/resnet-ml_c5.tar.gz")

@SQLITE_ONLY

def test_max_runtime_times_out(store_path, model_archive, tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "started"
    store = JobStore(store_path)
    store.create(make_request("slow", str(model_archive), str(out), runtime=2, tags={"marker": str(marker)}))
    started = time.monotonic()
    assert runner.run_job(store_path, "slow", compile_fn=fake_sleep, poll_interval=POLL) == st.FAILED
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 10
    job = store.describe("slow")
    assert job["FailureReason"].startswith("ServerError: Compilation job exceeded MaxRuntimeInSeconds (2 s) and was stopped")
    assert files_in(out) == []
    # the compiler was killed (on a loaded machine the 2 s may end before the child wrote its marker:
    # the child's pid is also in the job log)
    child = int(marker.read_text()) if marker.exists() else _child_pid_from_log(store, "slow")
    assert not pid_alive(child)


def _child_pid_from_log(store: JobStore, name: str) -> int:
    import re

    found = re.findall(r"compile child pid (\d+) started", store.log_path(name).read_text())
    assert found, store.log_path(name).read_text()
    return int(found[-1])


def test_stop_mid_compile(store_path, model_archive, tmp_path):
    out = tmp_path / "out"
    marker = tmp_path / "started"
    store = JobStore(store_path)
    store.create(make_request("stopme", str(model_archive), str(out), tags={"marker": str(marker)}))
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(final=runner.run_job(store_path, "stopme", compile_fn=fake_sleep, poll_interval=POLL))
    )
    thread.start()
    wait_for(marker.exists)
    assert store.describe("stopme")["CompilationJobStatus"] == st.INPROGRESS
    store.request_stop("stopme")
    thread.join(timeout=20)
    assert result["final"] == st.STOPPED
    job = store.describe("stopme")
    assert job["CompilationJobStatus"] == st.STOPPED
    assert "CompilationEndTime" in job and "ModelDigests" not in job
    assert files_in(out) == []
    assert not pid_alive(int(marker.read_text()))
    assert "job STOPPED on request" in store.log_path("stopme").read_text()


def test_stop_before_start(store_path, model_archive, tmp_path):
    store = JobStore(store_path)
    store.create(make_request("early", str(model_archive), str(tmp_path / "out")))
    store.request_stop("early")
    assert runner.run_job(store_path, "early", compile_fn=fake_ok, poll_interval=POLL) == st.STOPPED
    assert store.describe("early")["CompilationJobStatus"] == st.STOPPED
    assert files_in(tmp_path / "out") == []

@SQLITE_ONLY

def test_child_segfault_is_a_failed_job(store_path, model_archive, tmp_path):
    store = JobStore(store_path)
    store.create(make_request("segv", str(model_archive), str(tmp_path / "out")))
    assert runner.run_job(store_path, "segv", compile_fn=fake_segv, poll_interval=POLL) == st.FAILED
    reason = store.describe("segv")["FailureReason"]
    assert reason.startswith("ServerError: Compilation failed: internal compiler crash (signal 11: SIGSEGV)")
    assert files_in(tmp_path / "out") == []
    assert "[compiler] about to crash" in store.log_path("segv").read_text()

@SQLITE_ONLY

def test_memory_cap(store_path, model_archive, tmp_path):
    store = JobStore(store_path)
    store.create(make_request("hog", str(model_archive), str(tmp_path / "out")))
    limit = 1024**3
    final = runner.run_job(store_path, "hog", compile_fn=fake_hog, memory_limit_bytes=limit, poll_interval=POLL)
    assert final == st.FAILED
    reason = store.describe("hog")["FailureReason"]
    assert reason.startswith(f"ServerError: Compilation ran out of memory: the compile process exceeded its memory limit of {limit} bytes")
    assert files_in(tmp_path / "out") == []


# ----------------------------------------------------------------------------- runner death and concurrency


def _run_in_child(store_path: str, name: str) -> None:
    runner.run_job(store_path, name, compile_fn=fake_sleep, poll_interval=POLL)


def test_killed_runner_is_detected_as_worker_lost(store_path, model_archive, tmp_path):
    marker = tmp_path / "started"
    store = JobStore(store_path)
    store.create(make_request("killed", str(model_archive), str(tmp_path / "out"), tags={"marker": str(marker)}))
    proc = multiprocessing.get_context("spawn").Process(target=_run_in_child, args=(str(store_path), "killed"))
    proc.start()
    wait_for(marker.exists)
    compiler_pid = int(marker.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    job = store.describe("killed")
    assert job["CompilationJobStatus"] == st.FAILED
    assert job["FailureReason"] == (
        f"ServerError: Compile worker lost: process {proc.pid} on host {store.host} exited without recording a result"
    )
    wait_for(lambda: not pid_alive(compiler_pid), timeout=10)  # the compiler died with its supervisor
    assert files_in(tmp_path / "out") == []
    assert len(files_in(store.work_dir)) == 1  # the killed runner could not clean up...
    store.create(make_request("after", str(model_archive), str(tmp_path / "out")))
    assert runner.run_job(store_path, "after", compile_fn=fake_ok, poll_interval=POLL) == st.COMPLETED
    assert files_in(store.work_dir) == []  # ...the next run removes its stale work dir


def test_concurrent_runs_on_one_store(store_path, model_archive, tmp_path):
    out = tmp_path / "out"
    store = JobStore(store_path)
    names = [f"par-{i}" for i in range(8)]
    for i, name in enumerate(names):
        archive = tmp_path / "models" / f"m{i}.tar.gz"
        _write_tar_gz(str(archive), {"model.onnx": f"model {i}".encode()})
        store.create(make_request(name, str(archive), str(out)))
    results: dict[str, str] = {}

    def work(name):
        results[name] = runner.run_job(store_path, name, compile_fn=fake_ok, poll_interval=POLL)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {n: st.COMPLETED for n in names}
    assert files_in(out) == sorted(f"m{i}-ml_c5.tar.gz" for i in range(8))
    summaries = store.list(StatusEquals="COMPLETED")["CompilationJobSummaries"]
    assert sorted(s["CompilationJobName"] for s in summaries) == names
    digests = {store.describe(n)["ModelDigests"]["ArtifactDigest"] for n in names}
    assert len(digests) == 8


# ----------------------------------------------------------------------------- detached runner and CLI


def test_launch_detached_runs_the_job(store_path, model_archive, tmp_path):
    out = tmp_path / "out"
    store = JobStore(store_path)
    store.create(make_request("detached", str(model_archive), str(out)))
    pid = runner.launch_detached(store_path, "detached", compile_fn="tests.local.test_runner:fake_ok")
    assert pid > 0
    wait_for(lambda: store.describe("detached")["CompilationJobStatus"] in st.TERMINAL_STATES, timeout=60)
    job = store.describe("detached")
    assert job["CompilationJobStatus"] == st.COMPLETED, job["FailureReason"]
    assert files_in(out) == ["resnet-ml_c5.tar.gz"]
    wait_for(lambda: not pid_alive(pid), timeout=10)
    log_text = store.log_path("detached").read_text()
    assert log_text.count("phase compile: started") == 1  # stderr is the log file: no doubled lines


def test_cli_command_line_and_unknown_job(store_path, capsys, monkeypatch):
    command = runner.runner_command(store_path, "j1", aws_conn_id="aws_default", memory_limit_bytes=2**30)
    if isinstance(store_path, Path):
        assert command[1:] == [
            "-m", "airflow_neo.local.runner", "--store", str(store_path), "--job", "j1",
            "--aws-conn-id", "aws_default", "--memory-limit", str(2**30),
        ]
        assert runner.main(["--store", str(store_path), "--job", "nope"]) == 2
    else:  # a URL with a password goes through the environment, never onto the command line
        assert command[1:] == [
            "-m", "airflow_neo.local.runner", "--store-from-env", "--job", "j1",
            "--aws-conn-id", "aws_default", "--memory-limit", str(2**30),
        ]
        assert not any("password" in part for part in command)
        monkeypatch.setenv("AIRFLOW_NEO_STORE_URL", store_path)
        assert runner.main(["--store-from-env", "--job", "nope"]) == 2
    assert "Could not find compilation job 'nope'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- S3


class FakeS3:
    def __init__(self, objects: dict[tuple[str, str], bytes]):
        self.objects = objects
        self.uploads: list[dict] = []

    def download_file(self, bucket, key, filename):
        if (bucket, key) not in self.objects:
            raise RuntimeError(f"NoSuchKey {bucket}/{key}")
        Path(filename).write_bytes(self.objects[(bucket, key)])

    def upload_file(self, filename, bucket, key, ExtraArgs=None):
        self.objects[(bucket, key)] = Path(filename).read_bytes()
        self.uploads.append({"bucket": bucket, "key": key, "extra": ExtraArgs})

@SQLITE_ONLY

def test_s3_input_and_output_with_kms(store_path, model_archive):
    s3 = FakeS3({("in-bucket", "models/resnet.tar.gz"): model_archive.read_bytes()})
    store = JobStore(store_path)
    store.create(make_request("s3job", "s3://in-bucket/models/resnet.tar.gz", "s3://out-bucket/compiled/", kms="alias/neo"))
    assert runner.run_job(store_path, "s3job", compile_fn=fake_ok, s3_client_factory=lambda: s3, poll_interval=POLL) == st.COMPLETED
    assert s3.uploads == [
        {"bucket": "out-bucket", "key": "compiled/resnet-ml_c5.tar.gz",
         "extra": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/neo"}}
    ]
    job = store.describe("s3job")
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == "s3://out-bucket/compiled/resnet-ml_c5.tar.gz"
    assert job["ModelDigests"]["ArtifactDigest"] == hashlib.blake2b(s3.objects[("out-bucket", "compiled/resnet-ml_c5.tar.gz")]).hexdigest()

@SQLITE_ONLY

def test_s3_with_moto(store_path, model_archive, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="models")
        client.put_object(Bucket="models", Key="in/resnet.tar.gz", Body=model_archive.read_bytes())
        store = JobStore(store_path)
        store.create(make_request("moto", "s3://models/in/resnet.tar.gz", "s3://models/out"))
        store.create(make_request("moto-missing", "s3://models/in/absent.tar.gz", "s3://models/out"))
        final = runner.run_job(store_path, "moto", compile_fn=fake_ok, s3_client_factory=lambda: client, poll_interval=POLL)
        assert final == st.COMPLETED
        body = client.get_object(Bucket="models", Key="out/resnet-ml_c5.tar.gz")["Body"].read()
        assert store.describe("moto")["ModelDigests"]["ArtifactDigest"] == hashlib.blake2b(body).hexdigest()
        final = runner.run_job(store_path, "moto-missing", compile_fn=fake_ok, s3_client_factory=lambda: client, poll_interval=POLL)
        assert final == st.FAILED
        assert store.describe("moto-missing")["FailureReason"].startswith(
            "ClientError: InputConfiguration: InputConfig.S3Uri: could not download s3://models/in/absent.tar.gz: 404"
        )


def test_sigterm_to_detached_runner_fails_the_job(store_path, model_archive, tmp_path):
    marker = tmp_path / "started"
    store = JobStore(store_path)
    store.create(make_request("term", str(model_archive), str(tmp_path / "out"), tags={"marker": str(marker)}))
    pid = runner.launch_detached(store_path, "term", compile_fn="tests.local.test_runner:fake_sleep")
    wait_for(marker.exists, timeout=60)
    compiler_pid = int(marker.read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: store.describe("term")["CompilationJobStatus"] in st.TERMINAL_STATES, timeout=30)
    job = store.describe("term")
    assert job["CompilationJobStatus"] == st.FAILED
    assert job["FailureReason"] == "ServerError: Compile worker was terminated by signal SIGTERM before the job ended"
    wait_for(lambda: not pid_alive(compiler_pid), timeout=10)
    assert files_in(tmp_path / "out") == []


# ----------------------------------------------------------------------------- the real compiler


def _tiny_onnx_archive(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input0", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["input0"], ["output0"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _write_tar_gz(str(path), {"model.onnx": model.SerializeToString()})

@SQLITE_ONLY

def test_real_compiler_end_to_end(store_path, tmp_path):
    import importlib.util

    if importlib.util.find_spec("airflow_neo.local.compiler") is None or importlib.util.find_spec("tvm") is None:
        pytest.skip("the TVM compiler (airflow_neo.local.compiler, apache-tvm) is not installed")
    archive = tmp_path / "tiny.tar.gz"
    _tiny_onnx_archive(archive)
    out = tmp_path / "out"
    store = JobStore(store_path)
    request = make_request("real", str(archive), f"file://{out}", platform={"Os": "LINUX", "Arch": "X86_64"})
    request["InputConfig"]["DataInputConfig"] = '{"input0": [1, 3, 8, 8]}'
    store.create(request)
    final = runner.run_job(store_path, "real", poll_interval=POLL)  # default compile_fn: the TVM compiler
    job = store.describe("real")
    assert final == st.COMPLETED, job["FailureReason"]
    artifact = out / "tiny-linux-x86_64.tar.gz"
    assert files_in(out) == [artifact.name]
    assert job["ModelDigests"]["ArtifactDigest"] == blake2b(artifact)
    assert json.loads(job["DerivedInformation"]["DerivedDataInputConfig"]) == {"input0": [1, 3, 8, 8]}
    with tarfile.open(artifact) as tar:
        assert {"model.so", "metadata.json"} <= set(tar.getnames())
    assert store.compile_metadata("real")["framework"] == "ONNX"

@SQLITE_ONLY

def test_real_compiler_bad_input_name_fails_clearly(store_path, tmp_path):
    import importlib.util

    if importlib.util.find_spec("airflow_neo.local.compiler") is None or importlib.util.find_spec("tvm") is None:
        pytest.skip("the TVM compiler (airflow_neo.local.compiler, apache-tvm) is not installed")
    archive = tmp_path / "tiny.tar.gz"
    _tiny_onnx_archive(archive)
    store = JobStore(store_path)
    request = make_request("real-bad", str(archive), str(tmp_path / "out"), platform={"Os": "LINUX", "Arch": "X86_64"})
    request["InputConfig"]["DataInputConfig"] = '{"data": [1, 3, 8, 8]}'
    store.create(request)
    assert runner.run_job(store_path, "real-bad", poll_interval=POLL) == st.FAILED
    reason = store.describe("real-bad")["FailureReason"]
    assert reason.startswith("ClientError: InputConfiguration: ") and "input0" in reason
    assert files_in(tmp_path / "out") == []
