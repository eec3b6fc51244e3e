"""Operators for SageMaker Neo compilation jobs, on the SageMaker service or the local TVM backend."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException
from airflow_neo.core.exceptions import CompilationJobFailed, CompilationJobTimeout, NeoError
from airflow_neo.core.status import TERMINAL_STATES
from airflow_neo.hooks.params import neo_template_fields
from airflow_neo.links.neo import NeoCompilationJobLink
from airflow_neo.operators.base import NeoBaseTask, payload_from_event, task_identity_of, task_instance_tags_of
from airflow_neo.operators.report import enforce_max_slowdown, publish_report

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_neo.core.validation import ValidatedRequest


def _default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


#: set by Airflow's KubernetesExecutor in every task pod it starts
K8S_EXECUTOR_POD_ENV = "AIRFLOW_IS_K8S_EXECUTOR_POD"


def _in_k8s_executor_pod() -> bool:
    return os.environ.get(K8S_EXECUTOR_POD_ENV, "").strip().lower() in ("1", "true", "yes")


class NeoBaseOperator(NeoBaseTask):
    """Base of the compilation-job operators; see :class:`NeoBaseTask` for the connection parameters."""

    ui_color = "#f3e5ab"

    def _persist_link(self, context: Context, job_name: str) -> None:
        if not self.is_sagemaker:
            return
        NeoCompilationJobLink.persist(
            context=context,
            operator=self,
            region_name=self.hook.conn_region_name,
            aws_partition=self.hook.conn_partition,
            job_name=job_name,
        )


class NeoCompilationOperator(NeoBaseOperator):
    """
    Create a compilation job and (by default) wait for it; return the full describe payload.

    The request is validated before anything is called. A retry of the task re-attaches to the
    job that its earlier try created (found by a task-instance tag) instead of creating another.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:NeoCompilationOperator`

    :param config: the CreateCompilationJob request (templated). ``DataInputConfig`` and
        ``CompilerOptions`` may be dicts.
    :param wait_for_completion: wait until the job is terminal.
    :param check_interval: seconds between status checks.
    :param max_ingestion_time: give up (stop the job, fail the task) after this many seconds
        of waiting; None waits without limit.
    :param deferrable: wait in the triggerer instead of the worker. A local-backend compile
        started in a KubernetesExecutor task pod waits in the pod instead (with a warning): its
        compile process lives in that pod, which ends when the task defers.
    :param action_if_job_exists: ``"fail"``, ``"increment"`` (``name-1``, ``name-2``...) or
        ``"timestamp"`` (``name-YYYYmmddHHMMSS``) when the name is taken by another job.
    :param stop_on_kill: stop the job when the task is killed.
    :param tuning_trials: local backend only: MetaSchedule trials the model may get (default
        ``[neo] tuning_trials``; 0: no tuning, records already in the tuning database are still
        applied; trials already spent on the model's kernels count towards it, so a repeat compile
        runs none). Ignored by the SageMaker backend.
    :param verify_mode: local backend only (``verify`` stays the AWS connection's SSL setting):
        ``"gate"`` (fail the job, publishing nothing, when the compiled model's outputs differ from
        the source framework's beyond tolerance), ``"report"`` (record the comparison in the
        artifact's metadata.json only) or ``"off"``; default ``[neo] verify`` (``gate``). Ignored
        by the SageMaker backend.
    :param verify_inputs: local backend only: the URI of an ``.npz`` of sample inputs the
        verification runs on (``s3://bucket/key.npz``, ``file://`` or an absolute path; templated);
        default: the model archive's ``.npz``, else random inputs. Ignored by the SageMaker backend.
    :param max_slowdown: fail the task when the compiled artifact is more than this many times
        slower than the source framework's baseline in its profile (``1.0``: never slower), with
        the figures; also when there are no figures to compare (a SageMaker job, ``[neo]
        profile_seconds`` 0, a skipped profile or baseline). None: no gate.

    When the job ends (COMPLETED or not) its report (:mod:`airflow_neo.core.report`: verification
    and profile of a local artifact) is pushed to XCom under ``neo_report`` and logged, and set as
    ``extra["neo_report"]`` of the events of the task's outlet assets whose URI is the artifact's
    or the output location's (:mod:`airflow_neo.operators.report`).
    """

    template_fields: Sequence[str] = neo_template_fields("config", "verify_inputs")
    template_fields_renderers = {"config": "json"}
    operator_extra_links = (NeoCompilationJobLink(),)

    def __init__(
        self,
        *,
        config: dict,
        wait_for_completion: bool = True,
        check_interval: float = 30,
        max_ingestion_time: float | None = None,
        deferrable: bool | None = None,
        action_if_job_exists: str = "fail",
        stop_on_kill: bool = True,
        tuning_trials: int | None = None,
        verify_mode: str | None = None,
        verify_inputs: str | None = None,
        max_slowdown: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_neo.core.attach import parse_action

        self.config = config
        self.wait_for_completion = wait_for_completion
        self.check_interval = check_interval
        self.max_ingestion_time = max_ingestion_time
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.action_if_job_exists = parse_action(action_if_job_exists).value
        self.stop_on_kill = stop_on_kill
        if tuning_trials is not None:  # at DAG-parse time, with the check the job's config makes
            from airflow_neo.local.settings import check_count

            check_count("tuning_trials", tuning_trials)
        self.tuning_trials = tuning_trials
        if verify_mode is not None:  # at DAG-parse time, as the job's config checks it
            from airflow_neo.local.settings import check_verify

            verify_mode = check_verify(verify_mode)
        self.verify_mode = verify_mode
        self.verify_inputs = _checked_verify_inputs(verify_inputs)
        from airflow_neo.core.report import check_max_slowdown

        self.max_slowdown = check_max_slowdown(max_slowdown)
        if self.max_slowdown is not None and not wait_for_completion:
            raise ValueError(f"max_slowdown={max_slowdown!r} needs wait_for_completion=True: the gate reads the "
                             "finished job's profile; wait for the job, or drop max_slowdown")
        self.compilation_job_name: str | None = None
        self.neo_report: dict | None = None  # the finished job's report (for the OpenLineage facet)

    def execute(self, context: Context) -> dict:
        identity = task_identity_of(context)
        request = self._validated_request(identity, task_instance_tags_of(context))
        name = self._create_or_reattach(request, identity)
        self.compilation_job_name = name
        context["ti"].xcom_push(key="compilation_job_name", value=name)
        self._persist_link(context, name)
        payload = self.hook.describe_compilation_job(name)
        if not self.wait_for_completion:
            return payload
        if self._may_defer() and payload["CompilationJobStatus"] not in TERMINAL_STATES:
            self._defer(name)
        return self._finish(self._wait(name) if payload["CompilationJobStatus"] not in TERMINAL_STATES else payload, context)

    def _may_defer(self) -> bool:
        if self.deferrable and not self.is_sagemaker and _in_k8s_executor_pod():
            self.log.warning(
                "Waiting for the local compile in this pod instead of deferring: the compile process runs "
                "in this KubernetesExecutor pod (%s is set), which ends when the task defers, and the job "
                "would fail when its lease runs out. Use a long-lived worker queue to defer local compiles.",
                K8S_EXECUTOR_POD_ENV,
            )
            return False
        return self.deferrable

    def _validated_request(self, identity: str, created_by_tags: list[dict]) -> ValidatedRequest:
        """The config with this task instance's tag, validated once, before anything is called.

        The job name is the only thing changed after this (:meth:`_create_or_reattach`): the
        names that ``action_if_job_exists`` derives from a valid name are valid.
        """
        try:
            return self.hook.validate(_with_task_tag(self.config, identity, created_by_tags))
        except NeoError as err:
            raise AirflowException(str(err)) from err

    def _create_or_reattach(self, request: ValidatedRequest, identity: str) -> str:
        from airflow_neo.core.attach import choose_job_name, parse_action

        base = request.name
        existing = [s["CompilationJobName"] for s in self.hook.list_compilation_jobs(NameContains=base)]
        decision = choose_job_name(
            base,
            parse_action(self.action_if_job_exists),
            existing_names=existing,
            identity=identity,
            tags_of=self.hook.list_compilation_job_tags,
            status_of=lambda n: self.hook.describe_compilation_job(n)["CompilationJobStatus"],
        )
        if decision.reattach:
            self.log.info("Re-attaching to compilation job %s created by an earlier try of this task", decision.name)
            return decision.name
        if decision.name != base:
            self.log.info("Compilation job %s exists; creating %s instead", base, decision.name)
        extra = _local_only_arguments(self, verify_mode=self.verify_mode, verify_inputs=self.verify_inputs)
        self.hook.create_compilation_job(_renamed(request, decision.name), tuning_trials=self.tuning_trials, **extra)
        return decision.name

    def _wait(self, name: str) -> dict:
        try:
            return self.hook.wait_for_compilation_job(name, self.check_interval, self.max_ingestion_time)
        except CompilationJobTimeout as err:
            self._stop_quietly(name)
            raise AirflowException(f"{err}; the job was stopped") from err

    def _defer(self, name: str) -> None:
        from airflow_neo.triggers.neo import NeoCompilationJobTrigger

        max_attempts = None
        if self.max_ingestion_time is not None:
            max_attempts = max(1, math.ceil(self.max_ingestion_time / self.check_interval))
        self.defer(
            trigger=NeoCompilationJobTrigger(
                compilation_job_name=name,
                poll_interval=self.check_interval,
                max_attempts=max_attempts,
                stop_on_kill=self.stop_on_kill,
                **self.connection_params.to_dict(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict:
        if isinstance(event, dict) and event.get("status") == "timeout":
            self._stop_quietly(event.get("compilation_job_name"))
        if isinstance(event, dict) and event.get("compilation_job_name"):
            self.compilation_job_name = event["compilation_job_name"]
            self._log_job_output(event["compilation_job_name"])
        ended = event.get("payload") if isinstance(event, dict) else None
        if not isinstance(ended, dict) or ended.get("CompilationJobStatus") not in TERMINAL_STATES:
            return payload_from_event(event)  # raises: no event of a job that ended is a success
        self.neo_report = publish_report(self, context, ended)
        payload = payload_from_event(event)
        enforce_max_slowdown(self.neo_report, self.max_slowdown)
        return payload

    def _log_job_output(self, name: str) -> None:
        text = self.hook.job_log(name)
        if text:
            self.log.info("Log of compilation job %s:\n%s", name, text.rstrip())

    def _finish(self, payload: dict, context: Context | None = None) -> dict:
        """The payload of the terminal job, its report published (with a ``context``) and gated;
        raise unless it COMPLETED."""
        from airflow_neo.core.outcome import raise_unless_completed

        name = payload["CompilationJobName"]
        self._log_job_output(name)
        self.neo_report = (publish_report(self, context, payload) if context is not None
                       else self.hook.compilation_report(name, payload=payload))
        try:
            raise_unless_completed(payload)
        except CompilationJobFailed as err:
            raise AirflowException(str(err)) from err
        enforce_max_slowdown(self.neo_report, self.max_slowdown)
        return payload

    def _stop_quietly(self, name: str | None) -> None:
        if not name:
            return
        try:
            self.hook.stop_compilation_job(name)
        except Exception as err:
            self.log.warning("Could not stop compilation job %s: %s", name, err)

    def on_kill(self) -> None:
        if self.stop_on_kill and self.compilation_job_name:
            self._stop_quietly(self.compilation_job_name)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Input model archive and output artifact as OpenLineage datasets; the job's report as the
        ``neoCompilationReport`` run facet."""
        from airflow_neo.openlineage import lineage_for_job

        if not self.compilation_job_name:
            return None
        payload = self.hook.describe_compilation_job(self.compilation_job_name)
        report = self.neo_report
        if report is None or report.get("job") != payload.get("CompilationJobName"):
            report = self.hook.compilation_report(self.compilation_job_name, payload=payload)
        return lineage_for_job(payload, report=report)


class NeoDescribeCompilationJobOperator(NeoBaseOperator):
    """
    Describe a compilation job; return the full JSON-safe payload.

    :param compilation_job_name: the job (templated).
    """

    template_fields: Sequence[str] = neo_template_fields("compilation_job_name")
    operator_extra_links = (NeoCompilationJobLink(),)

    def __init__(self, *, compilation_job_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compilation_job_name = compilation_job_name

    def execute(self, context: Context) -> dict:
        self._persist_link(context, self.compilation_job_name)
        return self.hook.describe_compilation_job(self.compilation_job_name)


class NeoStopCompilationJobOperator(NeoBaseOperator):
    """
    Stop a compilation job; return its payload once STOPPED (or at once when not waiting).

    A job that is already terminal is left as it is and its payload returned.

    :param compilation_job_name: the job (templated).
    :param wait_for_completion: wait until the job is STOPPED.
    :param check_interval: seconds between status checks.
    :param max_wait: seconds to wait before failing (None: no limit).
    """

    template_fields: Sequence[str] = neo_template_fields("compilation_job_name")

    def __init__(
        self,
        *,
        compilation_job_name: str,
        wait_for_completion: bool = True,
        check_interval: float = 30,
        max_wait: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.compilation_job_name = compilation_job_name
        self.wait_for_completion = wait_for_completion
        self.check_interval = check_interval
        self.max_wait = max_wait

    def execute(self, context: Context) -> dict:
        name = self.compilation_job_name
        payload = self.hook.describe_compilation_job(name)
        if payload["CompilationJobStatus"] in TERMINAL_STATES:
            self.log.warning("Compilation job %s is already %s; nothing to stop", name, payload["CompilationJobStatus"])
            return payload
        self.hook.stop_compilation_job(name)
        if not self.wait_for_completion:
            return self.hook.describe_compilation_job(name)
        try:
            return self.hook.wait_for_compilation_job(name, self.check_interval, self.max_wait)
        except CompilationJobTimeout as err:
            raise AirflowException(str(err)) from err


class NeoListCompilationJobsOperator(NeoBaseOperator):
    """
    List compilation jobs (every page); return the JSON-safe summaries.

    :param name_contains: NameContains filter.
    :param status_equals: StatusEquals filter (``COMPLETED``, ``FAILED``...).
    :param creation_time_after: CreationTimeAfter (datetime or ISO-8601 string).
    :param creation_time_before: CreationTimeBefore.
    :param last_modified_time_after: LastModifiedTimeAfter.
    :param last_modified_time_before: LastModifiedTimeBefore.
    :param sort_by: ``Name``, ``CreationTime`` or ``Status``.
    :param sort_order: ``Ascending`` or ``Descending``.
    :param max_results: at most this many summaries (None: all).
    """

    template_fields: Sequence[str] = neo_template_fields(
        "name_contains",
        "status_equals",
        "creation_time_after",
        "creation_time_before",
        "last_modified_time_after",
        "last_modified_time_before",
    )

    def __init__(
        self,
        *,
        name_contains: str | None = None,
        status_equals: str | None = None,
        creation_time_after: Any = None,
        creation_time_before: Any = None,
        last_modified_time_after: Any = None,
        last_modified_time_before: Any = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        max_results: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name_contains = name_contains
        self.status_equals = status_equals
        self.creation_time_after = creation_time_after
        self.creation_time_before = creation_time_before
        self.last_modified_time_after = last_modified_time_after
        self.last_modified_time_before = last_modified_time_before
        self.sort_by = sort_by
        self.sort_order = sort_order
        self.max_results = max_results

    def execute(self, context: Context) -> list[dict]:
        return self.hook.list_compilation_jobs(
            max_results=self.max_results,
            NameContains=self.name_contains,
            StatusEquals=self.status_equals,
            CreationTimeAfter=self.creation_time_after,
            CreationTimeBefore=self.creation_time_before,
            LastModifiedTimeAfter=self.last_modified_time_after,
            LastModifiedTimeBefore=self.last_modified_time_before,
            SortBy=self.sort_by,
            SortOrder=self.sort_order,
        )


def _with_task_tag(config: Any, identity: str, created_by_tags: list[dict]) -> Any:
    """``config`` with the tag that lets a retry of this task instance find its job, and the
    readable tags that name the task instance (the UI's link and permission check).

    A config that is not a dict of tags is left as it is, for validation to report.
    """
    from airflow_neo.core.attach import with_identity_tag

    if not isinstance(config, dict) or not isinstance(config.get("Tags") or [], list):
        return config
    if not all(isinstance(tag, dict) for tag in config.get("Tags") or []):
        return config
    return with_identity_tag(config, identity, created_by_tags)


def _checked_verify_inputs(value: str | None) -> str | None:
    """``verify_inputs`` checked at DAG-parse time as the job's config checks it (a template once rendered)."""
    if value is None or "{{" in str(value):
        return value
    from airflow_neo.local.settings import check_verify_inputs

    return check_verify_inputs(value)


def _local_only_arguments(task: NeoCompilationOperator, **arguments: Any) -> dict:
    """The local backend's create arguments that are set; on SageMaker, a warning for each, and none."""
    given = {name: value for name, value in arguments.items() if value is not None}
    if not task.is_sagemaker:
        return given
    for name in given:
        task.log.warning("%s applies to the local backend only; SageMaker Neo ignores it", name)
    return {}


def _renamed(request: ValidatedRequest, name: str) -> ValidatedRequest:
    """The validated request under the name chosen by ``action_if_job_exists`` (no new check needed)."""
    if name == request.name:
        return request
    return dataclasses.replace(request, payload={**request.payload, "CompilationJobName": name})
