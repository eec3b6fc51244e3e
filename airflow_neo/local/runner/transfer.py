"""The job's file transfers: the input archive (and the user's sample inputs) in, the artifact out
(``s3://``, ``file://``, absolute paths).

Invariants:

* the S3 client is made at most once per job, and only when a transfer (or the shared cache or
  tuning sync, which borrow it through :meth:`Transfer.s3_client`) needs it, so a job on local
  files never touches AWS;
* a published artifact appears all at once: a local target through
  :func:`~airflow_neo.local.files.atomic_copy`, an S3 object through one PUT (or a completed
  multipart upload), optionally SSE-KMS encrypted with the job's KmsKeyId;
* the digest :meth:`Transfer.publish` returns is the BLAKE2b of the bytes published;
* a transfer that fails raises :class:`~.outcomes.Failed` naming the field (``InputConfig.S3Uri``,
  ``verify_inputs``), the location and the cause;
* the user's sample inputs (``verify_inputs``) land at :func:`verify_inputs_copy` of the fetched
  archive, where the compile child finds them;
* a local file is read or written only under the job's allowed roots (``allowed_paths``,
  :mod:`airflow_neo.local.confinement`), checked right before the read or write on the path with
  its symlinks resolved (so a symlink swapped in after the job was created cannot lead out), and
  the resolved path is the one used; a refusal fails the job with a ClientError naming the field,
  the path, the roots and ``[neo] local_allowed_paths``. A Transfer made from another's
  :meth:`Transfer.s3_client` shares its roots;
  :meth:`Transfer.unpublish` never raises (best effort, logged).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_neo.local.confinement import PathNotAllowed, confine, default_roots
from airflow_neo.local.errors import CLIENT_ERROR
from airflow_neo.local.files import atomic_copy, blake2b_file, split_s3_url
from airflow_neo.local.preflight import local_path
from airflow_neo.local.runner.outcomes import Failed

__all__ = ["Transfer", "aws_error", "s3_client_factory_for", "verify_inputs_copy"]


def verify_inputs_copy(archive: Path) -> Path:
    """Where a job's ``verify_inputs`` are fetched to: next to its fetched model ``archive``."""
    return archive.with_name(archive.name + ".verify_inputs.npz")


def s3_client_factory_for(aws_conn_id: str | None) -> Callable[[], Any]:
    """Makes the job's S3 client: from the Airflow AWS connection ``aws_conn_id`` (which the hook
    hands to the runner as an ``AIRFLOW_CONN_*`` variable), else boto3's default credentials."""
    if aws_conn_id:

        def from_connection():
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            return S3Hook(aws_conn_id=aws_conn_id).get_conn()

        return from_connection

    def default_client():
        import boto3

        return boto3.client("s3")

    return default_client


