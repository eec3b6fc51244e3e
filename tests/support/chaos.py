"""Fault injection for the chaos tests (tests/local/test_chaos.py, benchmarks/chaos.py): a fake
compile function that announces its phases and can hang in one, a slow S3 endpoint, the runner's
and compile child's pids, and the integrity checks of the compile cache and tuning database.

:func:`phased` is module-level so the spawned compile child imports it by name
(``tests.support.chaos:phased``); it reads its parameters from the job's Tags:

* ``marker_dir``: it writes ``<marker_dir>/<phase>`` (its pid) when it enters a phase;
* ``hang``: the phase (``import``, ``tune``, ``build``) it stays in (sleeping, or in ``tune``
  merging tuning records in a loop) until it is killed;
* ``hang_seconds``: how long it hangs there (default: until killed; ``tune`` always loops until killed);
* ``artifact_mb``: the size of the artifact it writes (a big one makes publishing take a while).

The tune phase writes real records through :mod:`airflow_neo.local.tuning_db` (snapshot, then
merge into ``<tuning_database>/chaos-target``), as the compiler does.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import tarfile
import threading
import time
from pathlib import Path

from tests.support.waiting import wait_for

HANG_SECONDS = 300
TUNING_TARGET = "chaos-target"


def _tag(request, key: str) -> str | None:
    for tag in request.payload.get("Tags", []):
        if tag["Key"] == key:
            return tag["Value"]
    return None


def _enter(request, phase: str, log) -> bool:
    """Announce ``phase`` (marker file written atomically); returns whether to hang in it."""
    log(f"chaos phase {phase}")
    marker_dir = _tag(request, "marker_dir")
    if marker_dir:
        tmp = Path(marker_dir) / f".{phase}.tmp"
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, Path(marker_dir) / phase)
    return _tag(request, "hang") == phase


def _tune(tuning_database: str, work_dir: str, rounds: int) -> None:
    from airflow_neo.local import tuning_db

    shared = Path(tuning_database) / TUNING_TARGET
    snap = tuning_db.snapshot(shared, Path(work_dir) / "tune")
    workload = json.dumps([hashlib.sha256(b"chaos-workload").hexdigest(), {"mod": "x" * 64}])
    for i in range(rounds):
        workloads = (snap.directory / tuning_db.WORKLOAD_FILE)
        records = (snap.directory / tuning_db.RECORD_FILE)
        lines = [line for line in workloads.read_text().split("\n") if line]
        if workload not in lines:
            with open(workloads, "a") as handle:
                handle.write(workload + "\n")
            lines.append(workload)
        index = lines.index(workload)
        with open(records, "a") as handle:
            handle.write(json.dumps([index, [["trace", i], [0.001 + i * 1e-6], {"kind": "llvm"}, []]]) + "\n")
        tuning_db.merge(snap, {"chaos": 1})
        snap = tuning_db.snapshot(shared, Path(work_dir) / f"tune{i}")


def phased(request, archive_path, artifact_path, *, log=print, work_dir=None, tuning_database=None, **_):
    """A fake compile: import, tune (real tuning-database writes), build (the artifact); see the module docstring."""
    work_dir = work_dir or str(Path(artifact_path).parent)
    hang_seconds = float(_tag(request, "hang_seconds") or HANG_SECONDS)
    if _enter(request, "import", log):
        time.sleep(hang_seconds)
    model = Path(archive_path).read_bytes()
    hang = _enter(request, "tune", log)
    _tune(tuning_database, work_dir, rounds=10_000 if hang else 1)
    hang = _enter(request, "build", log)
    size = int(float(_tag(request, "artifact_mb") or 0) * 1024 * 1024)
    payload = b"compiled:" + hashlib.sha256(model).hexdigest().encode() + b"\0" * size
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=0) as tar:  # stored: artifact_mb is its size
        info = tarfile.TarInfo("compiled.so")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    data = buffer.getvalue()
    with open(artifact_path, "wb") as out:
        out.write(data[: len(data) // 2])  # half-written while "building"
        out.flush()
        if hang:
            time.sleep(hang_seconds)
        out.write(data[len(data) // 2 :])
    return {"framework": request.input_config["Framework"]}


# ----------------------------------------------------------------------------- processes


def runner_pid(store, name: str) -> int | None:
    """The pid the job's runner recorded in the store (None before one claimed it)."""
    from tests.support.stores import runner_info

    return runner_info(store, name).get("pid")


