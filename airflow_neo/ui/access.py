"""Who may read and stop which compilation job, as Airflow's auth manager decides.

Airflow does not protect a plugin's routes; every route of this app builds a :class:`JobAccess`
for the caller and asks it. The rules:

- the page and the list need the plugin's custom view (``GET`` on :data:`RESOURCE_NAME`);
- a job created by a task (its ``airflow-neo:dag-id`` tag, :func:`airflow_neo.core.attach.created_by`)
  is readable by whoever may read that DAG, and stoppable by whoever may edit it;
- a job made outside Airflow (no such tag) is readable by whoever may open the page, and
  stoppable only by administrators: users the auth manager lets change Airflow's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_neo.core.attach import TaskInstanceRef

#: the custom view the auth manager is asked about (FAB-style managers grant it per role)
RESOURCE_NAME = "Neo Compilation Jobs"


@dataclass(frozen=True)
class JobAccess:
    """The auth manager's answers for one user."""

    auth_manager: Any
    user: Any

    @property
    def user_name(self) -> str:
        return str(self.user.get_name())

    def may_open_page(self) -> bool:
        return bool(self.auth_manager.is_authorized_custom_view(method="GET", resource_name=RESOURCE_NAME,
                                                                 user=self.user))

    def may_read(self, owner: TaskInstanceRef | None) -> bool:
        if owner is None:
            return self.may_open_page()
        return self._dag("GET", owner.dag_id)

    def may_stop(self, owner: TaskInstanceRef | None) -> bool:
        if owner is None:
            return self.is_admin()
        return self._dag("PUT", owner.dag_id)

    def is_admin(self) -> bool:
        return bool(self.auth_manager.is_authorized_configuration(method="PUT", user=self.user))

    def _dag(self, method: str, dag_id: str) -> bool:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        return bool(self.auth_manager.is_authorized_dag(method=method, details=DagDetails(id=dag_id), user=self.user))
