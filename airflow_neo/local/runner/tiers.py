"""The compile cache as the runner sees it: tiers composed in order, as MetaSchedule composes databases.

A :class:`CacheTier` answers two calls, like a MetaSchedule ``Database``: :meth:`~CacheTier.lookup`
(its query) and :meth:`~CacheTier.commit` (its commit: hold the entry that the first tier has).
:class:`OrderedUnion` asks its tiers in order, as TVM's ``OrderedUnionDatabase`` does, and returns
the first hit; the others are then offered the entry, so a hit in one tier fills the rest. The
first tier is this machine's :class:`~airflow_neo.local.cache.CompileCache` (:class:`LocalTier`);
a shared ``s3://`` cache (:class:`SharedTier`) is a second one. Adding a tier is adding an object,
not a branch.

:class:`JobCache` is what a job uses: the job's key (:func:`~airflow_neo.local.cache.base_key`),
a lookup and a store that log what they do and never fail a job. The key holds the digest of the
job's sample inputs (``verify_inputs``), so the lookup first fetches them (through the job's
:class:`~.transfer.Transfer` client), next to the archive where the compile child reads them, even
with the cache off; a fetch that fails fails the job (a ClientError naming ``verify_inputs``).

Invariants:

* a lookup that raises is a miss ("compile cache lookup failed (compiling instead)"); sharing a
  hit with the other tiers that fails is logged and the hit stands;
* a store that raises is logged ("could not store the artifact in the compile cache"); the job's
  artifact is published all the same;
* a shared tier's S3 client is made only when that tier is first used;
* a hit's metadata says where it came from (``metadata["cache"]``: hit, key, tier ``local`` or
  ``shared``) and names the tuning database as it is on this machine.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.local.cache import CHECKS, CacheHit, CompileCache, base_key, checks_of, compiler_id
from airflow_neo.local.files import blake2b_file
from airflow_neo.local.runner.transfer import Transfer, verify_inputs_copy
from airflow_neo.local.settings import CompileSettings

__all__ = ["CacheTier", "JobCache", "LocalTier", "OrderedUnion", "SharedTier"]


class CacheTier(ABC):
    """One tier of the compile cache."""

    #: ``metadata["cache"]["tier"]`` of a hit here: "local" or "shared"
    kind: str = ""
    #: how the job's log names this tier
    label: str = ""

    @abstractmethod
    def lookup(self, base: str, copy_to: Path) -> CacheHit | None:
        """The entry for ``base`` (its artifact copied to ``copy_to``), or None."""

    @abstractmethod
    def commit(self, base: str, key: str) -> bool:
        """Hold the first tier's entry ``key`` under ``base`` (nothing to do if held already);
        False when the first tier does not hold it (evicted at once, over its size cap)."""


class LocalTier(CacheTier):
    """This machine's cache directory: the tier every entry is first stored in."""

    kind = label = "local"

    def __init__(self, cache: CompileCache):
        self.cache = cache

    def lookup(self, base: str, copy_to: Path) -> CacheHit | None:
        return self.cache.lookup(base, copy_to)

    def commit(self, base: str, key: str) -> bool:
        return self.cache.read_entry(key) is not None

    def store(self, base: str, artifact: Path, metadata: dict) -> str | None:
        return self.cache.store(base, artifact, metadata)


class SharedTier(CacheTier):
    """An ``s3://`` cache that workers share; entries pass through the local tier."""

    kind = "shared"

    def __init__(self, url: str, s3_client: Callable[[], Any], local: CompileCache, log: Callable[[str], Any]):
        self.label = url
        self._url, self._s3_client, self._local, self._log = url, s3_client, local, log
        self._shared = None

    def _remote(self):
        if self._shared is None:
            from airflow_neo.local.shared import SharedCompileCache

            self._shared = SharedCompileCache(self._url, self._s3_client(), log=self._log)
        return self._shared

    def lookup(self, base: str, copy_to: Path) -> CacheHit | None:
        return self._remote().fetch(base, self._local, copy_to)  # kept in the local tier too

    def commit(self, base: str, key: str) -> bool:
        return self._remote().publish(base, key, self._local)


class OrderedUnion:
    """Tiers asked in order; the first is the one entries are stored in (see the module docstring)."""

    def __init__(self, first: LocalTier, *others: CacheTier, log: logging.Logger):
        self.first = first
        self.tiers: tuple[CacheTier, ...] = (first, *others)
        self.log = log

    def lookup(self, base: str, copy_to: Path) -> tuple[CacheHit, CacheTier] | tuple[None, None]:
        for tier in self.tiers:
            hit = tier.lookup(base, copy_to)
            if hit is not None:
                self._fill(base, hit.key, tier)
                return hit, tier
        return None, None

    def _fill(self, base: str, key: str, source: CacheTier) -> None:
        """An entry only some tiers hold (stored while S3 was out of reach) goes to the others now."""
        for tier in self.tiers:
            if tier is source:
                continue
            try:
                tier.commit(base, key)
            except Exception as err:
                self.log.warning("could not share the cached artifact: %s: %s", type(err).__name__, err)

    def store(self, base: str, artifact: Path, metadata: dict) -> str | None:
        key = self.first.store(base, artifact, metadata)
        if not key:
            return None
        self.log.info("stored in the compile cache: %s...", key[:16])
        for tier in self.tiers[1:]:
            if not tier.commit(base, key):
                self.log.info("compile cache: %s... was evicted at once; not shared", key[:16])
        return key


