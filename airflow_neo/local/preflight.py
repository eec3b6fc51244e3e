"""Create-time checks of the local backend: what it already knows it cannot do is refused at once.

A request that passed :func:`~airflow_neo.core.validation.validate_request` can still name a
framework or target that the local backend does not build, a model file that does not exist on
this machine, or a ModelPackageVersionArn. These are static facts: :func:`check_local_request`
raises :class:`~airflow_neo.core.exceptions.InvalidCompilationRequest` listing every one of them
(field, value, what is allowed) before a job is recorded, so nothing is created and the name is
not taken. The messages are the ones the compiler would give as a FailureReason.

Invariants: no network, no TVM import (the target table only); ``s3://`` inputs are not looked
up here (the runner's credentials may differ). Nothing here imports Airflow.

Confinement: a local model file, output location and ``verify_inputs`` must lie under the allowed
roots (:mod:`airflow_neo.local.confinement`, ``[neo] local_allowed_paths``), symlinks resolved;
a path outside them is refused before anything about it (whether it exists) is looked up or told.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence

from airflow_neo.core.exceptions import InvalidCompilationRequest, Problem
from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.local.confinement import PathNotAllowed, confine, default_roots
from airflow_neo.local.errors import UnsupportedTargetError
from airflow_neo.local.frameworks import SUPPORTED_FRAMEWORKS, framework_problem
from airflow_neo.local.targets import check_target

__all__ = ["check_local_paths", "check_local_request", "local_path", "path_problems"]


def check_local_request(request: ValidatedRequest, allowed_paths: Sequence[str] | None = None, *,
                        verify_inputs: str | None = None) -> None:
    """Raise InvalidCompilationRequest with every static reason the local backend would fail ``request``.

    :param allowed_paths: the roots local paths must lie under (default
        :func:`~airflow_neo.local.confinement.default_roots`).
    :param verify_inputs: the job's sample inputs location, confined like the model file.
    """
    roots = tuple(allowed_paths) if allowed_paths is not None else default_roots()
    refused = path_problems(request, roots, verify_inputs=verify_inputs)
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
        # nothing is looked up outside the roots (not even whether the model file exists)
        problems += [p for p in refused if p.path == "InputConfig.S3Uri"] or _input_file_problems(request)
    problems += [p for p in refused if p.path != "InputConfig.S3Uri"]
    problems += _target_problems(request)
    if problems:
        raise InvalidCompilationRequest(problems)


def check_local_paths(request: ValidatedRequest, allowed_paths: Sequence[str], *,
                      verify_inputs: str | None = None) -> None:
    """Raise InvalidCompilationRequest for each local location of ``request`` (and ``verify_inputs``)
    outside ``allowed_paths``."""
    problems = path_problems(request, allowed_paths, verify_inputs=verify_inputs)
    if problems:
        raise InvalidCompilationRequest(problems)


def path_problems(request: ValidatedRequest, roots: Sequence[str], *,
                  verify_inputs: str | None = None) -> list[Problem]:
    """A Problem for each local location of ``request`` (model, output, ``verify_inputs``) outside ``roots``."""
    locations = [
        ("InputConfig.S3Uri", str(request.input_config.get("S3Uri") or "") if "InputConfig" in request.payload else ""),
        ("OutputConfig.S3OutputLocation", str(request.output_config.get("S3OutputLocation") or "")),
        ("verify_inputs", verify_inputs or ""),
    ]
    problems = []
    for field, uri in locations:
        path = local_path(uri)
        if path is None:
            continue
        try:
            confine(field, uri, path, roots)
        except PathNotAllowed as err:
            problems.append(Problem(field, uri, err.detail))
    return problems


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
