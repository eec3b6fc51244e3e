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
have appended workloads meanwhile. Readers skip a torn last line; a merge cuts it off before it
appends (so a line is never glued to a torn one).

Mirrors of a shared database (``[neo] tuning_database = s3://...``, see
:mod:`airflow_neo.local.shared`): a root holding :data:`REMOTE_MARKER` is a worker's local copy of
databases kept elsewhere. There, :func:`merge` also writes what it added as a self-contained
*batch* (workloads, records numbered within the batch, trials granted) into the database's
``outbox/``, to be uploaded; batches from other workers come back through :func:`apply_batch`.
Each database remembers the batches it holds (:data:`BATCHES_FILE`), so none is applied twice.

Pure: nothing here imports TVM or Airflow (the runner's cache lookup uses :func:`records_digest`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from airflow_neo.local.files import atomic_write_json, flocked

__all__ = [
    "LEDGER_FILE",
    "RECORD_FILE",
    "WORKLOAD_FILE",
    "BatchError",
    "Snapshot",
    "WorkloadStats",
    "applied_batches",
    "apply_batch",
    "is_mirror",
    "locked",
    "merge",
    "outbox",
    "parse_batch",
    "read_ledger",
    "records_digest",
    "scan",
    "snapshot",
    "target_database_dir",
    "valid_batch_id",
]

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
LEDGER_FILE = "airflow_neo_ledger.json"
LOCK_FILE = ".lock"
#: at the root of a mirror of a shared database: merges then also write outbox batches
REMOTE_MARKER = "airflow_neo_remote.json"
OUTBOX_DIR = "outbox"
#: ids of the batches a mirrored database holds, one per line
BATCHES_FILE = "airflow_neo_batches.txt"
BATCH_FORMAT = 1
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
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
    with flocked(path / LOCK_FILE, exclusive=exclusive):
        yield path


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


def records_digest(db_dir: str | os.PathLike | None, workloads: Iterable[str], *, configs_dir=None) -> str:
    """BLAKE2b of the records a compile of these workloads would apply: the best record of each.

    Changes when (and only when) a better record for one of the workloads is added, or a schedule
    config for one (``configs.JsonConfigStore``) changes, so it keys the compile cache on "the
    tuning records used" without importing TVM. ``configs_dir``: where the configs are when
    ``db_dir`` is a private snapshot of the database.
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
    configs = _configs_text(configs_dir if configs_dir is not None else db_dir, keys)
    if configs:  # the schedule configs tuned for these workloads (absent: the digest is as before)
        digest.update(f"configs\n{configs}\n".encode("utf-8"))
    return digest.hexdigest()


def _configs_text(db_dir, keys) -> str:
    if db_dir is None or not keys:
        return ""
    from airflow_neo.local.configs.file import records_text

    return records_text(db_dir, keys)


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


def _end_torn_line(path: Path) -> None:
    """Make ``path`` end with a newline before an append: a torn last line (a writer that died
    mid-write) is cut off, an unterminated whole one is ended, so the append never glues a line to it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:])
    except ValueError:
        os.truncate(path, cut)
        return
    with open(path, "ab") as handle:
        handle.write(b"\n")


def _append(path: Path, lines: list[str]) -> None:
    if not lines:
        return
    _end_torn_line(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def merge(snap: Snapshot, granted: dict[str, int] | None = None, configs: dict[str, dict] | None = None) -> int:
    """Append the workloads and records that tuning added to ``snap.directory`` to the shared
    database (renumbering workload indices), and add ``granted`` to the ledger; returns the
    number of records merged. Runs under the exclusive lock. In a mirror of a shared database,
    what was added also goes to the outbox as a batch, with ``configs`` (the schedule configs
    this job stored in the database, ``{workload hash: record JSON}``: they travel with the records,
    so another worker builds, and keys its cache, as this one does)."""
    private_workloads = _lines(snap.directory / WORKLOAD_FILE)
    pairs = []
    for line in _lines(snap.directory / RECORD_FILE)[snap.record_lines :]:
        index = _record_index(line)
        if index is not None and index < len(private_workloads):
            pairs.append((private_workloads[index], line))
    granted = {key: int(trials) for key, trials in (granted or {}).items() if int(trials)}
    with locked(snap.shared, exclusive=True):
        merged = _append_locked(snap.shared, pairs, granted)
        if (pairs or granted or configs) and is_mirror(snap.shared.parent):
            _write_outbox_locked(snap.shared, pairs, granted, configs or {})
    return merged


def _renumber(pairs: list[tuple[str, str]], workloads: list[str]) -> tuple[list[str], list[str]]:
    """``(workloads to add, records)``: each record renumbered to its workload's line in
    ``workloads`` followed by the added ones."""
    position = {line: index for index, line in enumerate(workloads)}
    added: list[str] = []
    renumbered: list[str] = []
    for workload, record in pairs:
        if workload not in position:
            position[workload] = len(workloads) + len(added)
            added.append(workload)
        renumbered.append(_RECORD_PREFIX.sub(f"[{position[workload]},", record, count=1))
    return added, renumbered


def _append_locked(shared: Path, pairs: list[tuple[str, str]], granted: dict[str, int]) -> int:
    """Append ``(workload line, record line)`` pairs, each record renumbered to its workload's
    line in ``shared``, and add ``granted`` to the ledger. The caller holds the exclusive lock."""
    added_workloads, renumbered = _renumber(pairs, _lines(shared / WORKLOAD_FILE))
    # Workloads first: a reader that sees a record always sees its workload.
    _append(shared / WORKLOAD_FILE, added_workloads)
    _append(shared / RECORD_FILE, renumbered)
    if granted:
        ledger = read_ledger(shared)
        for key, trials in granted.items():
            ledger[key] = ledger.get(key, 0) + int(trials)
        atomic_write_json(shared / LEDGER_FILE, {"version": 1, "granted": ledger})
    return len(renumbered)


# ----------------------------------------------------------------------------- mirrors and batches


class BatchError(ValueError):
    """A batch that is not one this module wrote (bad JSON, format or record numbering)."""


def is_mirror(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a worker's local mirror of a shared database (it holds the marker)."""
    return (Path(root) / REMOTE_MARKER).is_file()


def _new_batch_id() -> str:
    import datetime as _dt
    import uuid

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:16]}"


