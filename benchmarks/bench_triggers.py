"""Trigger at scale: many deferred compilation jobs in one triggerer-like asyncio loop (not a test).

Runs ``NeoCompilationJobTrigger.run()`` for every job concurrently in one event loop, as Airflow's
triggerer does, and records the process's CPU use, memory, describe calls per job per poll
interval, store queries / API calls, and the time from each job's completion to its event.

Backends
    ``sagemaker``: a moto server in its own process (``tests.support.moto_server``) whose jobs
        progress by time (``STARTING -> INPROGRESS`` after ``--step-seconds``, ``-> COMPLETED``
        after another ``--step-seconds``). A job is due to complete at CompilationStartTime +
        step; its latency is the event time minus that.
    ``local``: a PostgreSQL job store (``--pg-url``, else ``$AIRFLOW_NEO_TEST_PG_URL``, else
        ``scripts/postgres.sh start``); jobs are inserted INPROGRESS with a remote owner and a long
        lease, and a separate process completes them at random times over ``--spread`` seconds
        (CompilationEndTime is the completion; latency is the event time minus that).
    ``naive-cost``: the cost of the polling that airflow-neo 0.1 did (a new aiobotocore client and
        one DescribeCompilationJob per trigger per interval), measured on a sample of jobs.

CPU at a 30 s interval: every poll tick costs the same work whatever the interval (one sweep or
one query, the wake-ups of the triggers, the describes that are due), so the CPU share scales as
1/interval; the script measures at a short interval (fast) and reports the share scaled to 30 s.

Usage::

    .venv/bin/python benchmarks/bench_triggers.py --backend sagemaker --jobs 1000 --interval 2
    .venv/bin/python benchmarks/bench_triggers.py --backend local --jobs 1000 --interval 2
    .venv/bin/python benchmarks/bench_triggers.py --backend naive-cost --jobs 20

Results are printed as JSON (one object per run) and, with ``--markdown``, as table rows.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-triggers-"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# One INFO line per job and status change is what a triggerer writes to the task logs; it is left
# out here (WARNING) so that the figures are the polling's own cost.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

CONN_ID = "aws_bench"


# ----------------------------------------------------------------------------- measurement


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


class CpuSampler:
    """Process CPU time (all threads) sampled once a second."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []

    async def run(self):
        while True:
            self.samples.append((time.time(), time.process_time()))
            await asyncio.sleep(1.0)

    def share(self, start: float, end: float) -> float | None:
        """CPU seconds per wall second between two wall times (None if too few samples)."""
        window = [s for s in self.samples if start <= s[0] <= end]
        if len(window) < 2:
            return None
        (w0, c0), (w1, c1) = window[0], window[-1]
        return (c1 - c0) / (w1 - w0)


async def run_triggers(
    names: list[str], make_trigger, due_time, interval: float, label: str, start_offsets: list[float] | None = None
) -> dict:
    """Run one trigger per job in this loop until every one has fired; gather the figures.

    ``start_offsets``: seconds after the start at which each job's trigger starts (its deferral).
    """
    from airflow_neo.triggers import polling

    rss_before, _ = rss_mb()
    sampler = CpuSampler()
    sampler_task = asyncio.ensure_future(sampler.run())
    events: dict[str, tuple[float, dict]] = {}
    started: dict[str, float] = {}

    async def consume(name: str, offset: float):
        if offset:
            await asyncio.sleep(offset)
        trigger = make_trigger(name)
        started[name] = time.time()
        async for event in trigger.run():
            events[name] = (time.time(), event.payload)
            return

    wall0, cpu0 = time.time(), time.process_time()
    offsets = start_offsets or [0.0] * len(names)
    tasks = [asyncio.ensure_future(consume(name, offset)) for name, offset in zip(names, offsets)]
    await asyncio.sleep(0)
    rss_running, _ = rss_mb()
    await asyncio.gather(*tasks)
    wall1, cpu1 = time.time(), time.process_time()
    sampler_task.cancel()
    _, rss_peak = rss_mb()
    boards = list(polling._BOARDS.get(asyncio.get_running_loop(), {}).values())
    stats = {k: sum(b.stats[k] for b in boards) for k in ("describes", "batches", "sweeps", "sweep_pages")}

    latencies = []
    statuses: dict[str, int] = {}
    for name, (when, event) in events.items():
        statuses[event["status"]] = statuses.get(event["status"], 0) + 1
        due = due_time(event["payload"])
        if due is not None:
            latencies.append(when - due)
    job_intervals = sum((events[n][0] - started[n]) / interval for n in names)
    first_due = min((due_time(events[n][1]["payload"]) or wall1) for n in names)
    all_deferred = wall0 + max(offsets)
    steady = sampler.share(all_deferred + 3 * interval, min(first_due, wall1) - interval)
    whole = (cpu1 - cpu0) / (wall1 - wall0)
    latencies.sort()
    result = {
        "label": label,
        "jobs": len(names),
        "interval_s": interval,
        "wall_s": round(wall1 - wall0, 1),
        "events": statuses,
        "cpu_share_whole_run": round(whole, 4),
        "cpu_share_steady": None if steady is None else round(steady, 4),
        "steady_window_s": [round(all_deferred + 3 * interval - wall0, 1), round(min(first_due, wall1) - interval - wall0, 1)],
        "cpu_share_steady_at_30s": None if steady is None else round(steady * interval / 30, 5),
        "cpu_share_whole_at_30s": round(whole * interval / 30, 5),
        "describes": stats["describes"],
        "describes_per_job_per_interval": round(stats["describes"] / job_intervals, 4),
        "store_queries_or_sweeps": stats["batches"] or stats["sweeps"],
        "sweep_pages": stats["sweep_pages"],
        "job_intervals": round(job_intervals),
        "latency_s": {
            "p50": round(statistics.median(latencies), 3) if latencies else None,
            "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
            "max": round(latencies[-1], 3) if latencies else None,
            "within_one_interval": sum(1 for x in latencies if x <= interval) / len(latencies) if latencies else None,
        },
        "rss_mb": {"before": round(rss_before), "with_triggers": round(rss_running), "peak": round(rss_peak)},
    }
    return result


