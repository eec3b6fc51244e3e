"""One job as the store knows it (:class:`JobRecord`), and its shaping into the API's payloads.

A :class:`JobRecord` is one row of ``neo_jobs`` with typed fields: JSON columns parsed, the API's
times as aware UTC datetimes, ``stop_requested`` as a bool. The runner's lease stays integer
microseconds as stored (a lease is compared, never shown, and may lie beyond ``datetime``'s range). Code that needs a job's status or runner
fields reads them from a record (``JobStore.get``/``JobStore.status``), never out of a payload.

Shaping into the API's payloads happens here and only here:

* :meth:`JobRecord.to_describe`: the DescribeCompilationJob response, keys in the API's order,
  JSON-safe (times as ISO-8601 strings in UTC), absent optional fields left out, except
  ``FailureReason`` (always present, ``""`` unless FAILED) and ``ModelArtifacts`` (always present);
* :meth:`JobRecord.to_summary`: a CompilationJobSummary of ListCompilationJobs, in the API's order;
* :meth:`JobRecord.to_request`: the stored CreateCompilationJob request (normalized, with Tags);
* :meth:`JobRecord.to_runner_info`: the private runner fields.

A FailureReason is kept to the API's 1024 characters (:func:`clip_reason`).

Every call returns fresh objects: changing a payload never changes the record. The other way,
:func:`new_job_row` is the row a new job starts with.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from airflow_neo.core import status as st
from airflow_neo.core.payload import to_utc_iso
from airflow_neo.local.store.naming import artifact_uri_for
from airflow_neo.local.store.times import us_to_dt, us_to_dt_or_none, us_to_iso

MAX_FAILURE_REASON = 1024  # the API's FailureReason limit


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else to_utc_iso(value)


def _json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


@dataclasses.dataclass(frozen=True)
class JobRecord:
    """One compilation job: a row of ``neo_jobs``, typed."""

    name: str
    arn: str
    status: str
    creation_time: dt.datetime
    last_modified_time: dt.datetime
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    stopping_condition: dict
    role_arn: str
    output_config: dict
    input_config: dict | None = None
    vpc_config: dict | None = None
    model_package_version_arn: str | None = None
    inference_image: str | None = None
    failure_reason: str = ""
    s3_model_artifacts: str | None = None
    artifact_digest: str | None = None
    derived_data_input_config: str | None = None
    tags: tuple[dict, ...] = ()
    target_device: str | None = None
    target_os: str | None = None
    target_arch: str | None = None
    target_accelerator: str | None = None
    compile_metadata: dict | None = None
    # the runner's private fields
    owner_host: str | None = None
    pid: int | None = None
    pid_start: str | None = None
    pid_namespace: str | None = None
    owner_boot_id: str | None = None
    lease_expires_us: int | None = None  # microseconds since the epoch, as stored (any value a runner wrote)
    stop_requested: bool = False

    @property
    def lease_expires(self) -> dt.datetime | None:
        """When the runner's lease runs out (None when the job is not running)."""
        return us_to_dt_or_none(self.lease_expires_us)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRecord:
        """The record of a full ``neo_jobs`` row (``select(JOBS)``)."""
        return cls(
            name=row["name"],
            arn=row["arn"],
            status=row["status"],
            creation_time=us_to_dt(row["creation_us"]),
            last_modified_time=us_to_dt(row["last_modified_us"]),
            start_time=us_to_dt_or_none(row["start_us"]),
            end_time=us_to_dt_or_none(row["end_us"]),
            stopping_condition=json.loads(row["stopping_condition"]),
            role_arn=row["role_arn"],
            output_config=json.loads(row["output_config"]),
            input_config=_json_or_none(row["input_config"]),
            vpc_config=_json_or_none(row["vpc_config"]),
            model_package_version_arn=row["model_package_version_arn"] or None,
            inference_image=row["inference_image"] or None,
            failure_reason=row["failure_reason"] or "",
            s3_model_artifacts=row["s3_model_artifacts"],
            artifact_digest=row["artifact_digest"] or None,
            derived_data_input_config=row["derived_data_input_config"] or None,
            tags=tuple(json.loads(row["tags"]) or ()),
            target_device=row["target_device"] or None,
            target_os=row["target_os"] or None,
            target_arch=row["target_arch"] or None,
            target_accelerator=row["target_accelerator"] or None,
            compile_metadata=_json_or_none(row["compile_metadata"]),
            owner_host=row["owner_host"],
            pid=row["pid"],
            pid_start=row["pid_start"],
            pid_namespace=row["pid_namespace"],
            owner_boot_id=row.get("owner_boot_id"),
            lease_expires_us=row["lease_expires_us"],
            stop_requested=bool(row["stop_requested"]),
        )

    # ---------------------------------------------------------------- the API's payloads

    def to_describe(self) -> dict:
        """The DescribeCompilationJob response."""
        out: dict[str, Any] = {
            "CompilationJobName": self.name,
            "CompilationJobArn": self.arn,
            "CompilationJobStatus": self.status,
        }
        if self.start_time is not None:
            out["CompilationStartTime"] = _iso(self.start_time)
        if self.end_time is not None:
            out["CompilationEndTime"] = _iso(self.end_time)
        out["StoppingCondition"] = copy.deepcopy(self.stopping_condition)
        if self.inference_image:
            out["InferenceImage"] = self.inference_image
        if self.model_package_version_arn:
            out["ModelPackageVersionArn"] = self.model_package_version_arn
        out["CreationTime"] = _iso(self.creation_time)
        out["LastModifiedTime"] = _iso(self.last_modified_time)
        out["FailureReason"] = self.failure_reason
        out["ModelArtifacts"] = {"S3ModelArtifacts": self.s3_model_artifacts}
        if self.artifact_digest:
            out["ModelDigests"] = {"ArtifactDigest": self.artifact_digest}
        out["RoleArn"] = self.role_arn
        if self.input_config is not None:
            out["InputConfig"] = copy.deepcopy(self.input_config)
        out["OutputConfig"] = copy.deepcopy(self.output_config)
        if self.vpc_config is not None:
            out["VpcConfig"] = copy.deepcopy(self.vpc_config)
        if self.derived_data_input_config:
            out["DerivedInformation"] = {"DerivedDataInputConfig": self.derived_data_input_config}
        return out

    def to_summary(self) -> dict:
        """The job's CompilationJobSummary (ListCompilationJobs)."""
        out: dict[str, Any] = {
            "CompilationJobName": self.name,
            "CompilationJobArn": self.arn,
            "CreationTime": _iso(self.creation_time),
        }
        if self.start_time is not None:
            out["CompilationStartTime"] = _iso(self.start_time)
        if self.end_time is not None:
            out["CompilationEndTime"] = _iso(self.end_time)
        for value, key in (
            (self.target_device, "CompilationTargetDevice"),
            (self.target_os, "CompilationTargetPlatformOs"),
            (self.target_arch, "CompilationTargetPlatformArch"),
            (self.target_accelerator, "CompilationTargetPlatformAccelerator"),
        ):
            if value:
                out[key] = value
        out["LastModifiedTime"] = _iso(self.last_modified_time)
        out["CompilationJobStatus"] = self.status
        return out

    def to_request(self) -> dict:
        """The job's CreateCompilationJob request (normalized, with Tags) as it was stored."""
        request: dict[str, Any] = {"CompilationJobName": self.name, "RoleArn": self.role_arn}
        if self.model_package_version_arn:
            request["ModelPackageVersionArn"] = self.model_package_version_arn
        if self.input_config is not None:
            request["InputConfig"] = copy.deepcopy(self.input_config)
        request["OutputConfig"] = copy.deepcopy(self.output_config)
        if self.vpc_config is not None:
            request["VpcConfig"] = copy.deepcopy(self.vpc_config)
        request["StoppingCondition"] = copy.deepcopy(self.stopping_condition)
        if self.tags:
            request["Tags"] = copy.deepcopy(list(self.tags))
        return request

    def to_runner_info(self) -> dict:
        """The private runner fields: owner_host, pid, lease_expires_at (ISO), stop_requested."""
        return {
            "owner_host": self.owner_host,
            "pid": self.pid,
            "lease_expires_at": us_to_iso(self.lease_expires_us),
            "stop_requested": self.stop_requested,
        }


