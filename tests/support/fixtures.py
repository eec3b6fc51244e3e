"""Pytest fixtures for a stateful moto SageMaker (see :mod:`tests.support.moto_neo`).

Load them with ``pytest_plugins = ["tests.support.fixtures"]`` in the root
``tests/conftest.py`` or import the fixture names into a test module.

* ``moto_server`` (session): an in-process ``ThreadedMotoServer`` on
  127.0.0.1 with :func:`moto_neo.install` applied; yields its endpoint URL.
* ``moto_reset`` (function): the same URL, with moto's backends, the
  compilation-job transition and pending throttles reset before and after the
  test. Request this one, not ``moto_server``, for isolated tests.
* ``aws_env`` (function): fake credentials, region us-east-1, and no profile,
  endpoint or config-file variables from the developer's shell.
* ``aws_conn_env`` (function): an Airflow connection ``aws_neo_test`` (env var
  ``AIRFLOW_CONN_AWS_NEO_TEST``) pointing at the server; yields the conn id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from tests.support import moto_neo

# Airflow reads these when it is first imported: set them before any test does.
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

AWS_CONN_ID = "aws_neo_test"
REGION = "us-east-1"

_AWS_VARS_TO_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",
)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Start one in-process moto server for the session; yield its URL."""
    moto_neo.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_reset(moto_server: str) -> Iterator[str]:
    """The server URL, with all moto and moto_neo state reset around the test."""
    _reset(moto_server)
    yield moto_server
    _reset(moto_server)


def _reset(endpoint_url: str) -> None:
    moto_neo.reset_server(endpoint_url)
    moto_neo.reset_extension_state()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake AWS credentials and region; nothing from the developer's AWS setup."""
    for name in _AWS_VARS_TO_DROP:
        monkeypatch.delenv(name, raising=False)
    missing = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def aws_connection_json(endpoint_url: str) -> str:
    """The ``AIRFLOW_CONN_*`` JSON of an AWS connection to ``endpoint_url``."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {
                "region_name": REGION,
                "endpoint_url": endpoint_url,
                "config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 1}},
            },
        }
    )


@pytest.fixture
def aws_conn_env(
    moto_reset: str, aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Airflow connection ``aws_neo_test`` to the (reset) moto server."""
    env_name = f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}"
    monkeypatch.setenv(env_name, aws_connection_json(moto_reset))
    yield AWS_CONN_ID
