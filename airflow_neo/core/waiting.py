"""Waiting for a compilation job to reach a terminal status, for any backend."""

from __future__ import annotations

import time
from collections.abc import Callable

from airflow_neo.core.exceptions import CompilationJobTimeout
from airflow_neo.core.status import TERMINAL_STATES


def wait_for_terminal(
    describe: Callable[[str], dict],
    name: str,
    *,
    check_interval: float = 30,
    max_wait: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Poll ``describe(name)`` until the job is terminal and return the final payload.

    The payload is returned whatever the terminal status; the caller decides what FAILED or
    STOPPED means. Raises :class:`CompilationJobTimeout` (with the last payload) once
    ``max_wait`` seconds have passed.
    """
    deadline = None if max_wait is None else clock() + max_wait
    last_status = None
    while True:
        payload = describe(name)
        status = payload.get("CompilationJobStatus")
        if log and status != last_status:
            log(f"Compilation job {name} is {status}")
        last_status = status
        if status in TERMINAL_STATES:
            return payload
        if deadline is not None and clock() >= deadline:
            raise CompilationJobTimeout(
                f"Compilation job {name} still {status} after max wait of {max_wait} s", payload
            )
        remaining = None if deadline is None else max(0.0, deadline - clock())
        sleep(check_interval if remaining is None else min(check_interval, remaining))
