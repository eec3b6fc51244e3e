"""A minimal task context for calling ``execute`` directly, without a scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordingTaskInstance:
    """The parts of a task instance that the operators use; records XCom pushes."""

    dag_id: str = "neo_dag"
    task_id: str = "compile"
    run_id: str = "manual__2026-11-25T00:00:00+00:00"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def make_context(**ti_fields: Any) -> dict:
    ti = RecordingTaskInstance(**ti_fields)
    return {"ti": ti, "task_instance": ti}