def valid_batch_id(batch_id: str) -> bool:
    return bool(_BATCH_ID.match(batch_id)) and batch_id not in (".", "..")


def _batch(pairs: list[tuple[str, str]], granted: dict[str, int], configs: dict[str, dict] | None = None) -> dict:
    workloads, records = _renumber(pairs, [])
    batch = {"format": BATCH_FORMAT, "workloads": workloads, "records": records, "granted": granted}
    if configs:
        batch["configs"] = configs
    return batch


def _write_outbox_locked(shared: Path, pairs: list[tuple[str, str]], granted: dict[str, int],
                         configs: dict[str, dict] | None = None) -> str:
    batch_id = _new_batch_id()
    box = shared / OUTBOX_DIR
    box.mkdir(exist_ok=True)
    atomic_write_json(box / f"{batch_id}.json", _batch(pairs, granted, configs))
    _add_applied_locked(shared, batch_id)  # its lines are already here
    return batch_id


def outbox(db_dir: str | os.PathLike) -> list[Path]:
    """The batches of ``db_dir`` still to be uploaded, oldest first."""
    try:
        return sorted(path for path in (Path(db_dir) / OUTBOX_DIR).iterdir()
                      if path.suffix == ".json" and not path.name.startswith("."))
    except FileNotFoundError:
        return []


def applied_batches(db_dir: str | os.PathLike) -> set[str]:
    """Ids of the batches whose lines ``db_dir`` holds."""
    try:
        text = (Path(db_dir) / BATCHES_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


def _add_applied_locked(db_dir: Path, batch_id: str) -> None:
    _append(db_dir / BATCHES_FILE, [batch_id])


def parse_batch(data: bytes | str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """``(pairs, granted)`` of a batch; :class:`BatchError` when it is malformed."""
    try:
        batch = json.loads(data)
    except ValueError as err:
        raise BatchError(f"not JSON: {err}") from None
    if not isinstance(batch, dict) or batch.get("format") != BATCH_FORMAT:
        raise BatchError(f"not a format-{BATCH_FORMAT} tuning batch")
    workloads, records, granted = batch.get("workloads"), batch.get("records"), batch.get("granted") or {}
    if not isinstance(workloads, list) or not isinstance(records, list) or not isinstance(granted, dict):
        raise BatchError("workloads and records must be lists, granted an object")
    pairs = []
    for record in records:
        index = _record_index(record) if isinstance(record, str) else None
        if index is None or index >= len(workloads) or not isinstance(workloads[index], str):
            raise BatchError(f"record {str(record)[:60]!r} names no workload of the batch")
        for line in (workloads[index], record):
            try:
                json.loads(line)
            except ValueError:
                raise BatchError(f"line {line[:60]!r} is not JSON") from None
            if "\n" in line:
                raise BatchError("a line holds a line break")
        pairs.append((workloads[index], record))
    try:
        granted = {str(key): int(value) for key, value in granted.items()}
    except (TypeError, ValueError):
        raise BatchError("granted must map workload hashes to whole numbers") from None
    return pairs, granted


def _config_store(db_dir):
    from airflow_neo.local.configs import JsonConfigStore

    return JsonConfigStore(db_dir)


def apply_batch(db_dir: str | os.PathLike, batch_id: str, data: bytes | str) -> int | None:
    """Add another worker's batch to ``db_dir``; returns the records added, or None when the
    database holds the batch already. :class:`BatchError` (nothing changed) when it is malformed."""
    if not valid_batch_id(batch_id):
        raise BatchError(f"batch id {batch_id!r} is not one this module writes")
    pairs, granted = parse_batch(data)
    configs = batch_configs(data)
    with locked(db_dir, exclusive=True) as path:
        if batch_id in applied_batches(path):
            return None
        added = _append_locked(path, pairs, granted)
        _add_applied_locked(path, batch_id)
    if configs:  # after the lock: the config store takes it itself (merging is idempotent)
        _config_store(db_dir).merge(list(configs.values()))
    return added


def batch_configs(data: bytes | str) -> dict:
    """The schedule configs a batch carries (``{workload hash: ConfigRecord}``); malformed ones are skipped."""
    from airflow_neo.local.configs.file import parse_records

    try:
        batch = json.loads(data)
    except ValueError:
        return {}
    return parse_records(batch.get("configs")) if isinstance(batch, dict) else {}

