"""Stateful SageMaker Neo compilation jobs for moto (test support only).

moto 5.2.5 creates every compilation job COMPLETED, never moves it, has no
StopCompilationJob and breaks ListCompilationJobs on a TargetPlatform without
an Accelerator. :func:`install` patches moto in-process so that jobs behave
like the real service. It covers decorator mode (``moto.mock_aws``) and a
``moto.server.ThreadedMotoServer`` (which runs in this process, in a thread).

Lifecycle
    A job is created ``STARTING`` and moves ``STARTING -> INPROGRESS ->
    COMPLETED`` (or ``FAILED``), driven by moto's state manager under the model
    name :data:`MODEL_NAME` (``sagemaker::compilationjob``). The default
    transition is ``{"progression": "manual", "times": 1}``: every
    DescribeCompilationJob call returns the current status and then earns one
    step, so successive describes read ``STARTING``, ``INPROGRESS``,
    ``COMPLETED``. List, Stop and Delete never advance a job; they see the
    status last returned by describe. :func:`set_transition` switches to
    ``immediate`` (first describe is terminal) or ``time`` progressions.

Failures
    A job ends ``FAILED`` instead of ``COMPLETED`` when its name starts with
    ``fail-`` (FailureReason :data:`DEFAULT_FAILURE_REASON`) or when it carries
    the tag ``moto:fail-reason`` (FailureReason is the tag's value; the tag wins
    over the prefix).

Describe output
    ``CompilationStartTime`` appears once the job left ``STARTING`` for
    ``INPROGRESS``/``COMPLETED``/``FAILED``; ``CompilationEndTime`` once it is
    terminal; ``LastModifiedTime`` moves on every status change;
    ``FailureReason`` is ``""`` unless ``FAILED`` (the botocore model marks it
    required). ``ModelArtifacts.S3ModelArtifacts`` follows Neo's naming:
    ``<S3OutputLocation>/<model stem>-<target>.tar.gz``.

Tags
    A job created without tags has an empty tag list: ListTags answers ``[]``
    as the service does (moto 5.2.5 fails with an internal error).

Stop and delete
    StopCompilationJob on ``STARTING``/``INPROGRESS`` sets ``STOPPING``; the
    next describe (manual mode) still reads ``STOPPING`` and the one after
    reads ``STOPPED``. Stopping a ``STOPPING`` job is a no-op; stopping a
    terminal job raises ``ValidationException``; an unknown job raises
    ``ResourceNotFound``. DeleteCompilationJob of a job that is not terminal
    raises ``ValidationException``, as AWS does.

Transient errors
    :func:`throttle_next` makes the next *n* DescribeCompilationJob calls
    (optionally only for one job name) answer HTTP 400 ``ThrottlingException``
    without touching the job. Use ``retries={"max_attempts": 1}`` in the client,
    or botocore retries throttling itself.

Note: moto's own reset (``mock_aws`` exit, ``/moto-api/reset``) clears jobs but
not state-manager overrides nor throttles: call :func:`reset_extension_state`.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from moto.core.responses import EmptyResult
from moto.core.utils import utcnow
from moto.moto_api import state_manager
from moto.moto_api._internal.managed_state_model import ManagedState
from moto.sagemaker.exceptions import ResourceNotFound, ValidationError
from moto.sagemaker.models import CompilationJob, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse

__all__ = [
    "DEFAULT_FAILURE_REASON",
    "DEFAULT_TRANSITION",
    "FAIL_PREFIX",
    "FAIL_REASON_TAG",
    "MODEL_NAME",
    "NeoCompilationJob",
    "install",
    "reset_extension_state",
    "reset_server",
    "set_server_transition",
    "set_transition",
    "throttle_next",
    "unset_transition",
]

MODEL_NAME = "sagemaker::compilationjob"
DEFAULT_TRANSITION: dict[str, Any] = {"progression": "manual", "times": 1}
FAIL_PREFIX = "fail-"
FAIL_REASON_TAG = "moto:fail-reason"
DEFAULT_FAILURE_REASON = (
    "ClientError: InputConfiguration: Unable to load the model "
    "(failure simulated by tests.support.moto_neo)"
)

TERMINAL = frozenset({"COMPLETED", "FAILED", "STOPPED"})
_STARTED = frozenset({"INPROGRESS", "COMPLETED", "FAILED"})

_lock = threading.RLock()
_installed = False
_throttles: dict[str | None, int] = {}


class NeoCompilationJob(CompilationJob, ManagedState):
    """A moto CompilationJob whose status is driven by moto's state manager."""

    # moto's model registry derives the service from the module's 2nd part.
    __module__ = "moto.sagemaker.moto_neo"

    def __init__(self, **kwargs: Any) -> None:
        CompilationJob.__init__(self, **kwargs)
        failure_reason = _planned_failure(kwargs)
        terminal = "FAILED" if failure_reason else "COMPLETED"
        ManagedState.__init__(
            self,
            model_name=MODEL_NAME,
            transitions=[
                ("STARTING", "INPROGRESS"),
                ("INPROGRESS", terminal),
                ("STOPPING", "STOPPED"),
            ],
        )
        self._planned_failure_reason = failure_reason or ""
        self.compilation_start_time = None
        self.compilation_end_time = None
        self.last_modified_time = self.creation_time
        self.model_artifacts = {"S3ModelArtifacts": _artifact_uri(kwargs)}
        self.derived_information = _derived_information(kwargs.get("input_config"))

    # -- status ---------------------------------------------------------------
    @property  # type: ignore[override]
    def status(self) -> str | None:
        """Current status, applying any transition the state manager allows."""
        before = self._status
        after = ManagedState.status.fget(self)  # type: ignore[attr-defined]
        if after != before:
            self._on_status_change(after)
        return after

    @status.setter
    def status(self, value: str) -> None:
        if value != self._status:
            self._status = value
            self._on_status_change(value)

    @property  # type: ignore[override]
    def compilation_job_status(self) -> str | None:
        """The status as seen by list/stop/delete: never consumes a manual tick."""
        return self.peek_status()

    @compilation_job_status.setter
    def compilation_job_status(self, value: str) -> None:
        # moto's CompilationJob.__init__ assigns "COMPLETED"; ManagedState
        # then sets the real initial status.
        self._status = value

    @property
    def last_modified_time(self) -> datetime:
        """LastModifiedTime after any time-driven transition that is due (list filters read it first)."""
        if "_status" in self.__dict__ and "model_name" in self.__dict__:
            self.peek_status()
        return self._last_modified_time

    @last_modified_time.setter
    def last_modified_time(self, value: datetime) -> None:
        self._last_modified_time = value

    def peek_status(self) -> str | None:
        """Status without a step: the last described one in manual mode."""
        if state_manager.get_transition(self.model_name)["progression"] == "manual":
            return self._status
        return self.status

    def _on_status_change(self, new: str | None) -> None:
        now = utcnow()
        self.last_modified_time = now
        if new in _STARTED and self.compilation_start_time is None:
            self.compilation_start_time = now
        if new in TERMINAL:
            self.compilation_end_time = now
        if new == "FAILED":
            self.failure_reason = self._planned_failure_reason

    # -- API views ------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """DescribeCompilationJob: report the status, then earn one step."""
        _ = self.status
        description = _without_none(CompilationJob.describe(self))
        self.advance()
        return description

    def summary(self) -> dict[str, Any]:
        """ListCompilationJobs entry (moto's KeyError on no Accelerator fixed)."""
        summary = {
            "CompilationJobName": self.compilation_job_name,
            "CompilationJobArn": self.arn,
            "CreationTime": self.creation_time,
            "CompilationStartTime": self.compilation_start_time,
            "CompilationEndTime": self.compilation_end_time,
            "LastModifiedTime": self.last_modified_time,
            "CompilationJobStatus": self.compilation_job_status,
        }
        summary.update(_target_summary(self.output_config))
        return _without_none(summary)

    def stop(self) -> None:
        """StopCompilationJob: running -> STOPPING; terminal -> error."""
        current = self.peek_status()
        if current == "STOPPING":
            return
        if current in TERMINAL:
            raise ValidationError(
                message=(
                    f"Compilation job '{self.compilation_job_name}' is in status "
                    f"{current} and cannot be stopped."
                )
            )
        self.status = "STOPPING"
        self._tick = 0
        self._time_progressed = _local_now()


