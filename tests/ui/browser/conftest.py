"""Fixtures of the browser tests: one real api-server with seeded jobs, and Debian's Chromium.

* ``site`` (session): ``airflow api-server`` (:mod:`tests.ui.browser.server`) started on a freshly
  migrated database, and the jobs of :mod:`tests.ui.browser.seeds` made on a private SQLite job
  store while it starts (one by ``airflow dags test``); a failure names the step and shows the
  log's tail; the long jobs still running are stopped and the server's process group killed at
  teardown;
* ``browser`` (session): ``/usr/bin/chromium`` driven by Playwright (nothing downloaded), headless,
  with the flags that keep it off the network;
* ``page_as`` (function): ``page_as(user)`` is a new page (fresh context, viewport 1280x800) whose
  ``_token`` cookie is ``user``'s JWT from ``POST /auth/token``; ``page_as(None)`` is anonymous.

Chromium or Playwright missing: the tests skip with the reason, or fail under ``CI=true``
(the pattern of tests/support/requires.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.requires import require
from tests.ui.browser import seeds
from tests.ui.browser.server import ApiServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}


def compile_env(root: Path) -> dict[str, str]:
    """The ``[neo]`` options of the seeding compiles: verified and profiled (tests/conftest.py turns
    the profile off elsewhere), no tuning, a private compile cache shared by every seeding process."""
    return {
        "AIRFLOW__NEO__PROFILE_SECONDS": "0.5",
        "AIRFLOW__NEO__TUNING_TRIALS": "0",
        "AIRFLOW__NEO__LOCAL_MAX_CONCURRENT_COMPILES": "4",
        "AIRFLOW__NEO__CACHE_DIR": str(root / "cache"),
        "AIRFLOW__NEO__TUNING_DATABASE": str(root / "tuning"),
    }


def require_chromium() -> Path:
    """``/usr/bin/chromium``; a skip naming the install when it is missing, a failure under CI."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = f"{CHROMIUM} is missing (Debian: apt-get install chromium chromium-driver; scripts/setup.sh as root does it)"
    if os.environ.get("CI"):
        pytest.fail(f"required under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Site:
    """The started server, its job store and the seeded jobs' describe payloads."""

    server: ApiServer
    store: str
    payloads: dict[str, dict]

    @property
    def url(self) -> str:
        return self.server.url

    def page_url(self, query: str = "") -> str:
        return f"{self.url}/neo/ui/{query}"


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Iterator[Site]:
    require_chromium()
    require("playwright.sync_api", "pip install -e '.[test]'")
    root = tmp_path_factory.mktemp("neo-ui")
    store = str(root / "store" / "jobs.sqlite")
    server = None
    try:
        server = ApiServer.launch(root / "home", store)
        env = compile_env(root)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            payloads = seeds.seed_jobs(store, root, server.run_dag, env)
        server.wait_ready()
    except Exception as err:
        _teardown(server, store)
        pytest.fail(f"{type(err).__name__}: {err}", pytrace=False)
    try:
        yield Site(server, store, payloads)
    finally:
        _teardown(server, store)


def _teardown(server: ApiServer | None, store: str) -> None:
    """Stop the long jobs still running (their runners exit), then the server."""
    try:
        seeds.stop_running(store)
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def browser(site: Site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page_as(site: Site, browser) -> Iterator[Callable]:
    contexts = []

    def open_page(user: str | None):
        context = browser.new_context(viewport=VIEWPORT, base_url=site.url)
        context.set_default_timeout(20_000)
        contexts.append(context)
        if user is not None:
            context.add_cookies([{"name": "_token", "value": site.server.token(user), "url": site.url}])
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()
