"""Tuning and compile-cache settings of the local backend, as handed from the hook to the runner.

The hook reads ``[neo] tuning_trials``, ``tuning_database``, ``cache_dir`` and ``cache_max_bytes``
(plus the operator's ``tuning_trials``) and hands them to the detached runner as ``AIRFLOW_NEO_*``
environment variables (:meth:`CompileSettings.to_env`); the runner reads them back
(:meth:`CompileSettings.from_env`) and passes the tuning part on to the compile child.

Pure: nothing here imports Airflow or TVM.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from airflow_neo.local.files import split_s3_url

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


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_location(name: str, value: str | None) -> None:
    if not value:
        return
    scheme = _SCHEME.match(value)
    if scheme is None:
        return
    if scheme.group(1) != "s3":
        raise ValueError(
            f"{name} {value!r}: the {scheme.group(1)}:// scheme is not supported; give a directory path "
            "(local or a shared file system) or an s3://bucket/prefix URL"
        )
    bucket, key = split_s3_url(value)
    prefix = key.strip("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{name} {value!r}: {bucket!r} is not an S3 bucket name; give s3://bucket/prefix")
    if "//" in prefix:
        raise ValueError(f"{name} {value!r}: the key prefix has an empty path segment")


def _mirror_dir(base: Path, kind: str, url: str) -> str:
    bucket, _ = split_s3_url(url)
    digest = hashlib.blake2b(url.rstrip("/").encode("utf-8"), digest_size=6).hexdigest()
    return str(base / f"{kind}-s3" / f"{bucket}-{digest}")


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
    :param tuning_database: root of the tuning databases (one sub-directory per target), or an
        ``s3://bucket/prefix`` URL that workers share (each keeps a local mirror); None:
        ``tuning`` next to the job store (``$AIRFLOW_HOME/neo/tuning`` with the default store).
    :param cache_dir: the compile cache, or an ``s3://bucket/prefix`` URL that workers share
        (each keeps a local tier in front of it); None: ``cache`` next to the job store.
    :param cache_max_bytes: size cap of the (local) compile cache (least recently used artifacts
        are evicted); 0 turns the cache off, the shared tier included.
    :param tuning_mirror: set by :meth:`resolved` for an S3 ``tuning_database``: the local mirror.
    :param cache_mirror: set by :meth:`resolved` for an S3 ``cache_dir``: the local tier.
    """

    tuning_trials: int = DEFAULT_TUNING_TRIALS
    tuning_database: str | None = None
    cache_dir: str | None = None
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    tuning_mirror: str | None = None
    cache_mirror: str | None = None

    def __post_init__(self) -> None:
        for name in ("tuning_trials", "cache_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0; got {value!r}")
        _check_location("tuning_database", self.tuning_database)
        _check_location("cache_dir", self.cache_dir)

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
        tuning = os.path.expanduser(self.tuning_database) if self.tuning_database else str(base / "tuning")
        cache = os.path.expanduser(self.cache_dir) if self.cache_dir else str(base / "cache")
        return replace(
            self,
            tuning_database=tuning,
            cache_dir=cache,
            tuning_mirror=self.tuning_mirror or (_mirror_dir(base, "tuning", tuning) if _is_s3(tuning) else None),
            cache_mirror=self.cache_mirror or (_mirror_dir(base, "cache", cache) if _is_s3(cache) else None),
        )

    @property
    def cache_enabled(self) -> bool:
        return self.cache_max_bytes > 0

    @property
    def tuning_remote(self) -> str | None:
        """The shared tuning database's s3:// URL, or None when it is a directory."""
        return self.tuning_database if _is_s3(self.tuning_database) else None

    @property
    def cache_remote(self) -> str | None:
        """The shared compile cache's s3:// URL, or None when it is a directory."""
        return self.cache_dir if _is_s3(self.cache_dir) else None

    @property
    def tuning_root(self) -> str | None:
        """The tuning database root on this machine (the mirror of a shared one)."""
        return self.tuning_mirror if self.tuning_remote else self.tuning_database

    @property
    def cache_root(self) -> str | None:
        """The compile cache directory on this machine (the local tier of a shared one)."""
        return self.cache_mirror if self.cache_remote else self.cache_dir

    def child_env(self) -> dict[str, str]:
        """What the compile child needs: the trial budget and the (resolved) local tuning root."""
        env = {ENV_TUNING_TRIALS: str(self.tuning_trials)}
        if self.tuning_root:
            env[ENV_TUNING_DATABASE] = str(self.tuning_root)
        return env


def _is_s3(value: str | None) -> bool:
    return bool(value) and str(value).startswith("s3://")
