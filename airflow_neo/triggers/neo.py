"""Deferrable trigger that waits for a compilation job, on either backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.core.retry import is_transient
from airflow_neo.core.status import COMPLETED, FAILED, STOPPED, TERMINAL_STATES
from airflow_neo.hooks.params import CONNECTION_FIELDS, NeoConnectionParams

if TYPE_CHECKING:
    from airflow_neo.hooks.base import CompilationJobHook

EVENT_FOR_STATUS = {COMPLETED: "success", FAILED: "failed", STOPPED: "stopped"}


class NeoCompilationJobTrigger(BaseTrigger):
    """
    Poll a compilation job until it is terminal, then fire one event.

    Events carry ``status`` (``success``, ``failed``, ``stopped``, ``timeout`` or ``error``),
    ``compilation_job_name``, ``message`` and ``payload`` (the JSON-safe describe payload, the
    last one seen for ``timeout``/``error``).

    :param compilation_job_name: the job to wait for.
    :param poll_interval: seconds between checks; a job's end is reported at most this long after it.
        All triggers of a triggerer share their polling (:mod:`airflow_neo.triggers.polling`): the
        local backend reads every due job in one store query per interval; on SageMaker one
        ListCompilationJobs sweep per interval finds the jobs that changed, and an unchanged
        long-running job is described directly only every 1, 2, 4... up to 10 intervals.
    :param max_attempts: describes before a ``timeout`` event (None: wait forever). Checks that
        find no job (with ``fail_if_not_found=False``) count too.
    :param max_transient_errors: consecutive throttling/connection errors tolerated.
    :param stop_on_kill: stop the job when a user kills the deferred task.
    :param fail_if_not_found: fire an ``error`` event at once when the job does not exist. With
        ``False`` a missing job is one that someone is about to start: the trigger keeps checking
        it every ``poll_interval`` until it appears (then waits for it as usual), or fires a
        ``timeout`` event after ``max_attempts`` checks.
    :param connection: the connection parameters by name (``backend``, ``aws_conn_id``,
        ``region_name``, ``verify``, ``botocore_config``, ``local_store``), as
        :class:`~airflow_neo.hooks.params.NeoConnectionParams` takes them; read back as
        attributes of the same names.
    """

    def __init__(
        self,
        compilation_job_name: str,
        *,
        poll_interval: float = 30,
        max_attempts: int | None = None,
        max_transient_errors: int = 5,
        stop_on_kill: bool = True,
        fail_if_not_found: bool = True,
        **connection: Any,
    ) -> None:
        super().__init__()
        self.compilation_job_name = compilation_job_name
        self.connection = NeoConnectionParams.from_dict(connection)
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.max_transient_errors = max_transient_errors
        self.stop_on_kill = stop_on_kill
        self.fail_if_not_found = fail_if_not_found

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "compilation_job_name": self.compilation_job_name,
                **self.connection.to_dict(),
                "poll_interval": self.poll_interval,
                "max_attempts": self.max_attempts,
                "max_transient_errors": self.max_transient_errors,
                "stop_on_kill": self.stop_on_kill,
                "fail_if_not_found": self.fail_if_not_found,
            },
        )

    def __getattr__(self, name: str) -> Any:
        """The connection parameters read as attributes (``trigger.backend``, ``trigger.local_store``...)."""
        connection = self.__dict__.get("connection")
        if connection is not None and name in CONNECTION_FIELDS:
            return connection.to_dict()[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def hook(self) -> CompilationJobHook:
        from airflow_neo.hooks.factory import get_neo_hook

        return get_neo_hook(self.connection)

    def _event(self, status: str, message: str, payload: dict | None) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "compilation_job_name": self.compilation_job_name,
                "message": message,
                "payload": payload or {},
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_neo.triggers.polling import board_for, next_tick

        name = self.compilation_job_name
        board = board_for(self.connection)
        watch = board.watch(name, self.poll_interval, allow_missing=not self.fail_if_not_found)
        attempts = transient_errors = 0
        payload: dict | None = None  # the last describe payload seen
        watch_status: str | None = None
        missing = False  # the last check found no job (only with fail_if_not_found=False)
        tick: float | None = None  # None: the first check, right away
        try:
            while True:
                try:
                    found = await board.refresh(watch, tick)
                    transient_errors = 0
                except CompilationJobNotFound as err:
                    board.unwatch(watch)
                    yield self._event("error", f"Compilation job {name} not found: {err}", payload)
                    return
                except Exception as err:
                    transient_errors += 1
                    if not is_transient(err) or transient_errors > self.max_transient_errors:
                        board.unwatch(watch)
                        yield self._event("error", f"Describing compilation job {name} failed: {err!r}", payload)
                        return
                    self.log.warning(
                        "Transient error %d/%d describing %s: %s", transient_errors, self.max_transient_errors, name, err
                    )
                else:
                    if found is None:  # fail_if_not_found=False: nobody has started the job yet
                        if not missing:
                            self.log.info("Compilation job %s does not exist yet: waiting for it", name)
                        missing, watch_status = True, None
                    else:
                        missing, payload = False, found
                        status = payload.get("CompilationJobStatus")
                        if status in TERMINAL_STATES:
                            board.unwatch(watch)
                            yield self._event(EVENT_FOR_STATUS[status], f"Compilation job {name} is {status}", payload)
                            return
                        if tick is None or status != watch_status:
                            self.log.info("Compilation job %s is %s", name, status)
                        watch_status = status
                attempts += 1
                if self.max_attempts is not None and attempts >= self.max_attempts:
                    board.unwatch(watch)
                    if missing:
                        message = f"Compilation job {name} not found after {attempts} checks {self.poll_interval} s apart"
                    else:
                        message = (
                            f"Compilation job {name} not finished after {attempts} checks {self.poll_interval} s apart"
                        )
                    yield self._event("timeout", message, payload)
                    return
                tick = await next_tick(watch)
        finally:  # cancelled (the task was cleared or the triggerer is stopping)
            board.unwatch(watch)

    async def on_kill(self) -> None:
        if not self.stop_on_kill:
            return
        self.log.info("Task killed by a user: stopping compilation job %s", self.compilation_job_name)
        try:
            await self.hook().astop_compilation_job(self.compilation_job_name)
        except Exception as err:  # the job may already be terminal
            self.log.warning("Could not stop compilation job %s: %s", self.compilation_job_name, err)
