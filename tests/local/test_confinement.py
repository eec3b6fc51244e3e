"""Confinement of a local job's files to ``[neo] local_allowed_paths`` (airflow_neo.local.confinement).

The rule itself, the create-time refusal in the hook (nothing recorded), and the runner's own check
right before each read and write: a symlink swapped after the job was created must not lead out.
Runner jobs use the fake compile of tests/local/test_runner.py (the compile does not matter here).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import InvalidCompilationRequest
from airflow_neo.local import runner
from airflow_neo.local.config import LocalJobConfig
from airflow_neo.local.confinement import (
    ALLOW_ALL,
    PathNotAllowed,
    confine,
    default_roots,
    is_allowed,
    parse_allowed_paths,
)
from airflow_neo.local.settings import CompileSettings
from airflow_neo.local.store import JobStore
from tests.local.test_runner import POLL, _write_tar_gz, fake_ok, make_request

FAKE_OK = "tests.local.test_runner:fake_ok"


@pytest.fixture
def layout(tmp_path) -> dict[str, Path]:
    """``root`` (the one allowed directory) holding a model; ``outside`` holding another, and a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for folder in (root / "models", outside / "models"):
        folder.mkdir(parents=True)
        _write_tar_gz(str(folder / "net.tar.gz"), {"model.onnx": folder.parent.name.encode() * 50})
    (outside / "secret.txt").write_text("not for jobs")
    return {"root": root, "outside": outside, "state": tmp_path / "state"}


# ----------------------------------------------------------------------------- the rule


