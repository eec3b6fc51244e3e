"""Starting a runner: the detached process the hook launches, and its command line.

``launch_detached`` starts ``python -m airflow_neo.local.runner --job NAME`` in a new session, so
the compile goes on after the launching task process exits (a deferred Airflow task).

Invariants:

* the job's :class:`~airflow_neo.local.config.LocalJobConfig` crosses into the runner once, as
  one value: ``config.to_env()`` (``$AIRFLOW_NEO_JOB_CONFIG``) in the runner's environment, read by
  :func:`main` with ``LocalJobConfig.from_env()``; the store's URL (it may hold a password) is
  therefore never on a command line, where ``ps`` would show it;
* the AWS connection travels as the ``AIRFLOW_CONN_*`` variable the caller passes in ``env`` (a
  secret, not configuration);
* the runner's stdout and stderr go to the job's log file; the launching process reaps the runner
  if it outlives it, so it never lingers as a zombie;
* command-line options of :func:`main` override the config's fields (a runner started by hand).

Nothing here imports Airflow (the ``aws_conn_id`` path imports the Amazon provider's S3Hook when
the S3 client is first needed); TVM is imported only inside the compile child.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.local.config import DEFAULT_LEASE_SECONDS, ENV_JOB_CONFIG, LocalJobConfig
from airflow_neo.local.runner.job import job_config, run_job
from airflow_neo.local.runner.outcomes import Terminated
from airflow_neo.local.store import STORE_URL_ENV, JobStore, is_store_url, open_store, store_url

__all__ = ["launch_detached", "main", "runner_command"]

PROG = "airflow_neo.local.runner"


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[3])


def runner_command(
    store_path: str | os.PathLike[str] | None,
    name: str,
    *,
    aws_conn_id: str | None = None,
    memory_limit_bytes: int | None = None,
    compile_fn: str | None = None,
    lease_seconds: float | None = None,
    python: str | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """The command line of a runner for job ``name``.

    ``store_path`` None: the store comes with the job's config in ``$AIRFLOW_NEO_JOB_CONFIG`` (what
    ``launch_detached`` does). A store URL with a password is not put on the command line (where
    ``ps`` shows it): the command says ``--store-from-env`` and the caller puts the URL in
    ``$AIRFLOW_NEO_STORE_URL``.
    """
    command = [python or sys.executable, "-m", PROG]
    if store_path is not None:
        target = str(store_path)
        if is_store_url(target) and store_url(target).password:
            command += ["--store-from-env"]
        else:
            command += ["--store", target]
    command += ["--job", name]
    if work_dir:
        command += ["--work-dir", str(work_dir)]
    if aws_conn_id:
        command += ["--aws-conn-id", aws_conn_id]
    if memory_limit_bytes:
        command += ["--memory-limit", str(int(memory_limit_bytes))]
    if compile_fn:
        command += ["--compile-fn", compile_fn]
    if lease_seconds:
        command += ["--lease-seconds", str(lease_seconds)]
    return command


def launch_detached(
    store_path: str | os.PathLike[str] | JobStore,
    name: str,
    *,
    config: LocalJobConfig | None = None,
    env: dict[str, str] | None = None,
    compile_fn: str | None = None,
    aws_conn_id: str | None = None,
    memory_limit_bytes: int | None = None,
    lease_seconds: float | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Start ``python -m airflow_neo.local.runner`` for job ``name`` in a new session; returns its pid.

    The runner outlives the calling process; its stdout/stderr go to the job's log file
    (``<store root>/logs/<name>.log``). ``config``: the job's LocalJobConfig (what the hook built);
    without one it is made from ``aws_conn_id``, ``memory_limit_bytes`` (None: no cap),
    ``lease_seconds`` and ``work_dir``. Its store and work dir are those of ``store_path`` (a
    SQLite file, a SQLAlchemy URL or a JobStore). ``env`` entries are added to (override) this
    process's environment. ``compile_fn`` is a ``"module:function"`` string (default: the TVM compiler).
    """
    config = job_config(store_path, config, caller="launch_detached", aws_conn_id=aws_conn_id,
                        memory_limit_bytes=memory_limit_bytes, lease_seconds=lease_seconds, work_dir=work_dir)
    store = open_store(store_path, work_dir=config.work_dir)
    config = config.replace(store=store.target, work_dir=str(store.root))
    log_path = store.log_path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {}), **config.to_env()}
    root = _package_root()
    existing = child_env.get("PYTHONPATH", "")
    if root not in existing.split(os.pathsep):
        child_env["PYTHONPATH"] = root + (os.pathsep + existing if existing else "")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            runner_command(None, name, compile_fn=compile_fn),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=child_env,
            cwd=str(store.root),
        )
    # Reap it if this process lives longer than the runner, so it never lingers as a zombie.
    threading.Thread(target=proc.wait, name=f"neo-reap-{proc.pid}", daemon=True).start()
    return proc.pid


