"""Where the compile operator puts a finished job's report, and its ``max_slowdown`` gate.

:func:`publish_report` runs once per terminal job, whichever way the task waited (in the worker or
deferred) and whatever the job's status: it pushes the report (:mod:`airflow_neo.core.report`) to
XCom under :data:`REPORT_XCOM_KEY` (the describe payload stays the ``return_value``), logs it, and
sets it as ``extra[REPORT_XCOM_KEY]`` of each outlet asset event whose asset is the job's artifact
or output location (URIs compared without trailing slashes). Airflow records outlet asset events
only when the task succeeds, so a job that failed, or that the gate refuses, publishes none.

:func:`enforce_max_slowdown` raises after the report is pushed, so a refused artifact's figures
are still in XCom and in the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException
from airflow_neo.core.report import check_slowdown, format_report

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_neo.operators.base import NeoBaseTask

__all__ = ["REPORT_XCOM_KEY", "attach_to_outlets", "enforce_max_slowdown", "publish_report"]

#: the XCom key of the report, and its key in outlet asset events' extra
REPORT_XCOM_KEY = "neo_report"


def publish_report(task: NeoBaseTask, context: Context, payload: dict) -> dict:
    """The report of the terminal job of ``payload``: pushed to XCom, logged, set on matching outlet events."""
    name = payload.get("CompilationJobName")
    report = task.hook.compilation_report(name, payload=payload)
    context["ti"].xcom_push(key=REPORT_XCOM_KEY, value=report)
    task.log.info("Report of compilation job %s:\n%s", name, format_report(report))
    attached = attach_to_outlets(task.outlets, context, report)
    if attached:
        task.log.info("Report attached to the asset event(s) of %s", ", ".join(attached))
    return report


def attach_to_outlets(outlets: Iterable[Any] | None, context: Context, report: dict) -> list[str]:
    """Set ``report`` as ``extra["neo_report"]`` of the outlet events of the assets that name the
    job's artifact or output location; return their URIs (none without outlet events in ``context``)."""
    events = context.get("outlet_events")
    if events is None:
        return []
    from airflow.sdk import Asset

    locations = {str(uri).rstrip("/") for uri in (report.get("artifact"), report.get("output_location")) if uri}
    attached = []
    for outlet in outlets or []:
        if isinstance(outlet, Asset) and outlet.uri.rstrip("/") in locations:
            events[outlet].extra[REPORT_XCOM_KEY] = report
            attached.append(outlet.uri)
    return attached


def enforce_max_slowdown(report: dict, max_slowdown: float | None) -> None:
    """Raise AirflowException with the figures when the artifact is slower than ``max_slowdown`` allows
    (or when there are no figures: the gate fails closed); nothing when ``max_slowdown`` is None."""
    if max_slowdown is None:
        return
    problem = check_slowdown(report, max_slowdown)
    if problem:
        raise AirflowException(problem)
