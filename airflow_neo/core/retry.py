"""Which API errors are transient, and a retry-with-backoff helper used by the hooks."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
    }
)
TRANSIENT_CODES = THROTTLING_CODES | frozenset(
    {"InternalFailure", "InternalError", "InternalServerError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException"}
)
TRANSIENT_EXCEPTION_NAMES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionError",
        "ConnectionResetError",
        "ServerDisconnectedError",
        "ClientConnectorError",
        "ClientOSError",
        "TimeoutError",
    }
)


def error_code(err: BaseException) -> str | None:
    """The API error code of a botocore ClientError (duck-typed so no botocore import is needed)."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def error_message(err: BaseException) -> str:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Message") or str(err)
    return str(err)


def is_transient(err: BaseException) -> bool:
    """Throttling, 5xx-style service errors and dropped connections."""
    if error_code(err) in TRANSIENT_CODES:
        return True
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and status >= 500:
            return True
    return any(cls.__name__ in TRANSIENT_EXCEPTION_NAMES for cls in type(err).__mro__)


def backoff_delay(attempt: int, base: float, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter for retry number ``attempt`` (1-based)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def call_with_retries(
    fn: Callable[[], T],
    *,
    max_retries: int = 5,
    base_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Call ``fn``; on a transient error retry up to ``max_retries`` times with backoff."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            attempt += 1
            if attempt > max_retries or not is_transient(err):
                raise
            delay = backoff_delay(attempt, base_delay)
            if on_retry:
                on_retry(attempt, err, delay)
            sleep(delay)
