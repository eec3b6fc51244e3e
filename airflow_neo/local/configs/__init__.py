"""Schedule configs: the knobs of a kernel's fastest measured candidate, per workload and CPU.

Like MetaSchedule's database package: one interface (:class:`~.base.ConfigStore`), one small
module per storage, composition instead of flags:

* :mod:`.base`: :class:`ConfigRecord` (typed) and the :class:`ConfigStore` interface;
* :mod:`.file`: :class:`JsonConfigStore`, the tuning tier in a target's tuning database directory
  (written by tuning, read by every compile of that target);
* :mod:`.pack`: :class:`PackStore`, the read-only tuning pack shipped in the package, keyed by CPU
  family and TVM version (MetaSchedule's database is not target-aware; this one is);
* :mod:`.union`: :class:`OrderedUnion`: the first store that has a workload answers.

Pure: nothing here imports TVM or Airflow (the compile child passes plain values in).
"""

from .base import ConfigRecord, ConfigStore
from .file import CONFIG_FILE, JsonConfigStore
from .pack import PackStore, cpu_family, pack_digest
from .union import OrderedUnion

__all__ = [
    "CONFIG_FILE",
    "ConfigRecord",
    "ConfigStore",
    "JsonConfigStore",
    "OrderedUnion",
    "PackStore",
    "cpu_family",
    "pack_digest",
]
