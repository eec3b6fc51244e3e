"""The plugin as Airflow loads it: found through the ``airflow.plugins`` entry point by Airflow's
own plugins manager, with its FastAPI app and two external views, and cheap to import (every
Airflow component loads plugins)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.test_imports import HEAVY


def test_airflows_plugins_manager_loads_the_plugin_with_its_app_and_views():
    code = (
        "import json\n"
        "from airflow import plugins_manager as pm\n"
        "apps, _ = pm.get_fastapi_plugins()\n"
        "views, _ = pm._get_ui_plugins()\n"
        "print(json.dumps({'apps': [[a['name'], a['url_prefix']] for a in apps],\n"
        "                  'views': [[v['name'], v['destination'], v['href']] for v in views]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert ["airflow-neo compilation jobs", "/neo"] in found["apps"]
    assert ["Compilation jobs", "nav", "/neo/ui/"] in found["views"]
    tab = [view for view in found["views"] if view[1] == "task_instance"]
    assert tab == [["Compilation job", "task_instance", "/neo/ui/?view=task_instance&dag_id={DAG_ID}&run_id={RUN_ID}"
                    "&task_id={TASK_ID}&map_index={MAP_INDEX}"]]


def test_loading_the_plugin_imports_no_heavy_package():
    code = (
        "import sys, json\n"
        "import airflow_neo.ui.plugin\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_page_and_its_files_are_served(airflow_app):
    page = airflow_app.get("/neo/ui/")
    assert page.status_code == 200 and 'src="static/neo.js"' in page.text
    assert airflow_app.get("/neo/ui/static/neo.js").status_code == 200
    assert airflow_app.get("/neo/ui/static/neo.css").headers["content-type"].startswith("text/css")
    redirect = airflow_app.get("/neo/ui", follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"].endswith("/neo/ui/")
