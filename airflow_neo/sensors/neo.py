"""Sensor that waits for a compilation job started elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException
from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.core.outcome import failure_message
from airflow_neo.core.status import SUCCESS_STATES, TERMINAL_STATES
from airflow_neo.hooks.params import neo_template_fields
from airflow_neo.operators.base import NeoBaseTask, payload_from_event

if TYPE_CHECKING:
    from airflow.sdk import Context


class NeoCompilationJobSensor(NeoBaseTask, BaseSensorOperator):
    """
    Wait until a compilation job is COMPLETED and return its full describe payload.

    FAILED and STOPPED fail the task with the reason. Works in ``poke`` and ``reschedule``
    modes and, with ``deferrable=True``, in the triggerer.

    :param compilation_job_name: the job to wait for (templated).
    :param fail_if_not_found: fail at once when the job does not exist (otherwise keep poking,
        for jobs that someone is about to start, until the sensor's ``timeout``). Deferred, the
        trigger keeps waiting for the job to appear the same way.
    :param deferrable: wait in the triggerer.

    The connection parameters (``backend``, ``aws_conn_id``...) are those of :class:`NeoBaseTask`.
    """

    template_fields: Sequence[str] = neo_template_fields("compilation_job_name")
    ui_color = "#f3e5ab"

    def __init__(
        self,
        *,
        compilation_job_name: str,
        fail_if_not_found: bool = True,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.compilation_job_name = compilation_job_name
        self.fail_if_not_found = fail_if_not_found
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable

    def poke(self, context: Context) -> PokeReturnValue | bool:
        try:
            payload = self.hook.describe_compilation_job(self.compilation_job_name)
        except CompilationJobNotFound:
            if self.fail_if_not_found:
                raise AirflowException(f"Compilation job {self.compilation_job_name} not found") from None
            self.log.info("Compilation job %s does not exist yet", self.compilation_job_name)
            return False
        status = payload["CompilationJobStatus"]
        self.log.info("Compilation job %s is %s", self.compilation_job_name, status)
        if status in SUCCESS_STATES:
            return PokeReturnValue(is_done=True, xcom_value=payload)
        if status in TERMINAL_STATES:
            raise AirflowException(failure_message(payload))
        return False

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        result = self.poke(context)
        if isinstance(result, PokeReturnValue):
            return result.xcom_value
        from airflow_neo.triggers.neo import NeoCompilationJobTrigger

        max_attempts = None
        if self.timeout is not None:
            max_attempts = max(1, int(self.timeout // max(self.poke_interval, 1)))
        self.defer(
            trigger=NeoCompilationJobTrigger(
                compilation_job_name=self.compilation_job_name,
                poll_interval=self.poke_interval,
                max_attempts=max_attempts,
                stop_on_kill=False,
                fail_if_not_found=self.fail_if_not_found,
                **self.connection_params.to_dict(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict:
        return payload_from_event(event)
