"""Tuning and compile-cache settings of the local backend: the ``compile`` part of a job's config.

The hook reads ``[neo] tuning_trials``, ``tuning_database``, ``cache_dir`` and ``cache_max_bytes``
(the operator's ``tuning_trials`` over the first) into a :class:`CompileSettings`, which travels to
the runner inside the job's :class:`~airflow_neo.local.config.LocalJobConfig`; the runner
resolves its directories (:meth:`CompileSettings.resolved`) and passes the trial budget and the
tuning database to the compiler as arguments.

Invariants: frozen; validated on construction (a bad value names the field and the value:
:func:`check_count` is the one check of a trial budget or a byte count, also used by the operator
at DAG-parse time); ``s3://`` locations are checked for a bucket name and a clean prefix, other
URL schemes are refused. Pure: nothing here imports Airflow or TVM.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from airflow_neo.local.files import split_s3_url

__all__ = [
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_TUNING_TRIALS",
    "CompileSettings",
    "check_count",
    "neo_home",
]

#: ``[neo] tuning_trials`` default: MetaSchedule trials per compile job (0: no tuning; the
#: records already in the tuning database are still applied). See docs/tuning.rst for the choice.
DEFAULT_TUNING_TRIALS = 0
#: ``[neo] cache_max_bytes`` default: 2 GiB of cached artifacts (0 turns the cache off).
DEFAULT_CACHE_MAX_BYTES = 2 * 1024**3


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


def check_count(name: str, value):
    """``value`` when it is a whole number >= 0 (a trial budget, a byte count); else a ValueError
    naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0; got {value!r}")
    return value


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
            check_count(name, getattr(self, name))
        _check_location("tuning_database", self.tuning_database)
        _check_location("cache_dir", self.cache_dir)

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


def _is_s3(value: str | None) -> bool:
    return bool(value) and str(value).startswith("s3://")