def child_pids(pid: int) -> list[int]:
    """The compile child(ren) of runner ``pid`` (psutil)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


# ----------------------------------------------------------------------------- integrity


def cache_problems(cache_dir: Path) -> list[str]:
    """What is wrong in the compile cache: an entry without its files, or whose artifact's BLAKE2b is
    not the one its entry.json records; staging dirs left over count too."""
    problems = []
    entries = cache_dir / "entries"
    if not entries.is_dir():
        return problems
    for child in sorted(entries.iterdir()):
        if child.name.startswith("."):
            problems.append(f"left-over staging dir {child.name}")
            continue
        try:
            entry = json.loads((child / "entry.json").read_text())
            digest = hashlib.blake2b((child / "model.tar.gz").read_bytes()).hexdigest()
        except (OSError, ValueError) as err:
            problems.append(f"{child.name}: {err}")
            continue
        if digest != entry.get("artifact_blake2b"):
            problems.append(f"{child.name}: artifact digest {digest[:16]} != recorded {str(entry.get('artifact_blake2b'))[:16]}")
    return problems


def cache_keys(cache_dir: Path) -> set[str]:
    entries = cache_dir / "entries"
    return {p.name for p in entries.iterdir() if not p.name.startswith(".")} if entries.is_dir() else set()


def tuning_problems(tuning_root: Path) -> list[str]:
    """Lines of the tuning databases' JSON-lines files that are not whole JSON values, and records
    whose workload index points past the workload file."""
    problems = []
    for db in sorted(p for p in tuning_root.glob("*") if p.is_dir()):
        counts = {}
        for name in ("database_workload.json", "database_tuning_record.json"):
            path = db / name
            if not path.exists():
                continue
            text = path.read_text()
            if text and not text.endswith("\n"):
                problems.append(f"{db.name}/{name}: torn last line")
            lines = [line for line in text.split("\n") if line]
            counts[name] = lines
            for number, line in enumerate(lines, 1):
                try:
                    json.loads(line)
                except ValueError:
                    problems.append(f"{db.name}/{name}:{number}: not JSON: {line[:60]!r}")
        workloads = len(counts.get("database_workload.json", []))
        for line in counts.get("database_tuning_record.json", []):
            try:
                if json.loads(line)[0] >= workloads:
                    problems.append(f"{db.name}: record for missing workload: {line[:60]!r}")
            except (ValueError, TypeError, IndexError, KeyError):
                pass
    return problems


# ----------------------------------------------------------------------------- a slow S3 endpoint


class SlowS3:
    """An HTTP endpoint that answers S3 HEAD/GET of any key with ``size`` bytes sent slowly (and
    accepts nothing else): a runner fetching from it stays in its fetch phase. ``get_started`` is
    set when a GET begins."""

    def __init__(self, size: int = 1 << 20, seconds: float = 120.0):
        self.size, self.seconds = size, seconds
        self.get_started = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _head(self):
                self.send_response(200)
                self.send_header("Content-Length", str(owner.size))
                self.send_header("ETag", '"chaos"')
                self.send_header("Last-Modified", "Wed, 01 May 2024 12:00:00 GMT")
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()

            def do_HEAD(self):
                self._head()

            def do_GET(self):
                self._head()
                owner.get_started.set()
                chunks = 100
                try:
                    for _ in range(chunks):
                        self.wfile.write(b"\0" * (owner.size // chunks))
                        self.wfile.flush()
                        time.sleep(owner.seconds / chunks)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> SlowS3:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------- one kill, observed

PHASES = ("fetch", "import", "tune", "build", "publish")
CHILD_PHASES = ("import", "tune", "build")  # the compile child exists only while compiling
COMPILE_FN = "tests.support.chaos:phased"


class World:
    """A job store with its cache and tuning database on this machine, where the chaos jobs run."""

    def __init__(self, root: Path, store_target: str | Path | None = None, lease_seconds: float = 5.0):
        from airflow_neo.local.store import JobStore

        self.root = Path(root)
        self.target = store_target or self.root / "state" / "jobs.db"
        self.store = JobStore(self.target)
        self.lease = lease_seconds
        self.cache_dir = self.store.root / "cache"
        self.tuning_dir = self.store.root / "tuning"

    def create(self, name: str, *, hang: str = "", artifact_mb: float = 0, source: str | None = None,
               retry_of: str | None = None, output: str | None = None, hang_seconds: float | None = None) -> Path:
        """Record job ``name`` on its own model archive (distinct bytes: no cache hit), or (``retry_of``)
        on that job's archive and output location; returns its output dir."""
        from tests.local.test_runner import _write_tar_gz, make_request

        archive = self.root / "models" / f"{retry_of or name}.tar.gz"
        archive.parent.mkdir(parents=True, exist_ok=True)
        if not retry_of:
            _write_tar_gz(str(archive), {"model.onnx": f"chaos model {name}".encode()})
        markers = self.root / "markers" / name
        markers.mkdir(parents=True, exist_ok=True)
        out = self.root / "out" / (retry_of or name)
        tags = {"marker_dir": str(markers), "hang": hang, "artifact_mb": str(artifact_mb)}
        if hang_seconds is not None:
            tags["hang_seconds"] = str(hang_seconds)
        self.store.create(make_request(name, source or str(archive), output or str(out), tags=tags))
        return out

    def launch(self, name: str, env: dict | None = None) -> int:
        from airflow_neo.local import runner

        return runner.launch_detached(self.target, name, compile_fn=COMPILE_FN, lease_seconds=self.lease, env=env)

    def marker(self, name: str, phase: str) -> Path:
        return self.root / "markers" / name / phase

    def status(self, name: str) -> dict:
        return self.store.describe(name)


