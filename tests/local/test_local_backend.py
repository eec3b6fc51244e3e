"""The local backend through the same hook methods, operators, sensor and trigger as SageMaker.

The tests where the job store's behaviour is the point (the describe payload as read back from the
store, the trigger's serialized store and polling, the API errors: a duplicate name, deleting a
running job) run on a SQLite store and on a PostgreSQL store (``any_store``, see
tests/support/stores.py); the others run on SQLite (``store``): PostgreSQL under the operator, the
sensor, S3 and listing is covered by tests/local/test_shared_store.py and the store itself by
tests/local/test_store*.py.

One real compile of the sample CNN for LINUX/X86_64 fills a module-wide compile cache
(``warm_cache``); the tests that need a finished job of that model use it (``cached``), so their
jobs run the whole runner (fetch, cache hit, publish, record) without compiling again. A test whose
job must be compiling (the stop, the API errors' delete of a running job) or has another target
(S3, ``ml_c5``) compiles for itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config

from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow_neo.core.exceptions import CompilationJobExists, CompilationJobNotFound, CompilationJobStateError
from airflow_neo.core.service_model import output_shape
from airflow_neo.hooks.factory import get_neo_hook
from airflow_neo.hooks.local import LocalNeoHook
from airflow_neo.operators.neo import (
    NeoCompilationOperator,
    NeoDescribeCompilationJobOperator,
    NeoListCompilationJobsOperator,
    NeoStopCompilationJobOperator,
)
from airflow_neo.sensors.neo import NeoCompilationJobSensor
from airflow_neo.samples import sample_cnn_onnx, write_sample_archive
from tests.support.context import make_context
from tests.support.requests import ROLE_ARN

# Optional describe members that a local job never has (no image, no package, no VPC given).
NEVER_LOCAL = {"InferenceImage", "ModelPackageVersionArn", "VpcConfig"}


@pytest.fixture
def store(tmp_path):
    """The job store: a SQLite file (store-independent tests)."""
    return str(tmp_path / "store" / "jobs.sqlite")


@pytest.fixture
def any_store(store_kind, store_target, tmp_path):
    """The job store: a SQLite file, or (``[postgres]``) a URL of a private PostgreSQL schema."""
    return str(tmp_path / "store" / "jobs.sqlite") if store_kind == "sqlite" else store_target


@pytest.fixture(scope="module")
def sample_archive(tmp_path_factory):
    return write_sample_archive(tmp_path_factory.mktemp("models") / "model.tar.gz")


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory, sample_archive) -> Path:
    """A compile cache holding the sample CNN compiled for LINUX/X86_64: one real compile, by the hook."""
    root = tmp_path_factory.mktemp("warm-cache")
    with pytest.MonkeyPatch.context() as patch:
        _share_cache(patch, root)
        hook = LocalNeoHook(store_path=str(root / "jobs.sqlite"))
        hook.create_compilation_job(local_request("warm", sample_archive, root / "out"))
        payload = hook.wait_for_compilation_job("warm", check_interval=0.5)
    assert payload["CompilationJobStatus"] == "COMPLETED", payload.get("FailureReason", "") + hook.job_log("warm")
    return root / "cache"


@pytest.fixture
def cached(warm_cache, monkeypatch) -> Path:
    """Jobs made in this test look their artifact up in ``warm_cache``."""
    _share_cache(monkeypatch, warm_cache.parent)
    return warm_cache


def _share_cache(patch: pytest.MonkeyPatch, root: Path) -> None:
    """``[neo] cache_dir`` and ``tuning_database`` under ``root`` (the tuning root is part of the cache key)."""
    patch.setenv("AIRFLOW__NEO__CACHE_DIR", str(root / "cache"))
    patch.setenv("AIRFLOW__NEO__TUNING_DATABASE", str(root / "tuning"))


def local_request(name, archive: Path, out_dir: Path, **output) -> dict:
    return {
        "CompilationJobName": name,
        "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": archive.as_uri(), "Framework": "ONNX", "DataInputConfig": {"data": [1, 3, 32, 32]}},
        "OutputConfig": {"S3OutputLocation": out_dir.as_uri(), **(output or {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}})},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def _op(config, store, **kwargs):
    kwargs.setdefault("check_interval", 0.5)
    return NeoCompilationOperator(task_id="compile", backend="local", local_store=store, config=config, aws_conn_id=None, **kwargs)


def test_factory_picks_the_local_hook(store):
    hook = get_neo_hook("local", local_store=store)
    assert isinstance(hook, LocalNeoHook) and hook.store_path == store


def test_local_compile_payload_has_the_api_shape_and_the_artifact_runs(any_store, cached, sample_archive, tmp_path):
    store = any_store
    payload = _op(local_request("local-ok", sample_archive, tmp_path / "out"), store).execute(make_context())
    assert payload["CompilationJobStatus"] == "COMPLETED"
    api_members = list(output_shape("DescribeCompilationJob").members)
    assert set(payload) == set(api_members) - NEVER_LOCAL
    assert list(payload) == [m for m in api_members if m in payload], "keys in the API's order"
    assert json.loads(json.dumps(payload)) == payload
    artifact = payload["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == (tmp_path / "out" / "model-linux-x86_64.tar.gz").as_uri()
    import hashlib

    data = Path(artifact[len("file://"):]).read_bytes()
    assert payload["ModelDigests"]["ArtifactDigest"] == hashlib.blake2b(data).hexdigest()
    assert json.loads(payload["DerivedInformation"]["DerivedDataInputConfig"]) == {"data": [1, 3, 32, 32]}

    import onnxruntime as ort

    from airflow_neo import runtime

    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype("float32")
    [got] = runtime.load(artifact).run({"data": x})
    session = ort.InferenceSession(sample_cnn_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    [want] = session.run(None, {"data": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_deferred_local_compile_runs_the_trigger(any_store, cached, sample_archive, tmp_path):
    store = any_store
    op = _op(local_request("local-def", sample_archive, tmp_path / "out"), store, deferrable=True)
    context = make_context()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    trigger = info.value.trigger
    assert trigger.serialize()[1]["backend"] == "local" and trigger.serialize()[1]["local_store"] == store

    import asyncio

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())
    payload = op.execute_complete(context, event)
    assert payload["CompilationJobStatus"] == "COMPLETED"
    assert payload == LocalNeoHook(store_path=store).describe_compilation_job("local-def")


def test_local_compile_in_a_kubernetes_executor_pod_waits_instead_of_deferring(
    store, cached, sample_archive, tmp_path, monkeypatch
):
    """Deferring would end the pod and the compile process in it: the operator waits in the pod."""
    from structlog.testing import capture_logs

    monkeypatch.setenv("AIRFLOW_IS_K8S_EXECUTOR_POD", "True")
    op = _op(local_request("local-k8s", sample_archive, tmp_path / "out"), store, deferrable=True)
    with capture_logs() as logs:
        payload = op.execute(make_context())  # no TaskDeferred
    assert payload["CompilationJobStatus"] == "COMPLETED"
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert any("instead of deferring" in entry["event"] for entry in warnings), logs


def test_failed_local_compile_fails_the_task_with_reason(store, tmp_path):
    corrupt = tmp_path / "corrupt" / "model.tar.gz"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x1f\x8b\x08\x00not a gzip stream")
    with pytest.raises(AirflowException, match="FAILED: .*tar.gz"):
        _op(local_request("local-corrupt", corrupt, tmp_path / "out"), store).execute(make_context())
    payload = LocalNeoHook(store_path=store).describe_compilation_job("local-corrupt")
    assert payload["CompilationJobStatus"] == "FAILED"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_missing_model_file_fails_the_task_before_any_job(store, tmp_path):
    missing = tmp_path / "no-such" / "model.tar.gz"
    with pytest.raises(AirflowException, match="InputConfig.S3Uri.*no-such.*does not exist"):
        _op(local_request("local-missing", missing, tmp_path / "out"), store).execute(make_context())
    assert LocalNeoHook(store_path=store).list_compilation_jobs() == []


def test_unsupported_target_fails_the_task_naming_the_reason(store, sample_archive, tmp_path):
    request = local_request("local-inf", sample_archive, tmp_path / "out", TargetDevice="ml_inf1")
    with pytest.raises(AirflowException, match="OutputConfig.TargetDevice.*not supported by the local backend.*Neuron"):
        _op(request, store).execute(make_context())
    assert LocalNeoHook(store_path=store).list_compilation_jobs() == []


def test_nvidia_job_completes_unverified_with_its_cubin(store, sample_archive, tmp_path):
    """A Jetson job through the operator: COMPLETED, the artifact named for the device, its
    report saying why it was not run (no GPU here, none emulated) and what the structure check saw."""
    from airflow_neo.local.cuda.inspect import inspect_library

    request = local_request("local-jetson", sample_archive, tmp_path / "out", TargetDevice="jetson_nano",
                            CompilerOptions=json.dumps({"cuda-ver": "10.2", "trt-ver": "8.0.1"}))
    context = make_context()
    payload = _op(request, store).execute(context)
    assert payload["CompilationJobStatus"] == "COMPLETED"
    artifact = Path(payload["ModelArtifacts"]["S3ModelArtifacts"][len("file://"):])
    assert artifact.name == "model-jetson_nano.tar.gz"
    import tarfile

    with tarfile.open(artifact) as tar:
        (tmp_path / "model.so").write_bytes(tar.extractfile("model.so").read())
        metadata = json.load(tar.extractfile("metadata.json"))
    assert inspect_library(tmp_path / "model.so").arch == "sm_53"
    assert "CUDA artifacts need an NVIDIA GPU" in metadata["verification"]["not_verified"]
    assert metadata["cuda"]["requested"] == {"cuda_ver": "10.2", "trt_ver": "8.0.1"}
    report = context["ti"].xcoms["neo_report"]
    assert report["device_code"]["kind"] == "cuda" and report["device_code"]["arch"] == "sm_53"
    assert "CUDA artifacts need an NVIDIA GPU" in report["verification"]["not_verified"]


def test_sensor_waits_for_a_local_job_started_elsewhere(store, cached, sample_archive, tmp_path):
    LocalNeoHook(store_path=store).create_compilation_job(local_request("local-ext", sample_archive, tmp_path / "out"))
    sensor = NeoCompilationJobSensor(
        task_id="wait", compilation_job_name="local-ext", backend="local", local_store=store, poke_interval=0.5
    )
    payload = sensor.execute(make_context())
    assert payload["CompilationJobStatus"] == "COMPLETED"


def test_stop_mid_compile_publishes_nothing(store, sample_archive, tmp_path):
    out = tmp_path / "out"
    LocalNeoHook(store_path=store).create_compilation_job(local_request("local-stop", sample_archive, out))
    time.sleep(1.0)
    payload = NeoStopCompilationJobOperator(
        task_id="stop", compilation_job_name="local-stop", backend="local", local_store=store, check_interval=0.2
    ).execute(make_context())
    assert payload["CompilationJobStatus"] == "STOPPED"
    assert not out.exists() or not list(out.iterdir())
    described = NeoDescribeCompilationJobOperator(
        task_id="d", compilation_job_name="local-stop", backend="local", local_store=store
    ).execute(make_context())
    assert described == payload


def test_local_api_errors_match_sagemaker(any_store, sample_archive, tmp_path):
    """A real compile (no cache hit), so that the job is still running when it is deleted; it is
    then stopped, which ends it sooner than its compile would."""
    store = any_store
    hook = LocalNeoHook(store_path=store)
    hook.create_compilation_job(local_request("local-dup", sample_archive, tmp_path / "out"))
    with pytest.raises(CompilationJobExists):
        hook.create_compilation_job(local_request("local-dup", sample_archive, tmp_path / "out"))
    with pytest.raises(CompilationJobStateError):
        hook.delete_compilation_job("local-dup")
    with pytest.raises(CompilationJobNotFound):
        hook.describe_compilation_job("nope")
    hook.stop_compilation_job("local-dup")
    assert hook.wait_for_compilation_job("local-dup", check_interval=0.2)["CompilationJobStatus"] == "STOPPED"
    hook.delete_compilation_job("local-dup")
    with pytest.raises(CompilationJobNotFound):
        hook.describe_compilation_job("local-dup")


def test_list_operator_on_local_jobs(store, cached, sample_archive, tmp_path):
    hook = LocalNeoHook(store_path=store)
    for name in ("b-job", "a-job"):
        hook.create_compilation_job(local_request(name, sample_archive, tmp_path / name))
    for name in ("b-job", "a-job"):
        hook.wait_for_compilation_job(name, check_interval=0.5)
    listed = NeoListCompilationJobsOperator(
        task_id="l", backend="local", local_store=store, name_contains="-job", sort_by="Name", sort_order="Ascending"
    ).execute(make_context())
    assert [s["CompilationJobName"] for s in listed] == ["a-job", "b-job"]
    assert listed[0]["CompilationTargetPlatformOs"] == "LINUX" and listed[0]["CompilationJobStatus"] == "COMPLETED"


def test_retry_reattaches_to_the_local_job(store, cached, sample_archive, tmp_path):
    config = local_request("local-retry", sample_archive, tmp_path / "out")
    _op(config, store, wait_for_completion=False).execute(make_context(try_number=1))
    payload = _op(config, store).execute(make_context(try_number=2))
    assert payload["CompilationJobName"] == "local-retry" and payload["CompilationJobStatus"] == "COMPLETED"
    assert len(LocalNeoHook(store_path=store).list_compilation_jobs()) == 1


def test_s3_input_and_output_through_the_aws_connection(store, sample_archive, aws_conn_env, moto_reset):
    s3 = boto3.client(
        "s3", endpoint_url=moto_reset, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}),
    )
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(sample_archive), "models", "cnn/model.tar.gz")
    request = {
        "CompilationJobName": "local-s3",
        "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": "s3://models/cnn/model.tar.gz", "Framework": "ONNX", "DataInputConfig": '{"data": [1, 3, 32, 32]}'},
        "OutputConfig": {"S3OutputLocation": "s3://models/compiled", "TargetDevice": "ml_c5", "KmsKeyId": "alias/neo-artifacts"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    hook = LocalNeoHook(aws_conn_id=aws_conn_env, store_path=store)
    hook.create_compilation_job(request)
    payload = hook.wait_for_compilation_job("local-s3", check_interval=0.5)
    assert payload["CompilationJobStatus"] == "COMPLETED", payload["FailureReason"] + hook.job_log("local-s3")
    assert payload["ModelArtifacts"]["S3ModelArtifacts"] == "s3://models/compiled/model-ml_c5.tar.gz"
    head = s3.head_object(Bucket="models", Key="compiled/model-ml_c5.tar.gz")
    assert head["ServerSideEncryption"] == "aws:kms"
    import hashlib

    body = s3.get_object(Bucket="models", Key="compiled/model-ml_c5.tar.gz")["Body"].read()
    assert payload["ModelDigests"]["ArtifactDigest"] == hashlib.blake2b(body).hexdigest()
