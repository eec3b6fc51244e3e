"""Airflow's own API server app, in this process, with airflow-neo's plugin and a real auth manager.

``airflow_app`` is :func:`airflow.api_fastapi.app.create_app` (the app ``airflow api-server``
serves) on a migrated metadata database, with :class:`tests.ui.auth_managers.TeamAuthManager`
and four users; ``token_for(user)`` signs a JWT the way Airflow's login does. Each module gets its
own local job store (``ui_store``), which the plugin reads through ``[neo] local_store``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: user -> simple auth manager role
USERS = {"admin": "admin", "editor": "user", "viewer": "viewer", "team-b-editor": "user"}
AUTH_MANAGER = "tests.ui.auth_managers.TeamAuthManager"
REPO = Path(__file__).resolve().parents[2]


def airflow_ui_env() -> dict[str, str]:
    """The configuration the UI tests run Airflow with (also for an ``airflow api-server`` process)."""
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__NEO__DEFAULT_BACKEND": "local",
    }


@pytest.fixture(scope="session")
def migrated_db() -> None:
    """The test AIRFLOW_HOME's metadata database, migrated once."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory) -> str:
    """This module's local job store, which the plugin lists."""
    path = str(tmp_path_factory.mktemp("ui-store") / "jobs.sqlite")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__NEO__LOCAL_STORE", path)
        forget_hooks()
        yield path
    forget_hooks()


@pytest.fixture(scope="module")
def airflow_app(migrated_db, ui_store):
    from fastapi.testclient import TestClient

    with pytest.MonkeyPatch.context() as patch:
        for name, value in airflow_ui_env().items():
            patch.setenv(name, value)
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        app = create_app(apps="core")
        with TestClient(app, base_url="http://localhost") as client:
            yield client
        purge_cached_app()


@pytest.fixture(scope="module")
def token_for(airflow_app):
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    def token(user: str) -> str:
        return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=user, role=USERS[user]))

    return token


def forget_hooks() -> None:
    """Drop the plugin's cached hooks (they hold the store and connection of the configuration they were made with)."""
    from airflow_neo.ui import backends

    backends._hook.cache_clear()
