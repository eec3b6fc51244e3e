"""Bad input at the job level: each case ends FAILED (or raises) with a clear reason, nothing published.

Jobs go through LocalNeoHook, the detached runner and the compile child, as in production.
"""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
from pathlib import Path

import pytest

from airflow_neo.core.exceptions import CompilationJobExists, CompilationJobStateError, InvalidCompilationRequest
from airflow_neo.hooks.local import LocalNeoHook
from airflow_neo.samples import sample_cnn_onnx, write_sample_archive
from tests.local import models
from tests.support.requests import ROLE_ARN
from tests.support.stores import runner_info


def _archive_with(directory: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            payload = (data or {}).get(info.name)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name: str, content: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info


def corrupt(tmp):
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.tar.gz").write_bytes(b"\x1f\x8b\x08\x00this is not a gzip stream")
    return tmp / "model.tar.gz", {}


def traversal(tmp):
    onnx_bytes = sample_cnn_onnx().SerializeToString()
    return _archive_with(tmp, [_file("../../etc/model.onnx", onnx_bytes)], {"../../etc/model.onnx": onnx_bytes}), {}


def symlink(tmp):
    link = tarfile.TarInfo("model.onnx")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    return _archive_with(tmp, [link]), {}


def missing_model(tmp):
    return _archive_with(tmp, [_file("README.txt", b"hi"), _file("weights.bin", b"00")], {"README.txt": b"hi", "weights.bin": b"00"}), {}


def wrong_input_name(tmp):
    return write_sample_archive(tmp / "model.tar.gz"), {"DataInputConfig": {"input0": [1, 3, 32, 32]}}


def wrong_rank(tmp):
    return write_sample_archive(tmp / "model.tar.gz"), {"DataInputConfig": {"data": [1, 3, 32]}}


def unsupported_op(tmp):
    case = models.onnx_unsupported_ops(tmp)
    return case.archive, {"DataInputConfig": case.data_input_config}


def unsupported_framework(tmp):
    return write_sample_archive(tmp / "model.tar.gz"), {"Framework": "SKLEARN"}


def unsupported_target(tmp):
    return write_sample_archive(tmp / "model.tar.gz"), {"output": {"TargetDevice": "ml_inf1"}}


def bogus_mcpu(tmp):
    return write_sample_archive(tmp / "model.tar.gz"), {"output": {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}, "CompilerOptions": {"mcpu": "pentium-9000"}}}


def missing_input_file(tmp):
    return tmp / "nowhere" / "model.tar.gz", {}


def time_out(tmp):
    return write_sample_archive(tmp / "model.tar.gz"), {"StoppingCondition": {"MaxRuntimeInSeconds": 1}}


# (builder, words the FailureReason must contain)
FAILED_CASES = {
    "corrupt-archive": (corrupt, ["not a valid .tar.gz"]),
    "path-traversal": (traversal, [".."]),
    "symlink": (symlink, ["link"]),
    "missing-model": (missing_model, ["README.txt", "weights.bin"]),
    "wrong-input-name": (wrong_input_name, ["input0", "data"]),
    "wrong-rank": (wrong_rank, ["rank 3 [1, 3, 32]", "rank 4 [1, 3, 32, 32]"]),
    "unsupported-op": (unsupported_op, ["Celu", "LpNormalization"]),
    "bogus-mcpu": (bogus_mcpu, ["pentium-9000"]),
    "time-out": (time_out, ["MaxRuntimeInSeconds"]),
}

# Static facts the local backend knows at create time: refused there, nothing recorded.
# (builder, field the error names, words it must contain)
REFUSED_CASES = {
    "unsupported-framework": (unsupported_framework, "InputConfig.Framework", ["SKLEARN", "ONNX"]),
    "unsupported-target": (unsupported_target, "OutputConfig.TargetDevice", ["ml_inf1", "not supported by the local backend"]),
    "missing-input-file": (missing_input_file, "InputConfig.S3Uri", ["does not exist", "file:///absolute/path"]),
}


def _request(name: str, archive: Path, out: Path, changes: dict) -> dict:
    request = {
        "CompilationJobName": name,
        "RoleArn": ROLE_ARN,
        "InputConfig": {
            "S3Uri": archive.as_uri(),
            "Framework": changes.get("Framework", "ONNX"),
            "DataInputConfig": changes.get("DataInputConfig", {"data": [1, 3, 32, 32]}),
        },
        "OutputConfig": {"S3OutputLocation": out.as_uri(), **changes.get("output", {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}})},
        "StoppingCondition": changes.get("StoppingCondition", {"MaxRuntimeInSeconds": 600}),
    }
    return request


