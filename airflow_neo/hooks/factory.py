"""The one seam that turns connection parameters into a hook; nothing else branches on the backend."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow_neo.core.backends import Backend
from airflow_neo.hooks.params import NeoConnectionParams

if TYPE_CHECKING:
    from airflow_neo.hooks.base import CompilationJobHook

#: the hook class of each backend, imported only when asked for (boto3 or the store stay unloaded)
HOOK_CLASSES = {
    Backend.SAGEMAKER: "airflow_neo.hooks.neo.NeoHook",
    Backend.LOCAL: "airflow_neo.hooks.local.LocalNeoHook",
}


def get_neo_hook(
    params: NeoConnectionParams | str | Backend = Backend.SAGEMAKER, /, **connection: Any
) -> CompilationJobHook:
    """The compilation-job hook for ``params``.

    ``get_neo_hook(NeoConnectionParams(...))``, or the backend and the other connection
    parameters by name: ``get_neo_hook("local", local_store=...)``.
    """
    if not isinstance(params, NeoConnectionParams):
        params = NeoConnectionParams.from_dict({"backend": params, **connection})
    elif connection:
        raise TypeError("get_neo_hook: give NeoConnectionParams or keyword parameters, not both")
    module, _, name = HOOK_CLASSES[params.backend].rpartition(".")
    return getattr(importlib.import_module(module), name).from_connection_params(params)
