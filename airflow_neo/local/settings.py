"""Tuning and compile-cache settings of the local backend: the ``compile`` part of a job's config.

The hook reads ``[neo] tuning_trials``, ``tuning_database``, ``cache_dir``, ``cache_max_bytes``,
``rpc_tracker`` and ``rpc_keys`` (the operator's ``tuning_trials`` over the first) into a
:class:`CompileSettings`, which travels to
the runner inside the job's :class:`~airflow_neo.local.config.LocalJobConfig`; the runner
resolves its directories (:meth:`CompileSettings.resolved`) and passes the trial budget and the
tuning database to the compiler as arguments.

Invariants: frozen; validated on construction (a bad value names the field and the value:
:func:`check_count` is the one check of a trial budget or a byte count, also used by the operator
at DAG-parse time); ``s3://`` locations are checked for a bucket name and a clean prefix, other
URL schemes are refused; ``verify_inputs`` is an ``s3://bucket/key``, ``file://`` URI or absolute
path ending in ``.npz`` (:func:`check_verify_inputs`); ``rpc_tracker`` is ``host:port`` and ``rpc_keys`` maps names of the
target table (:mod:`airflow_neo.local.targets`) to tracker keys, normalized on construction to
``{target label: key}`` (:func:`parse_rpc_keys`). Pure: nothing here imports Airflow or TVM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from airflow_neo.local.files import split_s3_url

__all__ = [
    "DEFAULT_CACHE_MAX_BYTES",
    "DEFAULT_PROFILE_SECONDS",
    "DEFAULT_VERIFY",
    "VERIFY_MODES",
    "DEFAULT_TUNING_TRIALS",
    "CompileSettings",
    "check_count",
    "check_verify",
    "check_verify_inputs",
    "neo_home",
    "parse_rpc_keys",
    "parse_rpc_tracker",
]

#: ``[neo] tuning_trials`` default: MetaSchedule trials per compile job (0: no tuning; the
#: records already in the tuning database are still applied). See docs/tuning.rst for the choice.
DEFAULT_TUNING_TRIALS = 0
#: ``[neo] cache_max_bytes`` default: 2 GiB of cached artifacts (0 turns the cache off).
DEFAULT_CACHE_MAX_BYTES = 2 * 1024**3
#: ``[neo] verify`` modes (:mod:`airflow_neo.local.verify`) and the default: an artifact whose
#: outputs differ from the framework's fails its job and is never published
VERIFY_MODES = ("gate", "report", "off")
DEFAULT_VERIFY = "gate"
#: ``[neo] profile_seconds`` default: the artifact's latency profile (:mod:`airflow_neo.local.profile`)
#: may take this long per compile (0: no profile); read when a CompileSettings is made
DEFAULT_PROFILE_SECONDS = 2.0


def check_verify(value) -> str:
    """``value`` when it is a verification mode (``gate``, ``report``, ``off``); else a ValueError
    naming it and the modes."""
    if not isinstance(value, str) or value.strip().lower() not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_MODES)}; got {value!r}")
    return value.strip().lower()


def check_verify_inputs(value, name: str = "verify_inputs") -> str | None:
    """``value`` when it is None or the location of a ``.npz`` of sample inputs: ``s3://bucket/key``,
    a ``file://`` URI or an absolute path; else a ValueError naming ``name``, the value and the forms."""
    if value is None:
        return None
    forms = "give an s3://bucket/key.npz URI, a file:///absolute/path.npz URI or an absolute path ending in .npz"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be the location of a .npz of sample inputs; got {value!r}; {forms}")
    if value.startswith("s3://"):
        bucket, key = split_s3_url(value)
        if not _BUCKET.match(bucket) or not key.strip("/") or key.endswith("/"):
            raise ValueError(f"{name} {value!r} is not an s3://bucket/key URI of one object; {forms}")
    elif not (value.startswith("file:///") or value.startswith("file://localhost/") or value.startswith("/")):
        raise ValueError(f"{name} {value!r}: only s3://, file:// URIs and absolute paths are read; {forms}")
    if not value.lower().endswith(".npz"):
        raise ValueError(f"{name} {value!r} does not end in .npz; save the inputs with numpy.savez(path, "
                         f"**{{input name: array}}) and {forms}")
    return value


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
    :param rpc_tracker: ``host:port`` of a TVM RPC tracker whose devices measure tuning candidates
        for the targets named in ``rpc_keys`` (None: everything is measured on this machine).
    :param rpc_keys: which tracker key (device kind) measures which target: ``{target: key}``, the
        target a TargetDevice name (``rasp4b``) or a TargetPlatform ``OS/ARCH`` (``LINUX/ARM64``,
        or its label ``linux-arm64``); also a JSON object or ``target=key, ...`` text, as in
        ``[neo] rpc_keys``. Normalized to ``{target label: key}``.
    :param tuning_pack: apply the shipped tuning pack's knobs for the target's CPU family (False:
        every kernel without a tuned config gets its default plan).
    :param verify: ``gate``, ``report`` or ``off``: what the compile does with the verification
        of its artifact against the source framework (:mod:`airflow_neo.local.verify`).
    :param verify_rtol: the relative tolerance of float outputs (of their largest |reference|
        value); None: the default per dtype.
    :param profile_seconds: the time the artifact's latency profile may take (0: no profile;
        default :data:`DEFAULT_PROFILE_SECONDS`).
    :param verify_inputs: the user's sample inputs for the verification: a ``.npz`` (arrays by
        input name) at an ``s3://bucket/key``, a ``file://`` URI or an absolute path; the runner
        fetches it into the job's work dir and the verification uses it in preference to the
        archive's ``.npz`` (None: the archive's, else random inputs). Part of the compile cache key
        (by content), so an artifact verified on other inputs is never a hit.
    """

    tuning_trials: int = DEFAULT_TUNING_TRIALS
    tuning_database: str | None = None
    cache_dir: str | None = None
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    tuning_mirror: str | None = None
    cache_mirror: str | None = None
    rpc_tracker: str | None = None
    rpc_keys: dict[str, str] = field(default_factory=dict)
    tuning_pack: bool = True
    verify: str = DEFAULT_VERIFY
    verify_rtol: float | None = None
    profile_seconds: float = field(default_factory=lambda: DEFAULT_PROFILE_SECONDS)
    verify_inputs: str | None = None

    def __post_init__(self) -> None:
        for name in ("tuning_trials", "cache_max_bytes"):
            check_count(name, getattr(self, name))
        object.__setattr__(self, "verify", check_verify(self.verify))
        rtol = self.verify_rtol
        if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0):
            raise ValueError(f"verify_rtol must be a number > 0 (or empty: the default per dtype); got {self.verify_rtol!r}")
        seconds = self.profile_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"profile_seconds must be a number of seconds >= 0 (0: no profile); got {seconds!r}")
        object.__setattr__(self, "profile_seconds", float(seconds))
        check_verify_inputs(self.verify_inputs)
        if not isinstance(self.tuning_pack, bool):
            raise ValueError(f"tuning_pack must be true or false; got {self.tuning_pack!r}")
        _check_location("tuning_database", self.tuning_database)
        _check_location("cache_dir", self.cache_dir)
        if self.rpc_tracker is not None:
            parse_rpc_tracker(self.rpc_tracker)
        object.__setattr__(self, "rpc_keys", parse_rpc_keys(self.rpc_keys))
        if self.rpc_keys and not self.rpc_tracker:
            raise ValueError(
                f"rpc_keys {self.rpc_keys!r} names devices of an RPC tracker, but rpc_tracker is not set; "
                "give rpc_tracker as host:port (e.g. 10.0.0.5:9190), or leave rpc_keys empty"
            )

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

    def rpc_arguments(self) -> dict[str, Any]:
        """The compile function's RPC arguments (``rpc_tracker``, ``rpc_keys``); empty when no
        tracker is set, so compile functions that know nothing of RPC keep working."""
        if not self.rpc_tracker:
            return {}
        return {"rpc_tracker": self.rpc_tracker, "rpc_keys": dict(self.rpc_keys)}

    def pack_arguments(self) -> dict[str, Any]:
        """The compile function's pack argument: empty with the pack on (the default), so compile
        functions that know nothing of it keep working."""
        return {} if self.tuning_pack else {"tuning_pack": False}

    def verify_arguments(self) -> dict[str, Any]:
        """The compile function's verification and profile arguments: only those that differ from
        the compile function's defaults (verify ``gate``, no profile), so compile functions that
        know nothing of them keep working."""
        arguments: dict[str, Any] = {}
        if self.verify != DEFAULT_VERIFY:
            arguments["verify"] = self.verify
        if self.verify_rtol is not None:
            arguments["verify_rtol"] = self.verify_rtol
        if self.profile_seconds > 0:
            arguments["profile_seconds"] = self.profile_seconds
        if self.verify_inputs:
            arguments["verify_inputs"] = self.verify_inputs
        return arguments

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


# ----------------------------------------------------------------------------- RPC devices

_RPC_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_rpc_tracker(value: str) -> tuple[str, int]:
    """``(host, port)`` of ``[neo] rpc_tracker`` (``host:port``, ``[v6 address]:port``); else a
    ValueError naming the value and the form."""
    form = "give host:port, e.g. 10.0.0.5:9190 or tracker.lan:9190 ([::1]:9190 for an IPv6 address)"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"rpc_tracker must be host:port; got {value!r}; {form}")
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid_host = bool(host) and all(c in "0123456789abcdefABCDEF:." for c in host)
    else:
        valid_host = bool(_HOST.match(host))
    if not sep or not valid_host:
        raise ValueError(f"rpc_tracker {value!r} is not host:port; {form}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"rpc_tracker {value!r}: the port must be a number from 1 to 65535; {form}")
    return host, int(port)


def _rpc_target_labels() -> tuple[dict[str, str], list[str]]:
    """Every name a target may be given by in ``rpc_keys`` (lower case) -> its label; and the
    names as the request spells them (TargetDevice ``rasp4b``, TargetPlatform ``LINUX/ARM64``).
    CPU targets only: tuning (and so RPC measurement) is for CPU code."""
    from airflow_neo.local.targets import support_table

    labels: dict[str, str] = {}
    names: list[str] = []
    for row in support_table():
        if row["supported"] and row["code"] == "cpu":
            labels[row["name"].lower()] = row["label"]
            labels[row["label"].lower()] = row["label"]
            names.append(row["name"])
    return labels, names


def parse_rpc_keys(value: Any) -> dict[str, str]:
    """``[neo] rpc_keys`` as ``{target label: tracker key}``.

    ``value``: None or empty, a dict, a JSON object, or ``target=key`` pairs separated by commas;
    a target is a TargetDevice name (``rasp4b``) or a TargetPlatform ``OS/ARCH`` (``LINUX/ARM64``)
    or its label (``linux-arm64``). Raises a ValueError naming the entry and what is allowed.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, str) and value.strip().startswith("{"):
        try:
            data = json.loads(value)
        except ValueError as err:
            raise ValueError(f"rpc_keys {value!r} is not a valid JSON object ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"rpc_keys must be a JSON object of target: key; got {value!r}")
        pairs = list(data.items())
    elif isinstance(value, str):
        pairs = []
        for item in value.split(","):
            if not item.strip():
                continue
            name, sep, key = item.partition("=")
            if not sep:
                raise ValueError(
                    f"rpc_keys entry {item.strip()!r} is not target=key; give e.g. "
                    "'rasp4b=pi4, LINUX/ARM64=graviton' or a JSON object"
                )
            pairs.append((name.strip(), key.strip()))
    else:
        raise ValueError(f"rpc_keys must be a JSON object or target=key pairs; got {value!r}")
    labels, names = _rpc_target_labels()
    out: dict[str, str] = {}
    for name, key in pairs:
        label = labels.get(str(name).strip().lower()) if isinstance(name, str) else None
        if label is None:
            raise ValueError(
                f"rpc_keys: {name!r} is not a target the local backend builds for; give a TargetDevice "
                "(e.g. rasp4b, ml_c6g) or a TargetPlatform OS/ARCH (e.g. LINUX/ARM64); supported: "
                + ", ".join(names)
            )
        if not isinstance(key, str) or not _RPC_KEY.match(key):
            raise ValueError(
                f"rpc_keys: the key for {name!r} must be a tracker key (letters, digits, '_', '.', '+', '-'; "
                f"no spaces or ':'), the --key its RPC servers registered with; got {key!r}"
            )
        if label in out and out[label] != key:
            raise ValueError(f"rpc_keys gives the target {label} two keys: {out[label]!r} and {key!r}")
        out[label] = key
    return out
