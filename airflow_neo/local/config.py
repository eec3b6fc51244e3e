"""One frozen configuration of a local compile job, built once and carried one way.

The hook builds a :class:`LocalJobConfig` from the ``[neo]`` options (and its own arguments) when
it creates a job; the runner receives it as one serialized value (:meth:`LocalJobConfig.to_json`,
in the ``AIRFLOW_NEO_JOB_CONFIG`` environment variable so that a store URL with a password never
shows on a command line), resolves the compile settings' directories against the job store's,
and hands it to the compile child as an argument of its spawn target; the compiler gets the trial
budget, the tuning database and its work dir as arguments. Nothing is re-read from the Airflow
configuration or the environment on the way.

Invariants: frozen; validated on construction (bad values name the field, the value and what is
allowed); ``from_json(to_json(c)) == c``. Pure: nothing here imports Airflow or TVM.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from airflow_neo.local.confinement import check_allowed_paths, default_roots
from airflow_neo.local.settings import CompileSettings

__all__ = ["DEFAULT_LEASE_SECONDS", "DEFAULT_MEMORY_LIMIT_BYTES", "ENV_JOB_CONFIG", "LocalJobConfig"]

#: the environment variable that carries :meth:`LocalJobConfig.to_json` to the detached runner
ENV_JOB_CONFIG = "AIRFLOW_NEO_JOB_CONFIG"
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_MEMORY_LIMIT_BYTES = 8192 * 1024 * 1024


@dataclass(frozen=True)
class LocalJobConfig:
    """Everything a local job's runner and compiler need besides the job record itself.

    :param store: the job store: a SQLite file path or a SQLAlchemy URL (may hold a password).
    :param work_dir: this machine's directory for job logs and work dirs (None: the store's).
    :param memory_limit_bytes: address-space cap of the compile child (None: no cap).
    :param lease_seconds: the job's lease, renewed while the runner works.
    :param aws_conn_id: the Airflow AWS connection for ``s3://`` locations (None: boto3's defaults).
    :param compile: tuning budget, tuning database and compile cache.
    :param max_concurrent_compiles: compile slots of this host (None: no limit; the hook derives
        one from the host, see :mod:`airflow_neo.local.slots`); a job beyond them waits STARTING.
    :param max_concurrent_compiles_cluster: slots held on all hosts of a shared store (0: no cap).
    :param allowed_paths: the directories a job's local files (model, sample inputs, artifact) must
        lie under, or ``("*",)`` for every path (:mod:`airflow_neo.local.confinement`; default
        ``$AIRFLOW_HOME`` and the system temp dir, as this process sees them when the config is made).
    """

    store: str
    work_dir: str | None = None
    memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT_BYTES
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    aws_conn_id: str | None = None
    compile: CompileSettings = field(default_factory=CompileSettings)
    max_concurrent_compiles: int | None = None
    max_concurrent_compiles_cluster: int = 0
    allowed_paths: tuple[str, ...] = field(default_factory=default_roots)

    def __post_init__(self) -> None:
        if not isinstance(self.store, str) or not self.store.strip():
            raise ValueError(f"store must be a file path or a SQLAlchemy URL; got {self.store!r}")
        limit = self.memory_limit_bytes
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ValueError(f"memory_limit_bytes must be a whole number > 0 or None (no cap); got {limit!r}")
        lease = self.lease_seconds
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
            raise ValueError(f"lease_seconds must be a number of seconds > 0; got {lease!r}")
        object.__setattr__(self, "allowed_paths", check_allowed_paths(self.allowed_paths))
        slots = self.max_concurrent_compiles
        if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 1):
            raise ValueError(f"max_concurrent_compiles must be a whole number >= 1 or None (no limit); got {slots!r}")
        cluster = self.max_concurrent_compiles_cluster
        if isinstance(cluster, bool) or not isinstance(cluster, int) or cluster < 0:
            raise ValueError(f"max_concurrent_compiles_cluster must be a whole number >= 0 (0: no cap); got {cluster!r}")
        if not isinstance(self.compile, CompileSettings):
            raise ValueError(f"compile must be a CompileSettings; got {type(self.compile).__name__}")

    def __repr__(self) -> str:
        """The fields, with the store's password hidden (a config may end up in a log or a message)."""
        from airflow_neo.local.store.engines import mask_url

        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["store"] = mask_url(self.store)
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def replace(self, **changes: Any) -> LocalJobConfig:
        return dataclasses.replace(self, **changes)

    def with_tuning_trials(self, tuning_trials: int | None) -> LocalJobConfig:
        """This config with a job's own trial budget (None: the configured one); validated by
        :class:`CompileSettings`, the one place a trial budget is checked."""
        if tuning_trials is None:
            return self
        return self.replace(compile=dataclasses.replace(self.compile, tuning_trials=tuning_trials))

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LocalJobConfig:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{ENV_JOB_CONFIG}: not valid JSON ({err})") from None
        data = _fields_of(cls, data, "")
        compile_data = _fields_of(CompileSettings, data.pop("compile", None) or {}, "compile ")
        return cls(**data, compile=CompileSettings(**compile_data))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LocalJobConfig | None:
        """The config the launcher put in ``$AIRFLOW_NEO_JOB_CONFIG``, or None when there is none."""
        text = (os.environ if env is None else env).get(ENV_JOB_CONFIG, "")
        return cls.from_json(text) if text.strip() else None

    def to_env(self) -> dict[str, str]:
        return {ENV_JOB_CONFIG: self.to_json()}


def _fields_of(cls: type, data: Any, what: str) -> dict:
    """``data`` when it is a JSON object naming only fields of the dataclass ``cls``."""
    if not isinstance(data, dict):
        raise ValueError(f"{ENV_JOB_CONFIG}: {what or 'the config '}must be a JSON object; got {data!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{ENV_JOB_CONFIG}: unknown {what}fields {unknown}; allowed: {sorted(known)}")
    return data