# ----------------------------------------------------------------------------- SageMaker (moto)


def start_moto() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.moto_server"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    return proc, url


def creator_main(url: str, names: list[str], start_at: float, spread: float) -> None:
    """Create job i at start_at + i * spread / len(names) (its own process, so its CPU is not counted)."""
    import boto3

    from tests.support.requests import valid_request

    client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1")
    for i, name in enumerate(names):
        delay = start_at + i * spread / len(names) - time.time()
        if delay > 0:
            time.sleep(delay)
        client.create_compilation_job(**valid_request(name))


def create_moto_jobs(url: str, names: list[str]) -> None:
    import boto3
    from botocore.config import Config

    from tests.support.requests import valid_request

    client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", config=Config(max_pool_connections=16))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: client.create_compilation_job(**valid_request(n)), names))


def bench_sagemaker(args) -> dict:
    from tests.support import moto_neo
    from tests.support.fixtures import aws_connection_json

    proc, url = start_moto()
    try:
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = aws_connection_json(url)
        moto_neo.set_server_transition(url, "time", seconds=args.step_seconds)
        names = [f"bench-{i:04d}" for i in range(args.jobs)]
        offsets = None
        if args.arrival_spread > 0:  # jobs created (and deferred) one after the other
            start_at = time.time() + 5.0
            creator = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--creator", url, "--start-at", str(start_at),
                 "--spread", str(args.arrival_spread), "--jobs", str(args.jobs)],
                cwd=REPO,
            )
            margin = 5.0 + 2.0  # the trigger starts 2 s after its job's creation
            offsets = [margin + i * args.arrival_spread / len(names) for i in range(len(names))]
        else:  # all at once
            t0 = time.time()
            create_moto_jobs(url, names)
            print(f"created {len(names)} moto jobs in {time.time() - t0:.1f} s", file=sys.stderr)

        from airflow_neo.triggers.neo import NeoCompilationJobTrigger

        def make(name):
            return NeoCompilationJobTrigger(compilation_job_name=name, aws_conn_id=CONN_ID, poll_interval=args.interval)

        def due(payload):
            start = payload.get("CompilationStartTime")
            return parse_time(start) + args.step_seconds if start else None

        label = "sagemaker (moto server process)"
        result = asyncio.run(run_triggers(names, make, due, args.interval, label, start_offsets=offsets))
        if args.arrival_spread > 0:
            creator.wait(60)
        result["step_seconds"] = args.step_seconds
        result["arrival_spread_s"] = args.arrival_spread
        return result
    finally:
        proc.terminate()
        proc.wait(30)


