"""Shared polling for every compilation-job trigger in one triggerer (one asyncio loop).

A triggerer may hold hundreds of deferred compilation jobs. Polling each one on its own costs one
describe (an HTTPS call, or a database query) per job per interval; this module shares the work
between all the triggers of one event loop that use the same backend and connection:

* **Aligned ticks.** A trigger checks its job right away, then on the loop-clock grid of its poll
  interval (``k * poll_interval``), so all triggers with the same interval check at the same
  instants and their work can be batched. A job's end is seen at the first tick after it, never
  more than one interval later.
* **Local backend:** the checks due at one tick become *one* batch read,
  :meth:`~airflow_neo.hooks.base.CompilationJobHook.adescribe_compilation_jobs` (one job-store
  query, ``SELECT ... WHERE name IN (...)``, in a worker thread), whatever the number of triggers.
* **SageMaker backend:** one hook ``async_session`` (one shared aiobotocore client); at each tick one
  ``ListCompilationJobs(LastModifiedTimeAfter=...)`` sweep (100 jobs a page) tells which watched
  jobs changed status, and only those are described. A job that the sweep shows unchanged is
  still described directly now and then as a safety net, every 1, 2, 4, ... ticks up to
  :data:`MAX_DESCRIBE_GAP` ticks: that is the *back-off* for long-running jobs, while the sweep
  keeps a completion event within one interval. When the sweep is not allowed (no
  ``sagemaker:ListCompilationJobs`` permission) or fails, every tick describes, as without sharing.
* **Jobs that do not exist yet.** A watch made with ``allow_missing=True`` (a trigger with
  ``fail_if_not_found=False``) gets ``None`` from :meth:`_Board.refresh` while its job does not
  exist, instead of :class:`~airflow_neo.core.exceptions.CompilationJobNotFound`, and stays on the
  board: locally it is part of every tick's query; on SageMaker the sweep shows the job once it is
  created (it is then described at once), with the same backed-off safety describes meanwhile.

Boards reach their backend only through the hook contract
(:class:`~airflow_neo.hooks.base.CompilationJobHook`). Nothing here changes what a trigger serializes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
import weakref
from typing import TYPE_CHECKING

from airflow_neo.core.backends import Backend
from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.core.retry import is_transient

if TYPE_CHECKING:
    from airflow_neo.hooks.base import CompilationJobHook
    from airflow_neo.hooks.params import NeoConnectionParams

log = logging.getLogger(__name__)

MAX_DESCRIBE_GAP = 10  # ticks between safety describes of an unchanged SageMaker job
SWEEP_OVERLAP_SECONDS = 60.0  # LastModifiedTimeAfter looks back this far beyond the previous sweep
DESCRIBE_CONCURRENCY = 16
IDLE_CLOSE_SECONDS = 5.0

_BOARDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Board]] = weakref.WeakKeyDictionary()


class Watch:
    """One trigger's view of its job on a board."""

    __slots__ = (
        "name",
        "interval",
        "allow_missing",
        "started_wall",
        "payload",
        "status",
        "missing",
        "checked",
        "gap",
        "ticks_since_describe",
        "force",
    )

    def __init__(self, name: str, interval: float, allow_missing: bool = False):
        self.name = name
        self.interval = max(float(interval), 0.001)
        self.allow_missing = allow_missing  # a missing job is "not yet", not an error
        self.started_wall = time.time()
        self.payload: dict | None = None
        self.status: str | None = None
        self.missing = False  # the last check found no such job (only with allow_missing)
        self.checked = False  # a check has answered (a payload, or "missing")
        self.gap = 1
        self.ticks_since_describe = 0
        self.force = True  # the first check (and the one after an error) describes directly


def board_for(params: NeoConnectionParams) -> _Board:
    """The board of this event loop for these connection parameters."""
    loop = asyncio.get_running_loop()
    boards = _BOARDS.setdefault(loop, {})
    board = boards.get(params.key)
    if board is None or board.closed:
        board = (_LocalBoard if params.backend is Backend.LOCAL else _SageMakerBoard)(params)
        boards[params.key] = board
    return board


