"""``OrderedUnion``: several stores read as one; the first that has a useful record answers.

Invariant: order is precedence: the user's tuning tier before the shipped pack, so a kernel tuned
here never takes the pack's knobs.
"""

from __future__ import annotations

from .base import ConfigRecord, ConfigStore


class OrderedUnion(ConfigStore):
    def __init__(self, *stores: ConfigStore):
        self.stores = [store for store in stores if store is not None]

    def get(self, key: str) -> ConfigRecord | None:
        for store in self.stores:
            record = store.get(key)
            if record is not None and record.useful():
                return record
        return None

    def lookup(self, key: str):
        for store in self.stores:
            found = store.lookup(key)
            if found is not None:
                return found
        return None
