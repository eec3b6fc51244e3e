"""Create-time checks of the local backend: what it already knows it cannot do is refused at once.

A request that passed :func:`~airflow_neo.core.validation.validate_request` can still name a
framework or target that the local backend does not build, a model file that does not exist on
this machine, or a ModelPackageVersionArn. These are static facts: :func:`check_local_request`
raises :class:`~airflow_neo.core.exceptions.InvalidCompilationRequest` listing every one of them
(field, value, what is allowed) before a job is recorded, so nothing is created and the name is
not taken. The messages are the ones the compiler would give as a FailureReason.

Invariants: no network, no TVM import (the target table only); ``s3://`` inputs are not looked
up here (the runner's credentials may differ). Nothing here imports Airflow.
"""

from __future__ import annotations

import os
import urllib.parse

from airflow_neo.core.exceptions import InvalidCompilationRequest, Problem
from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.local.errors import UnsupportedTargetError
from airflow_neo.local.frameworks import SUPPORTED_FRAMEWORKS, framework_problem
from airflow_neo.local.targets import check_target

__all__ = ["check_local_request", "local_path"]


def check_local_request(request: ValidatedRequest) -> None:
    """Raise InvalidCompilationRequest with every static reason the local backend would fail ``request``."""
    problems: list[Problem] = []
    if "InputConfig" not in request.payload:
        problems.append(
            Problem(
                "ModelPackageVersionArn",
                request.payload.get("ModelPackageVersionArn"),
                "is not supported by the local backend: give InputConfig with the model archive's S3Uri instead",
            )
        )
    else:
        problems += _framework_problems(request)
        problems += _input_file_problems(request)
    problems += _target_problems(request)
    if problems:
        raise InvalidCompilationRequest(problems)


def _framework_problems(request: ValidatedRequest) -> list[Problem]:
    framework = request.framework
    if framework in SUPPORTED_FRAMEWORKS:
        return []
    return [Problem("InputConfig.Framework", framework, framework_problem(framework))]


def _target_problems(request: ValidatedRequest) -> list[Problem]:
    output = request.output_config
    try:
        check_target(output)
    except UnsupportedTargetError as err:
        field = "OutputConfig.TargetDevice" if output.get("TargetDevice") else "OutputConfig.TargetPlatform"
        return [Problem(field, output.get("TargetDevice") or output.get("TargetPlatform"), str(err))]
    return []


def _input_file_problems(request: ValidatedRequest) -> list[Problem]:
    uri = str(request.input_config.get("S3Uri") or "")
    path = local_path(uri)
    if path is None or os.path.isfile(path):
        return []
    what = "is a directory, not a file" if os.path.isdir(path) else "does not exist on this machine"
    return [
        Problem(
            "InputConfig.S3Uri",
            uri,
            f"{path} {what}; give the model archive (.tar.gz) as file:///absolute/path or an absolute path",
        )
    ]


def local_path(uri: str) -> str | None:
    """The file a ``file://`` URI or absolute path names; None for any other location (``s3://``)."""
    if uri.startswith("/"):
        return uri
    if uri.startswith("file://"):
        parsed = urllib.parse.urlparse(uri)
        path = urllib.parse.unquote(parsed.path)
        if parsed.netloc and parsed.netloc != "localhost":
            path = f"/{parsed.netloc}{path}"
        return path
    return None
