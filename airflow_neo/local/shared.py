"""Tuning records and compiled artifacts that workers share through S3.

``[neo] tuning_database`` and ``[neo] cache_dir`` may be ``s3://bucket/prefix`` URLs. Workers with
throwaway disks (Kubernetes pods, autoscaled Celery workers) then reuse what any of them tuned or
compiled. Both keep working on local files (TVM's JSONDatabase, the flock-guarded compile cache),
with S3 behind them:

Tuning records (:class:`SharedTuningDatabase`)
    Each worker keeps a *mirror* of the shared databases (a directory holding
    :data:`~airflow_neo.local.tuning_db.REMOTE_MARKER`). When a compile merges new records into a
    mirrored database it also writes them as one immutable *batch* into the database's outbox
    (:func:`airflow_neo.local.tuning_db.merge`). :meth:`~SharedTuningDatabase.push` uploads outbox
    batches to ``<prefix>/<database>/batches/<batch id>.json``; :meth:`~SharedTuningDatabase.pull`
    applies every batch the mirror does not hold yet. S3 objects are never rewritten, so
    concurrent workers never lose each other's records, and a batch is applied at most once per
    mirror.

Compiled artifacts (:class:`SharedCompileCache`)
    The same layout as the local cache (:mod:`airflow_neo.local.cache`) under the prefix:
    ``index/<base key>.json``, ``entries/<key>/model.tar.gz`` and ``entries/<key>/entry.json``,
    written in that order, so an entry is complete once its ``entry.json`` exists. The local cache
    is the first tier; a miss there looks in S3 and keeps what it finds locally. The key covers
    the tuning records in use (the mirror's, pulled first), so a worker gets a hit exactly when it
    would have compiled the same artifact. The local size cap does not apply to S3: expire old
    entries with a bucket lifecycle rule.

Neither ever fails a job: the runner logs S3 errors and goes on compiling without them.

Pure: nothing here imports TVM or Airflow; the S3 client is given (the runner's, from the task's
AWS connection).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_neo.local import tuning_db
from airflow_neo.local.cache import ARTIFACT_NAME, ENTRY_NAME, CacheHit, CompileCache
from airflow_neo.local.files import split_s3_url

__all__ = ["SharedCompileCache", "SharedTuningDatabase", "SyncReport", "prepare_mirror"]

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def _is_not_found(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}
    return str((response.get("Error") or {}).get("Code")) in _NOT_FOUND


class _S3Prefix:
    def __init__(self, url: str, client: Any):
        self.url = url.rstrip("/")
        self.bucket, key = split_s3_url(url)
        self.prefix = key.strip("/")
        self.client = client

    def key(self, *parts: str) -> str:
        return "/".join(part for part in (self.prefix, *parts) if part)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as err:
            if _is_not_found(err):
                return None
            raise

    def get_json(self, key: str) -> dict | None:
        data = self.get_bytes(key)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def keys(self, under: str) -> list[str]:
        """Every key below ``under`` (relative to the prefix)."""
        start = self.key(under).rstrip("/") + "/"
        found: list[str] = []
        token = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": start}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.client.list_objects_v2(**kwargs)
            found += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]


def prepare_mirror(mirror_root: str | os.PathLike, url: str) -> Path:
    """Make ``mirror_root`` and mark it as the mirror of ``url``, so that the records a compile
    merges into it also go to its outbox (needs no S3 access: records tuned while S3 is out of
    reach are pushed by a later job)."""
    mirror = Path(mirror_root)
    mirror.mkdir(parents=True, exist_ok=True)
    marker = mirror / tuning_db.REMOTE_MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"url": url.rstrip("/")}) + "\n", encoding="utf-8")
    return mirror


class SyncReport(dict):
    """What a pull or push did: ``pulled``/``pushed`` batches, ``records`` added, ``skipped`` bad batches."""


class SharedTuningDatabase:
    """A local mirror of tuning databases kept in S3 as immutable batches (see the module docstring).

    :param url: ``s3://bucket/prefix`` (``[neo] tuning_database``).
    :param mirror_root: this machine's mirror; give it to the compiler as the tuning root.
    :param client: a boto3 S3 client.
    :param log: called with one line per notable event.
    """

    def __init__(self, url: str, mirror_root: str | os.PathLike, client: Any, *,
                 log: Callable[[str], Any] | None = None):
        self.remote = _S3Prefix(url, client)
        self.mirror = Path(mirror_root)
        self._log = log or (lambda _message: None)

    def prepare(self) -> None:
        """Make the mirror directory, marked as a mirror (so merges fill the outbox)."""
        prepare_mirror(self.mirror, self.remote.url)

    def databases(self) -> list[Path]:
        try:
            return sorted(path for path in self.mirror.iterdir() if path.is_dir() and not path.name.startswith("."))
        except FileNotFoundError:
            return []

    def push(self) -> SyncReport:
        """Upload the mirror's outbox batches (each once; a failed upload stays for the next push)."""
        self.prepare()
        pushed = 0
        for db_dir in self.databases():
            for batch in tuning_db.outbox(db_dir):
                try:
                    data = batch.read_bytes()
                except FileNotFoundError:  # another job on this machine pushed it meanwhile
                    continue
                self.remote.put_bytes(self.remote.key(db_dir.name, "batches", batch.name), data)
                batch.unlink(missing_ok=True)
                pushed += 1
        return SyncReport(pushed=pushed)

    def pull(self) -> SyncReport:
        """Push what is pending, then apply every shared batch that the mirror does not hold."""
        report = self.push()
        pulled = records = skipped = 0
        applied: dict[str, set[str]] = {}
        for key in self.remote.keys(""):
            relative = key[len(self.remote.key("")) :].lstrip("/") if self.remote.prefix else key
            parts = relative.split("/")
            if len(parts) != 3 or parts[1] != "batches" or not parts[2].endswith(".json"):
                continue
            database, batch_id = parts[0], parts[2][: -len(".json")]
            if not tuning_db.valid_batch_id(database) or not tuning_db.valid_batch_id(batch_id):
                continue
            if database not in applied:
                applied[database] = tuning_db.applied_batches(self.mirror / database)
            if batch_id in applied[database]:
                continue
            data = self.remote.get_bytes(key)
            if data is None:
                continue
            try:
                added = tuning_db.apply_batch(self.mirror / database, batch_id, data)
            except tuning_db.BatchError as err:
                self._log(f"tuning records: skipping s3://{self.remote.bucket}/{key}: {err}")
                skipped += 1
                continue
            applied[database].add(batch_id)
            if added is not None:
                pulled += 1
                records += added
        report.update(pulled=pulled, records=records, skipped=skipped)
        return report


