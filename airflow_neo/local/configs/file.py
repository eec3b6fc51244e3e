"""``JsonConfigStore``: the tuning tier, one JSON file in a target's tuning database directory.

Invariants:

* The file (:data:`CONFIG_FILE`) sits next to the MetaSchedule records of the same target and
  core count (``tuning_db.target_database_dir``), so configs never cross targets.
* Writers merge under the database's exclusive lock and replace the file atomically; a record is
  replaced only by a faster one, and ``tried`` lists are united, so concurrent tuners lose nothing.
* A missing, unreadable or foreign-format file reads as empty; a malformed record is skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow_neo.local import tuning_db
from airflow_neo.local.files import atomic_write_json

from .base import ConfigRecord, ConfigStore

CONFIG_FILE = "airflow_neo_configs.json"
CONFIG_FORMAT = 1


class JsonConfigStore(ConfigStore):
    label = "tuned"

    def __init__(self, db_dir: str | os.PathLike):
        self.db_dir = Path(db_dir)
        self._records: dict[str, ConfigRecord] | None = None

    @property
    def path(self) -> Path:
        return self.db_dir / CONFIG_FILE

    def records(self) -> dict[str, ConfigRecord]:
        if self._records is None:
            self._records = read_records(self.path)
        return self._records

    def get(self, key: str) -> ConfigRecord | None:
        return self.records().get(key)

    def merge(self, records: list[ConfigRecord]) -> int:
        """Add ``records`` (keeping the faster of two for a workload); returns how many changed."""
        if not records:
            return 0
        self.db_dir.mkdir(parents=True, exist_ok=True)
        changed = 0
        with tuning_db.locked(self.db_dir, exclusive=True):
            current = read_records(self.path)
            for record in records:
                old = current.get(record.key)
                current[record.key] = merged = _merge(old, record)
                changed += old is None or merged.to_json() != old.to_json()
            atomic_write_json(self.path, {
                "format": CONFIG_FORMAT,
                "records": {key: current[key].to_json() for key in sorted(current)},
            })
        self._records = current
        return changed


def read_records(path: Path) -> dict[str, ConfigRecord]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, OSError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
        return {}
    return parse_records(data.get("records"))


def parse_records(raw) -> dict[str, ConfigRecord]:
    out: dict[str, ConfigRecord] = {}
    for key, value in (raw or {}).items() if isinstance(raw, dict) else ():
        try:
            out[str(key)] = ConfigRecord.from_json(str(key), value)
        except ValueError:
            continue
    return out


def _merge(old: ConfigRecord | None, new: ConfigRecord) -> ConfigRecord:
    if old is None:
        return new
    tried = list(old.tried) + [t for t in new.tried if t not in old.tried]
    faster = new if new.secs is not None and (old.secs is None or new.secs < old.secs) else old
    default = new.default_secs if new.default_secs is not None else old.default_secs
    if old.default_secs is not None and new.default_secs is not None:
        default = min(old.default_secs, new.default_secs)
    return ConfigRecord(old.key, faster.knobs, faster.secs, default, faster.name or old.name, tried)


def records_text(db_dir: str | os.PathLike | None, keys) -> str:
    """The records of ``keys`` as canonical text (the compile cache's key covers the knobs used)."""
    if db_dir is None:
        return ""
    records = read_records(Path(db_dir) / CONFIG_FILE)
    lines = [f"{key}:{json.dumps(records[key].knobs.to_dict(), sort_keys=True)}" for key in sorted(keys)
             if key in records and records[key].useful()]
    return "\n".join(lines)
