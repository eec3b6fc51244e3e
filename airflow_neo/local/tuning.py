"""MetaSchedule tuning for the local compiler: a per-job trial budget and a shared, persistent database.

Runs inside the compile child (TVM is imported inside functions only). :func:`optimize` takes the
fused Relax module (after ``relax.get_pipeline("zero")``) and returns it with the best schedules of
the target's tuning database applied, after spending up to the job's trial budget on the model's
workloads that need it. Its report goes into the artifact's metadata (``metadata["tuning"]``) and
keys the compile cache.

Records versus default schedules (:mod:`airflow_neo.local.tuning_baseline`): where the target runs
on this machine, each workload's default schedule is measured once (kept in the database
directory) with the records' builder and runner, and a record is applied only where it is faster
by more than ``tuning_baseline.MARGIN``; the other kernels are left for the default schedules.
Where the target cannot be measured here (cross compiles), every record applies. The report's
``kernels`` says per workload ``default_secs``, ``record_secs`` and ``used`` ("tuned"/"default").

Budget semantics: ``trials`` is what the *model* should have had in total. The trials already
granted to the model's workloads (by any job, for any model sharing them; kept in the database's
ledger) count towards it, so a repeat compile of a tuned model measures nothing and only applies the
records, and a model whose workloads were tuned for another model tunes less. A larger budget later
tunes on from where the database stands.

Allocation (:mod:`airflow_neo.local.tuning_plan`): first one short round (``FIRST_ROUND`` trials) for each workload, biggest (FLOPs x
occurrences) first, so that no kernel is left untuned (an untuned kernel is serial, unvectorized
code and can dominate the model's latency); the rest in rounds of ``ROUND`` trials in proportion to
each workload's share of the model's estimated latency (occurrences x the faster of its default
schedule and its best record), so the trials go where the default schedules are weakest.

Builder: a process pool kept for the whole job that builds candidates with plain ``tvm.build``
(MetaSchedule's stock builder imports every CUDA tensor intrinsic in each fresh worker, 15-30 s a
batch on 2 cores, and restarts its pool every batch). Measuring runs in MetaSchedule's LocalRunner.

Flexible inputs (DataInputConfig ranges): kernels with a symbolic extent are not tuned (MetaSchedule
measures concrete shapes only); the log names them and they keep their default schedules.

Layout: weights (Relax constants) are marked layout-free before tuning, so schedules may rewrite
their layout; after applying the records the layout transforms are split out and folded into the
constants at compile time (weight prepacking, with no change to the artifact's interface).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_neo.local import tuning_baseline, tuning_configs, tuning_db
from airflow_neo.local.configs import JsonConfigStore
from airflow_neo.local.tuning_plan import (
    FIRST_ROUND,
    ROUND,
    TaskInfo,
    estimate_text,
    first_round_plan,
    latency_share_plan,
    priority,
)

__all__ = ["FIRST_ROUND", "ROUND", "TaskInfo", "first_round_plan", "latency_share_plan", "optimize", "tunable_here"]

Log = Callable[[str], Any]

#: a first guess of one trial's cost on a small machine, refined as tuning goes
INITIAL_SECONDS_PER_TRIAL = 2.0
BUILD_TIMEOUT_S = 60.0
#: percent of a job's new trials that config tuning may spend before MetaSchedule's search
CONFIG_SHARE = 50
RUN_TIMEOUT_S = 30.0
# x86 ISA extensions (LLVM feature names): a target that needs one the host lacks cannot be measured here
_ISA = re.compile(
    r"^(sse|ssse|avx|fma|f16c|bmi|popcnt|lzcnt|movbe|aes|pclmul|sha|vaes|vpclmul|gfni|amx|adx|rdrnd|rdseed|"
    r"cx16|xsave|fp16|bf16|neon|sve|dotprod|i8mm|fullfp16)"
)


# --------------------------------------------------------------------------------------------
# can we measure here?


def tunable_here(target: dict, *, runs_here: bool) -> str | None:
    """None when schedules for ``target`` can be measured on this machine, else why not (a target
    that ``[neo] rpc_keys`` names is measured on its devices instead: :meth:`_Session.measurable`)."""
    if not runs_here:
        return "the target's code does not run on this machine (another CPU family or OS), so schedules cannot be measured"
    from tvm.target import Target, codegen

    host_cpu = str(codegen.llvm_get_system_cpu())
    mcpu = target.get("mcpu") or host_cpu
    probe = {key: value for key, value in target.items() if key in ("kind", "mtriple", "mcpu", "mattr")}
    try:
        wanted = {str(f) for f in codegen.llvm_get_cpu_features(Target(probe))}
        have = {str(f) for f in codegen.llvm_get_cpu_features(Target({"kind": "llvm", "mcpu": host_cpu}))}
    except Exception:  # noqa: BLE001 - be permissive: a failed measurement is recorded as such
        return None
    missing = sorted(f for f in wanted - have if _ISA.match(f))
    if missing:
        return (
            f"this machine's CPU ({host_cpu}) lacks {', '.join(missing[:6])} that mcpu {mcpu} code uses; tune on a "
            f"{mcpu} machine, or compile for this CPU (CompilerOptions mcpu={host_cpu!r})"
        )
    return None


def _cpu_tensor_intrinsics_only() -> None:
    """Register only this CPU family's tensor intrinsics before MetaSchedule imports them all.

    ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` parses every CUDA,
    ROCm and Hexagon intrinsic (TVMScript, with ``inspect.stack()`` per function): minutes on a
    busy 2-core machine once torch is imported. Tuning only measures on this machine, so the
    package is registered without running its ``__init__`` and only the host family's module
    (x86 or Arm) is imported.
    """
    import importlib
    import importlib.util
    import platform
    import sys

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    machine = platform.machine().lower()
    family = "arm_cpu" if machine.startswith(("arm", "aarch64")) else "x86" if machine in ("x86_64", "amd64", "i686") else None
    if family:
        try:
            importlib.import_module(f"{name}.{family}")
        except Exception:  # noqa: BLE001 - float32 schedules do not need them
            pass
    import tvm.s_tir

    tvm.s_tir.tensor_intrin = package


def _quiet_meta_schedule() -> None:
    """Keep MetaSchedule's per-round tables out of the job log (its console handler follows this level)."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    if logger.level in (logging.NOTSET, logging.DEBUG, logging.INFO):
        logger.setLevel(logging.WARNING)
    for handler in list(logger.handlers):
        if handler.get_name() is None:
            # MetaSchedule's logging setup lists every handler of this logger by name in a
            # dictConfig: an unnamed one (left by other code in this process) makes it crash
            logger.removeHandler(handler)
        elif isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


def _num_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# builder (module level: the pool's workers unpickle these by reference)


def build_candidate(mod, target, _params):
    """MetaSchedule's default build without importing every tensor intrinsic (CUDA included)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _make_builder(max_workers: int):
    from tvm.ir.utils import derived_object
    from tvm.runtime import save_param_dict
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PooledBuilder(PyBuilder):
        """Builds candidates in a process pool that lives for the whole job (recycled now and then)."""

        def __init__(self, workers: int, timeout_sec: float, recycle_after: int = 40):
            super().__init__()
            self.workers = workers
            self.timeout_sec = timeout_sec
            self.recycle_after = recycle_after
            self.pool = None
            self.batches = 0

        def _pool(self):
            if self.pool is None or self.batches >= self.recycle_after:
                self.close()
                self.pool = PopenPoolExecutor(max_workers=self.workers, timeout=self.timeout_sec)
                self.batches = 0
            self.batches += 1
            return self.pool

        def close(self):
            if self.pool is not None:
                try:
                    self.pool.shutdown()
                except Exception:  # noqa: BLE001
                    pass
                self.pool = None

        def build(self, build_inputs):
            jobs = [
                (build_candidate, None, item.mod, item.target,
                 None if item.params is None else save_param_dict(item.params))
                for item in build_inputs
            ]
            results = []
            for result in self._pool().map_with_error_catching(lambda args: _worker_func(*args), jobs):
                if result.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(result.value, None))
                elif result.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"build timed out after {self.timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"build failed: {result.value}"))
            return results

    return PooledBuilder(max_workers, BUILD_TIMEOUT_S)


# --------------------------------------------------------------------------------------------
# the entry point


@dataclass
class _Session:
    """Builder, runner and cost model shared by every task of one job (created on first use).

    Measures on this machine, or, with ``rpc`` (``[neo] rpc_tracker`` and the target's key in
    ``rpc_keys``), on the tracker's devices: candidates are then linked into shared libraries with
    the target's C (cross) compiler and timed by MetaSchedule's RPCRunner
    (:mod:`airflow_neo.local.tuning_rpc`)."""

    num_cores: int
    log: Log
    rpc: Any = None  #: the :class:`~airflow_neo.local.tuning_rpc.RpcDevice` that measures (None: here)
    compiler: str | None = None  #: the target's C compiler, linking candidates for the RPC devices
    triple: str | None = None  #: the target's triple (its CPU family's tensor intrinsics are registered)
    builder: Any = None
    runner: Any = None
    cost_model: Any = None
    seconds_per_trial: float = INITIAL_SECONDS_PER_TRIAL
    measured: int = 0
    spent: float = 0.0
    notes: list[str] = field(default_factory=list)

    def measurable(self, target) -> str | None:
        """None when candidates for the :class:`~airflow_neo.local.targets.ResolvedTarget` can be
        measured (on its RPC devices, probed now, or on this machine), else why not."""
        if self.rpc is None:
            return tunable_here(target.target, runs_here=target.runs_here())
        from airflow_neo.local import tuning_rpc

        self.rpc, reason = tuning_rpc.probe(self.rpc, self.log)
        if reason is None:
            self.compiler, self.triple = target.compiler(), target.triple
        return reason

    @property
    def measured_on(self) -> str:
        return self.rpc.describe() if self.rpc is not None else "this machine"

    def start(self) -> None:
        if self.builder is not None:
            return
        from tvm.s_tir import meta_schedule as ms

        _cpu_tensor_intrinsics_only()
        _quiet_meta_schedule()
        if self.rpc is not None:
            from airflow_neo.local import tuning_rpc

            tuning_rpc.register_tensor_intrinsics(self.triple or "")
            self.builder = tuning_rpc.linking_builder(_make_builder(self.num_cores), self.compiler)
            self.runner = tuning_rpc.make_runner(self.rpc, tuning_baseline.evaluator_config())
        else:
            self.builder = _make_builder(self.num_cores)
            self.runner = ms.runner.LocalRunner(
                timeout_sec=RUN_TIMEOUT_S,
                evaluator_config=tuning_baseline.evaluator_config(),
            )
        try:
            import xgboost  # noqa: F401

            self.cost_model = ms.cost_model.XGBModel(num_tuning_cores=self.num_cores)
        except ImportError:
            self.cost_model = ms.cost_model.RandomModel()
            note = "xgboost is not installed: tuning searches at random (pip install xgboost-cpu)"
            self.notes.append(note)
            self.log(f"tuning: {note}")

    def close(self) -> None:
        if self.builder is not None:
            self.builder.close()
        pool = getattr(self.runner, "pool", None)
        if pool is not None:
            try:
                pool.shutdown()
            except Exception:  # noqa: BLE001 - its worker goes with the compile child's process group anyway
                pass


def optimize(
    mod,
    target,
    *,
    trials: int,
    database_root: str | os.PathLike,
    log: Log,
    deadline: float | None = None,
    seed: int = 0,
    work_dir: str | os.PathLike | None = None,
    rules: Any = None,
    pack: Any = None,
    rpc_tracker: str | None = None,
    rpc_keys: Any = None,
) -> tuple[Any, dict]:
    """Apply (and first tune, within ``trials``) the target's tuning database to the fused ``mod``.

    :param mod: the Relax module after ``relax.get_pipeline("zero")``.
    :param target: the :class:`~airflow_neo.local.targets.ResolvedTarget`.
    :param trials: the model's trial budget (see the module docstring); 0 only applies records.
    :param database_root: ``[neo] tuning_database``: one sub-directory per target.
    :param deadline: ``time.monotonic()`` value by which tuning must stop (the job's time limit
        less the time the final build needs); tuning stops early, keeping what it measured.
    :param work_dir: the directory the scratch files (the database snapshot, MetaSchedule's logs)
        go under (the compile's work dir, which its owner removes); None: the system's temp dir.
    :param rules: the default schedule rules the records are measured against (None: the
        default ``DEFAULT_RULES``; see :mod:`airflow_neo.local.tuning_baseline`).
    :param pack: the shipped pack's store for this target (its knobs are measured early), or None.
    :param rpc_tracker: ``[neo] rpc_tracker``: with ``rpc_keys`` naming the target, candidates and
        baselines are measured on the tracker's devices of its key (see :mod:`.tuning_rpc`).
    :param rpc_keys: ``[neo] rpc_keys``: ``{target label or name: tracker key}``.
    :return: the module to build, and the report (``metadata["tuning"]``).
    """
    import tvm
    import tvm_ffi
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    started = time.monotonic()
    num_cores = _num_cores()
    compile_target = tvm.target.Target(target.target)
    tune_target = tvm.target.Target({**target.target, "num-cores": num_cores})
    db_dir = tuning_db.target_database_dir(database_root, target.target, num_cores)
    with tvm.transform.PassContext(), compile_target:
        marked = relax.transform.AttachAttrLayoutFreeBuffers()(mod)
    extracted = _static_tasks(ms.relax_integration.extract_tasks(marked, tune_target), log)
    tasks = []
    for task in extracted:
        flops = 0.0
        try:
            flops = float(tvm.s_tir.analysis.estimate_tir_flops(task.dispatched[0]))
        except Exception:  # noqa: BLE001 - only used to order the work
            pass
        tasks.append(TaskInfo(str(tvm_ffi.structural_hash(task.dispatched[0])), task.task_name, int(task.weight), flops))
    keys = sorted({task.key for task in tasks})
    report: dict[str, Any] = {
        "database": str(db_dir),
        "workloads": keys,
        "trials_budget": int(trials),
        "new_trials": 0,
        "tasks": len(tasks),
        "applied": 0,
    }
    if not tasks:
        report["records_digest"] = tuning_db.records_digest(None, [])
        return mod, report
    if trials <= 0 and not db_dir.is_dir():
        report["records_digest"] = tuning_db.records_digest(None, keys)
        log(f"tuning: off (0 trials) and no tuning database for this target yet ({db_dir}); {len(tasks)} kernels untuned")
        return mod, report

    work = Path(tempfile.mkdtemp(prefix="airflow-neo-tuning-", dir=work_dir))
    from airflow_neo.local.tuning_rpc import device_for

    session = _Session(num_cores, log, rpc=device_for(target.label, rpc_tracker, rpc_keys) if rpc_tracker else None)
    try:
        snap = tuning_db.snapshot(db_dir, work / "database")
        stats = tuning_db.scan(snap.directory, keys)
        for task in tasks:
            entry = stats.get(task.key)
            task.granted = max(snap.granted.get(task.key, 0), entry.records if entry else 0)
            task.best_secs = entry.best_secs if entry else None
        configs = JsonConfigStore(db_dir)
        already = sum(task.granted for task in tasks)
        remaining = max(0, int(trials) - already)
        log(
            f"tuning: {len(tasks)} kernels ({sum(t.weight for t in tasks)} calls), budget {trials} trials, "
            f"{already} already in the database ({db_dir.name}), {remaining} to run"
        )
        reason = session.measurable(target)
        if reason is None:
            report["measured_on"] = session.measured_on
            _baselines(extracted, tasks, db_dir, tune_target, session, rules, tune=remaining > 0)
            report["baseline"] = f"default schedules measured on {session.measured_on}; records apply only where faster"
        else:
            report["baseline"] = f"not measured ({reason}): every record applies"
        if remaining > 0:
            if reason:
                log(f"tuning: skipped: {reason}; applying the records the database has")
                report["skipped"] = reason
                if session.rpc is not None:  # the devices may answer next time: not worth caching
                    report["skipped_transient"] = True
            else:
                session.start()
                config_trials = tuning_configs.tune_configs(
                    [(t.key, t.name, ext.dispatched[0]["main"], priority(t)) for t, ext in zip(tasks, extracted)],
                    tune_target, session.builder, session.runner, configs, -(-remaining * CONFIG_SHARE // 100), log,
                    pack=pack,
                )
                spent = sum(config_trials.values())
                report["config_trials"] = spent
                remaining -= spent
                for task in tasks:
                    task.granted += config_trials.get(task.key, 0)
                _config_baselines(tasks, configs)
                granted = _tune(
                    extracted, tasks, remaining, snap.directory, session, log, deadline=deadline, seed=seed, work=work
                ) if remaining > 0 else {}
                for key, count in config_trials.items():  # the ledger counts config candidates too
                    granted[key] = granted.get(key, 0) + count
                report["new_trials"] = session.measured
                changed = {key: configs.get(key).to_json() for key in config_trials if configs.get(key) is not None}
                merged = tuning_db.merge(snap, granted, changed)
                log(f"tuning: {spent} config candidates and {session.measured} search trials in "
                    f"{session.spent:.0f} s; {merged} records added to {db_dir}")
        _config_baselines(tasks, configs)
        report["notes"] = session.notes
        stats = tuning_db.scan(snap.directory, keys)
        report["kernels"] = kernels = tuning_baseline.decide(tasks, stats, measured_here=reason is None)
        applied = [task for task in tasks if kernels[task.key]["used"] == "tuned"]
        report["applied"] = len(applied)
        report["records_digest"] = tuning_db.records_digest(snap.directory, keys, configs_dir=db_dir)
        beaten = sum(1 for entry in kernels.values() if entry["record_secs"] is not None and entry["used"] == "default")
        if not applied:
            why = f"the default schedules are faster for all {beaten} with records" if beaten else "no records"
            log(f"tuning: no tuning record applied to this model's {len(tasks)} kernels ({why})")
            return mod, report
        estimate = tuning_baseline.estimated_latency(kernels)
        if estimate is not None:
            report["estimated_latency_ms"] = round(estimate * 1000, 3)
        log(f"tuning: applying records for {len(applied)} of {len(tasks)} kernels"
            + (f" ({beaten} records slower than the default schedule left unused)" if beaten else "")
            + (f"; estimated latency {estimate * 1000:.2f} ms" if estimate is not None else ""))
        chosen = tuning_baseline.filtered_database(snap.directory, work / "applied", [t.key for t in applied])
        database = ms.database.JSONDatabase(work_dir=str(chosen))
        with tvm.transform.PassContext(), compile_target, database:
            tuned = relax.transform.MetaScheduleApplyDatabase()(marked)
            tuned = relax.transform.SplitLayoutRewritePreproc()(tuned)
            tuned = relax.transform.FoldConstant()(tuned)
        report["seconds"] = round(time.monotonic() - started, 3)
        return tuned, report
    finally:
        session.close()
        shutil.rmtree(work, ignore_errors=True)


def _static_tasks(extracted, log: Log) -> list:
    """The tasks whose kernels have static shapes. A kernel with a symbolic extent (an input
    dimension DataInputConfig gives as a range) is not tuned: MetaSchedule measures concrete
    shapes only (its argument info refuses a symbolic dim), so it keeps its default schedule."""
    from tvm import tirx

    def static(task) -> bool:
        for param in task.dispatched[0]["main"].params:  # buffers; a scalar parameter is a symbolic size
            try:
                shape = param.shape
            except AttributeError:
                return False
            if not all(isinstance(dim, tirx.IntImm) for dim in shape):
                return False
        return True

    kept = [task for task in extracted if static(task)]
    if len(kept) < len(extracted):
        names = ", ".join(task.task_name for task in extracted if not static(task))
        log(f"tuning: {len(extracted) - len(kept)} kernel(s) with symbolic shapes (DataInputConfig ranges) are not "
            f"tuned and keep their default schedules: {names}")
    return kept


def _baselines(extracted, tasks, db_dir: Path, tune_target, session: _Session, rules, *, tune: bool) -> None:
    """Set each task's ``default_secs``: stored baselines, measuring (once) those still missing for
    workloads that have a record or are about to be tuned."""
    if rules is None:
        from airflow_neo.local.schedules.rules import DEFAULT_RULES as rules
    version = f"{tuning_baseline.schedules_version()}:{','.join(rule.name for rule in rules)}"
    known = tuning_baseline.read_baselines(db_dir, version)
    missing = {task.key: ext.dispatched[0]["main"] for task, ext in zip(tasks, extracted)
               if task.key not in known and (tune or task.best_secs is not None)}
    if missing:
        session.start()
        measured = tuning_baseline.measure_defaults(missing, tune_target, session.builder, session.runner,
                                                   rules, session.log)
        tuning_baseline.store_baselines(db_dir, version, measured)
        known.update(measured)
    for task in tasks:
        task.default_secs = known.get(task.key)


def _config_baselines(tasks, configs: JsonConfigStore) -> None:
    """A record must beat the best config (the default schedule the kernel gets without it)."""
    for task in tasks:
        record = configs.get(task.key)
        if record is not None and record.useful():
            task.default_secs = record.secs if task.default_secs is None else min(task.default_secs, record.secs)


def _tune(extracted, tasks, remaining, db_path: Path, session: _Session, log: Log, *, deadline, seed, work: Path) -> dict[str, int]:
    """Run the plan (first rounds, then rounds by latency share); returns the trials granted per workload."""
    from tvm.s_tir import meta_schedule as ms

    by_key = {task.key: (task, ext) for task, ext in zip(tasks, extracted)}
    granted: dict[str, int] = {}
    database = ms.database.JSONDatabase(work_dir=str(db_path))
    total_budget = remaining
    done = 0
    stopped = False

    def run(plan: dict[str, int], phase: str) -> None:
        nonlocal done, stopped, remaining
        order = sorted(plan, key=lambda k: plan[k] * priority(by_key[k][0]), reverse=True)
        for index, key in enumerate(order):
            task, ext = by_key[key]
            n = min(plan[key], remaining)
            if n <= 0 or stopped:
                continue
            if deadline is not None:
                left = deadline - time.monotonic()
                affordable = int(left / max(session.seconds_per_trial, 0.1))
                if affordable < min(n, FIRST_ROUND):
                    log(f"tuning: stopped at the job's time limit ({done}/{total_budget} trials run)")
                    stopped = True
                    return
                n = min(n, affordable)
            session.start()
            per_iter = min(ROUND, n) if phase == "first round" else ROUND
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                [ext], str(work / "logs"), num_threads=session.num_cores, seed=seed,
                strategy=ms.search_strategy.EvolutionarySearch(
                    population_size=128 if phase == "first round" else 256,
                    init_min_unmeasured=32,
                    genetic_num_iters=2 if phase == "first round" else 3,
                ),
            )
            _quiet_meta_schedule()  # creating the contexts re-configured MetaSchedule's loggers
            if not contexts:  # already scheduled: nothing to tune
                continue
            before = tuning_db.scan(db_path, [key]).get(key)
            records_before = before.records if before else 0
            t0 = time.monotonic()
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(work / "logs"),
                max_trials_global=n,
                max_trials_per_task=n,
                num_trials_per_iter=min(per_iter, n),
                builder=session.builder,
                runner=session.runner,
                database=database,
                cost_model=session.cost_model,
                task_scheduler="round-robin",
            )
            elapsed = time.monotonic() - t0
            after = tuning_db.scan(db_path, [key]).get(key)
            measured = (after.records if after else 0) - records_before
            granted[key] = granted.get(key, 0) + n
            task.granted += n
            # A kernel whose search space ran out (a reshape has one schedule) measures fewer than
            # granted: the ledger keeps n (it is never tuned again), the rest goes to other kernels.
            remaining -= min(max(measured, 0), n)
            done += max(measured, 0)
            session.measured += measured
            session.spent += elapsed
            if measured > 0:
                # smooth the per-trial cost estimate used against the deadline
                session.seconds_per_trial = 0.5 * session.seconds_per_trial + 0.5 * (elapsed / measured)
            if after and after.best_secs is not None:
                task.best_secs = after.best_secs
            if measured < n:
                task.exhausted = True
            best = f"{task.best_secs * 1000:.3f} ms" if task.best_secs is not None else "no valid measurement"
            gflops = f", {task.flops / task.best_secs / 1e9:.1f} GFLOPS" if task.best_secs and task.flops > 1 else ""
            log(
                f"tuning [{phase} {index + 1}/{len(order)}] {task.name} (x{task.weight}): {measured} trials in "
                f"{elapsed:.0f} s, best {best}{gflops}; {done}/{total_budget} trials, {estimate_text(tasks)}"
            )

    run(first_round_plan(tasks, remaining), "first round")
    # Trials a kernel could not use (its search space ran out) go back into the pool: re-plan.
    for _ in range(3):
        plan = latency_share_plan(tasks, remaining) if remaining >= FIRST_ROUND and not stopped else {}
        if not plan:
            break
        run(plan, "by latency share")
    return granted