async def next_tick(watch: Watch) -> float:
    """Sleep until the next point of the watch's interval grid (loop clock); returns that point."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    deadline = (math.floor(now / watch.interval) + 1) * watch.interval
    await asyncio.sleep(deadline - now)
    return deadline


class _Board:
    def __init__(self, params: NeoConnectionParams):
        self.params = params
        self.watches: set[Watch] = set()
        self.closed = False
        self._idle_task: asyncio.Task | None = None
        self._hook: CompilationJobHook | None = None
        self._hook_lock = asyncio.Lock()
        self.stats = {"describes": 0, "batches": 0, "sweeps": 0, "sweep_pages": 0}

    async def _get_hook(self) -> CompilationJobHook:
        """The board's one hook, made in a worker thread (making it may read the configuration)."""
        from airflow_neo.hooks.factory import get_neo_hook

        async with self._hook_lock:
            if self._hook is None:
                self._hook = await asyncio.to_thread(get_neo_hook, self.params)
        return self._hook

    def watch(self, name: str, interval: float, allow_missing: bool = False) -> Watch:
        """Start watching job ``name``, checked every ``interval`` seconds.

        :param name: the compilation job.
        :param interval: the poll interval of the trigger, in seconds.
        :param allow_missing: :meth:`refresh` returns ``None`` while the job does not exist
            rather than raising :class:`~airflow_neo.core.exceptions.CompilationJobNotFound`.
        """
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        watch = Watch(name, interval, allow_missing)
        self.watches.add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Forget ``watch`` (idempotent); an idle board closes its connection after a while."""
        if watch not in self.watches:
            return
        self.watches.discard(watch)
        if not self.watches and not self.closed and self._needs_closing():
            try:
                self._idle_task = asyncio.get_running_loop().create_task(self._close_when_idle())
            except RuntimeError:  # no running loop (interpreter shutdown)
                pass

    def _needs_closing(self) -> bool:
        return False

    async def _close_when_idle(self) -> None:
        try:
            await asyncio.sleep(IDLE_CLOSE_SECONDS)
        finally:
            if not self.watches:
                self.closed = True
                await self.aclose()

    async def aclose(self) -> None:  # pragma: no cover - overridden where there is something to close
        return None

    async def refresh(self, watch: Watch, tick: float | None) -> dict | None:
        """The job's describe payload at this tick (``tick`` None: the first check, right away).

        A job that does not exist raises
        :class:`~airflow_neo.core.exceptions.CompilationJobNotFound`, or returns ``None`` when the
        watch has ``allow_missing``.
        """
        raise NotImplementedError

    @staticmethod
    def _record(watch: Watch, payload: dict) -> bool:
        status = payload.get("CompilationJobStatus")
        changed = status != watch.status
        watch.payload, watch.status = payload, status
        watch.missing = False
        watch.checked = True
        watch.force = False
        watch.ticks_since_describe = 0
        return changed

    @staticmethod
    def _record_missing(watch: Watch) -> None:
        """The job does not exist (yet): keep watching it; any status seen later is a change."""
        watch.payload, watch.status = None, None
        watch.missing = True
        watch.checked = True
        watch.force = False
        watch.ticks_since_describe = 0


class _LocalBoard(_Board):
    """Local backend: all checks due together are one batch read (one job-store query)."""

    def __init__(self, params: NeoConnectionParams):
        super().__init__(params)
        self._pending: dict[str, list[asyncio.Future]] = {}
        self._flush_scheduled = False

    async def refresh(self, watch: Watch, tick: float | None) -> dict | None:
        future = asyncio.get_running_loop().create_future()
        self._pending.setdefault(watch.name, []).append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().create_task(self._flush())
        try:
            payload = await future
        except BaseException:
            watch.force = True
            raise
        if payload is None:  # no such job in the store
            if watch.allow_missing:
                self._record_missing(watch)
                return None
            watch.force = True
            raise CompilationJobNotFound(f"Could not find compilation job '{watch.name}'.")
        self._record(watch, payload)
        return payload

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every trigger woken by this tick add its name
        pending, self._pending = self._pending, {}
        self._flush_scheduled = False
        try:
            hook = await self._get_hook()
            payloads = await hook.adescribe_compilation_jobs(list(pending))
        except BaseException as err:
            for futures in pending.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(err)
            if not isinstance(err, Exception):
                raise
            return
        self.stats["batches"] += 1
        self.stats["describes"] += len(pending)
        for name, futures in pending.items():
            payload = payloads.get(name)  # None: no such job (each watch decides what that means)
            for future in futures:
                if not future.done():
                    future.set_result(payload)


class _SageMakerBoard(_Board):
    """SageMaker: one hook session, one ListCompilationJobs sweep per tick, describes only where needed."""

    def __init__(self, params: NeoConnectionParams):
        super().__init__(params)
        self._session: CompilationJobHook | None = None
        self._session_cm = None
        self._session_lock = asyncio.Lock()
        self._semaphore = asyncio.Semaphore(DESCRIBE_CONCURRENCY)
        self.feed_ok = True
        self._sweep_task: asyncio.Task | None = None
        self._sweep_tick: float | None = None
        self._last_sweep_wall: float | None = None
        self._urgent: set[str] = set()  # jobs being described because they changed (or first checks)
        self._urgent_done = asyncio.Event()
        self._urgent_done.set()

    async def _get_session(self) -> CompilationJobHook:
        """The hook inside its ``async_session`` (one client for all the board's calls), opened once."""
        async with self._session_lock:
            if self._session is None:
                hook = await self._get_hook()
                cm = hook.async_session()
                self._session = await cm.__aenter__()
                self._session_cm = cm
        return self._session

    def _needs_closing(self) -> bool:
        return self._session_cm is not None

    async def aclose(self) -> None:
        cm, self._session_cm, self._session = self._session_cm, None, None
        if cm is not None:
            try:
                await cm.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    async def _describe(self, name: str, urgent: bool = True) -> dict:
        """DescribeCompilationJob in the shared session. A safety describe (``urgent=False``) waits
        until the describes of the jobs the last sweep saw change are done, so that a burst of
        completions is reported first."""
        if urgent:
            self._urgent.add(name)
            self._urgent_done.clear()
        else:
            await asyncio.sleep(0)  # the watches woken by the same sweep register as urgent first
            await self._urgent_done.wait()
        try:
            hook = await self._get_session()
            async with self._semaphore:
                self.stats["describes"] += 1
                return await hook.adescribe_compilation_job(name)
        finally:
            if urgent:
                self._done_urgent(name)

    def _done_urgent(self, name: str) -> None:
        self._urgent.discard(name)
        if not self._urgent:
            self._urgent_done.set()

    async def _sweep(self, tick: float) -> dict[str, str]:
        """Statuses of the jobs modified lately: one sweep per tick, shared by all watches.

        A sweep still running from an earlier tick is awaited rather than started again, so a
        slow ListCompilationJobs never piles up.
        """
        task = self._sweep_task
        stale = self._sweep_tick is None or self._sweep_tick < tick - 1e-6
        if task is None or (stale and task.done()):
            task = asyncio.get_running_loop().create_task(self._list_changed())
            self._sweep_task, self._sweep_tick = task, tick
        return await asyncio.shield(task)

    async def _list_changed(self) -> dict[str, str]:
        hook = await self._get_session()
        started = time.time()
        longest = max((w.interval for w in self.watches), default=0.0)
        overlap = max(SWEEP_OVERLAP_SECONDS, 2 * longest)
        origin = self._last_sweep_wall
        if origin is None:
            origin = min((w.started_wall for w in self.watches), default=started)
        since = dt.datetime.fromtimestamp(origin - overlap, tz=dt.timezone.utc)
        statuses: dict[str, str] = {}
        self.stats["sweeps"] += 1
        async for page in hook.alist_compilation_jobs_pages(LastModifiedTimeAfter=since, MaxResults=100):
            self.stats["sweep_pages"] += 1
            for summary in page.get("CompilationJobSummaries", []):
                statuses[summary["CompilationJobName"]] = summary["CompilationJobStatus"]
        self._last_sweep_wall = started
        return statuses

    async def refresh(self, watch: Watch, tick: float | None) -> dict | None:
        watch.ticks_since_describe += 1
        urgent = watch.force or tick is None or not self.feed_ok
        describe = urgent
        if not urgent:
            try:
                statuses = await self._sweep(tick)
            except Exception as err:  # noqa: BLE001 - the sweep is an optimisation: fall back to describe
                describe = urgent = True
                if not is_transient(err):
                    self.feed_ok = False
                    log.warning(
                        "ListCompilationJobs is not usable (%s); deferred compilation jobs are described at every "
                        "poll instead",
                        err,
                    )
            else:
                seen = statuses.get(watch.name)
                urgent = seen is not None and seen != watch.status
                describe = urgent or watch.ticks_since_describe >= watch.gap  # else: the safety describe
        if not describe:
            if watch.missing:  # still not created: the sweep would have shown it
                return None
            assert watch.payload is not None
            return watch.payload
        first = not watch.checked
        try:
            payload = await self._describe(watch.name, urgent=urgent)
        except CompilationJobNotFound:
            if not watch.allow_missing:
                watch.force = True
                raise
            self._record_missing(watch)
            payload = None
        except BaseException:
            watch.force = True
            raise
        else:
            appeared = watch.missing
            self._record(watch, payload)
            if appeared:  # a job created while we waited: its back-off starts over
                watch.gap = 1
                return payload
        # The safety net backs off whatever the job did (a new status says nothing about the next
        # one, and the sweep reports changes anyway): 1, 2, 4, 8, then 10 ticks after the first check.
        # A job that does not exist yet backs off the same way: the sweep shows it once it is created.
        if not first:
            watch.gap = min(watch.gap * 2, MAX_DESCRIBE_GAP)
        return payload