# -- helpers for the job ------------------------------------------------------
def _planned_failure(kwargs: dict[str, Any]) -> str | None:
    """FailureReason a new job will end with, or None when it will succeed."""
    for tag in kwargs.get("tags") or []:
        if tag.get("Key") == FAIL_REASON_TAG:
            return str(tag.get("Value") or DEFAULT_FAILURE_REASON)
    if kwargs["compilation_job_name"].startswith(FAIL_PREFIX):
        return DEFAULT_FAILURE_REASON
    return None


def _artifact_uri(kwargs: dict[str, Any]) -> str:
    """Neo's artifact name: ``<output>/<model stem>-<target>.tar.gz``."""
    output = kwargs["output_config"]
    location = str(output["S3OutputLocation"]).rstrip("/")
    source = (kwargs.get("input_config") or {}).get("S3Uri") or "model"
    stem = PurePosixPath(source).name.split(".")[0] or "model"
    return f"{location}/{stem}-{_target_label(output)}.tar.gz"


def _target_label(output_config: dict[str, Any]) -> str:
    if "TargetDevice" in output_config:
        return str(output_config["TargetDevice"])
    platform = output_config.get("TargetPlatform") or {}
    parts = [platform.get(k) for k in ("Os", "Arch", "Accelerator")]
    return "_".join(p for p in parts if p) or "unknown"


