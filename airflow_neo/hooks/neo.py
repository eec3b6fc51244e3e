"""Hook for SageMaker Neo compilation jobs on the SageMaker service (boto3 / aiobotocore)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow_neo.core.backends import Backend
from airflow_neo.core.exceptions import CompilationJobExists, CompilationJobNotFound, CompilationJobStateError
from airflow_neo.core.paging import collect_pages
from airflow_neo.core.payload import describe_payload, json_safe
from airflow_neo.core.retry import call_with_retries, error_code, error_message
from airflow_neo.core.service_model import list_filters
from airflow_neo.core.validation import normalize_request
from airflow_neo.core.waiting import wait_for_terminal

T = TypeVar("T")


class NeoHook(AwsBaseHook):
    """
    Interact with SageMaker Neo compilation jobs through the SageMaker API.

    Built on the Amazon provider's :class:`AwsBaseHook` (``client_type="sagemaker"``): the AWS
    connection, region, ``verify`` and botocore config work as for every Amazon hook. Throttling
    and transient errors are retried with exponential backoff on top of botocore's own retries.

    :param max_retries: retries of a transient error per call.
    :param retry_delay: base delay of the exponential backoff, in seconds.
    """

    hook_name = "Amazon SageMaker Neo"
    backend = Backend.SAGEMAKER

    def __init__(self, *args: Any, max_retries: int = 5, retry_delay: float = 1.0, **kwargs: Any) -> None:
        kwargs["client_type"] = "sagemaker"
        super().__init__(*args, **kwargs)
        self.max_retries = max_retries
        self.retry_delay = retry_delay

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict:
        method = getattr(self.conn, operation)
        return self._translated(operation, lambda: call_with_retries(
            lambda: method(**kwargs),
            max_retries=self.max_retries,
            base_delay=self.retry_delay,
            on_retry=lambda n, err, delay: self.log.warning(
                "Transient error on %s (retry %d in %.1f s): %s", operation, n, delay, err
            ),
        ))

    @staticmethod
    def _translated(operation: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ClientError as err:
            raise translate_client_error(err, operation) from err

    # -- API ------------------------------------------------------------------------------

    @staticmethod
    def validate(config: dict) -> dict:
        """The normalized request, or :class:`InvalidCompilationRequest` listing every problem."""
        return normalize_request(config)

    def create_compilation_job(self, config: dict) -> dict:
        """Validate ``config`` and create the job; return the JSON-safe create response."""
        request = self.validate(config)
        self.log.info("Creating compilation job %s", request["CompilationJobName"])
        return json_safe(self._call("create_compilation_job", **request))

    def describe_compilation_job(self, name: str) -> dict:
        """The full DescribeCompilationJob payload, JSON-safe."""
        return describe_payload(self._call("describe_compilation_job", CompilationJobName=name))

    def list_compilation_jobs(self, max_results: int | None = None, **filters: Any) -> list[dict]:
        """Every job summary matching the API's filters and sort, across all pages, JSON-safe.

        :param max_results: stop after this many summaries (None: all of them).
        :param filters: ListCompilationJobs members (``NameContains``, ``StatusEquals``,
            ``CreationTimeAfter``... ``SortBy``, ``SortOrder``).
        """
        allowed = list_filters()
        unknown = sorted(set(filters) - set(allowed))
        if unknown:
            raise ValueError(f"list_compilation_jobs: unknown filter(s) {unknown}; allowed: {allowed}")
        args = {k: v for k, v in filters.items() if v is not None}
        summaries = collect_pages(
            lambda token: self.list_compilation_jobs_page(**args, **({"NextToken": token} if token else {})),
            "CompilationJobSummaries",
            max_results,
        )
        return json_safe(summaries)

    def list_compilation_jobs_page(self, **kwargs: Any) -> dict:
        """One ListCompilationJobs call (``NextToken``/``MaxResults`` honoured), raw response."""
        return self._call("list_compilation_jobs", **kwargs)

    def stop_compilation_job(self, name: str) -> None:
        self.log.info("Stopping compilation job %s", name)
        self._call("stop_compilation_job", CompilationJobName=name)

    def delete_compilation_job(self, name: str) -> None:
        self.log.info("Deleting compilation job %s", name)
        self._call("delete_compilation_job", CompilationJobName=name)

    def list_compilation_job_tags(self, name: str) -> list[dict]:
        arn = self.describe_compilation_job(name)["CompilationJobArn"]
        return collect_pages(
            lambda token: self._call("list_tags", ResourceArn=arn, **({"NextToken": token} if token else {})), "Tags"
        )

    def wait_for_compilation_job(self, name: str, check_interval: float = 30, max_wait: float | None = None) -> dict:
        """Poll until the job is terminal; return its final payload (whatever the status).

        Raises :class:`CompilationJobTimeout` after ``max_wait`` seconds.
        """
        return wait_for_terminal(
            self.describe_compilation_job, name, check_interval=check_interval, max_wait=max_wait, log=self.log.info
        )

    async def adescribe_compilation_job(self, name: str) -> dict:
        """Async DescribeCompilationJob through aiobotocore; JSON-safe payload."""
        async with await self.get_async_conn() as client:
            try:
                response = await client.describe_compilation_job(CompilationJobName=name)
            except ClientError as err:
                raise translate_client_error(err, "describe_compilation_job") from err
        return describe_payload(response)

    async def astop_compilation_job(self, name: str) -> None:
        async with await self.get_async_conn() as client:
            try:
                await client.stop_compilation_job(CompilationJobName=name)
            except ClientError as err:
                raise translate_client_error(err, "stop_compilation_job") from err

    def job_log(self, name: str) -> str:
        """SageMaker keeps compilation logs in CloudWatch (``/aws/sagemaker/CompilationJobs``); none here."""
        return ""

    def console_url(self, name: str) -> str:
        region = self.conn_region_name
        return f"https://console.aws.amazon.com/sagemaker/home?region={region}#/compilation-jobs/{name}"


STATE_CHECKED_OPERATIONS = frozenset({"stop_compilation_job", "delete_compilation_job"})


def translate_client_error(err: ClientError, operation: str) -> Exception:
    """Map the API's error codes onto airflow-neo's backend-independent exceptions."""
    code, message = error_code(err), error_message(err)
    if code == "ResourceNotFound" or (code == "ValidationException" and "could not find" in message.lower()):
        return CompilationJobNotFound(message)
    if code == "ResourceInUse":
        return CompilationJobExists(message)
    if code == "ValidationException" and operation in STATE_CHECKED_OPERATIONS:
        return CompilationJobStateError(message)
    return err