def aws_error(err: Exception) -> str:
    """``Code: Message`` of a botocore ClientError, else ``Type: message``."""
    response = getattr(err, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', type(err).__name__)}: {error.get('Message', str(err))}"
    return f"{type(err).__name__}: {err}"


class Transfer:
    """Fetches, publishes and unpublishes the files of one job (see the module docstring).

    :param log: the job's logger.
    :param client_factory: returns a boto3 S3 client; called at most once (default: boto3's).
    :param allowed_paths: the roots local files must lie under (default: those of the Transfer
        whose :meth:`s3_client` is ``client_factory``, else
        :func:`~airflow_neo.local.confinement.default_roots`).
    """

    def __init__(self, log: logging.Logger, client_factory: Callable[[], Any] | None = None, *,
                 allowed_paths: tuple[str, ...] | None = None):
        self.log = log
        self._factory = client_factory or s3_client_factory_for(None)
        self._client = None
        owner = getattr(client_factory, "__self__", None)
        if allowed_paths is None:
            allowed_paths = owner.allowed_paths if isinstance(owner, Transfer) else default_roots()
        self.allowed_paths = tuple(allowed_paths)

    def _confined(self, field: str, uri: str, path: str, kind: str | None = CLIENT_ERROR) -> Path:
        """The resolved ``path`` of ``uri`` when it lies under the allowed roots; else Failed."""
        try:
            return Path(confine(field, uri, path, self.allowed_paths))
        except PathNotAllowed as err:
            raise Failed(str(err), kind=kind or CLIENT_ERROR) from None

    def s3_client(self):
        if self._client is None:
            self._client = self._factory()
        return self._client

    def fetch(self, uri: str, into: Path) -> Path:
        """Copy the input archive at ``uri`` into the directory ``into``; returns its path there."""
        into.mkdir(parents=True, exist_ok=True)
        name = Path(split_s3_url(uri)[1]).name if uri.startswith("s3://") else Path(local_path(uri) or uri).name
        return self._copy(uri, into / (name or "model.tar.gz"), "InputConfig.S3Uri", "a single .tar.gz model archive")

    def fetch_verify_inputs(self, uri: str, archive: Path) -> Path:
        """Copy the user's sample inputs at ``uri`` (``verify_inputs``) to :func:`verify_inputs_copy`
        of the fetched ``archive``; a failure is a ClientError naming ``verify_inputs`` and ``uri``."""
        return self._copy(uri, verify_inputs_copy(archive), "verify_inputs", "a .npz of sample inputs", kind=CLIENT_ERROR)

    def _copy(self, uri: str, target: Path, field: str, what: str, kind: str | None = None) -> Path:
        """``uri`` copied to ``target``; Failed naming ``field``, ``uri`` and the cause."""
        if uri.startswith("s3://"):
            bucket, key = split_s3_url(uri)
            try:
                self.s3_client().download_file(bucket, key, str(target))
            except Exception as err:
                raise Failed(f"{field}: could not download {uri}: {aws_error(err)}", kind=kind) from None
        else:
            path = local_path(uri)
            if path is None:
                raise Failed(f"{field}: {uri}: the local backend reads s3://, file:// URIs and absolute paths only", kind=kind)
            source = self._confined(field, uri, path, kind)
            if not source.exists():
                raise Failed(f"{field}: {uri} does not exist", kind=kind)
            if not source.is_file():
                raise Failed(f"{field}: {uri} is not a file; it must point to {what}", kind=kind)
            try:
                shutil.copyfile(source, target)
            except OSError as err:
                raise Failed(f"{field}: could not read {uri}: {err}", kind=kind) from None
        self.log.info("fetched %s (%d bytes)", uri, target.stat().st_size)
        return target

    def publish(self, artifact: Path, destination: str, kms_key_id: str | None) -> str:
        """Put ``artifact`` at ``destination`` all at once; returns its BLAKE2b."""
        digest = blake2b_file(artifact)
        if destination.startswith("s3://"):
            bucket, key = split_s3_url(destination)
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else None
            try:
                # A PUT (or a completed multipart upload) appears in S3 all at once: never partial.
                self.s3_client().upload_file(str(artifact), bucket, key, ExtraArgs=extra)
            except Exception as err:
                raise Failed(f"Could not upload the compiled model to {destination}: {aws_error(err)}") from None
        else:
            path = local_path(destination)
            if path is None:
                raise Failed(
                    f"OutputConfig.S3OutputLocation: {destination}: the local backend writes to s3://, file:// URIs "
                    "and absolute paths only"
                )
            target = self._confined("OutputConfig.S3OutputLocation", destination, path)
            try:
                atomic_copy(artifact, target)
            except OSError as err:
                raise Failed(f"Could not publish the compiled model to {destination}: {err}") from None
        self.log.info("published %s (%d bytes)", destination, artifact.stat().st_size)
        return digest

    def unpublish(self, destination: str) -> None:
        """Remove a published artifact of a job that did not complete (best effort)."""
        try:
            if destination.startswith("s3://"):
                bucket, key = split_s3_url(destination)
                self.s3_client().delete_object(Bucket=bucket, Key=key)
            else:
                self._confined("OutputConfig.S3OutputLocation", destination, local_path(destination) or destination
                               ).unlink(missing_ok=True)
            self.log.warning("removed %s: the job did not complete", destination)
        except Exception as err:  # best effort
            self.log.warning("could not remove %s: %s", destination, err)
