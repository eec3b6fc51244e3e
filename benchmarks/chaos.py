"""Every chaos case of issue 15, repeated, with real processes (the CI subset: tests/local/test_chaos.py).

    .venv/bin/python benchmarks/chaos.py [--repeat 3] [--no-postgres] [--real | --only-real] [--out FILE]

Cases (helpers in tests/support/chaos.py):

* ``kill -9`` of the detached runner in each phase (fetch, import, tune, build, publish) and of the
  compile child in the phases it exists in (import, tune, build), on SQLite and (unless
  ``--no-postgres``) on a private PostgreSQL server; a fresh store per repetition, primed with
  one completed job;
* disk full while publishing (a 1 MiB tmpfs at the output location; needs root);
* the moto S3 server killed mid multipart upload, staying down or restarted at once, with
  botocore's default retries;
* the store's PostgreSQL server stopped while 3 jobs compile, for 3 s (under the 5 s lease) and
  for 15 s (beyond it), then started again;
* clock skew between two hosts: a reader's clock ahead by lease/3 and by 3 x lease;
* (``--real``, ``--only-real``) ``kill -9`` of the runner and of the compile child of a real TVM
  compile (a tiny ONNX model, 16 tuning trials) in its import, tuning and check phases.

Each repetition is checked against the case's invariant (the job's end, its reason, the output
location, the compile cache and the tuning database); the figures are the pass counts and the
seconds from the fault to a terminal state seen by a reader.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_neo.core import status as st  # noqa: E402
from tests.support import chaos  # noqa: E402
from tests.support.stores import create_schema, with_search_path  # noqa: E402

LEASE = 5.0


def _world(kind: str, pg_url: str | None) -> chaos.World:
    root = Path(tempfile.mkdtemp(prefix=f"neo-chaos-{kind}-"))
    if kind == "postgres":
        os.environ["AIRFLOW_HOME"] = str(root / "airflow-home")
        world = chaos.World(root, store_target=with_search_path(pg_url, create_schema(pg_url)), lease_seconds=LEASE)
    else:
        world = chaos.World(root, lease_seconds=LEASE)
    world.create("prime")
    world.launch("prime")
    chaos._wait(lambda: world.status("prime")["CompilationJobStatus"] in st.TERMINAL_STATES, 180, 0.1)
    assert world.status("prime")["CompilationJobStatus"] == st.COMPLETED, world.status("prime")
    return world


def kill_violations(seen: dict) -> list[str]:
    bad = []
    if seen["status"] != st.FAILED:
        bad.append(f"status {seen['status']}")
    if seen["victim"] == "runner":
        expected = (f"ServerError: Compile worker lost: process {seen['runner_pid']} on host {seen['host']} exited "
                    "without recording a result")
        if seen["reason"] != expected:
            bad.append(f"reason {seen['reason']!r}")
    elif not seen["reason"].startswith("ServerError: Compilation failed: internal compiler crash (signal 9: SIGKILL)"):
        bad.append(f"reason {seen['reason']!r}")
    leftovers = [f for f in seen["output_files"]
                 if not (seen["phase"] == "publish" and f.startswith(".") and f.endswith(".partial"))]
    if leftovers:
        bad.append(f"output {leftovers}")
    if len(seen["new_cache_keys"]) != (1 if seen["phase"] == "publish" else 0):
        bad.append(f"cache keys {seen['new_cache_keys']}")
    bad += seen["cache_problems"] + seen["tuning_problems"]
    if not seen["phase_hit"]:
        bad.append("phase missed")
    return bad


def _summary(rows: list[dict]) -> dict:
    secs = [r["seconds"] for r in rows if r.get("seconds") is not None]
    return {
        "runs": len(rows),
        "passed": sum(1 for r in rows if not r["violations"]),
        "seconds_to_terminal": {"min": min(secs), "median": statistics.median(secs), "max": max(secs)} if secs else None,
        "violations": [v for r in rows for v in r["violations"]][:10],
        "outcomes": sorted({r.get("outcome", "") for r in rows}),
    }


def run_kills(results: dict, kinds: list[str], repeat: int, pg_url: str | None) -> None:
    for kind in kinds:
        for rep in range(repeat):
            world = _world(kind, pg_url)
            for victim, phases in (("runner", chaos.PHASES), ("child", chaos.CHILD_PHASES)):
                for phase in phases:
                    seen = chaos.kill_case(world, victim, phase, f"{victim}-{phase}-{rep}")
                    row = {"seconds": seen["seconds_to_terminal"], "violations": kill_violations(seen),
                           "outcome": seen["status"]}
                    results.setdefault(f"kill -9 {victim} in {phase} [{kind}]", []).append(row)
                    print(f"kill -9 {victim:6} {phase:8} [{kind}] rep {rep}: {seen['status']} in "
                          f"{seen['seconds_to_terminal']:.2f} s {row['violations'] or 'ok'}", flush=True)


def run_disk(results: dict, repeat: int) -> None:
    why_not = chaos.Tmpfs.usable(Path(tempfile.gettempdir()))
    if why_not:
        print("disk full: skipped:", why_not)
        return
    world = _world("sqlite", None)
    for rep in range(repeat):
        started = time.monotonic()
        seen = chaos.disk_full_case(world, f"disk-full-{rep}")
        bad = []
        if seen["status"] != st.FAILED or "[Errno 28] No space left on device" not in seen["reason"]:
            bad.append(f"{seen['status']}: {seen['reason']!r}")
        if seen["output_files"] != ["other-file"]:
            bad.append(f"output {seen['output_files']}")
        bad += seen["cache_problems"]
        results.setdefault("disk full while publishing", []).append(
            {"seconds": None, "violations": bad, "outcome": seen["status"], "job_seconds": time.monotonic() - started})
        print(f"disk full rep {rep}: {seen['status']} {bad or 'ok'}", flush=True)


def run_s3(results: dict, repeat: int) -> None:
    world = _world("sqlite", None)
    for restart in (False, True):
        for rep in range(repeat):
            name = f"s3-{int(restart)}-{rep}"
            seen = chaos.s3_down_case(world, name, restart=restart)
            bad = []
            if seen["status"] != st.FAILED or not seen["reason"].startswith(
                    f"ClientError: Could not upload the compiled model to s3://chaos/out/{name}/"):
                bad.append(f"{seen['status']}: {seen['reason'][:200]!r}")
            if seen["objects"]:
                bad.append(f"objects {seen['objects']}")
            label = "S3 server killed mid-upload, " + ("restarted" if restart else "stays down")
            results.setdefault(label, []).append({"seconds": seen["seconds_to_terminal"], "violations": bad,
                                                  "outcome": seen["status"]})
            print(f"{label} rep {rep}: {seen['status']} in {seen['seconds_to_terminal']:.1f} s {bad or 'ok'}", flush=True)


def run_postgres_restart(results: dict, repeat: int) -> None:
    pg = chaos.PrivatePostgres()
    try:
        url = pg.start()
        for down in (3.0, 3 * LEASE):
            for rep in range(repeat):
                os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="neo-chaos-pgr-")
                world = chaos.World(Path(tempfile.mkdtemp(prefix="neo-chaos-pgr-")),
                                    store_target=with_search_path(url, create_schema(url)), lease_seconds=LEASE)
                seen = chaos.postgres_restart_case(world, pg, f"pg-{rep}", down_seconds=down)
                bad = [f"still running {seen['still_running']}"] if seen["still_running"] else []
                bad += [f"wrong output for {name}" for name in seen["wrong_outputs"]]
                bad += [f"{n}: {s} {r!r}" for n, (s, r) in seen["finals"].items()
                        if not (s == st.COMPLETED or (s == st.FAILED and r.startswith("ServerError: ")))]
                label = f"PostgreSQL stopped {down:.0f} s mid-job (lease {LEASE:.0f} s)"
                outcome = ", ".join(sorted(f"{s}: {r[:90]}" for s, r in seen["finals"].values()))
                results.setdefault(label, []).append({"seconds": seen["seconds_to_all_terminal"], "violations": bad,
                                                      "outcome": outcome})
                print(f"{label} rep {rep}: {outcome} ({seen['seconds_to_all_terminal']} s) {bad or 'ok'}", flush=True)
    finally:
        pg.remove()


def run_skew(results: dict, repeat: int) -> None:
    world = _world("sqlite", None)
    for factor in (1 / 3, 3.0):
        for rep in range(repeat):
            seen = chaos.clock_skew_case(world, f"skew-{int(factor * 3)}-{rep}", skew_seconds=factor * LEASE)
            if factor < 1:
                ok = seen["status"] == st.COMPLETED
            else:
                ok = (seen["status"] == st.FAILED and not seen["output_files"]
                      and seen["reason"].startswith("ServerError: Compile worker lost: lease expired at "))
            bad = [] if ok else [f"{seen['status']}: {seen['reason']!r}"]
            label = f"reader clock ahead by {factor * LEASE:.1f} s (lease {LEASE:.0f} s)"
            results.setdefault(label, []).append({"seconds": None, "violations": bad,
                                                  "outcome": f"{seen['status']} {seen['reason'][:80]}".strip()})
            print(f"{label} rep {rep}: {seen['status']} {bad or 'ok'}", flush=True)


# the real TVM compiler (tiny ONNX model, a 16-trial tuning budget): kill points are lines of its log
REAL_POINTS = {"import": "[compiler] phase import: started", "tune": "[compiler] tuning: 1 kernels",
               "check": "[compiler] phase check: started"}


def _relu_archive(path: Path, width: int) -> None:
    import io
    import tarfile

    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input0", TensorProto.FLOAT, [1, 3, 8, width])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, width])
    graph = helper.make_graph([helper.make_node("Relu", ["input0"], ["output0"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def run_real(results: dict, trials: int = 16) -> None:
    """``kill -9`` of the runner and of the compile child of a real TVM compile at each kill point."""
    import signal

    from airflow_neo.local import runner
    from airflow_neo.local.config import LocalJobConfig
    from airflow_neo.local.settings import CompileSettings
    from airflow_neo.local.store import pid_alive
    from tests.local.test_runner import make_request

    world = chaos.World(Path(tempfile.mkdtemp(prefix="neo-chaos-real-")), lease_seconds=LEASE)
    config = LocalJobConfig(store=str(world.target), lease_seconds=LEASE, compile=CompileSettings(tuning_trials=trials))
    width = 8
    for victim in ("child", "runner"):
        for point, line in REAL_POINTS.items():
            width += 1
            name = f"real-{victim}-{point}"
            archive = world.root / f"{name}.tar.gz"
            _relu_archive(archive, width)
            out = world.root / "out" / name
            request = make_request(name, str(archive), str(out), platform={"Os": "LINUX", "Arch": "X86_64"})
            request["InputConfig"]["DataInputConfig"] = json.dumps({"input0": [1, 3, 8, width]})
            world.store.create(request)
            keys_before = chaos.cache_keys(world.cache_dir)
            pid = runner.launch_detached(world.target, name, config=config)
            log = world.store.log_path(name)
            chaos._wait(lambda: log.exists() and line in log.read_text(), 600, 0.05)
            found = re.findall(r"compile child pid (\d+) started", log.read_text())
            child = int(found[-1])
            children = chaos.child_pids(pid)  # the compile child and multiprocessing's resource tracker
            assert child in children, (child, children)
            target = pid if victim == "runner" else child
            killed_at = time.monotonic()
            os.kill(target, signal.SIGKILL)
            job = chaos._wait(lambda: (j := world.status(name))["CompilationJobStatus"] in st.TERMINAL_STATES and j,
                              LEASE + 120, 0.05)
            seconds = time.monotonic() - killed_at
            chaos._wait(lambda: not any(pid_alive(p) for p in [pid, *children]), 60)
            reason = job.get("FailureReason", "")
            bad = []
            expected = ("ServerError: Compile worker lost: process" if victim == "runner"
                        else "ServerError: Compilation failed: internal compiler crash (signal 9: SIGKILL)")
            if job["CompilationJobStatus"] != st.FAILED or not reason.startswith(expected):
                bad.append(f"{job['CompilationJobStatus']}: {reason[:160]!r}")
            if out.exists() and list(out.iterdir()):
                bad.append(f"output {sorted(p.name for p in out.iterdir())}")
            if chaos.cache_keys(world.cache_dir) - keys_before:
                bad.append("new cache entry")
            bad += chaos.cache_problems(world.cache_dir) + chaos.tuning_problems(world.tuning_dir)
            label = f"kill -9 {victim} in real TVM {point} [sqlite]"
            results.setdefault(label, []).append({"seconds": round(seconds, 3), "violations": bad,
                                                  "outcome": job["CompilationJobStatus"]})
            print(f"{label}: {job['CompilationJobStatus']} in {seconds:.2f} s {bad or 'ok'}", flush=True)


def run_fakes(results: dict, repeat: int, *, postgres: bool) -> None:
    """Every case with the fake compile function (tests.support.chaos.phased)."""
    kinds = ["sqlite"]
    pg = chaos.PrivatePostgres() if postgres else None
    try:
        pg_url = pg.start() if pg is not None else None
        if pg_url:
            kinds.append("postgres")
        run_kills(results, kinds, repeat, pg_url)
    finally:
        if pg is not None:
            pg.remove()
    run_disk(results, repeat)
    run_s3(results, repeat)
    if postgres:
        run_postgres_restart(results, repeat)
    run_skew(results, repeat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--real", action="store_true", help="also kill real TVM compiles (about 1 min each)")
    parser.add_argument("--only-real", action="store_true", help="only the real TVM compiles")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_chaos.json")))
    args = parser.parse_args()
    started = time.monotonic()
    results: dict[str, list[dict]] = {}
    if args.real or args.only_real:
        run_real(results)
    if not args.only_real:
        run_fakes(results, args.repeat, postgres=not args.no_postgres)
    summary = {case: _summary(rows) for case, rows in results.items()}
    report = {"repeat": None if args.only_real else args.repeat, "real_compiles_once_each": args.real or args.only_real, "lease_seconds": LEASE, "wall_seconds": round(time.monotonic() - started, 1),
              "cases": summary}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'case':58} {'passed':>8}  seconds to terminal (min/median/max)")
    for case, row in summary.items():
        secs = row["seconds_to_terminal"]
        timing = f"{secs['min']:.2f} / {secs['median']:.2f} / {secs['max']:.2f}" if secs else "-"
        print(f"{case:58} {row['passed']:>3}/{row['runs']:<4}  {timing}")
    print(f"wall {report['wall_seconds']} s; written to {args.out}")
    return 0 if all(row["passed"] == row["runs"] for row in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
