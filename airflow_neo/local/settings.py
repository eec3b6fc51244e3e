"""Tuning and compile-cache settings of the local backend, as handed from the hook to the runner.

The hook reads ``[neo] tuning_trials``, ``tuning_database``, ``cache_dir`` and ``cache_max_bytes``
(plus the operator's ``tuning_trials``) and hands them to the detached runner as ``AIRFLOW_NEO_*``
environment variables (:meth:`CompileSettings.to_env`); the runner reads them back
(:meth:`CompileSettings.from_env`) and passes the tuning part on to the compile child.

Pure: nothing here imports Airflow or TVM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

__all__ = [
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_TUNING_TRIALS",
    "ENV_CACHE_DIR",
    "ENV_CACHE_MAX_BYTES",
    "ENV_TUNING_DATABASE",
    "ENV_TUNING_TRIALS",
    "CompileSettings",
    "neo_home",
]

#: ``[neo] tuning_trials`` default: MetaSchedule trials per compile job (0: no tuning; the
#: records already in the tuning database are still applied). See docs/tuning.rst for the choice.
DEFAULT_TUNING_TRIALS = 0
#: ``[neo] cache_max_bytes`` default: 2 GiB of cached artifacts (0 turns the cache off).
DEFAULT_CACHE_MAX_BYTES = 2 * 1024**3

ENV_TUNING_TRIALS = "AIRFLOW_NEO_TUNING_TRIALS"
ENV_TUNING_DATABASE = "AIRFLOW_NEO_TUNING_DATABASE"
ENV_CACHE_DIR = "AIRFLOW_NEO_CACHE_DIR"
ENV_CACHE_MAX_BYTES = "AIRFLOW_NEO_CACHE_MAX_BYTES"


def neo_home() -> Path:
    """``$AIRFLOW_HOME/neo`` (``~/airflow/neo`` when AIRFLOW_HOME is not set)."""
    return Path(os.path.expanduser(os.environ.get("AIRFLOW_HOME") or "~/airflow")) / "neo"


def _int(value, name: str, default: int) -> int:
    if value is None or str(value).strip() == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number; got {value!r}") from None
    if number < 0:
        raise ValueError(f"{name} must be >= 0; got {number}")
    return number


@dataclass(frozen=True)
class CompileSettings:
    """What a local compile job may spend on tuning, and where tuning records and cached artifacts live.

    :param tuning_trials: MetaSchedule trials this job may measure for its model (0: no tuning;
        records already in the database for the model's workloads are applied either way).
    :param tuning_database: root of the tuning databases (one sub-directory per target); None:
        ``tuning`` next to the job store (``$AIRFLOW_HOME/neo/tuning`` with the default store).
    :param cache_dir: the compile cache; None: ``cache`` next to the job store.
    :param cache_max_bytes: size cap of the compile cache (least recently used artifacts are
        evicted); 0 turns the cache off.
    """

    tuning_trials: int = DEFAULT_TUNING_TRIALS
    tuning_database: str | None = None
    cache_dir: str | None = None
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES

    def __post_init__(self) -> None:
        for name in ("tuning_trials", "cache_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0; got {value!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CompileSettings:
        env = os.environ if env is None else env
        return cls(
            tuning_trials=_int(env.get(ENV_TUNING_TRIALS), ENV_TUNING_TRIALS, DEFAULT_TUNING_TRIALS),
            tuning_database=(env.get(ENV_TUNING_DATABASE) or "").strip() or None,
            cache_dir=(env.get(ENV_CACHE_DIR) or "").strip() or None,
            cache_max_bytes=_int(env.get(ENV_CACHE_MAX_BYTES), ENV_CACHE_MAX_BYTES, DEFAULT_CACHE_MAX_BYTES),
        )

    def to_env(self) -> dict[str, str]:
        env = {ENV_TUNING_TRIALS: str(self.tuning_trials), ENV_CACHE_MAX_BYTES: str(self.cache_max_bytes)}
        if self.tuning_database:
            env[ENV_TUNING_DATABASE] = str(self.tuning_database)
        if self.cache_dir:
            env[ENV_CACHE_DIR] = str(self.cache_dir)
        return env

    def resolved(self, base_dir: str | os.PathLike | None = None) -> CompileSettings:
        """These settings with the directories filled in: under ``base_dir`` (the job store's
        directory) or, without one, under ``$AIRFLOW_HOME/neo``."""
        base = Path(base_dir) if base_dir is not None else neo_home()
        return replace(
            self,
            tuning_database=os.path.expanduser(self.tuning_database) if self.tuning_database else str(base / "tuning"),
            cache_dir=os.path.expanduser(self.cache_dir) if self.cache_dir else str(base / "cache"),
        )

    @property
    def cache_enabled(self) -> bool:
        return self.cache_max_bytes > 0

    def child_env(self) -> dict[str, str]:
        """What the compile child needs: the trial budget and the (resolved) tuning database root."""
        env = {ENV_TUNING_TRIALS: str(self.tuning_trials)}
        if self.tuning_database:
            env[ENV_TUNING_DATABASE] = str(self.tuning_database)
        return env
