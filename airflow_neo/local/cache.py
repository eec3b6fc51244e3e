"""The local backend's compile cache: an unchanged model is never compiled twice.

Key (BLAKE2b) of a compile, in two parts:

* the *base key*: the model archive's bytes (their BLAKE2b), the normalized request parts that
  shape the artifact (Framework, FrameworkVersion, DataInputConfig, TargetDevice/TargetPlatform,
  CompilerOptions; parsed from JSON and re-serialized with sorted keys, so formatting does not
  matter), the TVM and tvm-ffi versions (read from the installed distributions, without importing
  TVM), the airflow-neo version, the compile function, the tuning trial budget and the tuning
  database root, and the BLAKE2b of the user's sample inputs (``verify_inputs``) when a job gives
  them: an artifact whose verification (and record) used other inputs is never a hit;
* the *records digest*: the best tuning record of each of the model's tuning workloads, as in the
  tuning database now (:func:`airflow_neo.local.tuning_db.records_digest`). "The tuning records
  used" is thus exact and cheap: a new record that does not beat the best one for a workload, or
  records for other models, leave the key unchanged; a better one changes it.

The model's workloads (structural hashes) are only known after TVM has imported the model, so a
successful compile leaves an *index* file per base key naming its tuning database and workloads;
a lookup reads it, computes the records digest from the database files and looks for the entry.
No index (never compiled) is a miss.

Layout::

    <cache_dir>/index/<base key>.json          {"database": name or null, "workloads": [...]}
    <cache_dir>/entries/<key>/model.tar.gz     the artifact, byte for byte as first published
    <cache_dir>/entries/<key>/entry.json       base key, digest, size, metadata; its mtime is
                                               the last use (LRU eviction)

The index names the tuning database by its directory name under the tuning root, so the same
index serves every worker whose tuning root mirrors the same shared database
(:mod:`airflow_neo.local.shared` keeps this layout in S3 too, as a second tier).

Size cap: after a store, the least recently used entries are removed until the artifacts fit in
``max_bytes``. Writers hold an exclusive ``flock`` on ``<cache_dir>/.lock``; a lookup copies the
artifact out under a shared lock, so an eviction never removes it mid-copy.

Pure: nothing here imports TVM or Airflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.local import tuning_db
from airflow_neo.local.files import atomic_write_json, blake2b_file, flocked

__all__ = ["ARTIFACT_NAME", "CHECKS", "CacheHit", "CompileCache", "base_key", "checks_of", "normalized_request", "tool_versions"]

# 2: artifacts are built with the default CPU schedules (airflow_neo.local.schedules); a format-1
# entry holds an artifact without them and is never reused.
CACHE_FORMAT = 2
ARTIFACT_NAME = "model.tar.gz"
ENTRY_NAME = "entry.json"


def _distribution_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict[str, str | None]:
    """Versions that change compiled code: TVM, tvm-ffi, airflow-neo and the shipped tuning pack (no TVM import)."""
    import airflow_neo

    from airflow_neo.local.configs import pack_digest

    return {
        "tvm": _distribution_version("apache-tvm"),
        "tvm_ffi": _distribution_version("apache-tvm-ffi"),
        "airflow_neo": airflow_neo.__version__,
        "tuning_pack": pack_digest(),
    }


def normalized_request(request: ValidatedRequest | dict) -> dict:
    """The parts of a CreateCompilationJob request that shape the artifact, JSON members parsed
    (once, by :class:`~airflow_neo.core.validation.ValidatedRequest`; a stored request dict is
    wrapped with :meth:`~airflow_neo.core.validation.ValidatedRequest.from_normalized`).

    Job name, role, S3 locations, KMS key, tags, VPC and stopping condition do not change the
    compiled code and are left out.
    """
    validated = request if isinstance(request, ValidatedRequest) else ValidatedRequest.from_normalized(request)
    input_config, output_config = validated.input_config, validated.output_config
    return {
        "Framework": validated.framework,
        "FrameworkVersion": input_config.get("FrameworkVersion"),
        "DataInputConfig": validated.data_input_config,
        "TargetDevice": output_config.get("TargetDevice"),
        "TargetPlatform": output_config.get("TargetPlatform"),
        "CompilerOptions": validated.compiler_options if output_config.get("CompilerOptions") else None,
    }


def base_key(
    archive_digest: str,
    request: ValidatedRequest | dict,
    *,
    compiler: str,
    tuning_trials: int,
    tuning_database: str | None,
    versions: dict | None = None,
    tuning_pack: bool = True,
    sample_inputs: str | None = None,
) -> str:
    """The BLAKE2b key of everything but the tuning records (see the module docstring).

    :param sample_inputs: the BLAKE2b of the job's ``verify_inputs`` file, if it gives one.
    """
    parts = {
        "format": CACHE_FORMAT,
        "archive_blake2b": archive_digest,
        "request": normalized_request(request),
        "versions": versions if versions is not None else tool_versions(),
        "compiler": compiler,
        "tuning_trials": int(tuning_trials),
        "tuning_database": str(tuning_database) if tuning_database else None,
    }
    if not tuning_pack:  # (absent when on: the keys of default settings are unchanged)
        parts["tuning_pack"] = False
    if sample_inputs:  # (absent without verify_inputs: those keys are unchanged)
        parts["sample_inputs_blake2b"] = sample_inputs
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=32).hexdigest()


def compiler_id(compile_fn: Any) -> str:
    """A stable name for a compile function (``module:qualname``) or its ``"module:function"`` string."""
    if isinstance(compile_fn, str):
        return compile_fn
    module = getattr(compile_fn, "__module__", "?")
    name = getattr(compile_fn, "__qualname__", getattr(compile_fn, "__name__", repr(compile_fn)))
    return f"{module}:{name}"


@dataclass
class CacheHit:
    """A found entry; ``artifact`` is the caller's private copy of the cached artifact."""

    key: str
    artifact: Path
    digest: str
    metadata: dict
    entry: dict


