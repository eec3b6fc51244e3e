"""Extra link from a task to its compilation job in the SageMaker console.

Local-backend jobs have no console page: their link is empty and no XCom is looked up for it
(a lookup of a key that was never pushed logs an error in every successful task's log).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink

from airflow_neo.core.backends import Backend, parse_backend


class NeoCompilationJobLink(BaseAwsLink):
    """The SageMaker console page of a compilation job."""

    name = "SageMaker Neo Compilation Job"
    key = "neo_compilation_job"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/compilation-jobs/{job_name}"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if _is_local(operator):
            return ""
        return super().get_link(operator, ti_key=ti_key)


def _is_local(operator: Any) -> bool:
    try:
        return parse_backend(getattr(operator, "backend", Backend.SAGEMAKER)) is Backend.LOCAL
    except ValueError:  # an unrendered template: let the base class look
        return False
