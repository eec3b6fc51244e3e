"""OpenLineage facets: the model archive in, the compiled artifact out."""

from __future__ import annotations

import json

from moto import mock_aws

from airflow_neo.openlineage import dataset_parts, lineage_for_job
from airflow_neo.operators.neo import NeoCompilationOperator
from tests.support import moto_neo
from tests.support.context import make_context
from tests.support.requests import valid_request


def test_dataset_parts():
    assert dataset_parts("s3://models/resnet/model.tar.gz") == ("s3://models", "resnet/model.tar.gz")
    assert dataset_parts("file:///data/m.tar.gz") == ("file", "/data/m.tar.gz")
    assert dataset_parts("/data/m.tar.gz") == ("file", "/data/m.tar.gz")


def test_lineage_of_a_payload():
    lineage = lineage_for_job(
        {"InputConfig": {"S3Uri": "s3://in/m.tar.gz"}, "ModelArtifacts": {"S3ModelArtifacts": "s3://out/m-ml_c5.tar.gz"}}
    )
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("s3://in", "m.tar.gz")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://out", "m-ml_c5.tar.gz")]


def test_operator_reports_lineage_after_completion():
    moto_neo.install()
    moto_neo.reset_extension_state()
    with mock_aws():
        op = NeoCompilationOperator(task_id="c", config=valid_request("lin"), aws_conn_id=None, region_name="us-east-1", check_interval=0)
        payload = op.execute(make_context())
        lineage = op.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == ["resnet/model.tar.gz"]
    assert lineage.outputs[0].namespace == "s3://models"
    assert lineage.outputs[0].name == payload["ModelArtifacts"]["S3ModelArtifacts"].split("s3://models/")[1]


def test_the_report_is_a_custom_run_facet():
    from openlineage.client.facet_v2 import RunFacet
    from openlineage.client.serde import Serde

    from airflow_neo.core.report import build_report

    payload = {"CompilationJobName": "j", "CompilationJobStatus": "COMPLETED", "InputConfig": {"S3Uri": "s3://in/m.tar.gz"}}
    report = build_report(payload, {"profile": {"skipped": "no profile here"}})
    lineage = lineage_for_job(payload, report=report)
    facet = lineage.run_facets["neoCompilationReport"]
    assert isinstance(facet, RunFacet) and type(facet).__name__ == "NeoCompilationReportRunFacet"
    serialized = json.loads(Serde.to_json(facet))
    assert serialized["report"]["profile"] == {"skipped": "no profile here"} and serialized["_producer"]
    assert lineage_for_job(payload).run_facets == {}