def _target_summary(output_config: dict[str, Any]) -> dict[str, Any]:
    if "TargetDevice" in output_config:
        return {"CompilationTargetDevice": output_config["TargetDevice"]}
    platform = output_config.get("TargetPlatform") or {}
    return {
        "CompilationTargetPlatformOs": platform.get("Os"),
        "CompilationTargetPlatformArch": platform.get("Arch"),
        "CompilationTargetPlatformAccelerator": platform.get("Accelerator"),
    }


def _derived_information(input_config: dict[str, Any] | None) -> dict[str, Any]:
    data = (input_config or {}).get("DataInputConfig")
    return {"DerivedDataInputConfig": data} if data else {}


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


def _local_now() -> datetime:
    return datetime.now()  # ManagedState compares against naive local time


# -- backend and response patches ---------------------------------------------
def _backend_create(self: SageMakerModelBackend, **kwargs: Any) -> str:
    job = NeoCompilationJob(
        region_name=self.region_name, account_id=self.account_id, **kwargs
    )
    if getattr(job, "tags", None) is None:  # moto's ListTags fails (500) on a job created without tags
        job.tags = []
    self.compilation_jobs[job.compilation_job_name] = job
    return job.arn


def _get_job(backend: SageMakerModelBackend, name: str) -> CompilationJob:
    if name not in backend.compilation_jobs:
        raise ResourceNotFound(message=f"Could not find compilation job '{name}'.")
    return backend.compilation_jobs[name]


def _backend_stop(self: SageMakerModelBackend, compilation_job_name: str) -> None:
    job = _get_job(self, compilation_job_name)
    if isinstance(job, NeoCompilationJob):
        job.stop()


def _backend_delete(self: SageMakerModelBackend, compilation_job_name: str) -> None:
    job = _get_job(self, compilation_job_name)
    status = job.compilation_job_status
    if status not in TERMINAL:
        raise ValidationError(
            message=(
                f"Cannot delete compilation job '{compilation_job_name}' in status "
                f"{status}; stop it first."
            )
        )
    del self.compilation_jobs[compilation_job_name]


