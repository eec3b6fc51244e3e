"""What every airflow-neo task shares: the backend/connection parameters, the hook, event handling."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException
from airflow_neo.core.backends import Backend, parse_backend
from airflow_neo.core.outcome import failure_message

if TYPE_CHECKING:
    from airflow.sdk import Context

NEO_TEMPLATE_FIELDS = ("backend", "aws_conn_id", "region_name", "verify", "botocore_config", "local_store")


class NeoTaskMixin:
    """
    Backend and connection parameters shared by the operators and the sensor.

    :param backend: ``"sagemaker"`` (the SageMaker service) or ``"local"`` (compile in the
        worker with Apache TVM).
    :param aws_conn_id: the Airflow AWS connection (also used by the local backend for s3:// URIs).
    :param region_name: AWS region; the connection's region when None.
    :param verify: SSL verification for boto3 (bool or a CA bundle path).
    :param botocore_config: botocore client config as a dict (retries, timeouts...).
    :param local_store: local backend only: the job store (default ``[neo] local_store``).
    """

    def _init_neo(
        self,
        backend: str = Backend.SAGEMAKER.value,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        local_store: str | None = None,
    ) -> None:
        if isinstance(backend, Backend):
            backend = backend.value
        if "{{" not in str(backend):  # a templated backend is checked once rendered
            parse_backend(backend)
        self.backend = backend
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = botocore_config
        self.local_store = local_store

    @property
    def hook_params(self) -> dict[str, Any]:
        """Everything needed to rebuild the hook (also what a trigger serializes)."""
        return {
            "backend": parse_backend(self.backend).value,
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
            "botocore_config": self.botocore_config,
            "local_store": self.local_store,
        }

    @cached_property
    def hook(self):
        from airflow_neo.hooks.factory import get_neo_hook

        return get_neo_hook(**self.hook_params)

    @property
    def is_sagemaker(self) -> bool:
        return parse_backend(self.backend) is Backend.SAGEMAKER


def payload_from_event(event: dict[str, Any] | None) -> dict:
    """The payload of a successful trigger event; raise for any other event.

    Each non-success event raises with what happened: failed (with the FailureReason),
    stopped, timeout or error. A missing or malformed event never counts as success.
    """
    if not isinstance(event, dict) or "status" not in event:
        raise AirflowException(f"Trigger returned an invalid event: {event!r}")
    status = event["status"]
    payload = event.get("payload") or {}
    if status == "success":
        message = failure_message(payload)
        if message:  # never trust a success event whose payload says otherwise
            raise AirflowException(message)
        return payload
    if status in ("failed", "stopped"):
        raise AirflowException(failure_message(payload) or event.get("message", status))
    raise AirflowException(event.get("message") or f"Compilation job trigger ended with status {status!r}")


def task_identity_of(context: Context) -> str:
    from airflow_neo.core.attach import task_identity

    ti = context["ti"]
    map_index = getattr(ti, "map_index", None)
    return task_identity(ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else map_index)