class JobCache:
    """The compile cache of one job: key, lookup, store (see the module docstring).

    :param settings: the job's compile settings, resolved.
    :param compile_fn: the compile function (or its name), part of the key.
    :param s3_client: returns the job's S3 client (called only if a shared tier is used).
    :param log: the job's logger.
    :param timings: the job's phase timings (``cache`` is added on a hit).
    """

    def __init__(self, settings: CompileSettings, compile_fn: Any, s3_client: Callable[[], Any],
                 log: logging.Logger, timings: dict[str, float]):
        self.settings, self.compile_fn, self.s3_client, self.log, self.timings = (
            settings, compile_fn, s3_client, log, timings
        )

    @property
    def enabled(self) -> bool:
        return self.settings.cache_enabled

    def _union(self) -> OrderedUnion:
        local = CompileCache(self.settings.cache_root, self.settings.cache_max_bytes, log=self.log.info,
                             tuning_root=self.settings.tuning_root)
        others: list[CacheTier] = []
        if self.settings.cache_remote:
            others.append(SharedTier(self.settings.cache_remote, self.s3_client, local, self.log.info))
        return OrderedUnion(LocalTier(local), *others, log=self.log)

    def key(self, request: ValidatedRequest, archive: Path) -> str:
        inputs = verify_inputs_copy(archive) if self._uses_verify_inputs else None
        return base_key(
            blake2b_file(archive),
            request,
            compiler=compiler_id(self.compile_fn),
            tuning_trials=self.settings.tuning_trials,
            tuning_database=self.settings.tuning_database,
            tuning_pack=self.settings.tuning_pack,
            sample_inputs=blake2b_file(inputs) if inputs is not None else None,
        )

    @property
    def _uses_verify_inputs(self) -> bool:
        return bool(self.settings.verify_inputs) and self.settings.verify != "off"

    def fetch_verify_inputs(self, archive: Path) -> None:
        """The job's ``verify_inputs`` fetched next to ``archive`` (nothing without them, or with
        the verification off); raises Failed (a ClientError) when they cannot be fetched."""
        if not self.settings.verify_inputs:
            return
        if self.settings.verify == "off":
            self.log.info("verify_inputs %s not fetched: the verification is off", self.settings.verify_inputs)
            return
        started = time.monotonic()
        Transfer(self.log, self.s3_client).fetch_verify_inputs(self.settings.verify_inputs, archive)
        self.timings["fetch_inputs"] = time.monotonic() - started

    def lookup(self, request: ValidatedRequest, archive: Path, artifact: Path) -> tuple[dict | None, str | None]:
        """``(metadata, base key)`` of a cached artifact copied to ``artifact``, or ``(None, base key)``;
        the job's ``verify_inputs`` are fetched first (:meth:`fetch_verify_inputs`)."""
        self.fetch_verify_inputs(archive)
        if not self.enabled:
            return None, None
        started = time.monotonic()
        base = None
        try:
            union = self._union()
            base = self.key(request, archive)
            hit, tier = union.lookup(base, artifact)
        except Exception as err:  # the cache must never fail a job
            self.log.warning("compile cache lookup failed (compiling instead): %s: %s", type(err).__name__, err)
            return None, base
        elapsed = time.monotonic() - started
        if hit is None:
            self.log.info("compile cache miss (%s...; %.2f s); compiling", base[:16], elapsed)
            return None, base
        lacking = self._checks_lacking(hit.metadata)
        if lacking:
            self.log.info("compile cache hit (%s...) lacks the %s this job asks for (it was compiled without); "
                          "compiling", hit.key[:16], " and the ".join(lacking))
            return None, base
        self.timings["cache"] = elapsed
        self.log.info(
            "compile cache hit (%s): %s... (BLAKE2b %s..., compiled %s) in %.2f s; not compiling",
            tier.label, hit.key[:16], hit.digest[:16], hit.metadata.get("compiled_at", "earlier"), elapsed,
        )
        metadata = dict(hit.metadata)
        metadata["cache"] = {"hit": True, "key": hit.key, "tier": tier.kind}
        tuning = metadata.get("tuning")
        if isinstance(tuning, dict) and tuning.get("database"):  # where the records are on this machine
            metadata["tuning"] = {**tuning, "database": str(union.first.cache.database_dir(tuning["database"]))}
        return metadata, base

    def _checks_lacking(self, metadata: dict) -> list[str]:
        """The checks this job's settings ask for that the cached artifact's metadata lacks: a hit
        keeps the first compile's metadata, so an artifact compiled with ``profile_seconds`` 0 or
        ``verify`` off would answer a job that needs its figures (``max_slowdown``) without them."""
        wanted = {"verification": self.settings.verify != "off", "profile": self.settings.profile_seconds > 0}
        present = checks_of(metadata)
        return [name for name in CHECKS if wanted[name] and name not in present]

    def store(self, base: str | None, artifact: Path, metadata: Any) -> None:
        if base is None or not artifact.is_file():
            return
        tuning = metadata.get("tuning") if isinstance(metadata, dict) else None
        if isinstance(tuning, dict) and tuning.get("skipped_transient"):
            # tuning could not measure on the RPC devices this time (tracker down, no free device):
            # a later identical job must tune, not hit this artifact
            self.log.info("not cached: tuning was skipped (%s)", tuning["skipped"])
            return
        verification = metadata.get("verification") if isinstance(metadata, dict) else None
        if isinstance(verification, dict) and verification.get("passed") is False:
            # an artifact that failed verification (published under "report") must never be a cache
            # hit for a later job, whose mode may be "gate"
            self.log.info("not cached: the artifact failed verification")
            return
        try:
            self._union().store(base, artifact, metadata if isinstance(metadata, dict) else {})
        except Exception as err:  # the cache must never fail a job
            self.log.warning("could not store the artifact in the compile cache: %s: %s", type(err).__name__, err)