class SharedCompileCache:
    """The S3 tier of the compile cache (see the module docstring).

    :param url: ``s3://bucket/prefix`` (``[neo] cache_dir``).
    :param client: a boto3 S3 client.
    :param log: called with one line per notable event.
    """

    def __init__(self, url: str, client: Any, *, log: Callable[[str], Any] | None = None):
        self.remote = _S3Prefix(url, client)
        self._log = log or (lambda _message: None)

    def fetch(self, base: str, local: CompileCache, copy_to: str | os.PathLike) -> CacheHit | None:
        """The shared entry for ``base`` under the tuning records ``local`` sees, kept in ``local``
        and copied to ``copy_to``; None on a miss (or an entry that fails its digest check)."""
        index = self.remote.get_json(self.remote.key("index", f"{base}.json"))
        if index is None:
            return None
        key = local.key_from_index(base, index)
        entry = self.remote.get_json(self.remote.key("entries", key, ENTRY_NAME))
        if entry is None or entry.get("key") != key:
            return None
        target = Path(copy_to)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, download = tempfile.mkstemp(prefix=".shared-", suffix=".tar.gz", dir=target.parent)
        os.close(fd)
        try:
            self.remote.client.download_file(self.remote.bucket, self.remote.key("entries", key, ARTIFACT_NAME), download)
            if not local.adopt(base, index, entry, download):
                self._log(f"shared cache entry {key[:16]} does not match its digest or key; ignoring it")
                return None
            os.replace(download, target)
        except Exception as err:
            if _is_not_found(err):
                return None
            raise
        finally:
            Path(download).unlink(missing_ok=True)
        return CacheHit(key, target, entry["artifact_blake2b"], entry.get("metadata") or {}, entry)

    def publish(self, base: str, key: str, local: CompileCache) -> bool:
        """Upload ``local``'s entry ``key`` (artifact, index, then entry.json) unless S3 has it;
        False when ``local`` does not hold it (evicted at once, or over the size cap)."""
        entry, index = local.read_entry(key), local.read_index(base)
        artifact = local.artifact_path(key)
        if entry is None or index is None or not artifact.is_file():
            return False
        if self.remote.get_json(self.remote.key("entries", key, ENTRY_NAME)) is not None:
            return True  # shared already (its index went up before it)
        started = time.monotonic()
        self.remote.client.upload_file(str(artifact), self.remote.bucket, self.remote.key("entries", key, ARTIFACT_NAME))
        self.remote.put_bytes(self.remote.key("index", f"{base}.json"), _json(index))
        self.remote.put_bytes(self.remote.key("entries", key, ENTRY_NAME), _json(entry))
        self._log(f"shared cache: stored {key[:16]} in {self.remote.url} ({entry.get('size')} bytes, "
                  f"{time.monotonic() - started:.2f} s)")
        return True


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode("utf-8")
