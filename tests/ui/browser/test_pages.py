"""The "Compilation jobs" page in a real browser, served by a real ``airflow api-server``.

Debian's Chromium (Playwright, headless) against the plugin's page and API, on the jobs of
:mod:`tests.ui.browser.seeds` (made by the real local backend). Users (tests/ui/browser/server.py):
``admin``, ``editor`` (role user: may stop jobs of DAGs), ``viewer`` (read only), ``team-b-editor``
(role user, confined to ``team_b*`` DAGs by tests.ui.auth_managers.TeamAuthManager). One test logs
in through Airflow's own login form; the others set the ``_token`` cookie from ``POST /auth/token``.

The tests that show a page save its screenshot (1280x800) to docs/_static/ui/, so the docs show
the pages of the current code. The stop test runs after the ones that need the long jobs running.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.ui.browser import seeds
from tests.ui.browser.server import PASSWORDS

SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "_static" / "ui"
TIMEOUT_MS = 20_000
STOP_TIMEOUT_MS = 60_000  # the stop, the runner's exit and the list's next refresh (every 5 s)


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def open_view(page, site, query: str = ""):
    page.goto(site.page_url(query))
    expect(page.locator("body")).to_have_attribute("data-state", "ready", timeout=TIMEOUT_MS)
    return page


def rows(scope):
    return scope.locator("[data-testid=job-row]")


def row(scope, name: str):
    return scope.locator(f"[data-testid=job-row][data-job-name='{name}']")


def shown_names(scope) -> list[str]:
    return [rows(scope).nth(i).get_attribute("data-job-name") for i in range(rows(scope).count())]


def newest_first(site) -> list[str]:
    return [name for name, _p in sorted(site.payloads.items(), key=lambda item: item[1]["CreationTime"], reverse=True)]


# ----------------------------------------------------------------------------- Airflow's own UI


def test_login_form_then_the_nav_entry_opens_the_jobs_page_in_a_frame(site, page_as):
    page = page_as(None)
    page.goto(site.url + "/")
    page.wait_for_url(re.compile(r"/auth/login"), timeout=TIMEOUT_MS)
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORDS["admin"])
    page.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=TIMEOUT_MS)
    assert any(c["name"] == "_token" for c in page.context.cookies()), "Airflow's login sets the _token cookie"

    page.get_by_role("button", name="Compilation jobs").or_(page.get_by_role("link", name="Compilation jobs")).first.click()
    frame_element = page.locator("iframe[src*='/neo/ui/']")
    expect(frame_element).to_be_visible(timeout=TIMEOUT_MS)
    frame = page.frame_locator("iframe[src*='/neo/ui/']")
    expect(rows(frame)).to_have_count(len(seeds.ALL), timeout=TIMEOUT_MS)
    assert sorted(shown_names(frame)) == sorted(seed.name for seed in seeds.ALL)
    shoot(page, "airflow-nav")


# ----------------------------------------------------------------------------- the list


def test_list_shows_every_seeded_job_with_its_status_newest_first(site, page_as):
    page = open_view(page_as("admin"), site)
    expect(rows(page)).to_have_count(len(seeds.ALL))
    assert shown_names(page) == newest_first(site)
    for seed in seeds.ALL:
        expect(row(page, seed.name)).to_have_attribute("data-status", seed.status)
    expect(row(page, seeds.FAILED.name).locator("[data-testid=created-by]")).to_have_text("outside Airflow")
    expect(row(page, seeds.COMPLETED_A.name).locator("[data-testid=created-by]")).to_contain_text("team_a_models")
    expect(page.locator("[data-testid=refresh-note]")).to_be_visible()  # jobs are running
    expect(page.locator("[data-testid=hidden-note]")).to_have_count(0)
    shoot(page, "list")


def test_status_filter_failed_shows_only_the_failed_job_with_its_reason(site, page_as):
    page = open_view(page_as("admin"), site)
    page.locator("[data-testid=status-filter]").select_option("FAILED")
    page.locator("[data-testid=apply-filters]").click()
    expect(rows(page)).to_have_count(1)
    expect(rows(page)).to_have_attribute("data-job-name", seeds.FAILED.name)
    expect(rows(page)).to_have_attribute("data-status", "FAILED")
    expect(rows(page).locator("[data-testid=row-failure-reason]")).to_contain_text("not a valid .tar.gz")
    assert "status=FAILED" in page.url, "the filter is kept in the query string"
    shoot(page, "list-filtered")


def test_name_filter_narrows_and_a_reload_keeps_it(site, page_as):
    page = open_view(page_as("admin"), site)
    page.locator("[data-testid=name-filter]").fill("team-b")
    page.locator("[data-testid=apply-filters]").click()
    expect(rows(page)).to_have_count(2)
    assert sorted(shown_names(page)) == sorted([seeds.COMPLETED_B.name, seeds.RUNNING_B.name])
    page.reload()
    expect(rows(page)).to_have_count(2)
    expect(page.locator("[data-testid=name-filter]")).to_have_value("team-b")


def test_created_before_the_jobs_shows_the_empty_message(site, page_as):
    page = open_view(page_as("admin"), site)
    page.locator("[data-testid=created-before]").fill("2020-01-01T00:00")
    page.locator("[data-testid=apply-filters]").click()
    expect(page.locator("[data-testid=empty]")).to_be_visible()
    expect(rows(page)).to_have_count(0)


def test_pages_of_one_job_go_forward_and_back(site, page_as):
    page = open_view(page_as("admin"), site, "?view=list&max_results=1")
    expected = newest_first(site)
    seen = []
    for index in range(len(expected)):
        expect(rows(page)).to_have_count(1)
        expect(rows(page)).to_have_attribute("data-job-name", expected[index])
        seen.append(rows(page).get_attribute("data-job-name"))
        if index < len(expected) - 1:
            page.locator("[data-testid=next-page]").click()
    assert seen == expected
    expect(page.locator("[data-testid=next-page]")).to_be_disabled()
    page.locator("[data-testid=prev-page]").click()
    expect(rows(page)).to_have_attribute("data-job-name", expected[-2])
    page.locator("[data-testid=prev-page]").click()
    expect(rows(page)).to_have_attribute("data-job-name", expected[-3])


# ----------------------------------------------------------------------------- one job's page


def test_completed_job_page_shows_artifact_verification_profile_and_kernels(site, page_as):
    name = seeds.COMPLETED_A.name
    report = seeds.report_of(site.store, name)
    page = open_view(page_as("admin"), site, f"?view=job&backend=local&name={name}")
    expect(page.locator("[data-testid=job-title]")).to_have_text(name)
    expect(page.locator("[data-testid=job-status]")).to_have_text("COMPLETED")
    expect(page.locator("[data-testid=artifact-uri]")).to_have_text(site.payloads[name]["ModelArtifacts"]["S3ModelArtifacts"])
    assert report["digest"], report
    expect(page.locator("[data-testid=artifact-digest]")).to_have_text(report["digest"])
    expect(page.locator("[data-testid=verification] [data-testid=verdict]")).to_have_text("passed")
    expect(page.locator("[data-testid=verification]")).to_contain_text(report["verification"]["reference"])
    baseline = report["profile"]["baseline"]["name"]
    expect(page.locator("[data-testid=speedup]")).to_contain_text(baseline)
    chart = page.locator("[data-testid=kernel-chart]")
    expect(chart).to_be_visible()
    kernels = report["profile"]["top_kernels"]
    assert kernels, report["profile"]
    expect(chart.locator("rect.bar")).to_have_count(len(kernels))
    expect(chart).to_contain_text(kernels[0]["name"][:32])
    expect(page.locator("[data-testid=created-by]")).to_contain_text("team_a_models")
    expect(page.locator("[data-testid=failure-reason]")).to_have_count(0)
    expect(page.locator("[data-testid=console-link]")).to_have_count(0)  # SageMaker jobs only
    expect(page.locator("[data-testid=payload]")).to_contain_text(f'"CompilationJobName": "{name}"')
    shoot(page, "job-completed")
    page.evaluate("document.querySelector('[data-testid=verification]').scrollIntoView({block: 'start'})")
    shoot(page, "job-completed-report")


def test_failed_job_page_shows_the_failure_reason(site, page_as):
    name = seeds.FAILED.name
    page = open_view(page_as("admin"), site, f"?view=job&backend=local&name={name}")
    expect(page.locator("[data-testid=job-status]")).to_have_text("FAILED")
    reason = page.locator("[data-testid=failure-reason]")
    expect(reason).to_be_visible()
    expect(reason).to_contain_text(site.payloads[name]["FailureReason"].splitlines()[0])
    expect(page.locator("[data-testid=created-by]")).to_have_text("outside Airflow")
    expect(page.locator("[data-testid=artifact-uri]")).to_have_count(0)  # a failed job published nothing
    shoot(page, "job-failed")


# ----------------------------------------------------------------------------- who sees and stops what


def test_viewer_sees_the_running_jobs_without_a_stop_button(site, page_as):
    page = open_view(page_as("viewer"), site)
    for seed in (seeds.RUNNING_A, seeds.RUNNING_B):
        expect(row(page, seed.name)).to_have_attribute("data-status", "INPROGRESS")
    expect(page.locator("[data-testid=stop-button]")).to_have_count(0)
    page = open_view(page, site, f"?view=job&backend=local&name={seeds.RUNNING_A.name}")
    expect(page.locator("[data-testid=job-status]")).to_have_text("INPROGRESS")
    expect(page.locator("[data-testid=stop-button]")).to_have_count(0)


def test_team_b_editor_sees_team_b_jobs_and_not_team_a_jobs(site, page_as):
    page = open_view(page_as("team-b-editor"), site)
    expect(row(page, seeds.COMPLETED_B.name)).to_have_count(1)
    expect(row(page, seeds.RUNNING_B.name)).to_have_attribute("data-status", "INPROGRESS")
    expect(page.locator("[data-testid=hidden-note]")).to_contain_text("2 jobs hidden")
    team_a = {seeds.COMPLETED_A.name, seeds.RUNNING_A.name}
    assert not team_a & set(shown_names(page)), shown_names(page)
    # may stop its own team's running job, and no other
    expect(page.locator("[data-testid=stop-button]")).to_have_count(1)
    expect(page.locator("[data-testid=stop-button]")).to_have_attribute("data-job-name", seeds.RUNNING_B.name)
    page = open_view(page, site, f"?view=job&backend=local&name={seeds.COMPLETED_A.name}")
    expect(page.locator("[data-testid=error]")).to_be_visible()
    expect(page.locator("[data-testid=job-title]")).to_have_count(0)


def test_editor_stops_the_running_job_and_the_list_refreshes_to_it(site, page_as):
    name = seeds.RUNNING_A.name
    page = open_view(page_as("editor"), site)
    expect(row(page, name)).to_have_attribute("data-status", "INPROGRESS")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"[data-testid=stop-button][data-job-name='{name}']").click()
    expect(row(page, name)).to_have_attribute("data-status", re.compile(r"^STOPP(ING|ED)$"), timeout=TIMEOUT_MS)
    expect(row(page, name)).to_have_attribute("data-status", "STOPPED", timeout=STOP_TIMEOUT_MS)
    expect(page.locator(f"[data-testid=stop-button][data-job-name='{name}']")).to_have_count(0)
    expect(row(page, seeds.RUNNING_B.name)).to_have_attribute("data-status", "INPROGRESS")  # only that one
    status, body = site.server.request("GET", f"/neo/api/jobs/local/{name}", user="editor")
    assert status == 200 and body["job"]["status"] == "STOPPED", body


# ----------------------------------------------------------------------------- anonymous


def test_anonymous_page_asks_to_sign_in_and_the_api_answers_401(site, page_as):
    page = open_view(page_as(None), site)
    expect(page.locator("[data-testid=error]")).to_contain_text("Sign in")
    expect(rows(page)).to_have_count(0)
    response = page.request.get(f"{site.url}/neo/api/jobs")
    assert response.status == 401
    assert response.json() == {"detail": "Not authenticated"}


# ----------------------------------------------------------------------------- the task-instance tab


def _team_a_run_id(site) -> str:
    status, runs = site.server.request("GET", "/api/v2/dags/team_a_models/dagRuns", user="admin")
    assert status == 200 and runs["total_entries"] == 1, runs
    return runs["dag_runs"][0]["dag_run_id"]


def test_task_instance_tab_shows_the_job_that_task_instance_made(site, page_as):
    page = page_as("admin")
    page.goto(f"{site.url}/dags/team_a_models/runs/{quote(_team_a_run_id(site), safe='')}/tasks/compile")
    page.get_by_role("link", name="Compilation job", exact=True).click()
    frame = page.frame_locator("iframe[src*='view=task_instance']")
    expect(frame.locator("body")).to_have_attribute("data-state", "ready", timeout=TIMEOUT_MS)
    error = frame.locator("[data-testid=error]")
    assert error.count() == 0, (f"the tab's page shows an error: {error.inner_text()!r} "
                                f"(iframe src {page.locator('iframe').first.get_attribute('src')})")
    expect(frame.locator("[data-testid=job-title]")).to_have_text(seeds.COMPLETED_A.name)
    expect(frame.locator("[data-testid=job-status]")).to_have_text("COMPLETED")
    expect(frame.locator("[data-testid=created-by]")).to_contain_text("team_a_models / compile")
    shoot(page, "task-instance-tab")


def test_created_by_link_inside_airflow_opens_the_task_instance(site, page_as):
    page = page_as("admin")
    page.goto(f"{site.url}/plugin/neo-compilation-jobs")
    frame = page.frame_locator("iframe[src*='/neo/ui/']")
    link = row(frame, seeds.COMPLETED_A.name).locator("[data-testid=created-by]")
    expect(link).to_have_text("team_a_models / compile", timeout=TIMEOUT_MS)
    link.click()
    run_path = re.escape(quote(_team_a_run_id(site), safe=""))
    # the top window (Airflow's UI) moves to the task instance: Airflow's iframe is sandboxed
    # (allow-scripts allow-same-origin allow-forms allow-downloads), so target=_top alone cannot do it
    expect(page).to_have_url(re.compile(rf"/dags/team_a_models/runs/{run_path}/tasks/compile"), timeout=TIMEOUT_MS)