class CompileCache:
    """A directory of compiled artifacts keyed by what produced them; see the module docstring.

    :param root: the cache directory (created on first store).
    :param max_bytes: size cap of the stored artifacts; 0 stores nothing.
    :param log: called with one line per notable event (eviction, a corrupt entry).
    :param tuning_root: the tuning database root the index's database names are under (None: an
        index's database is taken as a path, as written by earlier versions).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        max_bytes: int,
        *,
        log: Callable[[str], Any] | None = None,
        tuning_root: str | os.PathLike | None = None,
    ):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._log = log or (lambda _message: None)
        self.tuning_root = Path(tuning_root) if tuning_root is not None else None

    @property
    def entries_dir(self) -> Path:
        return self.root / "entries"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def _locked(self, *, exclusive: bool):
        return flocked(self.root / ".lock", exclusive=exclusive)

    # ------------------------------------------------------------------ keys

    def _index(self, base: str) -> dict | None:
        try:
            data = json.loads((self.index_dir / f"{base}.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _key(base: str, records: str) -> str:
        return hashlib.blake2b(f"{base}\n{records}".encode("utf-8"), digest_size=32).hexdigest()

    def read_index(self, base: str) -> dict | None:
        """The index of ``base`` (the tuning database name and workloads its compile used), or None."""
        return self._index(base)

    def database_dir(self, database: str | None) -> Path | None:
        """Where the tuning database an index names is on this machine."""
        if not database:
            return None
        if self.tuning_root is not None:
            return self.tuning_root / Path(database).name
        return Path(database)

    def key_from_index(self, base: str, index: dict) -> str:
        """The full key of ``base`` given ``index`` and the tuning database as it is now."""
        database = self.database_dir(index.get("database"))
        return self._key(base, tuning_db.records_digest(database, index.get("workloads") or []))

    def key_for(self, base: str) -> str | None:
        """The full key of ``base`` given the tuning database as it is now; None if never compiled."""
        index = self._index(base)
        return None if index is None else self.key_from_index(base, index)

    def read_entry(self, key: str) -> dict | None:
        try:
            entry = json.loads((self.entries_dir / key / ENTRY_NAME).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, NotADirectoryError):
            return None
        return entry if isinstance(entry, dict) else None

    def artifact_path(self, key: str) -> Path:
        return self.entries_dir / key / ARTIFACT_NAME

    # ------------------------------------------------------------------ lookup / store

    def lookup(self, base: str, copy_to: str | os.PathLike) -> CacheHit | None:
        """The entry for ``base`` (its artifact copied to ``copy_to``), or None."""
        if self.max_bytes <= 0 or not self.root.is_dir():
            return None
        key = self.key_for(base)
        if key is None:
            return None
        entry_dir = self.entries_dir / key
        target = Path(copy_to)
        with self._locked(exclusive=False):
            try:
                entry = json.loads((entry_dir / ENTRY_NAME).read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(entry_dir / ARTIFACT_NAME, target)
            except FileNotFoundError:
                return None
            now = time.time()
            with contextlib.suppress(OSError):
                os.utime(entry_dir / ENTRY_NAME, (now, now))
        digest = blake2b_file(target)
        if digest != entry.get("artifact_blake2b"):
            self._log(f"cache entry {key[:16]} is corrupt (digest mismatch); ignoring it")
            target.unlink(missing_ok=True)
            self._remove(key, exclusive=True)
            return None
        return CacheHit(key, target, digest, entry.get("metadata") or {}, entry)

    def store(self, base: str, artifact: str | os.PathLike, metadata: dict | None) -> str | None:
        """Keep ``artifact`` under ``base`` and the tuning records named by ``metadata["tuning"]``;
        returns the key, or None when the artifact alone is over the size cap (or the cache is off)."""
        if self.max_bytes <= 0:
            return None
        artifact = Path(artifact)
        size = artifact.stat().st_size
        if size > self.max_bytes:
            self._log(f"artifact ({size} bytes) is larger than the cache ({self.max_bytes} bytes); not cached")
            return None
        metadata = metadata or {}
        tuning = metadata.get("tuning") if isinstance(metadata.get("tuning"), dict) else {}
        database = tuning.get("database")
        workloads = sorted(set(tuning.get("workloads") or []))
        # The records this artifact was built with (reported by the compiler), else the database now.
        records = tuning.get("records_digest") or tuning_db.records_digest(self.database_dir(database), workloads)
        key = self._key(base, records)
        entry = {
            "format": CACHE_FORMAT,
            "key": key,
            "base_key": base,
            "records_digest": records,
            "artifact_blake2b": blake2b_file(artifact),
            "size": size,
            "stored_at": time.time(),
            "metadata": metadata,
        }
        if database and self.tuning_root is not None:
            database = Path(database).name
        index = {"database": database or None, "workloads": workloads}
        self._put(base, index, entry, artifact)
        return key

    def adopt(self, base: str, index: dict, entry: dict, artifact: str | os.PathLike) -> bool:
        """Keep an entry that another cache tier holds (same layout), after checking that
        ``artifact`` matches its digest and that its key is ``base``'s under ``index`` here.
        Returns whether it was kept."""
        key = entry.get("key")
        if self.max_bytes <= 0 or not isinstance(key, str) or entry.get("base_key") != base:
            return False
        if int(entry.get("size") or 0) > self.max_bytes or blake2b_file(artifact) != entry.get("artifact_blake2b"):
            return False
        if self.key_from_index(base, index) != key:
            return False
        self._put(base, {"database": index.get("database"), "workloads": sorted(set(index.get("workloads") or []))},
                  entry, Path(artifact))
        return True

    def _put(self, base: str, index: dict, entry: dict, artifact: Path) -> None:
        key = entry["key"]
        with self._locked(exclusive=True):
            self.index_dir.mkdir(parents=True, exist_ok=True)
            self.entries_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.index_dir / f"{base}.json", index)
            final = self.entries_dir / key
            if (final / ENTRY_NAME).is_file() and checks_of(entry["metadata"]) > checks_of(_read_entry(final)):
                # the same artifact recompiled with the verification or profile the kept one lacks
                # (see JobCache._checks_lacking): the richer metadata replaces it
                shutil.rmtree(final, ignore_errors=True)
            if not (final / ENTRY_NAME).is_file():
                shutil.rmtree(final, ignore_errors=True)
                staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.entries_dir))
                try:
                    shutil.copyfile(artifact, staging / ARTIFACT_NAME)
                    atomic_write_json(staging / ENTRY_NAME, entry)
                    os.rename(staging, final)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
            else:
                now = time.time()
                os.utime(final / ENTRY_NAME, (now, now))
            self._evict_locked(keep=key)

    # ------------------------------------------------------------------ size cap

    def entries(self) -> list[dict]:
        """Every entry: key, size, last use (mtime of its entry.json), base key."""
        result = []
        try:
            children = list(self.entries_dir.iterdir())
        except FileNotFoundError:
            return []
        for child in children:
            if child.name.startswith("."):
                continue
            try:
                entry = json.loads((child / ENTRY_NAME).read_text(encoding="utf-8"))
                used = (child / ENTRY_NAME).stat().st_mtime
            except (FileNotFoundError, ValueError, NotADirectoryError):
                continue
            result.append({"key": child.name, "size": int(entry.get("size", 0)), "last_used": used,
                           "base_key": entry.get("base_key")})
        return result

    def total_bytes(self) -> int:
        return sum(entry["size"] for entry in self.entries())

    def evict(self) -> list[str]:
        """Remove least recently used entries until the cache fits ``max_bytes``; returns their keys."""
        with self._locked(exclusive=True):
            return self._evict_locked()

    def _evict_locked(self, keep: str | None = None) -> list[str]:
        entries = sorted(self.entries(), key=lambda entry: entry["last_used"])
        total = sum(entry["size"] for entry in entries)
        removed = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry["key"] == keep:
                continue
            self._remove(entry["key"], exclusive=False)
            total -= entry["size"]
            removed.append(entry["key"])
            self._log(f"cache: evicted {entry['key'][:16]} ({entry['size']} bytes, least recently used)")
        if removed:
            live = {entry["base_key"] for entry in self.entries()}
            for entry in entries:
                if entry["key"] in removed and entry["base_key"] not in live:
                    with contextlib.suppress(OSError):
                        (self.index_dir / f"{entry['base_key']}.json").unlink()
        for stale in self.entries_dir.glob(".staging-*"):
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        return removed

    def _remove(self, key: str, *, exclusive: bool) -> None:
        if exclusive:
            with self._locked(exclusive=True):
                shutil.rmtree(self.entries_dir / key, ignore_errors=True)
        else:
            shutil.rmtree(self.entries_dir / key, ignore_errors=True)


#: the checks of an artifact's metadata.json that a compile may or may not have run
CHECKS = ("verification", "profile")


def checks_of(metadata: Any) -> set[str]:
    """The checks (of :data:`CHECKS`) that an artifact's metadata.json holds."""
    return {name for name in CHECKS if isinstance(metadata, dict) and metadata.get(name)}


def _read_entry(directory: Path) -> dict:
    try:
        return json.loads((directory / ENTRY_NAME).read_text()).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        return {}
