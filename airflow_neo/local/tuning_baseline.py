"""Default-schedule baselines: a tuning record is applied only where it beats the default schedule.

Every kernel gets a default CPU schedule (:mod:`airflow_neo.local.schedules`) when tuning leaves it
unscheduled, and those are often faster than what a short MetaSchedule search finds. So, for a
target that runs on this machine, each workload's default-scheduled kernel is measured once and a
record is applied only where its time beats that baseline by more than :data:`MARGIN`.

Invariants:

* Same measurement as the records: a baseline is built by the tuning session's builder (which
  strips the weight-packing blocks, as for every candidate) and timed by a ``LocalRunner`` with the
  records' evaluator settings (:func:`evaluator_config`: the session's own runner),
  ``BASELINE_REPEATS`` times; the fastest counts (a record's best is itself the fastest of many
  measurements).
* The baseline schedule is what :func:`~airflow_neo.local.schedules.apply_default_schedules` gives
  the kernel: the first of the rules that takes it; the zero pipeline's loops when none does.
* Baselines persist in the target database's directory (:data:`BASELINE_FILE`), keyed by workload
  hash under the digest of the schedules package's source (:func:`schedules_version`): a changed
  schedule is measured again, an unchanged one never. A baseline that could not be measured (its
  build or run failed) is kept as ``null``, and the record applies. The file is written under the
  database's exclusive lock and is no part of the shared batches (each worker measures its own).
* Where the target does not run here nothing is measured and records apply as before.
* :func:`filtered_database` copies only the chosen workloads' best records: MetaSchedule's
  ``ApplyDatabase`` leaves every other kernel unscheduled, for the default schedules.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from airflow_neo.local import tuning_db
from airflow_neo.local.files import atomic_write_json

__all__ = [
    "BASELINE_FILE",
    "MARGIN",
    "choose",
    "decide",
    "estimated_latency",
    "evaluator_config",
    "filtered_database",
    "measure_defaults",
    "measure_modules",
    "read_baselines",
    "schedules_version",
    "store_baselines",
]

BASELINE_FILE = "airflow_neo_baselines.json"
BASELINE_FORMAT = 1
#: a record is applied only when its time is below the default schedule's by more than this share
MARGIN = 0.03
BASELINE_REPEATS = 3
_SCHEDULES_DIR = Path(__file__).resolve().parent / "schedules"


def evaluator_config():
    """The runner settings of every measurement: tuning candidates and default-schedule baselines."""
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)


def schedules_version() -> str:
    """Digest of the default schedules' source: baselines of other schedules code are not reused."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"baseline format {BASELINE_FORMAT}\n".encode())
    for path in sorted(_SCHEDULES_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the stored baselines


def _read(db_dir: Path) -> dict:
    try:
        data = json.loads((db_dir / BASELINE_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and data.get("format") == BASELINE_FORMAT else {}
    except (FileNotFoundError, ValueError):
        return {}


def read_baselines(db_dir: str | os.PathLike, version: str) -> dict[str, float | None]:
    """``{workload hash: default schedule's seconds, or None when it could not be measured}``."""
    entries = _read(Path(db_dir)).get("versions", {}).get(version, {})
    out: dict[str, float | None] = {}
    for key, value in entries.items() if isinstance(entries, dict) else ():
        try:
            out[str(key)] = None if value is None else float(value)
        except (TypeError, ValueError):
            continue
    return out


def store_baselines(db_dir: str | os.PathLike, version: str, measured: dict[str, float | None]) -> None:
    """Add ``measured`` to the database's baselines (only this ``version`` is kept)."""
    if not measured:
        return
    path = Path(db_dir)
    path.mkdir(parents=True, exist_ok=True)
    with tuning_db.locked(path, exclusive=True):
        entries = dict(_read(path).get("versions", {}).get(version, {}))
        entries.update(measured)
        atomic_write_json(path / BASELINE_FILE, {"format": BASELINE_FORMAT, "versions": {version: entries}})


# ----------------------------------------------------------------------------- measuring


def default_scheduled(func, target, rules: Sequence[Any]):
    """``(IRModule, label)``: ``func`` scheduled by the first rule that takes it (its loops as
    they are when none does), as :func:`~airflow_neo.local.schedules.apply_default_schedules` would."""
    import tvm

    from airflow_neo.local.schedules.cpu import cpu_info

    cpu = cpu_info(target)
    for rule in rules:
        try:
            outcome = rule.schedule(func, target, cpu)
        except Exception:  # noqa: BLE001 - as in apply_default_schedules: the next rule is tried
            continue
        if outcome is not None:
            return outcome.schedule.mod, outcome.label
    return tvm.IRModule({"main": func}), "none"


def measure_defaults(funcs: dict[str, Any], target, builder, runner, rules: Sequence[Any], log) -> dict[str, float | None]:
    """Time each ``{workload hash: PrimFunc}`` under its default schedule with the tuning session's
    ``builder`` and ``runner`` (each built kernel runs ``BASELINE_REPEATS`` times; the fastest counts)."""
    if not funcs:
        return {}
    mods = {key: default_scheduled(func, target, rules)[0] for key, func in funcs.items()}
    names = {key: str(func.attrs.get("global_symbol", key)) if func.attrs else key for key, func in funcs.items()}
    out = measure_modules(mods, target, builder, runner, log, names=names, what="the default schedule of")
    failed = [key for key in out if out[key] is None]
    log(f"tuning: measured the default schedules of {len(out)} kernels"
        + (f" ({len(failed)} could not be measured: their records apply)" if failed else ""))
    return out


def measure_modules(mods: dict[Any, Any], target, builder, runner, log, *, names=None, what="kernel",
                    repeats: int = BASELINE_REPEATS) -> dict[Any, float | None]:
    """Seconds per call of each scheduled ``{id: IRModule}``, measured like tuning candidates:
    built by ``builder``, run ``repeats`` times by ``runner``, the fastest mean counts; None where
    the build or the run failed (logged)."""
    from tvm.s_tir import meta_schedule as ms

    ids = list(mods)
    names = names or {}
    inputs, args = [], {}
    for ident in ids:
        inputs.append(ms.builder.BuilderInput(mods[ident], target))
        # the arguments as built: packed weights in their packed layout (as for tuning candidates)
        args[ident] = ms.arg_info.ArgInfo.from_entry_func(mods[ident], remove_preproc=True)
    built = builder.build(inputs) if inputs else []
    out: dict[Any, float | None] = {ident: None for ident in ids}
    try:
        pending = [(ident, result) for ident, result in zip(ids, built) if result.artifact_path and not result.error_msg]
        for ident, result in zip(ids, built):
            if result.error_msg:
                log(f"tuning: {what} {names.get(ident, ident)} did not build: {_first_line(result.error_msg)}")
        # LocalRunner leaves the artifacts in place (they are removed below), so each runs again
        futures = runner.run([
            ms.runner.RunnerInput(result.artifact_path, "cpu", args[ident])
            for ident, result in pending for _ in range(repeats)
        ]) if pending else []
        for index, future in enumerate(futures):
            ident = pending[index // repeats][0]
            result = future.result()
            secs = [float(value) for value in (result.run_secs or [])]
            if not result.error_msg and secs and max(secs) < tuning_db.INVALID_RUN_SECS:
                mean = sum(secs) / len(secs)
                out[ident] = mean if out[ident] is None else min(out[ident], mean)
            elif result.error_msg and index % repeats == 0:
                log(f"tuning: {what} {names.get(ident, ident)} did not run: {_first_line(result.error_msg)}")
    finally:
        for result in built:
            if result.artifact_path:
                shutil.rmtree(os.path.dirname(result.artifact_path), ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- choosing and applying


def choose(record_secs: float | None, default_secs: float | None, *, measured_here: bool) -> str | None:
    """``"tuned"`` (apply the record), ``"default"`` (the default schedule) or None (no record)."""
    if record_secs is None:
        return "default" if measured_here else None
    if not measured_here or default_secs is None:
        return "tuned"
    return "tuned" if record_secs < default_secs * (1.0 - MARGIN) else "default"


def decide(tasks, stats: dict, *, measured_here: bool) -> dict[str, dict]:
    """The report's ``kernels``: per workload hash, its name, weight, ``default_secs``,
    ``record_secs`` and what is ``used`` (``"tuned"``, ``"default"``; None: no record, not measured)."""
    kernels = {}
    for task in tasks:
        record = stats[task.key].best_secs if stats.get(task.key) else None
        kernels[task.key] = {
            "name": task.name,
            "weight": task.weight,
            "default_secs": task.default_secs,
            "record_secs": record,
            "used": choose(record, task.default_secs, measured_here=measured_here),
        }
    return kernels


def estimated_latency(kernels: dict[str, dict]) -> float | None:
    """Seconds: the sum over workloads of weight x the time of what is used; None when one is unknown."""
    total = 0.0
    for entry in kernels.values():
        secs = entry["record_secs"] if entry["used"] == "tuned" else entry["default_secs"]
        if secs is None:
            return None
        total += entry["weight"] * secs
    return total


def filtered_database(source: str | os.PathLike, into: str | os.PathLike, keep: Iterable[str]) -> Path:
    """A JSONDatabase directory holding only the best record of each workload in ``keep``."""
    source, target = Path(source), Path(into)
    target.mkdir(parents=True, exist_ok=True)
    stats = tuning_db.scan(source, set(keep))
    workloads = {tuning_db._workload_hash(line): line for line in tuning_db._lines(source / tuning_db.WORKLOAD_FILE)}
    workload_lines, record_lines = [], []
    for key in sorted(stats):
        best = stats[key].best_record
        if best is None or key not in workloads:
            continue
        record_lines.append(f"[{len(workload_lines)},{best}]")
        workload_lines.append(workloads[key])
    (target / tuning_db.WORKLOAD_FILE).write_text("".join(f"{line}\n" for line in workload_lines), encoding="utf-8")
    (target / tuning_db.RECORD_FILE).write_text("".join(f"{line}\n" for line in record_lines), encoding="utf-8")
    return target


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:300]
