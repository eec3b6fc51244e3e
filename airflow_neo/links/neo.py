"""Extra link from a task to its compilation job in the SageMaker console."""

from __future__ import annotations

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink


class NeoCompilationJobLink(BaseAwsLink):
    """The SageMaker console page of a compilation job."""

    name = "SageMaker Neo Compilation Job"
    key = "neo_compilation_job"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/compilation-jobs/{job_name}"
