"""The connection parameters of every airflow-neo task, trigger and hook, as one value.

Six parameters choose where a compilation job runs and how it is reached: the backend, the AWS
connection (SageMaker, and S3 locations of the local backend), its region, SSL verification and
botocore config, and the local backend's job store. :class:`NeoConnectionParams` carries them
from an operator or sensor (rendered template fields) to the hook factory, through a trigger's
serialized arguments and into the command line, so that no layer spells them out again.

Nothing here imports Airflow, boto3 or the compiler stack: it is cheap to import at DAG parse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

from airflow_neo.core.backends import Backend, parse_backend


@dataclass(frozen=True)
class NeoConnectionParams:
    """Where a compilation job runs and how it is reached; checked when made.

    :param backend: ``"sagemaker"`` (the SageMaker service) or ``"local"`` (compile in the
        worker with Apache TVM); a :class:`~airflow_neo.core.backends.Backend` once made.
    :param aws_conn_id: the Airflow AWS connection (also used by the local backend for s3:// URIs);
        None: boto3's default credential chain.
    :param region_name: AWS region; the connection's region when None.
    :param verify: SSL verification for boto3 (bool or a CA bundle path).
    :param botocore_config: botocore client config as a dict (retries, timeouts...).
    :param local_store: local backend only: the job store (default ``[neo] local_store``).
    """

    backend: Backend = Backend.SAGEMAKER
    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None
    verify: bool | str | None = None
    botocore_config: dict[str, Any] | None = None
    local_store: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", parse_backend(self.backend))
        for name in ("aws_conn_id", "region_name", "local_store"):
            _check(name, getattr(self, name), (str,), "a string or None")
        _check("verify", self.verify, (bool, str), "a bool, a CA bundle path or None")
        _check("botocore_config", self.botocore_config, (Mapping,), "a dict of botocore Config arguments or None")
        if self.botocore_config is not None:  # a copy: the value stays what it was when made
            object.__setattr__(self, "botocore_config", dict(self.botocore_config))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NeoConnectionParams:
        """The parameters from their :meth:`to_dict` form (absent ones take their defaults).

        Raises :class:`TypeError` naming any key that is not a connection parameter.
        """
        unknown = sorted(set(data) - set(CONNECTION_FIELDS))
        if unknown:
            raise TypeError(f"unknown connection parameter(s) {unknown}; allowed: {list(CONNECTION_FIELDS)}")
        return cls(**data)

    @classmethod
    def from_attributes(cls, source: object) -> NeoConnectionParams:
        """The parameters read from the attributes of the same names (an operator's rendered template fields)."""
        return cls(**{name: getattr(source, name) for name in CONNECTION_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, JSON-friendly (the backend as its name): what a trigger serializes."""
        data = {name: getattr(self, name) for name in CONNECTION_FIELDS}
        data["backend"] = self.backend.value
        if self.botocore_config is not None:
            data["botocore_config"] = dict(self.botocore_config)
        return data

    @property
    def key(self) -> str:
        """A stable text key of the parameters (they hold a dict, so they are not hashable)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


#: The parameter names, in their documented order (also the attribute and template-field names).
CONNECTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(NeoConnectionParams))


@cache
def neo_template_fields(*template_fields: str) -> tuple[str, ...]:
    """The connection parameters (every one templated) followed by a task's own ``template_fields``.

    The counterpart of the Amazon provider's ``aws_template_fields``, for airflow-neo's tasks::

        template_fields = neo_template_fields("compilation_job_name")
    """
    if not all(isinstance(name, str) for name in template_fields):
        raise TypeError(f"template fields must be strings; got {', '.join(map(repr, template_fields))}")
    return (*CONNECTION_FIELDS, *(name for name in dict.fromkeys(template_fields) if name not in CONNECTION_FIELDS))


def _check(name: str, value: Any, types: tuple[type, ...], allowed: str) -> None:
    if value is not None and not isinstance(value, types):
        raise TypeError(f"{name}: got {value!r}; must be {allowed}")
