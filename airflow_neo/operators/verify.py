"""Verify a compiled artifact on the worker that runs the task: a smoke test on the deploy host.

:class:`NeoVerifyArtifactOperator` runs :func:`airflow_neo.local.verify_artifact.verify_artifact`
(the artifact against the reference outputs its compile recorded, and its latency here) and returns
the report as ``return_value``.

Invariants: importing this module imports neither TVM, ONNX, torch nor boto3 (DAG-parse cost): the
verification is imported in ``execute``, the S3 client made there only for ``s3://`` locations;
arguments that are not templates are checked at construction (naming the parameter, the value and
what is allowed), templated ones once rendered; under ``"gate"`` a mismatch, or a host that cannot
run the artifact, fails the task with the figures; the artifact is loaded and run in a check process
of its own, never in the task's (a library that crashes or hangs fails the task with what happened:
the signal, or ``check_timeout_seconds``, under the gate; the report says so otherwise); the return
value is JSON-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException
from airflow_neo.local.settings import check_verify, check_verify_inputs

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["NeoVerifyArtifactOperator"]


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


class NeoVerifyArtifactOperator(BaseOperator):
    """
    Check a compiled artifact on this worker: run it on the inputs its compile recorded (or on
    ``verify_inputs``), compare with the recorded reference outputs, and profile it.

    :param artifact_uri: the artifact (``s3://``, ``file://`` or an absolute path), e.g. the
        compile operator's ``ModelArtifacts.S3ModelArtifacts``. Templated. A local path (as well as
        one of ``verify_inputs``) must lie under ``[neo] local_allowed_paths``, symlinks resolved.
    :param verify_inputs: a ``.npz`` of sample inputs to run instead of the recorded ones
        (outputs are compared only where they were recorded for these inputs). Templated.
    :param verify_mode: ``gate`` (a mismatch or an incompatible host fails the task), ``report``
        (the report says so) or ``off`` (profile only). Templated.
    :param verify_rtol: relative tolerance of float outputs; None: the one the compile used.
    :param profile_seconds: the latency profile's budget on this worker (0: none).
    :param check_timeout_seconds: the time limit of the check process that loads, runs and profiles
        the artifact; past it the process is killed (a failed check under the gate).
    :param aws_conn_id: the Airflow AWS connection for ``s3://`` locations (None: boto3's defaults).
    :param region_name, verify, botocore_config: as for the compile operator's connection
        (``verify``: SSL verification of boto3).
    """

    template_fields: Sequence[str] = ("artifact_uri", "verify_inputs", "verify_mode")
    ui_color = "#d7ecc8"

    def __init__(
        self,
        *,
        artifact_uri: str,
        verify_inputs: str | None = None,
        verify_mode: str = "gate",
        verify_rtol: float | None = None,
        profile_seconds: float = 2,
        check_timeout_seconds: float = 600,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(artifact_uri, str) or not artifact_uri.strip():
            raise ValueError(f"artifact_uri must be an s3://, file:// URI or an absolute path; got {artifact_uri!r}")
        if not _templated(verify_inputs):
            check_verify_inputs(verify_inputs)
        if not _templated(verify_mode):
            verify_mode = check_verify(verify_mode)
        _check_number("verify_rtol", verify_rtol, allow_none=True, minimum_exclusive=True)
        _check_number("profile_seconds", profile_seconds)
        _check_number("check_timeout_seconds", check_timeout_seconds, minimum_exclusive=True)
        self.artifact_uri = artifact_uri
        self.verify_inputs = verify_inputs
        self.verify_mode = verify_mode
        self.verify_rtol = verify_rtol
        self.profile_seconds = profile_seconds
        self.check_timeout_seconds = check_timeout_seconds
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config

    def execute(self, context: Context) -> dict:
        from airflow_neo.local.errors import (AccuracyCheckError, ArtifactCheckAborted, IncompatibleArtifactError,
                                              failure_reason)
        from airflow_neo.hooks.local import allowed_paths_option
        from airflow_neo.local.verify_artifact import verify_artifact

        inputs = self.verify_inputs or None
        check_verify_inputs(inputs)
        mode = check_verify(self.verify_mode)
        uses_s3 = any(str(uri).startswith("s3://") for uri in (self.artifact_uri, inputs) if uri)
        try:
            report = verify_artifact(
                self.artifact_uri.strip(), inputs_uri=inputs, mode=mode, rtol=self.verify_rtol,
                profile_seconds=self.profile_seconds, s3_client=self._s3_client() if uses_s3 else None,
                log=self.log.info, timeout_seconds=self.check_timeout_seconds, allowed_paths=allowed_paths_option(),
            )
        except (AccuracyCheckError, IncompatibleArtifactError, ArtifactCheckAborted) as err:
            raise AirflowException(f"Artifact {self.artifact_uri} failed verification on this worker: "
                                   f"{failure_reason(err)}") from err
        return report

    def _s3_client(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                      config=self.botocore_config).get_conn()


def _check_number(name: str, value: Any, *, allow_none: bool = False, minimum_exclusive: bool = False) -> None:
    """``value`` is a number >= 0 (> 0 with ``minimum_exclusive``), or None when allowed; else a ValueError."""
    if value is None and allow_none:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (value > 0 if minimum_exclusive else value >= 0)
    if not ok:
        bound = "> 0" if minimum_exclusive else ">= 0"
        raise ValueError(f"{name} must be a number {bound}{' (or None)' if allow_none else ''}; got {value!r}")
