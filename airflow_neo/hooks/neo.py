"""Hook for SageMaker Neo compilation jobs on the SageMaker service (boto3 / aiobotocore)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow_neo.core.backends import Backend
from airflow_neo.core.exceptions import CompilationJobExists, CompilationJobNotFound, CompilationJobStateError
from airflow_neo.core.paging import collect_pages
from airflow_neo.core.payload import describe_payload, json_safe
from airflow_neo.core.retry import call_with_retries, error_code, error_message
from airflow_neo.core.service_model import list_filters
from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.hooks.base import CompilationJobHook

if TYPE_CHECKING:
    from airflow_neo.hooks.params import NeoConnectionParams

T = TypeVar("T")


class NeoHook(CompilationJobHook, AwsBaseHook):
    """
    Interact with SageMaker Neo compilation jobs through the SageMaker API.

    Built on the Amazon provider's :class:`AwsBaseHook` (``client_type="sagemaker"``): the AWS
    connection, region, ``verify`` and botocore config work as for every Amazon hook. Throttling
    and transient errors are retried with exponential backoff on top of botocore's own retries.
    The methods are those of :class:`~airflow_neo.hooks.base.CompilationJobHook`.

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
        self._session_client: Any = None  # the aiobotocore client of an open async_session()

    @classmethod
    def from_connection_params(cls, params: NeoConnectionParams) -> NeoHook:
        return cls(
            aws_conn_id=params.aws_conn_id,
            region_name=params.region_name,
            verify=params.verify,
            config=params.botocore_config,
        )

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

    def create_compilation_job(self, request: dict | ValidatedRequest, *, tuning_trials: int | None = None) -> dict:
        """Create the job (a dict is validated first); return the JSON-safe create response.

        ``tuning_trials`` is the local backend's; SageMaker Neo has no such setting and ignores it.
        """
        if tuning_trials is not None:
            self.log.warning("tuning_trials applies to the local backend only; SageMaker Neo ignores it")
        request = self.validate(request)
        self.log.info("Creating compilation job %s", request.name)
        return json_safe(self._call("create_compilation_job", **request.payload))

    def describe_compilation_job(self, name: str) -> dict:
        """The full DescribeCompilationJob payload, JSON-safe."""
        return describe_payload(self._call("describe_compilation_job", CompilationJobName=name))

    def _check_list_filters(self, filters: dict[str, Any]) -> None:
        allowed = list_filters()
        unknown = sorted(set(filters) - set(allowed))
        if unknown:
            raise ValueError(f"list_compilation_jobs: unknown filter(s) {unknown}; allowed: {allowed}")

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
        return self.tags_of(self.describe_compilation_job(name))

    def tags_of(self, payload: dict) -> list[dict]:
        """ListTags of the payload's ARN (no second describe)."""
        arn = payload["CompilationJobArn"]
        return collect_pages(
            lambda token: self._call("list_tags", ResourceArn=arn, **({"NextToken": token} if token else {})), "Tags"
        )

    # -- async (aiobotocore) ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def async_session(self) -> AsyncIterator[NeoHook]:
        """One aiobotocore client for every async call made in the ``async with`` block."""
        async with await self.get_async_conn() as client:
            self._session_client = client
            try:
                yield self
            finally:
                self._session_client = None

    @contextlib.asynccontextmanager
    async def _async_client(self) -> AsyncIterator[Any]:
        """The open session's client, else a client of its own for one call."""
        if self._session_client is not None:
            yield self._session_client
            return
        async with await self.get_async_conn() as client:
            yield client

    async def _acall(self, operation: str, **kwargs: Any) -> dict:
        async with self._async_client() as client:
            try:
                return await getattr(client, operation)(**kwargs)
            except ClientError as err:
                raise translate_client_error(err, operation) from err

    async def adescribe_compilation_job(self, name: str) -> dict:
        """Async DescribeCompilationJob through aiobotocore; JSON-safe payload."""
        return describe_payload(await self._acall("describe_compilation_job", CompilationJobName=name))

    async def astop_compilation_job(self, name: str) -> None:
        await self._acall("stop_compilation_job", CompilationJobName=name)

    async def alist_compilation_jobs_pages(self, **filters: Any) -> AsyncIterator[dict]:
        """Each raw ListCompilationJobs page for ``filters``, through aiobotocore."""
        token = None
        while True:
            page = await self._acall("list_compilation_jobs", **filters, **({"NextToken": token} if token else {}))
            yield page
            token = page.get("NextToken")
            if not token:
                return

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