def test_default_roots_are_airflow_home_and_the_temp_dir(monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", "/srv/airflow")
    assert default_roots() == ("/srv/airflow", os.path.abspath(tempfile.gettempdir()))
    assert parse_allowed_paths("") == parse_allowed_paths(None) == default_roots()
    assert default_roots("/opt/af")[0] == "/opt/af"


def test_option_values():
    assert parse_allowed_paths(" /data/models , /data/out ") == ("/data/models", "/data/out")
    assert parse_allowed_paths("*") == (ALLOW_ALL,)
    assert parse_allowed_paths("~/models")[0] == os.path.expanduser("~/models")


@pytest.mark.parametrize("value, words", [
    ("models", ["'models' is not an absolute directory"]),
    ("/data, relative/dir", ["'relative/dir' is not an absolute directory"]),
    ("*, /data", ["* allows every path; give it alone"]),
    (",", ["at least one absolute directory"]),
])
def test_bad_option_values_name_the_option(value, words):
    with pytest.raises(ValueError) as err:
        parse_allowed_paths(value)
    assert "[neo] local_allowed_paths" in str(err.value) and repr(value) in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_inside_outside_and_dotdot(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    roots = (str(root),)
    assert confine("f", "x", str(root / "a" / "m.tar.gz"), roots) == str(root / "a" / "m.tar.gz")
    assert confine("f", "x", str(root), roots) == str(root)
    assert is_allowed("/anything/at/all", (ALLOW_ALL,))
    with pytest.raises(PathNotAllowed) as err:
        confine("InputConfig.S3Uri", "file:///x", str(root / ".." / "root-sibling" / "m"), roots)
    assert err.value.resolved == str(tmp_path / "root-sibling" / "m")
    # a prefix of the name is not a parent directory
    assert not is_allowed(str(tmp_path / "rootless"), roots)
    # .. below a directory that does not exist yet still cannot climb out
    with pytest.raises(PathNotAllowed):
        confine("f", "x", str(root / "new" / ".." / ".." / "elsewhere"), roots)


def test_symlinks_are_resolved(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "link-to-file").symlink_to(outside / "secret")
    (root / "link-to-dir").symlink_to(outside, target_is_directory=True)
    roots = (str(root),)
    linked = root / "link-to-dir"
    for path in (root / "link-to-file", linked / "secret", linked / "not-yet" / "out.tar.gz"):
        with pytest.raises(PathNotAllowed) as err:
            confine("OutputConfig.S3OutputLocation", f"file://{path}", str(path), roots)
        assert err.value.resolved.startswith(str(outside))
    # a root reached through a symlink is the directory it points to
    (tmp_path / "root-link").symlink_to(root, target_is_directory=True)
    assert confine("f", "x", str(root / "m"), (str(tmp_path / "root-link"),)) == str(root / "m")


def test_the_refusal_names_field_location_resolved_path_roots_and_option():
    with pytest.raises(PathNotAllowed) as err:
        confine("InputConfig.S3Uri", "file:///etc/shadow", "/etc/shadow", ("/root/airflow", "/tmp"))
    assert str(err.value) == (
        "InputConfig.S3Uri file:///etc/shadow resolves to /etc/shadow, outside [neo] local_allowed_paths "
        "(/root/airflow, /tmp); add its directory to local_allowed_paths"
    )


def test_job_config_carries_the_roots(tmp_path):
    config = LocalJobConfig(store=str(tmp_path / "jobs.db"), allowed_paths=["/data/a", "/data/b"])
    assert config.allowed_paths == ("/data/a", "/data/b")
    assert LocalJobConfig.from_env(config.to_env()) == config
    assert LocalJobConfig(store="x.db").allowed_paths == default_roots()
    with pytest.raises(ValueError, match="'data' is not an absolute directory"):
        LocalJobConfig(store="x.db", allowed_paths=("data",))


# ----------------------------------------------------------------------------- create time (the hook)


def _hook(layout, monkeypatch, allowed: str):
    from airflow_neo.hooks.local import LocalNeoHook

    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_ALLOWED_PATHS", allowed)
    return LocalNeoHook(aws_conn_id=None, store_path=str(layout["state"] / "jobs.db"))


@pytest.mark.parametrize("field", ["InputConfig.S3Uri", "OutputConfig.S3OutputLocation", "verify_inputs"])
def test_the_hook_refuses_an_outside_path_and_records_nothing(layout, monkeypatch, field):
    root, outside = layout["root"], layout["outside"]
    hook = _hook(layout, monkeypatch, str(root))
    model, out, inputs = root / "models" / "net.tar.gz", root / "out", None
    if field == "InputConfig.S3Uri":
        model = root / ".." / "outside" / "models" / "net.tar.gz"
    elif field == "OutputConfig.S3OutputLocation":
        (root / "out").symlink_to(outside, target_is_directory=True)
    else:
        inputs = f"file://{outside}/inputs.npz"
    with pytest.raises(InvalidCompilationRequest) as err:
        hook.create_compilation_job(make_request("refused", f"file://{model}", f"file://{out}"), verify_inputs=inputs)
    message = str(err.value)
    assert f"{field}: got " in message and f"resolves to {outside}" in message
    assert f"outside [neo] local_allowed_paths ({root}); add its directory to local_allowed_paths" in message
    assert hook.list_compilation_jobs_page()["CompilationJobSummaries"] == []
    assert "does not exist" not in message  # nothing outside the roots is looked up


def test_a_refused_model_is_not_probed(layout, monkeypatch):
    """Whether a file exists outside the roots is not told: a missing and a present file read the same."""
    from airflow_neo.hooks.local import LocalNeoHook

    hook = _hook(layout, monkeypatch, str(layout["root"]))
    messages = []
    for name in ("secret.txt", "no-such-file"):
        request = make_request("probe", f"file://{layout['outside']}/{name}", f"file://{layout['root']}/out")
        with pytest.raises(InvalidCompilationRequest) as err:
            LocalNeoHook.validate(request)
        messages.append(str(err.value).replace(name, "NAME"))
    assert messages[0] == messages[1]
    assert hook.store.list()["CompilationJobSummaries"] == []


def test_a_star_allows_every_path_and_a_bad_option_is_named(layout, monkeypatch):
    from airflow_neo.hooks.local import LocalNeoHook

    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_ALLOWED_PATHS", "*")
    LocalNeoHook.validate(make_request("anywhere", f"file://{layout['outside']}/models/net.tar.gz", "file:///srv/out"))
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_ALLOWED_PATHS", "models/")
    with pytest.raises(ValueError, match=r"\[neo\] local_allowed_paths 'models/': 'models/' is not an absolute"):
        LocalNeoHook.validate(make_request("bad-option", f"file://{layout['root']}/models/net.tar.gz", "/tmp/out"))


def test_s3_locations_are_not_confined(layout, monkeypatch):
    from airflow_neo.hooks.local import LocalNeoHook

    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_ALLOWED_PATHS", str(layout["root"]))
    request = LocalNeoHook.validate(make_request("s3", "s3://bucket/models/net.tar.gz", "s3://bucket/out"))
    assert request.payload["InputConfig"]["S3Uri"] == "s3://bucket/models/net.tar.gz"
    assert request.payload["OutputConfig"]["S3OutputLocation"] == "s3://bucket/out"


# ----------------------------------------------------------------------------- run time (the runner)


def _run(layout, name: str, request: dict) -> tuple[JobStore, Path]:
    """The store with ``request`` recorded (as the hook would, after its create-time check)."""
    store_path = layout["state"] / "jobs.db"
    store = JobStore(store_path)
    store.create(request)
    return store, store_path


def _config(layout, store_path, **settings) -> LocalJobConfig:
    return LocalJobConfig(store=str(store_path), memory_limit_bytes=None, allowed_paths=(str(layout["root"]),),
                          compile=CompileSettings(**settings))


def test_a_model_symlink_swapped_after_create_is_refused_by_the_runner(layout):
    root, outside = layout["root"], layout["outside"]
    (root / "current").symlink_to(root / "models", target_is_directory=True)
    request = make_request("swap-in", f"file://{root}/current/net.tar.gz", f"file://{root}/out")
    from airflow_neo.core.validation import validate_request
    from airflow_neo.local.preflight import check_local_paths

    check_local_paths(validate_request(request, allow_local_uris=True), (str(root),))  # fine at create time
    store, store_path = _run(layout, "swap-in", request)
    (root / "current").unlink()
    (root / "current").symlink_to(outside / "models", target_is_directory=True)
    final = runner.run_job(store_path, "swap-in", config=_config(layout, store_path), compile_fn=fake_ok,
                           poll_interval=POLL)
    assert final == st.FAILED
    reason = store.describe("swap-in")["FailureReason"]
    assert reason.startswith("ClientError: InputConfig.S3Uri ")
    assert f"resolves to {outside}/models/net.tar.gz, outside [neo] local_allowed_paths ({root})" in reason
    assert not (root / "out").exists()


def test_an_output_symlink_swapped_after_create_writes_nothing_outside(layout):
    """Also through a detached runner: the roots travel in the job's config."""
    root, outside = layout["root"], layout["outside"]
    (root / "out").mkdir()
    store, store_path = _run(layout, "swap-out", make_request("swap-out", f"file://{root}/models/net.tar.gz",
                                                              f"file://{root}/out/here"))
    (root / "out").rmdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    runner.launch_detached(store_path, "swap-out", config=_config(layout, store_path), compile_fn=FAKE_OK)
    from tests.support.waiting import wait_for

    wait_for(lambda: store.describe("swap-out")["CompilationJobStatus"] in st.TERMINAL_STATES, timeout=120)
    job = store.describe("swap-out")
    assert job["CompilationJobStatus"] == st.FAILED
    assert job["FailureReason"].startswith("ClientError: OutputConfig.S3OutputLocation ")
    assert f"resolves to {outside}/here/net-ml_c5.tar.gz" in job["FailureReason"]
    assert "local_allowed_paths" in job["FailureReason"]
    assert sorted(p.name for p in outside.iterdir()) == ["models", "secret.txt"]


def test_verify_inputs_swapped_after_create_are_refused_by_the_runner(layout):
    root, outside = layout["root"], layout["outside"]
    np.savez(outside / "inputs.npz", input0=np.zeros((1, 3, 8, 8), dtype="float32"))
    (root / "inputs.npz").symlink_to(outside / "inputs.npz")
    store, store_path = _run(layout, "swap-npz", make_request("swap-npz", f"file://{root}/models/net.tar.gz",
                                                              f"file://{root}/out"))
    config = _config(layout, store_path, verify="report", verify_inputs=f"file://{root}/inputs.npz")
    assert runner.run_job(store_path, "swap-npz", config=config, compile_fn=fake_ok, poll_interval=POLL) == st.FAILED
    reason = store.describe("swap-npz")["FailureReason"]
    assert reason.startswith("ClientError: verify_inputs ")
    assert f"resolves to {outside}/inputs.npz" in reason and "local_allowed_paths" in reason
    assert not (root / "out").exists()


def test_a_job_inside_the_roots_completes(layout):
    root = layout["root"]
    store, store_path = _run(layout, "inside", make_request("inside", f"file://{root}/models/net.tar.gz",
                                                            f"file://{root}/out"))
    assert runner.run_job(store_path, "inside", config=_config(layout, store_path), compile_fn=fake_ok,
                          poll_interval=POLL) == st.COMPLETED
    assert (root / "out" / "net-ml_c5.tar.gz").is_file()


# ----------------------------------------------------------------------------- the verify-artifact operator


@pytest.mark.parametrize("field", ["artifact_uri", "verify_inputs"])
def test_the_verify_operator_reads_only_under_the_roots(layout, monkeypatch, field):
    from airflow_neo.local.errors import ModelArchiveError, ModelInputError
    from airflow_neo.operators.verify import NeoVerifyArtifactOperator
    from tests.support.context import make_context

    root, outside = layout["root"], layout["outside"]
    monkeypatch.setenv("AIRFLOW__NEO__LOCAL_ALLOWED_PATHS", str(root))
    (root / "artifact.tar.gz").symlink_to(outside / "models" / "net.tar.gz")
    np.savez(outside / "inputs.npz", input0=np.zeros((1, 3, 8, 8), dtype="float32"))
    artifact = f"file://{root}/artifact.tar.gz"
    inputs = f"file://{outside}/inputs.npz"
    if field == "verify_inputs":
        artifact = f"file://{root}/models/net.tar.gz"  # inside (not an artifact: the inputs are refused first)
    operator = NeoVerifyArtifactOperator(task_id="verify", artifact_uri=artifact,
                                         verify_inputs=inputs if field == "verify_inputs" else None, aws_conn_id=None)
    with pytest.raises((ModelArchiveError, ModelInputError)) as err:
        operator.execute(make_context())
    message = str(err.value)
    name = "artifact_uri" if field == "artifact_uri" else "inputs_uri"
    assert message.startswith(f"{name} file://") and f"resolves to {outside}" in message
    assert "local_allowed_paths" in message
