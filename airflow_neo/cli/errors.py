"""Errors of the command line and the AWS CLI's exit codes.

=====  ============================================================================
code   meaning (as in the AWS CLI)
=====  ============================================================================
0      success
130    interrupted (Ctrl-C)
252    usage: bad command syntax, unknown or missing arguments, unparsable values,
       a request that fails client-side parameter validation
253    configuration: the environment or configuration is invalid (no credentials,
       no region, an unknown ``[neo] default_backend``)
254    service: the request was made and the service (or the local job store) rejected
       it: ``An error occurred (Code) when calling the Op operation: message``
255    anything else, including a waiter that reached a failure state
=====  ============================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERRUPTED = 130
EXIT_USAGE = 252
EXIT_CONFIG = 253
EXIT_SERVICE = 254
EXIT_OTHER = 255


class CliError(Exception):
    """An error with its exit code; ``str()`` is what goes to stderr."""

    exit_code = EXIT_OTHER


class UsageError(CliError):
    """Bad command syntax (argparse errors, mutually exclusive options)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, usage: str = "", prog: str = "airflow-neo"):
        super().__init__(message)
        self.usage = usage
        self.prog = prog

    def __str__(self) -> str:
        text = f"{self.prog}: error: {self.args[0]}"
        return f"{self.usage.rstrip()}\n{text}" if self.usage else text


class ParamError(CliError):
    """A parameter value that cannot be parsed (bad JSON, bad shorthand, unreadable file)."""

    exit_code = EXIT_USAGE

    def __init__(self, option: str, message: str):
        super().__init__(f"Error parsing parameter '{option}': {message}")
        self.option = option


class ParamValidationError(CliError):
    """The request fails client-side validation (missing required, unknown member, wrong type)."""

    exit_code = EXIT_USAGE

    def __init__(self, report: str):
        super().__init__(f"Parameter validation failed:\n{report}")


NO_REGION_HINT = (
    "Give --region (or a region in the AWS connection) for SageMaker jobs; for jobs of the local backend "
    "give --backend local, or set AIRFLOW__NEO__DEFAULT_BACKEND=local."
)


class ConfigError(CliError):
    exit_code = EXIT_CONFIG


class ServiceError(CliError):
    """The operation was called and answered with an error code."""

    exit_code = EXIT_SERVICE

    def __init__(self, code: str, operation: str, message: str):
        super().__init__(f"An error occurred ({code}) when calling the {operation} operation: {message}")
        self.code = code
        self.operation = operation
        self.message = message


class WaiterError(CliError):
    exit_code = EXIT_OTHER

    def __init__(self, waiter: str, reason: str, detail: str = ""):
        text = f"Waiter {waiter} failed: {reason}"
        super().__init__(f"{text}\n{detail}" if detail else text)
        self.waiter = waiter
        self.reason = reason


def service_error_from(err: BaseException, operation: str) -> CliError | None:
    """The CliError for an exception raised by a hook or botocore, or None if it is not one we know."""
    from airflow_neo.core.exceptions import InvalidCompilationRequest

    if isinstance(err, InvalidCompilationRequest):
        return ServiceError("ValidationException", operation, str(err))
    response = getattr(err, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        return ServiceError(error.get("Code", "Unknown"), operation, error.get("Message", str(err)))
    code = getattr(type(err), "code", None)
    if isinstance(code, str):
        return ServiceError(code, operation, str(err))
    name = type(err).__name__
    if name == "NoRegionError":
        return ConfigError(f"{err} {NO_REGION_HINT}")
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoRegionError", "ProfileNotFound",
                "UnknownBackendError", "AirflowNotFoundException"):
        return ConfigError(str(err))
    if name == "ParamValidationError" and hasattr(err, "kwargs"):
        return ParamValidationError(err.kwargs.get("report", str(err)))
    return None