def _wrap_describe_response(original: Any) -> Any:
    def describe_compilation_job(self: SageMakerResponse) -> Any:
        if _consume_throttle(self._get_param("CompilationJobName")):
            return _throttling_response()
        return original(self)

    describe_compilation_job.__doc__ = original.__doc__
    return describe_compilation_job


def _response_stop(self: SageMakerResponse) -> EmptyResult:
    self.sagemaker_backend.stop_compilation_job(
        compilation_job_name=self._get_param("CompilationJobName")
    )
    return EmptyResult()


def _consume_throttle(job_name: str | None) -> bool:
    """True when this call must be throttled (one throttle is used up)."""
    with _lock:
        for key in (job_name, None):
            if _throttles.get(key, 0) > 0:
                _throttles[key] -= 1
                return True
    return False


def _throttling_response() -> tuple[str, dict[str, Any]]:
    """A JSON-protocol HTTP 400 ThrottlingException, as AWS sends it.

    Returned rather than raised: ThrottlingException is not in SageMaker's
    service model, so moto's error serializer would warn about it.
    """
    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
    headers = {
        "status": 400,
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amzn-Errortype": "ThrottlingException",
    }
    return body, headers


# -- public API ---------------------------------------------------------------
def install() -> None:
    """Patch moto in-process (idempotent). Call before starting a server."""
    global _installed
    with _lock:
        if _installed:
            return
        state_manager.register_default_transition(MODEL_NAME, DEFAULT_TRANSITION)
        SageMakerModelBackend.create_compilation_job = _backend_create
        SageMakerModelBackend.stop_compilation_job = _backend_stop
        SageMakerModelBackend.delete_compilation_job = _backend_delete
        SageMakerResponse.describe_compilation_job = _wrap_describe_response(
            SageMakerResponse.describe_compilation_job
        )
        SageMakerResponse.stop_compilation_job = _response_stop
        _installed = True


def set_transition(
    progression: str = "manual", times: int = 1, seconds: float | None = None
) -> None:
    """Set how jobs progress: ``manual`` (``times`` describes per step),
    ``immediate`` (terminal at first describe) or ``time`` (``seconds``/step)."""
    state_manager.set_transition(MODEL_NAME, _transition(progression, times, seconds))


def unset_transition() -> None:
    """Back to :data:`DEFAULT_TRANSITION`."""
    state_manager.unset_transition(MODEL_NAME)


def throttle_next(n: int, job_name: str | None = None) -> None:
    """Make the next ``n`` DescribeCompilationJob calls (for ``job_name`` only,
    if given) fail with HTTP 400 ``ThrottlingException``."""
    with _lock:
        _throttles[job_name] = _throttles.get(job_name, 0) + n


def reset_extension_state() -> None:
    """Forget throttles and transition overrides (moto's reset keeps them)."""
    with _lock:
        _throttles.clear()
    unset_transition()


def set_server_transition(
    endpoint_url: str,
    progression: str = "manual",
    times: int = 1,
    seconds: float | None = None,
) -> None:
    """:func:`set_transition` over HTTP, for a moto server (any process)."""
    body = {
        "model_name": MODEL_NAME,
        "transition": _transition(progression, times, seconds),
    }
    _post(f"{endpoint_url}/moto-api/state-manager/set-transition", body)


def reset_server(endpoint_url: str) -> None:
    """Clear every moto backend of a server over HTTP (``/moto-api/reset``)."""
    _post(f"{endpoint_url}/moto-api/reset", {})


def _transition(progression: str, times: int, seconds: float | None) -> dict[str, Any]:
    if progression == "manual":
        return {"progression": "manual", "times": times}
    if progression == "time":
        if seconds is None:
            raise ValueError("progression 'time' needs seconds")
        return {"progression": "time", "seconds": seconds}
    if progression == "immediate":
        return {"progression": "immediate"}
    raise ValueError(f"unknown progression {progression!r}")


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()