def bench_naive_cost(args) -> dict:
    """CPU per check of airflow-neo 0.1's trigger: a new aiobotocore client and a describe each time."""
    from tests.support import moto_neo
    from tests.support.fixtures import aws_connection_json

    proc, url = start_moto()
    try:
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = aws_connection_json(url)
        moto_neo.set_server_transition(url, "time", seconds=3600)
        names = [f"naive-{i:03d}" for i in range(args.jobs)]
        create_moto_jobs(url, names)
        from airflow_neo.hooks.neo import NeoHook

        async def main():
            hook = NeoHook(aws_conn_id=CONN_ID)
            await hook.adescribe_compilation_job(names[0])  # warm imports
            cpu0, wall0 = time.process_time(), time.time()
            for name in names:
                await hook.adescribe_compilation_job(name)
            return (time.process_time() - cpu0) / len(names), (time.time() - wall0) / len(names)

        cpu_per_check, wall_per_check = asyncio.run(main())
        return {
            "label": "airflow-neo 0.1 polling (client per describe)",
            "sample_jobs": len(names),
            "cpu_ms_per_check": round(cpu_per_check * 1000, 1),
            "wall_ms_per_check": round(wall_per_check * 1000, 1),
            "cpu_share_1000_jobs_at_30s": round(cpu_per_check * 1000 / 30, 3),
        }
    finally:
        proc.terminate()
        proc.wait(30)


# ----------------------------------------------------------------------------- local backend (PostgreSQL)


def pg_url(args) -> str:
    url = args.pg_url or os.environ.get("AIRFLOW_NEO_TEST_PG_URL")
    if url:
        return url
    return subprocess.run(["bash", "scripts/postgres.sh", "start"], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]


def completer_main(url: str, names: list[str], start_at: float, spread: float, seed: int) -> None:
    """Complete every job at a random time in [start_at, start_at + spread] (its own process)."""
    from airflow_neo.local.store import JobStore

    store = JobStore(url, host="bench-runner")
    rng = random.Random(seed)
    plan = sorted((start_at + rng.uniform(0, spread), name) for name in names)
    for when, name in plan:
        delay = when - time.time()
        if delay > 0:
            time.sleep(delay)
        store.complete(name, f"s3://bench/out/{name}.tar.gz", "00" * 64, None)


def bench_local(args) -> dict:
    import sqlalchemy as sa

    from airflow_neo.local.store import JobStore
    from tests.support.stores import create_schema, drop_schema, with_search_path

    base = pg_url(args)
    schema = create_schema(base)
    url = with_search_path(base, schema)
    try:
        store = JobStore(url, host="bench-runner")
        names = [f"bench-{i:04d}" for i in range(args.jobs)]
        from tests.support.requests import valid_request

        t0 = time.time()
        for name in names:
            store.create(valid_request(name), lease_seconds=86_400)
            store.mark_inprogress(name, "bench-runner", 1, 86_400)
        print(f"inserted {len(names)} jobs in {time.time() - t0:.1f} s", file=sys.stderr)
        start_at = time.time() + args.quiet_seconds
        completer = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--completer", url, "--start-at", str(start_at),
             "--spread", str(args.spread), "--jobs", str(args.jobs)],
            cwd=REPO,
        )

        from airflow_neo.triggers.neo import NeoCompilationJobTrigger

        def make(name):
            return NeoCompilationJobTrigger(
                compilation_job_name=name, backend="local", local_store=url, poll_interval=args.interval
            )

        def due(payload):
            end = payload.get("CompilationEndTime")
            return parse_time(end) if end else None

        try:
            result = asyncio.run(run_triggers(names, make, due, args.interval, "local (PostgreSQL store)"))
        finally:
            completer.wait(600)
        result["completions_spread_s"] = args.spread
        return result
    finally:
        sa.create_engine(base).dispose()
        drop_schema(base, schema)


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sagemaker", "local", "naive-cost"), default="sagemaker")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0, help="poll_interval of the triggers (s)")
    parser.add_argument("--step-seconds", type=float, default=40.0, help="sagemaker: seconds per status step")
    parser.add_argument("--quiet-seconds", type=float, default=30.0, help="local: seconds before the first completion")
    parser.add_argument("--spread", type=float, default=30.0, help="local: completions spread over this many seconds")
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--out", default=None, help="also write the JSON result to this file")
    parser.add_argument(
        "--arrival-spread", type=float, default=60.0,
        help="sagemaker: jobs are created and deferred one after the other over this many seconds (0: all at once)",
    )
    parser.add_argument("--completer", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--creator", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.creator:
        creator_main(args.creator, [f"bench-{i:04d}" for i in range(args.jobs)], args.start_at, args.spread)
        return 0
    if args.completer:
        completer_main(args.completer, [f"bench-{i:04d}" for i in range(args.jobs)], args.start_at, args.spread, 7)
        return 0
    bench = {"sagemaker": bench_sagemaker, "local": bench_local, "naive-cost": bench_naive_cost}[args.backend]
    result = bench(args)
    result["cpu_count"] = os.cpu_count()
    result["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