def new_job_row(request: dict, *, arn: str, now_us: int, lease_expires_us: int) -> dict[str, Any]:
    """The ``neo_jobs`` row of a new job (STARTING) for a validated, normalized request."""
    output = request["OutputConfig"]
    platform = output.get("TargetPlatform") or {}
    return {
        "name": request["CompilationJobName"],
        "arn": arn,
        "status": st.STARTING,
        "creation_us": now_us,
        "last_modified_us": now_us,
        "stopping_condition": json.dumps(request["StoppingCondition"]),
        "model_package_version_arn": request.get("ModelPackageVersionArn"),
        "s3_model_artifacts": artifact_uri_for(request),
        "role_arn": request["RoleArn"],
        "input_config": dumps_or_none(request.get("InputConfig")),
        "output_config": json.dumps(output),
        "vpc_config": dumps_or_none(request.get("VpcConfig")),
        "tags": json.dumps(request.get("Tags") or []),
        "target_device": output.get("TargetDevice"),
        "target_os": platform.get("Os"),
        "target_arch": platform.get("Arch"),
        "target_accelerator": platform.get("Accelerator"),
        "failure_reason": "",
        "stop_requested": 0,
        "lease_expires_us": lease_expires_us,
    }


def dumps_or_none(value: Any) -> str | None:
    """A JSON column's text (None stays NULL)."""
    return None if value is None else json.dumps(value)


def clip_reason(reason: str) -> str:
    """``reason`` cut to the API's FailureReason limit (1024 characters, ending ``...`` when cut)."""
    reason = str(reason)
    if len(reason) <= MAX_FAILURE_REASON:
        return reason
    return reason[: MAX_FAILURE_REASON - 3] + "..."
