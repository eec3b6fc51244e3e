"""The local compilation jobs the browser tests look at, made through the real local backend.

Every job is created by :class:`~airflow_neo.hooks.local.LocalNeoHook` on one SQLite job store
(the store the api-server's plugin reads) and run by a real detached runner:

* ``cnn-team-a`` COMPLETED: a real TVM compile of the sample CNN, verified and profiled
  (``profile_seconds`` > 0), made by the task ``compile`` of the DAG ``team_a_models``
  (tests/ui/browser/dags/) run by ``airflow dags test`` against the api-server's database: the
  operator tags the job and records it in XCom, as in production;
* ``cnn-team-b`` COMPLETED: the same model, tagged as made by a task of ``team_b_models``
  (:func:`~airflow_neo.core.attach.task_instance_tags`; a compile-cache hit);
* ``broken-upload`` FAILED: a corrupt archive, made outside Airflow (no task-instance tags);
* ``team-a-long-compile`` and ``team-b-long-compile`` INPROGRESS until stopped: their runner's
  compile function is :func:`hold_until_stopped` (a wait, no CPU), so they run for as long as the
  tests need a running job; their request, store record and runner are the real ones.

Only one real compile is done (about 10-30 s on 2 cores); the long jobs start after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from airflow_neo.core.attach import task_instance_tags
from airflow_neo.samples import write_sample_archive

ROLE_ARN = "arn:aws:iam::123456789012:role/NeoRole"
RUN_ID = "manual__2026-12-01T00:00:00+00:00"
HOLD_FN = "tests.ui.browser.seeds:hold_until_stopped"
HOLD_LIMIT_SECONDS = 900.0


@dataclass(frozen=True)
class Seed:
    name: str
    status: str
    dag_id: str | None = None
    task_id: str = "compile"

    @property
    def tags(self) -> list[dict]:
        return task_instance_tags(self.dag_id, self.task_id, RUN_ID) if self.dag_id else []


COMPLETED_A = Seed("cnn-team-a", "COMPLETED", "team_a_models")
COMPLETED_B = Seed("cnn-team-b", "COMPLETED", "team_b_models")
FAILED = Seed("broken-upload", "FAILED")
RUNNING_A = Seed("team-a-long-compile", "INPROGRESS", "team_a_models", "compile_long")
RUNNING_B = Seed("team-b-long-compile", "INPROGRESS", "team_b_models", "compile_long")
ALL = (COMPLETED_A, COMPLETED_B, FAILED, RUNNING_A, RUNNING_B)


def hold_until_stopped(request, archive_path, artifact_path, *, log=print, **_):
    """A compile function that compiles nothing: it waits until the runner ends it (a stop kills it)."""
    log(f"holding {request.payload['CompilationJobName']} until it is stopped")
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.5)
    raise RuntimeError(f"not stopped within {HOLD_LIMIT_SECONDS:.0f} s")


def request(seed: Seed, archive: Path, out: Path) -> dict:
    payload = {
        "CompilationJobName": seed.name,
        "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": archive.as_uri(), "Framework": "ONNX", "DataInputConfig": {"data": [1, 3, 32, 32]}},
        "OutputConfig": {"S3OutputLocation": (out / seed.name).as_uri(), "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1200},
    }
    if seed.tags:
        payload["Tags"] = seed.tags
    return payload


def seed_jobs(store: str, root: Path, run_dag: Callable[[str, dict[str, str]], None],
              compile_env: dict[str, str]) -> dict[str, dict]:
    """Create the jobs of the module docstring on ``store``; return each job's describe payload.

    :param run_dag: ``run_dag(dag_id, extra_env)`` runs a DAG of tests/ui/browser/dags to its end.
    :param compile_env: the ``[neo]`` options of the compiles (this process has them set already).
    """
    from airflow_neo.hooks.factory import get_neo_hook
    from airflow_neo.local.runner import launch_detached

    hook = get_neo_hook("local", local_store=store, aws_conn_id=None)
    archive = write_sample_archive(root / "models" / "model.tar.gz")
    corrupt = root / "models" / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00this is not a gzip stream")
    out = root / "out"
    hook.create_compilation_job(request(FAILED, corrupt, out))
    run_dag(COMPLETED_A.dag_id, {**compile_env, "AIRFLOW__NEO__LOCAL_STORE": store,
                                 "NEO_UI_TEST_ARCHIVE": str(archive), "NEO_UI_TEST_OUT": str(out / COMPLETED_A.name)})
    payloads = {seed.name: _wait(hook, seed) for seed in (COMPLETED_A, FAILED)}
    hook.create_compilation_job(request(COMPLETED_B, archive, out))
    payloads[COMPLETED_B.name] = _wait(hook, COMPLETED_B)
    for number, seed in enumerate((RUNNING_A, RUNNING_B), start=1):
        # another model each: the sample CNN's compile is in the cache, which would end the job at once
        held = write_sample_archive(root / "models" / f"held-{number}.tar.gz", seed=number)
        hook.store.create(hook.validate(request(seed, held, out)))
        launch_detached(hook.store, seed.name, config=hook.job_config, compile_fn=HOLD_FN)
    for seed in (RUNNING_A, RUNNING_B):
        payloads[seed.name] = _wait_running(hook, seed)
    return payloads


def report_of(store: str, name: str) -> dict:
    """The job's report as the hook builds it (what the page's artifact and report sections show)."""
    from airflow_neo.hooks.factory import get_neo_hook

    return get_neo_hook("local", local_store=store, aws_conn_id=None).compilation_report(name)


def stop_running(store: str) -> None:
    """Stop the long jobs that are still running (teardown), so their runners exit."""
    from airflow_neo.hooks.factory import get_neo_hook

    from airflow_neo.core.exceptions import CompilationJobNotFound

    hook = get_neo_hook("local", local_store=store, aws_conn_id=None)
    for seed in (RUNNING_A, RUNNING_B):
        try:
            if hook.describe_compilation_job(seed.name)["CompilationJobStatus"] in ("STARTING", "INPROGRESS"):
                hook.stop_compilation_job(seed.name)
        except CompilationJobNotFound:  # seeding stopped before it made that job
            continue


def _wait(hook, seed: Seed) -> dict:
    payload = hook.wait_for_compilation_job(seed.name, check_interval=0.5, max_wait=600)
    status = payload["CompilationJobStatus"]
    if status != seed.status:
        raise RuntimeError(f"seed job {seed.name}: expected {seed.status}, got {status} "
                           f"({payload.get('FailureReason', '')})\n{hook.job_log(seed.name)[-3000:]}")
    return payload


def _wait_running(hook, seed: Seed, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        payload = hook.describe_compilation_job(seed.name)
        if payload["CompilationJobStatus"] == "INPROGRESS":
            return payload
        if payload["CompilationJobStatus"] not in ("STARTING",):
            break
        time.sleep(0.3)
    raise RuntimeError(f"seed job {seed.name} is not INPROGRESS: {payload['CompilationJobStatus']}\n"
                       f"{hook.job_log(seed.name)[-3000:]}")
