"""compilation_report of each hook: SageMaker jobs carry no figures; a local job's come from its artifact."""

from __future__ import annotations

import json
import os
import socket

import pytest
from moto import mock_aws

from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.hooks.local import LocalNeoHook
from airflow_neo.hooks.neo import NeoHook
from tests.local.models import write_archive
from tests.support import moto_neo
from tests.support.requests import valid_request


def test_sagemaker_report_describes_the_job_and_says_why_it_has_no_figures():
    moto_neo.install()
    moto_neo.reset_extension_state()
    with mock_aws():
        hook = NeoHook(aws_conn_id=None, region_name="us-east-1", config={"retries": {"total_max_attempts": 1}})
        hook.create_compilation_job(valid_request("sm-rep"))
        report = hook.compilation_report("sm-rep")
        with pytest.raises(CompilationJobNotFound):
            hook.compilation_report("sm-none")
    moto_neo.reset_extension_state()
    assert report["job"] == "sm-rep" and report["target"] == "ml_c5" and report["framework"] == "ONNX"
    assert report["available"] is False and report["reason"] == "SageMaker Neo jobs carry no verification or profile"


def test_local_report_reads_the_artifacts_metadata(tmp_path):
    metadata = {"profile": {"latency_ms": {"p50": 1.0}, "runs": 3, "threads": 1,
                            "baseline": {"name": "torch 2.13.0", "latency_ms": {"p50": 3.0}, "runs": 9}, "speedup": 3.0}}
    artifact = write_archive(tmp_path, {"metadata.json": json.dumps(metadata).encode()}, name="m.tar.gz")
    hook = LocalNeoHook(store_path=str(tmp_path / "jobs.sqlite"))
    hook.store.create(valid_request("loc-rep"))
    hook.store.mark_inprogress("loc-rep", socket.gethostname(), os.getpid(), 600)
    hook.store.complete("loc-rep", artifact.as_uri(), "cd" * 64, '{"input0": [1, 3, 224, 224]}')
    report = hook.compilation_report("loc-rep")
    assert report["available"] is True and report["digest"] == "cd" * 64
    assert report["profile"]["baseline"] == {"name": "torch 2.13.0", "p50_ms": 3.0, "runs": 9}
    assert report["profile"]["speedup"] == 3.0 and report["profile"]["slowdown"] == pytest.approx(1 / 3, rel=1e-5)
    assert report["verification"]["passed"] is None
