"""What every airflow-neo task shares: the connection parameters, the hook, event handling."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException
from airflow_neo.core.backends import Backend, parse_backend
from airflow_neo.core.outcome import failure_message
from airflow_neo.hooks.params import NeoConnectionParams, neo_template_fields

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_neo.hooks.base import CompilationJobHook


class NeoBaseTask(BaseOperator):
    """
    The connection parameters and the hook shared by the operators and the sensor.

    The parameters are those of :class:`~airflow_neo.hooks.params.NeoConnectionParams`, all
    templated. They are named in this signature (the only one that lists them) because Airflow
    reads constructor signatures to apply ``default_args`` and to check ``partial``/``expand``
    arguments, and they are kept as attributes because templates are rendered attribute by
    attribute; :attr:`connection_params` makes them one value again once rendered.

    :param backend: ``"sagemaker"`` (the SageMaker service) or ``"local"`` (compile in the
        worker with Apache TVM).
    :param aws_conn_id: the Airflow AWS connection (also used by the local backend for s3:// URIs).
    :param region_name: AWS region; the connection's region when None.
    :param verify: SSL verification for boto3 (bool or a CA bundle path).
    :param botocore_config: botocore client config as a dict (retries, timeouts...).
    :param local_store: local backend only: the job store (default ``[neo] local_store``).
    """

    template_fields = neo_template_fields()

    def __init__(
        self,
        *,
        backend: str | Backend = Backend.SAGEMAKER.value,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        local_store: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
    def connection_params(self) -> NeoConnectionParams:
        """The (rendered) connection parameters: what the hook is made from and a trigger serializes."""
        return NeoConnectionParams.from_attributes(self)

    @cached_property
    def hook(self) -> CompilationJobHook:
        from airflow_neo.hooks.factory import get_neo_hook

        return get_neo_hook(self.connection_params)

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

    return task_identity(*_task_instance_key(context))


def task_instance_tags_of(context: Context) -> list[dict]:
    """The readable tags naming the running task instance (the UI's "created by")."""
    from airflow_neo.core.attach import task_instance_tags

    return task_instance_tags(*_task_instance_key(context))


def _task_instance_key(context: Context) -> tuple[str, str, str, int]:
    ti = context["ti"]
    map_index = getattr(ti, "map_index", None)
    return ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else map_index
