"""How many compiles one host runs at once, and the memory cap of each: the defaults derived from the host.

* ``slots`` (``[neo] local_max_concurrent_compiles``; 0 or empty: derived) defaults to
  ``min(cpus, memory // cap)``, at least 1, where ``cpus`` is the number of CPUs this process may
  run on (its affinity), ``memory`` the host's physical memory (or the cgroup's ``memory.max``
  when lower) and ``cap`` the per-compile memory cap (8 GiB when it too is left at its default);
* ``cap`` (``[neo] local_memory_limit_mb``; empty: derived) defaults to
  ``min(8 GiB, memory // slots)``, so ``slots x cap`` fits in the host's memory; an explicit
  setting is kept as given (0: no cap).

Pure: nothing here imports Airflow, TVM or the store (the queue itself is ``store/slots.py``).
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_MEMORY_CAP_BYTES", "HostResources", "resolve_slots_and_cap"]

DEFAULT_MEMORY_CAP_BYTES = 8192 * 1024 * 1024
_MIB = 1024 * 1024


class HostResources:
    """The CPUs and memory this host gives its compiles."""

    def __init__(self, cpus: int | None = None, memory_bytes: int | None = None):
        self.cpus = cpus if cpus is not None else host_cpus()
        self.memory_bytes = memory_bytes if memory_bytes is not None else host_memory_bytes()


def host_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def host_memory_bytes() -> int | None:
    """Physical memory, or the cgroup (v2 or v1) memory limit when lower; None when unknown."""
    try:
        memory: int | None = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        memory = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit() and (memory is None or int(text) < memory):
            memory = int(text)
    return memory


def resolve_slots_and_cap(
    slots: int | None, cap_bytes: int | None, *, cap_given: bool, host: HostResources | None = None
) -> tuple[int, int | None]:
    """``(slots, memory cap in bytes or None)`` from the settings, filling the defaults in (module docstring).

    :param slots: the configured slots (None or 0: derived).
    :param cap_bytes: the configured cap (None: no cap), used only when ``cap_given``.
    :param cap_given: whether the cap was set explicitly (else it is derived).
    """
    if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or slots < 0):
        raise ValueError(f"local_max_concurrent_compiles must be a whole number >= 0 (0: derived from the host); got {slots!r}")
    host = host or HostResources()
    memory = host.memory_bytes
    if not slots:
        per_compile = cap_bytes if cap_given else DEFAULT_MEMORY_CAP_BYTES
        by_memory = memory // per_compile if memory and per_compile else host.cpus
        slots = max(1, min(host.cpus, by_memory))
    if cap_given:
        return slots, cap_bytes
    cap = DEFAULT_MEMORY_CAP_BYTES
    if memory:
        cap = min(cap, max(_MIB, memory // slots // _MIB * _MIB))
    return slots, cap
