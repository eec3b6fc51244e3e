#!/usr/bin/env python
"""Benchmark: one host under load with compile slots (issue: the local backend under load).

``--clients`` threads create ``--jobs`` jobs between them on one job store (SQLite file or a
PostgreSQL URL) and launch a real detached runner for each (``python -m airflow_neo.local.runner``,
``max_concurrent_compiles = --slots``); the compile is a fake that sleeps ``--compile-seconds`` and
appends its start and end to a file. Meanwhile every client describes its jobs until they end,
timing each DescribeCompilationJob. Reports: how many jobs ended in each status, any lost (gone) or
stuck (not terminal by the deadline), the most compiles seen at once (from the start/end records,
and from the store: jobs holding a slot), describe latency p50/p95/p99/max under load, and the
wall time. Writes ``--output`` (``benchmarks/results_slots.json`` holds one SQLite and one PostgreSQL run).

    python benchmarks/bench_slots.py --jobs 200 --clients 20 --slots 2
    python benchmarks/bench_slots.py --store postgresql+psycopg2://neo:...@127.0.0.1:54329/neo_test
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_neo.core import status as st  # noqa: E402
from airflow_neo.local import runner  # noqa: E402
from airflow_neo.local.config import LocalJobConfig  # noqa: E402
from airflow_neo.local.store import JobStore, SlotQueue  # noqa: E402

TERMINAL = st.TERMINAL_STATES


def fake_compile(request, archive_path, artifact_path, *, log=print, **_):
    """Sleeps, writes a tiny artifact; appends ``<job> start|end <time>`` to the ``record`` tag's file."""
    tags = {t["Key"]: t["Value"] for t in request.payload.get("Tags", [])}
    name = request.payload["CompilationJobName"]
    _append(tags["record"], f"{name} start {time.time():.6f}")
    time.sleep(float(tags.get("seconds", "0.2")))
    _append(tags["record"], f"{name} end {time.time():.6f}")
    with tarfile.open(artifact_path, "w:gz") as tar:
        info = tarfile.TarInfo("compiled.so")
        info.size = len(name)
        tar.addfile(info, io.BytesIO(name.encode()))
    return {}


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _request(name: str, archive: Path, out: Path, record: Path, seconds: float) -> dict:
    return {
        "CompilationJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/neo",
        "InputConfig": {"S3Uri": str(archive), "DataInputConfig": '{"input0": [1, 3, 8, 8]}', "Framework": "ONNX"},
        "OutputConfig": {"S3OutputLocation": str(out / name), "TargetDevice": "ml_c5"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "Tags": [{"Key": "record", "Value": str(record)}, {"Key": "seconds", "Value": str(seconds)}],
    }


def _max_overlap(record: Path) -> int:
    words = record.read_text().split() if record.exists() else []
    events = sorted(((float(words[i + 2]), words[i + 1] == "start") for i in range(0, len(words), 3)),
                    key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _t, start in events:
        running += 1 if start else -1
        peak = max(peak, running)
    return peak


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--compile-seconds", type=float, default=0.2)
    parser.add_argument("--store", default=None, help="SQLAlchemy URL (default: a SQLite file in a temp dir)")
    parser.add_argument("--deadline", type=float, default=1800, help="seconds before unfinished jobs count as stuck")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results_slots.json"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-slots-"))
    store_target = args.store or str(tmp / "state" / "jobs.sqlite")
    store = JobStore(store_target, work_dir=str(tmp / "work"))
    archive = tmp / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    record, out = tmp / "record.txt", tmp / "out"
    config = LocalJobConfig(store=store_target, work_dir=str(tmp / "work"), memory_limit_bytes=None,
                            max_concurrent_compiles=args.slots)
    run = f"{int(time.time()) % 1_000_000:06d}"  # a shared PostgreSQL store keeps earlier runs' jobs
    names = [f"load-{run}-{i:04d}" for i in range(args.jobs)]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    held_peak = [0]
    done = threading.Event()

    def client(mine: list[str]) -> None:
        own = JobStore(store_target, work_dir=str(tmp / "work"))
        for name in mine:
            try:
                own.create(_request(name, archive, out, record, args.compile_seconds))
                runner.launch_detached(own, name, config=config, compile_fn="benchmarks.bench_slots:fake_compile")
            except Exception as err:  # noqa: BLE001 - counted, reported
                with lock:
                    errors.append(f"{name}: {type(err).__name__}: {err}")
        pending = set(mine)
        deadline = time.monotonic() + args.deadline
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                start = time.perf_counter()
                try:
                    status = own.describe(name)["CompilationJobStatus"]
                except Exception as err:  # noqa: BLE001
                    with lock:
                        errors.append(f"describe {name}: {type(err).__name__}: {err}")
                    continue
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                if status in TERMINAL:
                    pending.discard(name)
            time.sleep(0.5)

    def sampler() -> None:
        queue = SlotQueue(JobStore(store_target, work_dir=str(tmp / "work")), limit=args.slots)
        while not done.wait(0.1):
            try:
                held_peak[0] = max(held_peak[0], len(queue.holders()))
            except Exception:  # noqa: BLE001 - a busy store: sample again
                pass

    started = time.monotonic()
    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=client, args=(names[i :: args.clients],)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    wall = time.monotonic() - started

    final = store.describe_many(names)
    by_status: dict[str, int] = {}
    for payload in final.values():
        by_status[payload["CompilationJobStatus"]] = by_status.get(payload["CompilationJobStatus"], 0) + 1
    lost = [n for n in names if n not in final]
    stuck = [n for n, p in final.items() if p["CompilationJobStatus"] not in TERMINAL]
    failures = sorted({p.get("FailureReason", "")[:160] for p in final.values() if p["CompilationJobStatus"] == st.FAILED})
    result = {
        "store": "postgresql" if args.store else "sqlite",
        "jobs": args.jobs, "clients": args.clients, "slots": args.slots, "compile_seconds": args.compile_seconds,
        "cpus": os.cpu_count(), "wall_seconds": round(wall, 1), "by_status": by_status,
        "lost": len(lost), "stuck": len(stuck), "errors": errors[:10], "error_count": len(errors),
        "failure_reasons": failures[:5],
        "max_concurrent_compiles_observed": _max_overlap(record), "max_slots_held_sampled": held_peak[0],
        "describe_calls": len(latencies),
        "describe_ms": {k: round(v * 1000, 1) for k, v in {
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p95": _percentile(latencies, 0.95), "p99": _percentile(latencies, 0.99),
            "max": max(latencies) if latencies else float("nan")}.items()},
    }
    print(json.dumps(result, indent=2))
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    ok = not lost and not stuck and by_status.get(st.COMPLETED, 0) == args.jobs and result[
        "max_concurrent_compiles_observed"] <= args.slots
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
