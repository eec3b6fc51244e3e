"""The config record and the store interface.

Invariants:

* A :class:`ConfigRecord` holds the knobs of the fastest candidate measured for one workload and
  the time of the rule's own plan measured the same way, so a record is used only where it was
  faster by more than :data:`MARGIN` (measurement noise is a few percent; the same margin as
  tuning records against default schedules); records whose default could not be measured apply.
* ``tried`` lists every knob set measured (as JSON objects), so a later run measures new ones.
* Stores answer ``lookup(key)`` with ``(Knobs, label)`` (the interface
  :func:`~airflow_neo.local.schedules.apply.apply_default_schedules` expects) or None.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from .knobs import Knobs

#: a config applies only when its time is below the default plan's by more than this share
MARGIN = 0.03


@dataclass
class ConfigRecord:
    key: str  #: the workload hash (MetaSchedule's)
    knobs: Knobs  #: the fastest candidate's knobs
    secs: float | None  #: its measured time
    default_secs: float | None  #: the rule's own plan, measured the same way
    name: str = ""  #: a kernel name it had (for people reading the file)
    tried: list[dict] = field(default_factory=list)  #: every knob set measured

    def useful(self) -> bool:
        """Is it worth applying: faster than the plan (or the plan could not be measured)?"""
        if self.secs is None:
            return False
        return self.default_secs is None or self.secs < self.default_secs * (1.0 - MARGIN)

    def to_json(self) -> dict:
        return {
            "knobs": self.knobs.to_dict(),
            "secs": self.secs,
            "default_secs": self.default_secs,
            "name": self.name,
            "tried": self.tried,
        }

    @classmethod
    def from_json(cls, key: str, data: dict) -> ConfigRecord:
        """A record from stored JSON; malformed data raises ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"config record {key}: a JSON object is required")
        secs, default = data.get("secs"), data.get("default_secs")
        for name, value in (("secs", secs), ("default_secs", default)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"config record {key}: {name}={value!r} is not a positive number")
        tried = data.get("tried") or []
        if not isinstance(tried, list):
            raise ValueError(f"config record {key}: tried must be a list")
        return cls(str(key), Knobs.from_dict(data.get("knobs") or {}), secs, default, str(data.get("name") or ""), tried)


class ConfigStore(ABC):
    """Where schedule configs are kept."""

    label = "config"

    @abstractmethod
    def get(self, key: str) -> ConfigRecord | None:
        """The record of workload ``key``, or None."""

    def lookup(self, key: str):
        """``(Knobs, label)`` for a useful record of ``key``, else None."""
        record = self.get(key)
        if record is None or not record.useful():
            return None
        return record.knobs, self.label
