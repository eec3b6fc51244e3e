"""OpenLineage facets of a compilation job: the model archive in, the compiled artifact out.

Used only when the OpenLineage provider is installed (imported lazily by the operator).
"""

from __future__ import annotations

from urllib.parse import urlparse


def dataset_parts(uri: str) -> tuple[str, str]:
    """(namespace, name) of an s3:// URI or a local path/file:// URI, as OpenLineage names them."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "https"):
        return f"s3://{parsed.netloc}", parsed.path.lstrip("/") or "/"
    path = parsed.path if parsed.scheme == "file" else uri
    return "file", path


def lineage_for_job(payload: dict):
    """An ``OperatorLineage`` for a describe payload, or None without the OpenLineage provider."""
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
    return OperatorLineage(inputs=inputs, outputs=outputs)