@pytest.fixture
def hook(tmp_path):
    return LocalNeoHook(aws_conn_id=None, store_path=str(tmp_path / "store" / "jobs.sqlite"))


@pytest.mark.parametrize("case", list(FAILED_CASES))
def test_bad_input_ends_failed_with_reason_and_publishes_nothing(hook, tmp_path, case):
    builder, words = FAILED_CASES[case]
    archive, changes = builder(tmp_path / "model")
    out = tmp_path / "out"
    hook.create_compilation_job(_request(case, archive, out, changes))
    payload = hook.wait_for_compilation_job(case, check_interval=0.3, max_wait=300)
    assert payload["CompilationJobStatus"] == "FAILED", hook.job_log(case)
    for word in words:
        assert word in payload["FailureReason"], payload["FailureReason"]
    assert payload["FailureReason"].startswith(("ClientError: ", "ServerError: ")), payload["FailureReason"]
    assert "ModelDigests" not in payload
    assert not out.exists() or not list(out.iterdir()), "nothing published"
    _wait_for_runner_exit(hook, case)
    assert not list((Path(hook.store.work_dir)).glob(f"{case}-*")), "work dir cleaned"


def _wait_for_runner_exit(hook, name, timeout=30.0):
    """The runner records the result first and cleans up after; wait for it to finish."""
    pid = runner_info(hook.store, name)["pid"]
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.1)


@pytest.mark.parametrize("case", list(REFUSED_CASES))
def test_what_surely_fails_is_refused_at_create_and_records_nothing(hook, tmp_path, case):
    builder, field, words = REFUSED_CASES[case]
    archive, changes = builder(tmp_path / "model")
    out = tmp_path / "out"
    with pytest.raises(InvalidCompilationRequest) as err:
        hook.create_compilation_job(_request(case, archive, out, changes))
    message = str(err.value)
    assert field in message, message
    for word in words:
        assert word in message, message
    assert hook.list_compilation_jobs() == [], "nothing recorded"
    assert not out.exists()
    assert not hook.store.log_path(case).exists(), "no runner started"
    fixed = _request(case, write_sample_archive(tmp_path / "good" / "model.tar.gz"), out, {})
    assert hook.create_compilation_job(fixed)["CompilationJobArn"].endswith(f"/{case}"), "the name was not taken"
    hook.stop_compilation_job(case)


def test_table_covers_enough_cases():
    assert len(FAILED_CASES) + len(REFUSED_CASES) + 4 >= 15  # + the raising cases below


def test_invalid_request_raises_and_records_nothing(hook, tmp_path):
    request = _request("bad-request", tmp_path / "m.tar.gz", tmp_path / "out", {})
    request["OutputConfig"]["TargetDevice"] = "ml_c5"  # both TargetDevice and TargetPlatform
    with pytest.raises(InvalidCompilationRequest, match="TargetDevice|TargetPlatform"):
        hook.create_compilation_job(request)
    assert hook.list_compilation_jobs() == []


def test_duplicate_name_and_delete_of_running_job_raise(hook, tmp_path):
    archive = write_sample_archive(tmp_path / "model.tar.gz")
    request = _request("dup", archive, tmp_path / "out", {})
    hook.create_compilation_job(request)
    with pytest.raises(CompilationJobExists):
        hook.create_compilation_job(request)
    with pytest.raises(CompilationJobStateError, match="dup"):
        hook.delete_compilation_job("dup")
    hook.stop_compilation_job("dup")
    payload = hook.wait_for_compilation_job("dup", check_interval=0.3, max_wait=120)
    assert payload["CompilationJobStatus"] == "STOPPED"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_killed_runner_is_reported_failed_not_stuck(hook, tmp_path):
    archive = write_sample_archive(tmp_path / "model.tar.gz")
    hook.create_compilation_job(_request("killed", archive, tmp_path / "out", {}))
    deadline = time.monotonic() + 60
    while hook.describe_compilation_job("killed")["CompilationJobStatus"] == "STARTING" and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = runner_info(hook.store, "killed")["pid"]
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # the runner and its compile child, like a lost worker
    payload = hook.wait_for_compilation_job("killed", check_interval=0.3, max_wait=120)
    assert payload["CompilationJobStatus"] == "FAILED"
    assert payload["FailureReason"].startswith("ServerError: Compile worker lost: ")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
