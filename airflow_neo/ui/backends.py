"""Which backends the UI lists, and their hooks: the local job store always, SageMaker when
``[neo] ui_aws_conn_id`` names an AWS connection (its region: ``[neo] ui_region_name`` or the
connection's). Hooks are made once per process (a SageMaker hook keeps its boto3 client)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from airflow_neo.core.backends import Backend, parse_backend
from airflow_neo.hooks.params import NeoConnectionParams

if TYPE_CHECKING:
    from airflow_neo.hooks.base import CompilationJobHook

LABELS = {Backend.LOCAL: "Local (TVM)", Backend.SAGEMAKER: "SageMaker"}


def configured() -> dict[Backend, NeoConnectionParams]:
    """The backends the UI serves, in the order the page offers them."""
    from airflow.configuration import conf

    served = {Backend.LOCAL: NeoConnectionParams(backend=Backend.LOCAL)}
    conn_id = conf.get("neo", "ui_aws_conn_id", fallback="").strip()
    if conn_id:
        region = conf.get("neo", "ui_region_name", fallback="").strip() or None
        served[Backend.SAGEMAKER] = NeoConnectionParams(backend=Backend.SAGEMAKER, aws_conn_id=conn_id,
                                                        region_name=region)
    return served


def default_backend() -> Backend:
    """``[neo] default_backend`` when the UI serves it, else the local backend."""
    from airflow.configuration import conf

    try:
        wanted = parse_backend(conf.get("neo", "default_backend", fallback="local") or "local")
    except ValueError:
        wanted = Backend.LOCAL
    return wanted if wanted in configured() else Backend.LOCAL


def chosen(value: str | None) -> Backend:
    """The backend a request names (None: the default); ValueError for one the UI does not serve."""
    served = configured()
    if value is None or value == "":
        return default_backend()
    try:
        backend = parse_backend(value)
    except ValueError:
        backend = None
    if backend not in served:
        hint = "" if Backend.SAGEMAKER in served else " (set [neo] ui_aws_conn_id to list SageMaker jobs)"
        raise ValueError(f"backend: got {value!r}; must be one of {[b.value for b in served]}{hint}")
    return backend


def hook_for(backend: Backend) -> CompilationJobHook:
    return _hook(configured()[backend].key)


def describe() -> list[dict]:
    """The backends for the page's selector."""
    items = []
    for backend, params in configured().items():
        label = LABELS[backend]
        if backend is Backend.SAGEMAKER:
            label += f" ({params.aws_conn_id}, {_region(backend)})"
        items.append({"name": backend.value, "label": label})
    return items


def _region(backend: Backend) -> str:
    try:
        return str(getattr(hook_for(backend), "conn_region_name", None) or "default region")
    except Exception:  # a connection that cannot be read yet: the list route will say why
        return "region unknown"


@cache
def _hook(params_key: str) -> CompilationJobHook:
    import json

    from airflow_neo.hooks.factory import get_neo_hook

    return get_neo_hook(NeoConnectionParams.from_dict(json.loads(params_key)))
