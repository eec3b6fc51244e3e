"""Work dirs belong to the supervising process: a stopped, timed-out or finished job leaves no
compile files behind, and ``runtime.load`` leaves no extracted library.

The compile child is killed on a stop or at MaxRuntimeInSeconds, so nothing it would clean up
itself can be relied on: the runner gives it a work dir inside the job's own (and points its
temporary directory there), and removes the job's work dir whatever happens to the child.

Each test points ``$TMPDIR`` (what a spawned child's ``tempfile`` uses) at a private directory,
so "nothing left behind" is checked without looking at the machine's shared /tmp.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import pytest

from airflow_neo.core import status as st
from airflow_neo.local import runner
from airflow_neo.local.settings import CompileSettings
from airflow_neo.local.store import JobStore, pid_alive
from tests.local.test_runner import POLL, _tag, _tiny_onnx_archive, _write_tar_gz, files_in, make_request
from tests.support.waiting import wait_for


def fake_scratch_then_sleep(request, archive_path, artifact_path, *, log=print, work_dir=None, **_):
    """Writes what a compiler writes (an extracted model in its work dir, a helper's temporary
    directory), says where, then works on until it is killed."""
    scratch = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="airflow-neo-compile-"))
    (scratch / "model").mkdir(parents=True, exist_ok=True)
    (scratch / "model" / "model.onnx").write_bytes(os.urandom(1 << 20))
    helper = tempfile.mkdtemp(prefix="compiler-helper-")  # e.g. a linker's or a pool's scratch
    (Path(helper) / "part.o").write_bytes(b"\x7fELF")
    marker = _tag(request, "marker")
    Path(marker + ".tmp").write_text(json.dumps({"pid": os.getpid(), "dirs": [str(scratch), helper]}))
    os.replace(marker + ".tmp", marker)
    log("extracted; building")
    time.sleep(60)
    return {}


def fake_reports_its_arguments(request, archive_path, artifact_path, *, log=print, **kwargs):
    """Writes the keyword arguments it was given next to the marker, then a tiny artifact."""
    Path(_tag(request, "marker")).write_text(json.dumps({**kwargs, "TMPDIR": os.environ.get("TMPDIR")}))
    _write_tar_gz(artifact_path, {"x": b"x"})
    return {}


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "system-tmp"
    path.mkdir()
    monkeypatch.setenv("TMPDIR", str(path))
    return path


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "state" / "jobs.db"


def _assert_nothing_left(store: JobStore, marker: Path, private_tmp: Path) -> None:
    seen = json.loads(marker.read_text())
    wait_for(lambda: not pid_alive(seen["pid"]), timeout=10)
    for directory in seen["dirs"]:
        assert not Path(directory).exists(), f"{directory} was left behind"
    assert files_in(store.work_dir) == []
    assert files_in(private_tmp) == []


def _job(store_path: Path, tmp_path: Path, name: str, marker: Path, **kwargs) -> JobStore:
    store = JobStore(store_path)
    archive = tmp_path / "m.tar.gz"
    _write_tar_gz(str(archive), {"model.onnx": b"m"})
    store.create(make_request(name, str(archive), str(tmp_path / "out"), tags={"marker": str(marker)}, **kwargs))
    return store


def test_a_stopped_job_leaves_nothing_of_its_compile_dir(store_path, tmp_path, private_tmp):
    marker = tmp_path / "started"
    store = _job(store_path, tmp_path, "stop-scratch", marker)
    result = {}
    thread = threading.Thread(target=lambda: result.update(final=runner.run_job(
        store_path, "stop-scratch", compile_fn=fake_scratch_then_sleep, poll_interval=POLL)))
    thread.start()
    wait_for(marker.exists, timeout=60)
    assert Path(json.loads(marker.read_text())["dirs"][0]).is_relative_to(store.work_dir)
    store.request_stop("stop-scratch")
    thread.join(timeout=30)
    assert result["final"] == st.STOPPED
    _assert_nothing_left(store, marker, private_tmp)


def test_a_timed_out_job_leaves_nothing_of_its_compile_dir(store_path, tmp_path, private_tmp):
    marker = tmp_path / "started"
    store = _job(store_path, tmp_path, "slow-scratch", marker, runtime=3)
    assert runner.run_job(store_path, "slow-scratch", compile_fn=fake_scratch_then_sleep, poll_interval=POLL) == st.FAILED
    assert store.describe("slow-scratch")["FailureReason"].startswith("ServerError: Compilation job exceeded MaxRuntimeInSeconds (3 s)")
    _assert_nothing_left(store, marker, private_tmp)


def test_the_compiler_gets_its_config_as_arguments(store_path, tmp_path, private_tmp):
    marker = tmp_path / "arguments.json"
    store = _job(store_path, tmp_path, "args", marker)
    settings = CompileSettings(tuning_trials=5, tuning_database=str(tmp_path / "tuning"), cache_max_bytes=0)
    assert runner.run_job(store_path, "args", compile_fn=fake_reports_its_arguments, poll_interval=POLL,
                          settings=settings) == st.COMPLETED
    given = json.loads(marker.read_text())
    assert given["tuning_trials"] == 5 and given["tuning_database"] == str(tmp_path / "tuning")
    assert Path(given["work_dir"]).parent.parent == store.work_dir  # <work>/<job>-XXXX/compile
    assert Path(given["TMPDIR"]).parent == Path(given["work_dir"])
    assert files_in(store.work_dir) == [] and files_in(private_tmp) == []


# ----------------------------------------------------------------------------- the real compiler


def _needs_tvm():
    pytest.importorskip("tvm")
    pytest.importorskip("onnx")
    if platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"):
        pytest.skip("no local-backend platform for this machine")


def test_a_real_compile_stopped_mid_build_leaves_nothing(store_path, tmp_path, private_tmp):
    """The TVM compiler, tuning (so that the build lasts), stopped once the model is extracted
    and the build has begun: the extracted model and the tuning scratch go with the job."""
    _needs_tvm()
    pytest.importorskip("xgboost")
    from tests.local.test_tuning import _tiny_cnn_archive, tiny_cnn_request

    archive, _reference = _tiny_cnn_archive(tmp_path / "tiny.tar.gz")
    store = JobStore(store_path)
    store.create(tiny_cnn_request("real-stop", archive, tmp_path / "out"))
    settings = CompileSettings(tuning_trials=64, tuning_database=str(tmp_path / "tuning"), cache_max_bytes=0)
    result = {}
    thread = threading.Thread(target=lambda: result.update(final=runner.run_job(
        store_path, "real-stop", poll_interval=POLL, settings=settings)))
    thread.start()
    wait_for(lambda: "tuning: " in (store.log_path("real-stop").read_text() if store.log_path("real-stop").exists() else ""),
             timeout=240)
    work = [p for p in store.work_dir.iterdir()]
    assert len(work) == 1 and (work[0] / "compile" / "model").is_dir()  # the extracted model is in the job's work dir
    store.request_stop("real-stop")
    thread.join(timeout=60)
    assert result["final"] == st.STOPPED
    assert files_in(store.work_dir) == []
    assert files_in(private_tmp) == []


def test_compile_model_and_runtime_load_leave_no_temporary_dirs(tmp_path, monkeypatch):
    """Called directly, compile_model uses a temporary dir it removes, or the work dir it is given
    (left to its owner); runtime.load removes its extraction once the library is loaded."""
    _needs_tvm()
    np = pytest.importorskip("numpy")
    from airflow_neo import runtime
    from airflow_neo.local.compiler import compile_model
    from tests.local.test_tuning import _host_platform

    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # this process's temporary files
    archive = tmp_path / "relu.tar.gz"
    _tiny_onnx_archive(archive)
    request = make_request("direct", str(archive), str(tmp_path / "out"), platform=_host_platform())
    artifact = tmp_path / "artifact.tar.gz"
    compile_model(request, str(archive), str(artifact), log=lambda _line: None, tuning_database=str(tmp_path / "tuning"))
    assert artifact.is_file() and files_in(private) == []

    owned = tmp_path / "owned-work"
    compile_model(request, str(archive), str(tmp_path / "again.tar.gz"), log=lambda _line: None,
                  tuning_database=str(tmp_path / "tuning"), work_dir=str(owned))
    assert (owned / "model" / "model.onnx").is_file()  # the caller's to remove
    assert files_in(private) == []

    model = runtime.load(artifact)
    assert files_in(private) == []  # no airflow-neo-model-* with the extracted model.so
    data = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32")
    np.testing.assert_allclose(model.run({"input0": data})[0], np.maximum(data, 0))
