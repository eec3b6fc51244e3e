"""A real ``airflow api-server`` for the browser tests, in a private AIRFLOW_HOME.

Invariants:

* the server runs the venv's ``airflow`` (``db migrate`` first, then ``api-server --apps core
  --workers 1`` on 127.0.0.1 and a free port) in its own process group, with an environment built
  here from scratch for Airflow (nothing of the pytest process's ``AIRFLOW__*`` leaks in: the
  tests' conftest sets unit-test mode, which the server must not run under);
* the DAGs folder is tests/ui/browser/dags; :meth:`ApiServer.run_dag` runs one of its DAGs with
  ``airflow dags test`` in the server's environment, so the DAG run, its task instances, their
  XComs and the serialized DAG are in the server's metadata database;
* the auth manager is :class:`tests.ui.auth_managers.TeamAuthManager` (Airflow's simple auth
  manager plus the team rule), its users are those of tests/ui/conftest.py and their passwords (:data:`PASSWORDS`) are written to the
  passwords file before the server starts, so logins are known in advance;
* the ``[neo]`` options point the plugin at the given local job store, local backend by default;
* :meth:`ApiServer.stop` kills the whole process group (the api-server's uvicorn worker too);
  a server that does not answer ``/api/v2/monitor/health`` in time raises with its log's tail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.ui.conftest import USERS, airflow_ui_env

REPO_ROOT = Path(__file__).resolve().parents[3]
AIRFLOW = Path(sys.executable).with_name("airflow")
DAGS = Path(__file__).resolve().parent / "dags"

#: user -> password (the users and their roles: tests.ui.conftest.USERS)
PASSWORDS = {user: f"{user}-pass" for user in USERS}
START_TIMEOUT = 240.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path, port: int, store: str) -> dict[str, str]:
    """The api-server's environment: this process's, less every ``AIRFLOW__*``, plus ours."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env.update({
        "AIRFLOW_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_tests_only_path(home)), env.get("PYTHONPATH", "")])),
        **airflow_ui_env(),  # the auth manager, its users and the default backend
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-neo-browser-tests-" + "0123456789abcdef" * 4,
        "AIRFLOW__NEO__LOCAL_STORE": store,
    })
    return env


def _tests_only_path(home: Path) -> Path:
    """A directory holding only a link to the repository's ``tests`` package (for the auth manager).

    Not the repository root: that holds ``airflow_neo.egg-info`` next to the venv's metadata, so
    Airflow would find the plugin's entry point twice and report a plugin import error."""
    path = home / "pythonpath"
    path.mkdir(exist_ok=True)
    link = path / "tests"
    if not link.exists():
        link.symlink_to(REPO_ROOT / "tests", target_is_directory=True)
    return path


@dataclass
class ApiServer:
    """A started ``airflow api-server`` (see the module docstring)."""

    home: Path
    port: int
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def launch(cls, home: Path, store: str) -> ApiServer:
        """Migrate the metadata database, then start the server in the background (see :meth:`wait_ready`)."""
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        env = server_env(home, port, store)
        _run([str(AIRFLOW), "db", "migrate"], env, home, home / "db-migrate.log")
        log_path = home / "api-server.log"
        command = [str(AIRFLOW), "api-server", "--apps", "core", "--workers", "1", "--host", "127.0.0.1",
                   "--port", str(port)]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, cwd=str(home), start_new_session=True)
        return cls(home=home, port=port, process=process, log_path=log_path, env=env)

    def run_dag(self, dag_id: str, extra_env: dict[str, str]) -> None:
        """``airflow dags test dag_id`` in the server's environment plus ``extra_env``; RuntimeError
        with its log's tail unless the run succeeded."""
        log_path = self.home / f"dags-test-{dag_id}.log"
        _run([str(AIRFLOW), "dags", "test", dag_id], {**self.env, **extra_env}, self.home, log_path)
        text = log_path.read_text(errors="replace")
        if "state=success" not in text:
            raise RuntimeError(f"airflow dags test {dag_id}: the run did not succeed:\n{_tail(text)}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Return once ``/api/v2/monitor/health`` answers 200; RuntimeError with the log's tail if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow api-server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"airflow api-server did not answer /api/v2/monitor/health in {timeout:.0f} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self) -> str:
        return _tail(self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)")

    def stop(self) -> None:
        """Kill the server's process group (TERM, then KILL after 15 s)."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            pass

    def token(self, user: str) -> str:
        """A JWT for ``user`` from ``POST /auth/token`` (username and password as JSON), cached."""
        if user not in self.tokens:
            _status, body = self.request("POST", "/auth/token",
                                         {"username": user, "password": PASSWORDS[user]}, expect=201)
            self.tokens[user] = body["access_token"]
        return self.tokens[user]

    def request(self, method: str, path: str, body: dict | None = None, *, user: str | None = None,
                expect: int | None = None) -> tuple[int, dict]:
        """``(status, JSON body)`` of a request to the server, as ``user`` (a bearer token) or anonymous."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if user is not None:
            headers["Authorization"] = f"Bearer {self.token(user)}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"raw": raw.decode(errors="replace")}
        if expect is not None and status != expect:
            raise AssertionError(f"{method} {path}: expected {expect}, got {status}: {payload}")
        return status, payload


def _run(command: list[str], env: dict[str, str], cwd: Path, log_path: Path, timeout: float = 600) -> None:
    """Run ``command`` to its end, its output in ``log_path``; RuntimeError with the log's tail if it fails."""
    with open(log_path, "ab") as log:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=str(cwd), timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} exited with {done.returncode}:\n"
                           f"{_tail(log_path.read_text(errors='replace'))}")


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])
