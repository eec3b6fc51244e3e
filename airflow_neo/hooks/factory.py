"""The one seam that turns a backend name into a hook; nothing else branches on the backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_neo.core.backends import Backend, parse_backend

if TYPE_CHECKING:
    from airflow_neo.hooks.local import LocalNeoHook
    from airflow_neo.hooks.neo import NeoHook


def get_neo_hook(
    backend: str | Backend = Backend.SAGEMAKER,
    *,
    aws_conn_id: str | None = "aws_default",
    region_name: str | None = None,
    verify: bool | str | None = None,
    botocore_config: dict[str, Any] | None = None,
    local_store: str | None = None,
) -> NeoHook | LocalNeoHook:
    """A hook with the compilation-job methods for ``backend``; both have the same methods and shapes."""
    backend = parse_backend(backend)
    if backend is Backend.SAGEMAKER:
        from airflow_neo.hooks.neo import NeoHook

        return NeoHook(aws_conn_id=aws_conn_id, region_name=region_name, verify=verify, config=botocore_config)
    from airflow_neo.hooks.local import LocalNeoHook

    return LocalNeoHook(
        aws_conn_id=aws_conn_id,
        region_name=region_name,
        verify=verify,
        botocore_config=botocore_config,
        store_path=local_store,
    )
