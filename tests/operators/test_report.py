"""The compile operator's report: XCom ``neo_report``, the log, the ``max_slowdown`` gate, the
OpenLineage facet, on a real local compile (profile on) and on SageMaker (moto)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from moto import mock_aws

from airflow.sdk.exceptions import AirflowException, TaskDeferred
from airflow_neo.hooks.local import LocalNeoHook
from airflow_neo.operators.neo import NeoCompilationOperator
from airflow_neo.samples import write_sample_archive
from tests.support import moto_neo
from tests.support.context import make_context
from tests.support.requests import ROLE_ARN, valid_request


def _local_request(name, archive, out_dir) -> dict:
    return {
        "CompilationJobName": name,
        "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": archive.as_uri(), "Framework": "ONNX", "DataInputConfig": {"data": [1, 3, 32, 32]}},
        "OutputConfig": {"S3OutputLocation": out_dir.as_uri(), "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


@pytest.fixture
def profiled(monkeypatch, tmp_path):
    """Local jobs profiled for a second, in a private compile cache (an artifact cached by a compile
    without a profile would carry none)."""
    monkeypatch.setenv("AIRFLOW__NEO__PROFILE_SECONDS", "1")
    monkeypatch.setenv("AIRFLOW__NEO__CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _local_op(request, store, **kwargs):
    kwargs.setdefault("check_interval", 0.5)
    return NeoCompilationOperator(task_id="compile", backend="local", local_store=store, config=request,
                                  aws_conn_id=None, **kwargs)


def test_deferred_local_compile_reports_and_the_gate_refuses_then_admits(profiled):
    """One real compile: deferred, its report pushed with the figures and the user's sample inputs,
    an impossible max_slowdown refuses it with the figures; a retry of the task with a huge one
    re-attaches to the job and passes; the OpenLineage facet carries the report."""
    tmp_path = profiled
    store = str(tmp_path / "store" / "jobs.sqlite")
    archive = write_sample_archive(tmp_path / "model" / "model.tar.gz", seed=14)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, data=np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype("float32"))
    request = _local_request("report-cnn", archive, tmp_path / "out")

    op = _local_op(request, store, deferrable=True, max_slowdown=1e-6, verify_inputs=inputs.as_uri())
    context = make_context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)

    async def first_event():
        async for event in deferred.value.trigger.run():
            return event.payload

    event = asyncio.run(first_event())
    with pytest.raises(AirflowException, match=r"max_slowdown=1e-06: job report-cnn's artifact is .*x slower than "
                                               r"onnxruntime .*\(p50 .* ms vs .* ms, speedup") as refused:
        op.execute_complete(context, event)
    report = context["ti"].xcoms["neo_report"]
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["job"] == "report-cnn" and report["status"] == "COMPLETED" and report["available"] is True
    assert report["artifact"] == event["payload"]["ModelArtifacts"]["S3ModelArtifacts"]
    assert report["verification"]["passed"] is True and report["verification"]["inputs"] == inputs.as_uri()
    assert report["verification"]["reference"].startswith("onnxruntime")
    profile = report["profile"]
    assert profile["p50_ms"] > 0 and profile["runs"] >= 1 and profile["threads"] >= 1
    assert profile["baseline"]["name"].startswith("onnxruntime") and profile["baseline"]["p50_ms"] > 0
    assert profile["slowdown"] == pytest.approx(1 / profile["speedup"], rel=1e-3)
    assert f"{profile['slowdown']:.3g}x slower" in str(refused.value)
    assert "return_value" not in context["ti"].xcoms

    retry = _local_op(request, store, max_slowdown=1e6)
    retry_context = make_context(try_number=2)
    payload = retry.execute(retry_context)
    assert payload == LocalNeoHook(store_path=store).describe_compilation_job("report-cnn")
    assert retry_context["ti"].xcoms["neo_report"] == report

    lineage = retry.get_openlineage_facets_on_complete(None)
    assert lineage.run_facets["neoCompilationReport"].report == report
    from openlineage.client.serde import Serde

    assert json.loads(Serde.to_json(lineage.run_facets["neoCompilationReport"]))["report"]["profile"]["speedup"] == \
        profile["speedup"]


def test_failed_local_job_pushes_a_report_before_failing(tmp_path):
    corrupt = tmp_path / "corrupt" / "model.tar.gz"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x1f\x8b\x08\x00not a gzip stream")
    context = make_context()
    with pytest.raises(AirflowException, match="FAILED: .*tar.gz"):
        _local_op(_local_request("report-corrupt", corrupt, tmp_path / "out"), str(tmp_path / "jobs.sqlite"),
                  max_slowdown=2.0).execute(context)
    report = context["ti"].xcoms["neo_report"]
    assert report["status"] == "FAILED" and report["available"] is False and report["failure_reason"]
    assert "FAILED" in report["reason"] and report["artifact"] is None


def test_unreadable_artifact_reports_why_and_the_gate_fails_closed(profiled):
    hook = LocalNeoHook(store_path=str(profiled / "jobs.sqlite"))
    payload = {"CompilationJobName": "gone", "CompilationJobStatus": "COMPLETED",
               "ModelArtifacts": {"S3ModelArtifacts": (profiled / "missing.tar.gz").as_uri()}}
    report = hook.compilation_report("gone", payload=payload)
    assert report["available"] is False and "could not read metadata.json of file://" in report["reason"]
    from airflow_neo.operators.report import enforce_max_slowdown

    with pytest.raises(AirflowException, match="no figures to compare: could not read metadata.json"):
        enforce_max_slowdown(report, 1.0)


@pytest.fixture
def mocked_sagemaker():
    moto_neo.install()
    moto_neo.reset_extension_state()
    with mock_aws():
        yield
    moto_neo.reset_extension_state()


def test_sagemaker_job_has_no_figures_so_the_gate_fails_closed(mocked_sagemaker):
    from structlog.testing import capture_logs

    kwargs = dict(task_id="compile", aws_conn_id=None, region_name="us-east-1", check_interval=0)
    context = make_context()
    with capture_logs() as logs:
        payload = NeoCompilationOperator(config=valid_request("sm-report"), verify_inputs="s3://models/in.npz",
                                         **kwargs).execute(context)
    assert payload["CompilationJobStatus"] == "COMPLETED"
    assert any("verify_inputs applies to the local backend only" in e["event"] for e in logs if e["log_level"] == "warning")
    report = context["ti"].xcoms["neo_report"]
    assert report["available"] is False and report["reason"] == "SageMaker Neo jobs carry no verification or profile"
    assert report["target"] == "ml_c5" and report["artifact"] == payload["ModelArtifacts"]["S3ModelArtifacts"]
    with pytest.raises(AirflowException, match="max_slowdown=1: job sm-gated has no figures to compare: SageMaker"):
        NeoCompilationOperator(config=valid_request("sm-gated"), max_slowdown=1.0, **kwargs).execute(make_context())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_slowdown": 0}, r"max_slowdown must be a finite number > 0 .*got 0"),
        ({"max_slowdown": "fast"}, r"max_slowdown must be a finite number > 0 .*got 'fast'"),
        ({"max_slowdown": 1.0, "wait_for_completion": False}, r"max_slowdown=1.0 needs wait_for_completion=True"),
        ({"verify_inputs": "inputs.npz"}, r"verify_inputs 'inputs.npz': only s3://, file:// URIs and absolute paths"),
    ],
)
def test_bad_parameters_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NeoCompilationOperator(task_id="c", config=valid_request(), **kwargs)


def test_templated_verify_inputs_is_checked_once_rendered():
    op = NeoCompilationOperator(task_id="c", config=valid_request(), verify_inputs="s3://in/{{ ds }}.npz")
    assert "verify_inputs" in op.template_fields and op.verify_inputs == "s3://in/{{ ds }}.npz"
