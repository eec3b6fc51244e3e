"""The shared MetaSchedule tuning database of the local backend, read and written without TVM.

Layout: ``<tuning_database>/<target dir>/`` holds TVM's JSONDatabase files
(``database_workload.json``: one ``[structural hash, module]`` line per workload;
``database_tuning_record.json``: one ``[workload line index, record]`` line per measured trial,
the record being ``[trace, run_secs, target, args_info]``), a trial ledger
(``airflow_neo_ledger.json``: trials granted per workload, so a workload whose search space ran
out is not tuned again) and a lock file.

Concurrency: jobs never let TVM write the shared files. A job takes a *snapshot* (a private copy,
under a shared ``flock``), tunes into its copy, then *merges* the lines it added back into the
shared files under an exclusive ``flock``, renumbering workload indices, since other jobs may
have appended workloads meanwhile. Readers skip a torn last line.

Pure: nothing here imports TVM or Airflow (the runner's cache lookup uses :func:`records_digest`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LEDGER_FILE",
    "RECORD_FILE",
    "WORKLOAD_FILE",
    "Snapshot",
    "WorkloadStats",
    "locked",
    "merge",
    "read_ledger",
    "records_digest",
    "scan",
    "snapshot",
    "target_database_dir",
]

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
LEDGER_FILE = "airflow_neo_ledger.json"
LOCK_FILE = ".lock"
#: run_secs at or above this are failed measurements (MetaSchedule records errors as 1e10 s)
INVALID_RUN_SECS = 1e9
_RECORD_PREFIX = re.compile(r"^\[\s*(\d+)\s*,")
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def target_database_dir(root: str | os.PathLike, target: dict, num_cores: int) -> Path:
    """``<root>/<mcpu>-<arch>-<n>c-<hash>``: one database per TVM target and core count.

    The hash covers the whole target (kind, triple, mcpu, mattr...) and the core count, since a
    schedule tuned for one is not the best for another.
    """
    canonical = json.dumps({"target": target, "num_cores": int(num_cores)}, sort_keys=True, default=str)
    digest = hashlib.blake2b(canonical.encode("utf-8"), digest_size=6).hexdigest()
    arch = str(target.get("mtriple") or "host").split("-")[0]
    slug = _SLUG.sub("_", f"{target.get('mcpu') or 'generic'}-{arch}-{int(num_cores)}c").strip("_")
    return Path(root) / f"{slug}-{digest}"


@contextlib.contextmanager
def locked(db_dir: str | os.PathLike, *, exclusive: bool) -> Iterator[Path]:
    """Hold the database's lock (``flock``: shared for readers, exclusive for writers)."""
    path = Path(db_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield path
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _lines(path: Path) -> list[str]:
    """The complete lines of a database file (a torn last line, from a crash mid-write, is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    if lines and lines[-1] and not text.endswith("\n"):
        try:
            json.loads(lines[-1])
        except ValueError:
            lines = lines[:-1]
    return [line for line in lines if line.strip()]


def _workload_hash(line: str) -> str:
    """The structural hash (first member) of a workload line, without decoding the module."""
    try:
        start = line.index('"') + 1
        return line[start : line.index('"', start)]
    except ValueError:
        return ""


def _record_index(line: str) -> int | None:
    match = _RECORD_PREFIX.match(line)
    return int(match.group(1)) if match else None


@dataclass
class WorkloadStats:
    """What the database holds for one workload."""

    records: int = 0  #: measured trials (failed ones included)
    best_secs: float | None = None  #: the best mean run time
    best_record: str | None = None  #: that record, as canonical JSON


def scan(db_dir: str | os.PathLike, workloads: Iterable[str] | None = None) -> dict[str, WorkloadStats]:
    """Per workload hash (only ``workloads`` when given): trials recorded and the best record."""
    path = Path(db_dir)
    wanted = set(workloads) if workloads is not None else None
    hashes = [_workload_hash(line) for line in _lines(path / WORKLOAD_FILE)]
    stats: dict[str, WorkloadStats] = {key: WorkloadStats() for key in wanted} if wanted is not None else {}
    for line in _lines(path / RECORD_FILE):
        index = _record_index(line)
        if index is None or index >= len(hashes):
            continue
        key = hashes[index]
        if wanted is not None and key not in wanted:
            continue
        entry = stats.setdefault(key, WorkloadStats())
        entry.records += 1
        try:
            record = json.loads(line)[1]
            run_secs = [float(value) for value in record[1]]
        except (ValueError, TypeError, IndexError):
            continue
        if not run_secs or max(run_secs) >= INVALID_RUN_SECS:
            continue
        mean = sum(run_secs) / len(run_secs)
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
        if entry.best_secs is None or (mean, canonical) < (entry.best_secs, entry.best_record or ""):
            entry.best_secs, entry.best_record = mean, canonical
    return stats


def records_digest(db_dir: str | os.PathLike | None, workloads: Iterable[str]) -> str:
    """BLAKE2b of the records a compile of these workloads would apply: the best record of each.

    Changes when (and only when) a better record for one of the workloads is added, so it keys
    the compile cache on "the tuning records used" without importing TVM.
    """
    keys = sorted(set(workloads))
    digest = hashlib.blake2b(digest_size=32)
    digest.update(b"airflow-neo tuning records v1\n")
    stats: dict[str, WorkloadStats] = {}
    if db_dir is not None and keys and Path(db_dir).is_dir():
        with locked(db_dir, exclusive=False):
            stats = scan(db_dir, keys)
    for key in keys:
        best = stats.get(key)
        digest.update(f"{key}:{best.best_record if best and best.best_record else '-'}\n".encode("utf-8"))
    return digest.hexdigest()


def read_ledger(db_dir: str | os.PathLike) -> dict[str, int]:
    """Trials granted so far per workload hash (at least the trials recorded for it)."""
    try:
        data = json.loads((Path(db_dir) / LEDGER_FILE).read_text(encoding="utf-8"))
        granted = data.get("granted", {}) if isinstance(data, dict) else {}
        return {str(k): int(v) for k, v in granted.items()}
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return {}


@dataclass
class Snapshot:
    """A private copy of a shared database, taken at one moment."""

    directory: Path  #: the private copy (give this to TVM's JSONDatabase)
    shared: Path  #: the shared database it was copied from
    workload_lines: int  #: lines copied, so that merge() knows which are new
    record_lines: int
    granted: dict[str, int]  #: the ledger at that moment


def snapshot(shared_dir: str | os.PathLike, into: str | os.PathLike) -> Snapshot:
    """Copy the shared database into ``into`` (complete lines only), under a shared lock."""
    shared, target = Path(shared_dir), Path(into)
    target.mkdir(parents=True, exist_ok=True)
    with locked(shared, exclusive=False):
        workloads = _lines(shared / WORKLOAD_FILE)
        records = _lines(shared / RECORD_FILE)
        granted = read_ledger(shared)
    (target / WORKLOAD_FILE).write_text("".join(line + "\n" for line in workloads), encoding="utf-8")
    (target / RECORD_FILE).write_text("".join(line + "\n" for line in records), encoding="utf-8")
    return Snapshot(target, shared, len(workloads), len(records), granted)


def _append(path: Path, lines: list[str]) -> None:
    if not lines:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def merge(snap: Snapshot, granted: dict[str, int] | None = None) -> int:
    """Append the workloads and records that tuning added to ``snap.directory`` to the shared
    database (renumbering workload indices), and add ``granted`` to the ledger; returns the
    number of records merged. Runs under the exclusive lock."""
    private_workloads = _lines(snap.directory / WORKLOAD_FILE)
    new_records = _lines(snap.directory / RECORD_FILE)[snap.record_lines :]
    with locked(snap.shared, exclusive=True):
        shared_workloads = _lines(snap.shared / WORKLOAD_FILE)
        position = {line: index for index, line in enumerate(shared_workloads)}
        added_workloads: list[str] = []
        renumbered: list[str] = []
        for line in new_records:
            index = _record_index(line)
            if index is None or index >= len(private_workloads):
                continue
            workload = private_workloads[index]
            if workload not in position:
                position[workload] = len(shared_workloads) + len(added_workloads)
                added_workloads.append(workload)
            renumbered.append(_RECORD_PREFIX.sub(f"[{position[workload]},", line, count=1))
        # Workloads first: a reader that sees a record always sees its workload.
        _append(snap.shared / WORKLOAD_FILE, added_workloads)
        _append(snap.shared / RECORD_FILE, renumbered)
        if granted:
            ledger = read_ledger(snap.shared)
            for key, trials in granted.items():
                ledger[key] = ledger.get(key, 0) + int(trials)
            _write_json_atomic(snap.shared / LEDGER_FILE, {"version": 1, "granted": ledger})
    return len(renumbered)


def _write_json_atomic(path: Path, value) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
