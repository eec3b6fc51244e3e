"""The one contract of the compilation-job hooks, and what the backends share.

:func:`~airflow_neo.hooks.factory.get_neo_hook` returns a :class:`CompilationJobHook`: the
SageMaker service's :class:`~airflow_neo.hooks.neo.NeoHook` or the local TVM backend's
:class:`~airflow_neo.hooks.local.LocalNeoHook`. Operators, the sensor, the trigger's polling and
the command line use only the methods declared here, so they never branch on the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.core.paging import collect_pages
from airflow_neo.core.payload import json_safe
from airflow_neo.core.validation import ValidatedRequest, validate_request
from airflow_neo.core.waiting import wait_for_terminal

if TYPE_CHECKING:
    from typing import Self

    from airflow_neo.core.backends import Backend
    from airflow_neo.hooks.params import NeoConnectionParams

LIST_ITEMS_KEY = "CompilationJobSummaries"


class CompilationJobHook(ABC):
    """
    The compilation-job methods of one backend, with the SageMaker API's names, arguments,
    errors (:mod:`airflow_neo.core.exceptions`) and JSON-safe return shapes.

    A backend implements the abstract methods, one API operation each. Validation, paging
    (:meth:`list_compilation_jobs`) and waiting (:meth:`wait_for_compilation_job`) are written
    here once. The batch reads that the triggers' shared polling uses
    (:meth:`describe_compilation_jobs`, :meth:`adescribe_compilation_jobs`,
    :meth:`alist_compilation_jobs_pages`, :meth:`async_session`) have defaults built on the
    single-job methods; a backend overrides them where it can do the same work more cheaply.
    """

    #: the backend this hook runs jobs on
    backend: ClassVar[Backend]
    #: requests may name ``file://`` URIs and absolute paths as S3 locations (the local backend)
    allow_local_uris: ClassVar[bool] = False
    log: Any  # the logger of the Airflow hook class each backend also derives from

    @classmethod
    @abstractmethod
    def from_connection_params(cls, params: NeoConnectionParams) -> Self:
        """The hook for ``params`` (its ``backend`` is this class's)."""

    # -- validation, once -----------------------------------------------------------------

    @classmethod
    def validate(cls, config: dict | ValidatedRequest) -> ValidatedRequest:
        """The request validated once for this backend (a :class:`ValidatedRequest` is returned as it is).

        Raises :class:`~airflow_neo.core.exceptions.InvalidCompilationRequest` listing every problem,
        the backend's own refusals (:meth:`check_backend`) included.
        """
        request = validate_request(config, allow_local_uris=cls.allow_local_uris)
        cls.check_backend(request)
        return request

    @classmethod
    def check_backend(cls, request: ValidatedRequest) -> None:
        """Raise InvalidCompilationRequest for what this backend surely cannot do (default: nothing).

        Cheap and static (no call to the service, no compiler import): runs before anything is created.
        """

    # -- one API operation each, per backend ------------------------------------------------

    @abstractmethod
    def create_compilation_job(self, request: dict | ValidatedRequest, *, tuning_trials: int | None = None) -> dict:
        """Create the job from a :class:`ValidatedRequest` (a dict is validated first, by :meth:`validate`).

        Returns the create response (``{"CompilationJobArn": ...}``). ``tuning_trials``: the
        local backend's MetaSchedule trials (None: ``[neo] tuning_trials``); SageMaker ignores it.
        """

    @abstractmethod
    def describe_compilation_job(self, name: str) -> dict:
        """The full DescribeCompilationJob payload, JSON-safe; :class:`CompilationJobNotFound` if none."""

    @abstractmethod
    def list_compilation_jobs_page(self, **kwargs: Any) -> dict:
        """One ListCompilationJobs page (``NextToken``/``MaxResults`` honoured), in the API's shape."""

    @abstractmethod
    def stop_compilation_job(self, name: str) -> None:
        """Ask the job to stop (it goes through STOPPING to STOPPED)."""

    @abstractmethod
    def delete_compilation_job(self, name: str) -> None:
        """Delete a terminal job (:class:`CompilationJobStateError` for a running one)."""

    @abstractmethod
    def list_compilation_job_tags(self, name: str) -> list[dict]:
        """The job's tags, ``[{"Key": ..., "Value": ...}]``."""

    def tags_of(self, payload: dict) -> list[dict]:
        """The tags of the job whose describe payload is ``payload`` (a backend that can save a call
        with what the payload holds, such as its ARN, overrides this)."""
        return self.list_compilation_job_tags(payload["CompilationJobName"])

    @abstractmethod
    async def adescribe_compilation_job(self, name: str) -> dict:
        """:meth:`describe_compilation_job` without blocking the event loop."""

    @abstractmethod
    async def astop_compilation_job(self, name: str) -> None:
        """:meth:`stop_compilation_job` without blocking the event loop."""

    @abstractmethod
    def job_log(self, name: str) -> str:
        """The job's own log, where the backend keeps one here ("" otherwise)."""

    # -- written once -------------------------------------------------------------------------

    #: why a job of this backend has no report figures (see :meth:`compilation_report`)
    report_unavailable_reason: ClassVar[str] = "SageMaker Neo jobs carry no verification or profile"

    def compilation_report(self, name: str, *, payload: dict | None = None) -> dict:
        """The job's report (:func:`airflow_neo.core.report.build_report`), JSON-safe.

        Default: the job's facts only, ``available`` False with :attr:`report_unavailable_reason`
        (a backend whose artifacts carry a verification and a profile overrides this).

        :param payload: the job's describe payload when the caller has it (else it is described).
        """
        from airflow_neo.core.report import build_report

        payload = payload if payload is not None else self.describe_compilation_job(name)
        return build_report(payload, None, unavailable_reason=self.report_unavailable_reason)

    def list_compilation_jobs(self, max_results: int | None = None, **filters: Any) -> list[dict]:
        """Every job summary matching the API's filters and sort, across all pages, JSON-safe.

        :param max_results: stop after this many summaries (None: all of them).
        :param filters: ListCompilationJobs members (``NameContains``, ``StatusEquals``,
            ``CreationTimeAfter``... ``SortBy``, ``SortOrder``); None values are left out.
        """
        self._check_list_filters(filters)
        args = {k: v for k, v in filters.items() if v is not None}
        summaries = collect_pages(
            lambda token: self.list_compilation_jobs_page(**args, **({"NextToken": token} if token else {})),
            LIST_ITEMS_KEY,
            max_results,
        )
        return json_safe(summaries)

    def _check_list_filters(self, filters: dict[str, Any]) -> None:
        """Refuse filters before the first page is asked for (default: the backend's page call does)."""

    def wait_for_compilation_job(self, name: str, check_interval: float = 30, max_wait: float | None = None) -> dict:
        """Poll until the job is terminal; return its final payload (whatever the status).

        Raises :class:`~airflow_neo.core.exceptions.CompilationJobTimeout` after ``max_wait`` seconds.
        """
        return wait_for_terminal(
            self.describe_compilation_job, name, check_interval=check_interval, max_wait=max_wait, log=self.log.info
        )

    # -- batch reads of the triggers' shared polling ----------------------------------------------

    def describe_compilation_jobs(self, names: Iterable[str]) -> dict[str, dict]:
        """The describe payload of each job of ``names`` that exists (a missing job has no entry)."""
        payloads: dict[str, dict] = {}
        for name in dict.fromkeys(names):
            try:
                payloads[name] = self.describe_compilation_job(name)
            except CompilationJobNotFound:
                continue
        return payloads

    async def adescribe_compilation_jobs(self, names: Iterable[str]) -> dict[str, dict]:
        """:meth:`describe_compilation_jobs` without blocking the event loop."""
        return await asyncio.to_thread(self.describe_compilation_jobs, list(names))

    async def alist_compilation_jobs_pages(self, **filters: Any) -> AsyncIterator[dict]:
        """Each ListCompilationJobs page for ``filters`` (members as for :meth:`list_compilation_jobs_page`)."""
        token = None
        while True:
            page = await asyncio.to_thread(
                self.list_compilation_jobs_page, **filters, **({"NextToken": token} if token else {})
            )
            yield page
            token = page.get("NextToken")
            if not token:
                return

    @contextlib.asynccontextmanager
    async def async_session(self) -> AsyncIterator[Self]:
        """This hook, with whatever its async calls can share opened for the ``async with`` block.

        Long-lived pollers make their async calls inside one session (SageMaker: one aiobotocore
        client for all of them, instead of one per call).
        """
        yield self
