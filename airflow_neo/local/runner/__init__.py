"""The local backend's supervisor: runs one recorded compilation job to its end.

``run_job`` marks the job INPROGRESS, fetches the input archive into a private work dir, looks the
compile up in the compile cache, else compiles it in a ``spawn`` child process (memory-capped with
RLIMIT_AS, in its own process group, killed if the supervisor dies), renews the job's lease and
watches for a stop request and the job's MaxRuntimeInSeconds while it waits, then publishes the
artifact atomically and records COMPLETED, or records FAILED/STOPPED with a clear reason. A crash
of the compiler (a signal in the child) is a FAILED job, never a dead supervisor.

The parts, each with the invariants it keeps in its own docstring:

* ``job.py``: :class:`~.job.JobRun` (fetch -> cache -> compile -> publish -> record) and
  :func:`run_job`;
* ``transfer.py``: the input archive in, the artifact out (``s3://``, ``file://``, paths) and the
  job's S3 client;
* ``child.py``: the compile child (spawn, the message loop, kill of its process group);
* ``tiers.py``: the compile cache as ordered tiers (this machine's, then a shared ``s3://`` one);
* ``tuning_sync.py``: pull/push of a shared ``s3://`` tuning database;
* ``watch.py``: the lease heartbeat, stop requests and the time limit;
* ``outcomes.py``: how a run ends (one exception per recorded outcome);
* ``launch.py``: :func:`launch_detached`, :func:`runner_command` and :func:`main`
  (``python -m airflow_neo.local.runner``).

Invariants of the whole: one frozen :class:`~airflow_neo.local.config.LocalJobConfig` per job,
crossing each process boundary once (hook -> runner: ``$AIRFLOW_NEO_JOB_CONFIG``; runner ->
compile child: an argument of the spawn target) and reaching the compiler as arguments; the
compile child's files live in the job's work dir, which the runner removes whatever happens to
the child. Nothing here imports Airflow at module level; TVM is imported only in the compile child.
"""

from __future__ import annotations

from airflow_neo.local.runner.child import DEFAULT_COMPILE_FN, KILL_GRACE_SECONDS, CompileFn
from airflow_neo.local.runner.job import JobRun, run_job
from airflow_neo.local.runner.launch import launch_detached, main, runner_command

__all__ = [
    "DEFAULT_COMPILE_FN",
    "KILL_GRACE_SECONDS",
    "CompileFn",
    "JobRun",
    "launch_detached",
    "main",
    "run_job",
    "runner_command",
]
