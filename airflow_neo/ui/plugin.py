"""The Airflow plugin of airflow-neo (entry point ``airflow.plugins``: ``neo_ui``).

It mounts :func:`airflow_neo.ui.app.create_app` at :data:`URL_PREFIX` in ``airflow api-server``
and adds two external views: "Compilation jobs" in the navigation, and a "Compilation job" tab on
task instances (the jobs that task instance created; the tab shows on every task instance, and
says so when there is none).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_neo.ui.app import create_app

URL_PREFIX = "/neo"
PAGE = f"{URL_PREFIX}/ui/"
TASK_INSTANCE_PAGE = PAGE + "?view=task_instance&dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}"


class NeoUiPlugin(AirflowPlugin):
    """Compilation jobs of both backends in the Airflow UI."""

    name = "airflow_neo"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "airflow-neo compilation jobs"}]
    external_views = [
        {"name": "Compilation jobs", "href": PAGE, "destination": "nav", "url_route": "neo-compilation-jobs",
         "icon": f"{PAGE}static/icon.svg"},
        {"name": "Compilation job", "href": TASK_INSTANCE_PAGE, "destination": "task_instance",
         "url_route": "neo-compilation-job"},
    ]
