"""An auth manager with teams, for the UI tests: Airflow's simple auth manager, plus one rule.

A user whose name starts with ``team-b`` may read and edit only the DAGs whose id starts with
``team_b``; every other decision is the simple auth manager's (roles viewer < user < op < admin).
It is what a deployment's own auth manager does when one team may not see another team's DAGs,
so the plugin's routes can be shown to ask it and obey.
"""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

TEAM_B_USER_PREFIX = "team-b"
TEAM_B_DAG_PREFIX = "team_b"


class TeamAuthManager(SimpleAuthManager):
    """SimpleAuthManager that keeps ``team-b*`` users to ``team_b*`` DAGs."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None) -> bool:
        if _confined(user) and not (details and details.id and details.id.startswith(TEAM_B_DAG_PREFIX)):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)


def _confined(user) -> bool:
    return str(user.get_name()).startswith(TEAM_B_USER_PREFIX)
