"""Names the store gives a job: its ARN and where its compiled artifact goes.

* ARN: ``arn:aws:sagemaker:{region}:{account}:compilation-job/{name}`` (region ``local`` and
  account ``000000000000`` unless the store is given others);
* artifact: ``{S3OutputLocation}/{archive-stem}-{target-label}.tar.gz``, where the stem is the
  input archive's file name without ``.tar.gz``/``.tgz`` (the job name for a
  ModelPackageVersionArn job) and the label is ``TargetDevice`` as given or
  ``{os}-{arch}[-{accelerator}]`` in lower case for a ``TargetPlatform``.
"""

from __future__ import annotations

import posixpath

DEFAULT_REGION = "local"
DEFAULT_ACCOUNT = "000000000000"


def compilation_job_arn(name: str, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:sagemaker:{region}:{account}:compilation-job/{name}"


def target_label(output_config: dict) -> str:
    """``TargetDevice`` as given, or ``{os}-{arch}[-{accelerator}]`` in lower case for a
    ``TargetPlatform`` (so that a CPU and an NVIDIA build for one platform do not share a name)."""
    if output_config.get("TargetDevice"):
        return str(output_config["TargetDevice"])
    platform = output_config.get("TargetPlatform") or {}
    label = f"{platform.get('Os', 'unknown')}-{platform.get('Arch', 'unknown')}"
    if platform.get("Accelerator"):
        label += f"-{platform['Accelerator']}"
    return label.lower()


def archive_stem(uri: str) -> str:
    """The input archive's file name without ``.tar.gz`` (or ``.tgz``, or its last suffix)."""
    base = posixpath.basename(uri.rstrip("/")) or "model"
    for suffix in (".tar.gz", ".tgz"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    stem, _ext = posixpath.splitext(base)
    return stem or base


def artifact_uri_for(request: dict) -> str:
    """Where the compiled artifact goes: ``{S3OutputLocation}/{archive-stem}-{target-label}.tar.gz``.

    The stem is the job name when the request has no InputConfig (a ModelPackageVersionArn job).
    """
    output = request["OutputConfig"]
    location = str(output["S3OutputLocation"]).rstrip("/")
    input_uri = (request.get("InputConfig") or {}).get("S3Uri")
    stem = archive_stem(input_uri) if input_uri else request["CompilationJobName"]
    return f"{location}/{stem}-{target_label(output)}.tar.gz"