def _config_from(args: argparse.Namespace) -> LocalJobConfig:
    """The job's config: ``$AIRFLOW_NEO_JOB_CONFIG``, with the options given on the command line
    over it; without it, the options alone (no memory cap unless ``--memory-limit``)."""
    config = LocalJobConfig.from_env()
    store = os.environ.get(STORE_URL_ENV, "") if args.store_from_env else args.store
    if args.store_from_env and not store:
        raise ValueError(f"--store-from-env but ${STORE_URL_ENV} is empty")
    if config is None:
        if not store:
            raise ValueError(f"give --store or --store-from-env, or the job's config in ${ENV_JOB_CONFIG}")
        config = LocalJobConfig(store=store, memory_limit_bytes=None)
    overrides = {
        "store": store or None,
        "work_dir": args.work_dir,
        "aws_conn_id": args.aws_conn_id,
        "memory_limit_bytes": args.memory_limit,
        "lease_seconds": args.lease_seconds,
    }
    return config.replace(**{field: value for field, value in overrides.items() if value is not None})


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_neo.local.runner [--store PATH|URL | --store-from-env] --job NAME [--work-dir DIR] [--aws-conn-id ID] [--memory-limit BYTES]``.

    The job's config comes from ``$AIRFLOW_NEO_JOB_CONFIG`` (set by ``launch_detached``); the
    options override it. Exit status: 0 when the job ended COMPLETED, 1 when it ended FAILED or
    STOPPED (or was no longer runnable), 2 for a usage error or an unknown job, 143/130/129 when
    killed by SIGTERM/SIGINT/SIGHUP.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=main.__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store", help="the job store: a SQLite file or a SQLAlchemy URL")
    where.add_argument(
        "--store-from-env", action="store_true", help=f"read the job store's URL from ${STORE_URL_ENV}"
    )
    parser.add_argument("--work-dir", default=None, help="directory for job logs and work dirs (default: the store's)")
    parser.add_argument("--job", required=True, help="the compilation job name")
    parser.add_argument("--aws-conn-id", default=None, help="Airflow AWS connection for s3:// URIs (default: boto3's)")
    parser.add_argument("--memory-limit", type=int, default=None, help="RLIMIT_AS of the compile process, in bytes")
    parser.add_argument("--compile-fn", default=None, help="module:function to compile with (default: the TVM compiler)")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--lease-seconds", type=float, default=None, help=f"the job's lease (default {DEFAULT_LEASE_SECONDS:g})")
    args = parser.parse_args(argv)

    def on_signal(signum, _frame):
        raise Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        try:
            config = _config_from(args)
        except ValueError as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            return 2
        final = run_job(config.store, args.job, config=config, compile_fn=args.compile_fn,
                        poll_interval=args.poll_interval)
    except CompilationJobNotFound as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    except Terminated as term:
        return 128 + term.signum
    return 0 if final == st.COMPLETED else 1