def kill_case(world: World, victim: str, phase: str, name: str, *, artifact_mb: float = 16) -> dict:
    """Start job ``name``, ``kill -9`` its ``victim`` (``runner`` or ``child``) in ``phase``, and observe:
    the final status and reason, seconds from the kill to a terminal state seen by a reader, the
    files at the output location, the cache and tuning-database problems, the new cache keys, and
    whether the phase was really the one killed in (``phase_hit``)."""
    import signal

    from airflow_neo.core import status as st
    from airflow_neo.local.store import pid_alive

    keys_before = cache_keys(world.cache_dir)
    env = None
    slow = None
    source = None
    if phase == "fetch":
        slow = SlowS3().__enter__()
        source = "s3://chaos/in/model.tar.gz"
        env = {"AWS_ENDPOINT_URL_S3": slow.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
    hang = phase if phase in CHILD_PHASES else ""
    try:
        out = world.create(name, hang=hang, artifact_mb=artifact_mb if phase == "publish" else 0, source=source)
        launched = world.launch(name, env=env)
        if phase == "fetch":
            wait_for(slow.get_started.is_set, 60, 0.01)
        elif phase == "publish":
            wait_for(lambda: out.is_dir() and any(out.glob(".*.partial")), 60, interval=0.002)
        else:
            wait_for(world.marker(name, phase).exists, 60, 0.01)
        pid = runner_pid(world.store, name)
        child = int(world.marker(name, phase).read_text()) if phase in CHILD_PHASES else None
        children = child_pids(pid)  # psutil: the compile child is the runner's child
        target = pid if victim == "runner" else child
        if target is None:
            raise ValueError(f"no compile child in phase {phase}")
        killed_at = time.monotonic()
        os.kill(target, signal.SIGKILL)
        job = wait_for(lambda: (j := world.status(name))["CompilationJobStatus"] in st.TERMINAL_STATES and j,
                       world.lease + 60, 0.01)
        seen_after = time.monotonic() - killed_at
        wait_for(lambda: not pid_alive(pid), 30, 0.01)  # the runner ends (killed, or after recording the failure)
        if child is not None:
            wait_for(lambda: not pid_alive(child), 30, 0.01)
        log = world.store.log_path(name).read_text()
        done = f"phase {'compile' if phase in CHILD_PHASES else phase}: done"
        return {
            "victim": victim, "phase": phase, "name": name, "runner_pid": pid, "launched_pid": launched,
            "child_pid": child, "child_is_runners_child": child in children if child else None,
            "status": job["CompilationJobStatus"], "reason": job.get("FailureReason", ""),
            "seconds_to_terminal": round(seen_after, 3), "lease_seconds": world.lease,
            "output_files": sorted(p.name for p in out.iterdir()) if out.exists() else [],
            "new_cache_keys": sorted(cache_keys(world.cache_dir) - keys_before),
            "cache_problems": cache_problems(world.cache_dir),
            "tuning_problems": tuning_problems(world.tuning_dir),
            "phase_hit": done not in log,
            "host": world.store.host,
        }
    finally:
        if slow is not None:
            slow.__exit__(None, None, None)


# ----------------------------------------------------------------------------- disk full, S3 server down


class Tmpfs:
    """A ``size``-byte tmpfs mounted at ``directory`` (needs root / CAP_SYS_ADMIN: ``usable()`` says)."""

    def __init__(self, directory: Path, size: int):
        self.directory, self.size = Path(directory), size

    @staticmethod
    def usable(probe_dir: Path) -> str | None:
        """None when this process may mount a tmpfs, else why not."""
        probe = Path(probe_dir) / ".tmpfs-probe"
        probe.mkdir(parents=True, exist_ok=True)
        try:
            with Tmpfs(probe, 64 * 1024):
                return None
        except (OSError, RuntimeError) as err:
            return f"cannot mount a tmpfs here: {err}"
        finally:
            probe.rmdir()

    def __enter__(self) -> Tmpfs:
        import subprocess

        self.directory.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.directory)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr.strip() or f"mount exited {done.returncode}")
        return self

    def __exit__(self, *exc) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.directory)], capture_output=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoS3:
    """A real moto server (plain S3) in its own process on a fixed port, so it can be killed and
    started again at the same address (its objects do not survive: moto keeps them in memory)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        import subprocess
        import sys

        code = ("import sys,threading; from moto.server import ThreadedMotoServer; "
                f"s=ThreadedMotoServer(ip_address='127.0.0.1', port={self.port}, verbose=False); s.start(); "
                "print('up', flush=True); threading.Event().wait()")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.proc.stdout.readline()
        wait_for(lambda: self._answers(), 30, 0.05)
        return self

    def _answers(self) -> bool:
        import urllib.request

        try:
            urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def env(self) -> dict:
        return {"AWS_ENDPOINT_URL_S3": self.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1"}


def disk_full_case(world: World, name: str, *, disk_bytes: int = 1 << 20, artifact_mb: float = 4) -> dict:
    """Publish an ``artifact_mb`` artifact to an output directory on a ``disk_bytes`` tmpfs."""
    from airflow_neo.core import status as st

    out = world.root / "out" / name
    with Tmpfs(out, disk_bytes):
        (out / "other-file").write_bytes(b"x" * 1000)  # the location holds something already
        world.create(name, artifact_mb=artifact_mb)
        world.launch(name)
        job = wait_for(lambda: (j := world.status(name))["CompilationJobStatus"] in st.TERMINAL_STATES and j, 180, 0.05)
        files = sorted(p.name for p in out.iterdir())
    return {"status": job["CompilationJobStatus"], "reason": job.get("FailureReason", ""), "output_files": files,
            "cache_problems": cache_problems(world.cache_dir), "out": str(out)}


def s3_down_case(world: World, name: str, *, artifact_mb: float = 20, restart: bool = True,
                 max_attempts: int | None = None) -> dict:
    """Publish to a moto S3 server that is killed once the multipart upload is under way (and, with
    ``restart``, started again at once at the same address, bucket recreated). ``max_attempts``:
    the runner's botocore attempts per request (``AWS_MAX_ATTEMPTS``; None: botocore's default)."""
    from airflow_neo.core import status as st

    moto = MotoS3().start()
    try:
        moto.client().create_bucket(Bucket="chaos")
        world.create(name, artifact_mb=artifact_mb, output=f"s3://chaos/out/{name}/")
        env = moto.env() if max_attempts is None else {**moto.env(), "AWS_MAX_ATTEMPTS": str(max_attempts)}
        killed_at = None
        world.launch(name, env=env)
        client = moto.client()
        wait_for(lambda: client.list_multipart_uploads(Bucket="chaos").get("Uploads"), 120, 0.02)
        moto.kill()
        killed_at = time.monotonic()
        if restart:
            moto.start()
            moto.client().create_bucket(Bucket="chaos")
        job = wait_for(lambda: (j := world.status(name))["CompilationJobStatus"] in st.TERMINAL_STATES and j, 300, 0.05)
        objects = []
        if restart:
            listing = moto.client().list_objects_v2(Bucket="chaos")
            objects = [item["Key"] for item in listing.get("Contents", [])]
        return {"status": job["CompilationJobStatus"], "reason": job.get("FailureReason", ""), "objects": objects,
                "seconds_to_terminal": round(time.monotonic() - killed_at, 3)}
    finally:
        moto.kill()


# ----------------------------------------------------------------------------- the PostgreSQL server restarted


class PrivatePostgres:
    """A PostgreSQL server of its own (``scripts/postgres.sh`` with a private data dir and port), so
    stopping it disturbs no other test's server."""

    def __init__(self, directory: Path | None = None, port: int | None = None):
        import tempfile
        import uuid

        # the server runs as the postgres user when we are root: its directory must be reachable by
        # it (pytest's tmp_path, under a 0700 directory, is not)
        self.directory = Path(directory or Path(tempfile.gettempdir()) / f"airflow-neo-chaos-pg-{uuid.uuid4().hex[:8]}")
        self.port = port or free_port()
        self.script = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"

    def _run(self, action: str) -> str:
        import subprocess

        env = {**os.environ, "AIRFLOW_NEO_PG_DIR": str(self.directory), "AIRFLOW_NEO_PG_PORT": str(self.port)}
        done = subprocess.run(["bash", str(self.script), action], env=env, capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise RuntimeError(f"postgres.sh {action} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    def start(self) -> str:
        """Start it (initdb the first time); returns its SQLAlchemy URL."""
        return self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def remove(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def postgres_restart_case(world: World, pg: PrivatePostgres, prefix: str, *, jobs: int = 3,
                          down_seconds: float = 3.0, hang_seconds: float = 4.0) -> dict:
    """Start ``jobs`` jobs (hanging ``hang_seconds`` in build), stop the store's PostgreSQL server once
    all compile, start it again ``down_seconds`` later, and wait until no job runs any more."""
    from airflow_neo.core import status as st

    names = [f"{prefix}-{i}" for i in range(jobs)]
    for name in names:
        world.create(name, hang="build", hang_seconds=hang_seconds)
        world.launch(name)
    for name in names:
        wait_for(world.marker(name, "build").exists, 120, 0.01)
    pg.stop()
    stopped_at = time.monotonic()
    time.sleep(down_seconds)
    pg.start()
    down = time.monotonic() - stopped_at
    finals = {}
    for name in names:
        job = wait_for(lambda: (j := world.status(name))["CompilationJobStatus"] in st.TERMINAL_STATES and j,
                       world.lease + hang_seconds + 120, 0.1)
        finals[name] = (job["CompilationJobStatus"], job.get("FailureReason", ""))
    running = [s["CompilationJobName"] for state in st.RUNNING_STATES
               for s in world.store.list(StatusEquals=state)["CompilationJobSummaries"]]
    outputs = {name: sorted(p.name for p in (world.root / "out" / name).glob("*")) for name in names}
    wrong = [name for name in names
             if outputs[name] != ([f"{name}-ml_c5.tar.gz"] if finals[name][0] == st.COMPLETED else [])]
    return {"finals": finals, "still_running": running, "seconds_down": round(down, 2), "wrong_outputs": wrong,
            "seconds_to_all_terminal": round(time.monotonic() - stopped_at, 2)}


# ----------------------------------------------------------------------------- clock skew between hosts


def clock_skew_case(world: World, name: str, skew_seconds: float, *, watch_seconds: float = 3.0) -> dict:
    """A runner compiles job ``name`` (hanging in build) while a reader on another host, its clock
    ``skew_seconds`` ahead (the store's injectable clock), describes it for ``watch_seconds``;
    returns what that reader saw, the final status and reason, and whether the runner ended and
    published nothing."""
    import datetime as dt

    from airflow_neo.core import status as st
    from airflow_neo.local.store import JobStore, pid_alive

    out = world.create(name, hang="build", hang_seconds=watch_seconds + 1)
    world.launch(name)
    wait_for(world.marker(name, "build").exists, 120, 0.01)
    pid = runner_pid(world.store, name)
    child = int(world.marker(name, "build").read_text())
    skewed = JobStore(world.target, host="host-b", work_dir=world.root / "host-b",
                      clock=lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=skew_seconds))
    seen = []
    deadline = time.monotonic() + watch_seconds
    while time.monotonic() < deadline:
        seen.append(skewed.describe(name)["CompilationJobStatus"])
        if seen[-1] in st.TERMINAL_STATES:
            break
        time.sleep(0.1)
    job = wait_for(lambda: (j := world.status(name))["CompilationJobStatus"] in st.TERMINAL_STATES and j,
                   world.lease + watch_seconds + 120, 0.1)
    wait_for(lambda: not pid_alive(pid) and not pid_alive(child), 60, 0.01)
    return {"skew_seconds": skew_seconds, "lease_seconds": world.lease, "seen_by_skewed_reader": sorted(set(seen)),
            "status": job["CompilationJobStatus"], "reason": job.get("FailureReason", ""), "runner_pid": pid,
            "host": world.store.host, "output_files": sorted(p.name for p in out.iterdir()) if out.exists() else [],
            "runner_log": world.store.log_path(name).read_text()}
