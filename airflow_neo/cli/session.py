"""The hook a command runs on: backend choice, AWS connection, endpoint and quiet logging.

Everything here imports Airflow, so it is only loaded when a command actually runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_neo.cli.errors import ConfigError

if TYPE_CHECKING:
    from airflow_neo.hooks.base import CompilationJobHook

#: The in-memory connection that hands ``--aws-conn-id`` (and ``--endpoint-url``) to the hook.
CLI_CONN_ID = "airflow_neo_cli"
CLI_CONN_ENV = f"AIRFLOW_CONN_{CLI_CONN_ID.upper()}"


@dataclass(frozen=True)
class Target:
    """The global options that choose where a command goes."""

    backend: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    aws_conn_id: str | None = None
    local_store: str | None = None
    verify_ssl: bool = True
    debug: bool = False


def resolve_backend(explicit: str | None) -> str:
    """``--backend``, else ``[neo] default_backend`` (env ``AIRFLOW__NEO__DEFAULT_BACKEND``), else sagemaker."""
    from airflow_neo.core.backends import parse_backend
    from airflow_neo.core.exceptions import UnknownBackendError

    if explicit:
        value = explicit
    else:
        from airflow.sdk.configuration import conf

        value = conf.get("neo", "default_backend", fallback="sagemaker") or "sagemaker"
    try:
        return parse_backend(value).value
    except UnknownBackendError as err:
        raise ConfigError(f"Invalid [neo] default_backend: {err}") from None


def import_airflow_quietly(debug: bool) -> None:
    """Import Airflow's configuration with its log level at WARNING unless ``--debug``.

    Airflow configures logging (to stdout) once, when it is first imported, from
    ``[logging] logging_level``; the variable is only set for that import (a user's own setting
    wins) and removed again, so that processes started later (the local runner) log as usual.
    """
    if "airflow.sdk.configuration" in sys.modules:
        return
    name = "AIRFLOW__LOGGING__LOGGING_LEVEL"
    if debug or name in os.environ:
        import airflow.sdk.configuration  # noqa: F401
        return
    os.environ[name] = "WARNING"
    try:
        import airflow.sdk.configuration  # noqa: F401
    finally:
        os.environ.pop(name, None)


@contextlib.contextmanager
def quiet_airflow_logging(debug: bool) -> Iterator[None]:
    """Keep stdout for the command's output while hooks run.

    Airflow's loggers write to stdout (its structlog loggers resolve ``sys.stdout`` when they are
    created; its stdlib handler holds the stream it was configured with). Here the stdlib handler
    writes to stderr and drops records at INFO and below, and what structlog writes is held back:
    shown on stderr if the command fails, dropped if it succeeds. With ``--debug`` everything goes
    to stderr. Restored on exit (tests call the command line in-process).
    """
    root = logging.getLogger()
    moved = []
    for handler in root.handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and stream is not None and stream in (sys.stdout, sys.__stdout__):
            moved.append((handler, stream))
            handler.setStream(sys.stderr)
    previous = logging.root.manager.disable
    if not debug:
        logging.disable(logging.INFO)
    held = io.StringIO()
    try:
        with contextlib.redirect_stdout(sys.stderr if debug else held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    finally:
        logging.disable(previous)
        for handler, stream in moved:
            handler.setStream(stream)


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _lookup_connection(conn_id: str):
    """The Airflow connection ``conn_id``: environment and secrets backends, then the metadata database.

    Outside a task, the Task SDK's lookup does not read the metadata database, where
    ``airflow connections add`` puts connections; the command line reads it too.
    """
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as sdk_error:  # AirflowNotFoundException, or no supervisor to ask
        try:
            from airflow.models.connection import Connection

            return Connection.get_connection_from_secrets(conn_id)
        except Exception:
            raise ConfigError(f"The Airflow connection ({conn_id}) could not be found: {sdk_error}") from None


def _connection_payload(conn_id: str) -> dict:
    """The Airflow connection ``conn_id`` as ``AIRFLOW_CONN_*`` JSON fields (a config error if it is missing)."""
    payload = json.loads(_lookup_connection(conn_id).as_json())
    extra = payload.get("extra") or {}
    payload["extra"] = json.loads(extra) if isinstance(extra, str) else dict(extra)
    payload.pop("conn_id", None)
    return payload


@contextlib.contextmanager
def connection_for(target: Target) -> Iterator[str | None]:
    """The AWS connection id the hook should use.

    Without ``--aws-conn-id`` and ``--endpoint-url`` the hook gets no connection: boto3's default
    chain (environment variables, profile, instance or task role) applies. Otherwise the
    connection is handed to the hook as an in-memory connection (environment variable
    ``AIRFLOW_CONN_AIRFLOW_NEO_CLI``, removed afterwards): the ``--aws-conn-id`` connection
    wherever it is defined (so a connection in the metadata database works too), with
    ``extra.endpoint_url`` replaced by ``--endpoint-url``; or, with only ``--endpoint-url``, a
    bare connection that takes its credentials from the usual AWS environment.
    """
    if not target.aws_conn_id and not target.endpoint_url:
        yield None
        return
    payload = _connection_payload(target.aws_conn_id) if target.aws_conn_id else {"conn_type": "aws", "extra": {}}
    if target.endpoint_url:
        payload["extra"]["endpoint_url"] = target.endpoint_url
    with _env(CLI_CONN_ENV, json.dumps(payload)):
        yield CLI_CONN_ID


@contextlib.contextmanager
def open_hook(target: Target) -> Iterator[CompilationJobHook]:
    """The compilation-job hook for ``target``, with logging kept off stdout while it is used."""
    with contextlib.redirect_stdout(sys.stderr):  # whatever Airflow logs while it starts goes to stderr too
        import_airflow_quietly(target.debug)
    with quiet_airflow_logging(target.debug):
        backend = resolve_backend(target.backend)
        with connection_for(target) as conn_id:
            from airflow_neo.hooks.factory import get_neo_hook
            from airflow_neo.hooks.params import NeoConnectionParams

            yield get_neo_hook(
                NeoConnectionParams(
                    backend=backend,
                    aws_conn_id=conn_id,
                    region_name=target.region,
                    verify=None if target.verify_ssl else False,
                    local_store=target.local_store,
                )
            )


def list_page_method(hook):
    """One ListCompilationJobs call with the hook's semantics (the CLI pages the AWS CLI's way)."""
    return hook.list_compilation_jobs_page
