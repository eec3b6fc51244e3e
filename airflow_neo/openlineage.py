"""OpenLineage facets of a compilation job: the model archive in, the compiled artifact out, and
the job's report (:mod:`airflow_neo.core.report`) as the ``neoCompilationReport`` run facet.

Used only when the OpenLineage provider is installed (imported lazily by the operator); without
it :func:`lineage_for_job` returns None. The facet class is defined on first use, the way the
OpenLineage provider defines its own custom facets (an attrs class deriving ``RunFacet``).
"""

from __future__ import annotations

import functools
from urllib.parse import urlparse

#: the run facet's key in the OpenLineage event
REPORT_FACET = "neoCompilationReport"


def dataset_parts(uri: str) -> tuple[str, str]:
    """(namespace, name) of an s3:// URI or a local path/file:// URI, as OpenLineage names them."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "https"):
        return f"s3://{parsed.netloc}", parsed.path.lstrip("/") or "/"
    path = parsed.path if parsed.scheme == "file" else uri
    return "file", path


@functools.cache
def report_facet_class():
    """``NeoCompilationReportRunFacet``: a RunFacet whose ``report`` is the job's report dict."""
    from attrs import define

    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @define
    class NeoCompilationReportRunFacet(RunFacet):
        """The compilation job's report: verification and profile of the artifact (see airflow_neo.core.report)."""

        report: dict

        _additional_skip_redact = ["report"]

    NeoCompilationReportRunFacet.__module__ = __name__
    NeoCompilationReportRunFacet.__qualname__ = "NeoCompilationReportRunFacet"
    return NeoCompilationReportRunFacet


def __getattr__(name: str):
    """``NeoCompilationReportRunFacet`` resolves here (so the class can be found by name, pickled...)."""
    if name == "NeoCompilationReportRunFacet":
        return report_facet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lineage_for_job(payload: dict, report: dict | None = None):
    """An ``OperatorLineage`` for a describe payload (and the job's report as a run facet), or None
    without the OpenLineage provider."""
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    inputs = []
    input_uri = (payload.get("InputConfig") or {}).get("S3Uri")
    if input_uri:
        inputs.append(Dataset(*dataset_parts(input_uri)))
    outputs = []
    output_uri = (payload.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if output_uri:
        outputs.append(Dataset(*dataset_parts(output_uri)))
    run_facets = {REPORT_FACET: report_facet_class()(report=report)} if report is not None else {}
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)
