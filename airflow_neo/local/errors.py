"""Errors of the local (TVM) backend; each message says what was wrong and what is allowed.

Every class subclasses :class:`~airflow_neo.core.exceptions.NeoError`; none needs Airflow or TVM.
A compile child process reports one of these as its FailureReason (:func:`failure_reason`), so
keep messages self-contained.

FailureReasons take SageMaker Neo's form, so that a DAG that handles Neo's failures handles ours:
``ClientError: <class>: <message>`` for what the user can fix, with the classes of Neo's
troubleshooting page (:data:`NEO_CLASSES`), and ``ServerError: <message>`` for internal failures
(a TVM error we cannot pin on the model, a crash, a missing compiler, a time or memory limit).
Each class carries its Neo form as ``kind`` (``ClientError``/``ServerError``) and ``neo_class``;
an instance may override both. ``str(err)`` is the message alone.
"""

from __future__ import annotations

from airflow_neo.core.exceptions import NeoError

CLIENT_ERROR = "ClientError"
SERVER_ERROR = "ServerError"
INPUT_CONFIGURATION = "InputConfiguration"
OPERATOR_NOT_IMPLEMENTED = "OperatorNotImplemented"
OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED = "OperatorAttributeNotImplemented"
OPERATOR_ATTRIBUTE_REQUIRED = "OperatorAttributeRequired"
OPERATOR_ATTRIBUTE_VALUE_NOT_VALID = "OperatorAttributeValueNotValid"
ACCURACY_CHECK_FAILED = "AccuracyCheckFailed"

#: Neo's classes of client errors and what each means (docs/troubleshooting.rst catalogues them).
NEO_CLASSES = {
    INPUT_CONFIGURATION: "the model archive, DataInputConfig, Framework or target cannot be used as given",
    OPERATOR_NOT_IMPLEMENTED: "the model uses an operator that the compiler cannot convert",
    OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED: "an operator is used with an attribute (or input form) the compiler does not implement",
    OPERATOR_ATTRIBUTE_REQUIRED: "an operator lacks an attribute that the compiler needs",
    OPERATOR_ATTRIBUTE_VALUE_NOT_VALID: "an attribute of an operator has a value that is not valid",
    ACCURACY_CHECK_FAILED: "the compiled model's outputs differ from the source framework's beyond tolerance "
                           "(the local backend's verification; not one of Neo's classes)",
}

_PREFIXES = (CLIENT_ERROR + ": ", SERVER_ERROR + ": ")


class LocalCompilationError(NeoError):
    """Base class of the local backend's errors.

    :param kind: overrides the class's Neo error type (``ClientError`` or ``ServerError``).
    :param neo_class: overrides the class's Neo class (one of :data:`NEO_CLASSES`, or None).
    """

    #: Neo's error type of the FailureReason: ``ClientError`` (the user can fix it) or ``ServerError``.
    kind = CLIENT_ERROR
    #: Neo's class within ClientError (a key of NEO_CLASSES), or None.
    neo_class: str | None = None

    def __init__(self, message: str = "", *, kind: str | None = None, neo_class: str | None = None):
        super().__init__(message)
        if kind is not None:
            if kind not in (CLIENT_ERROR, SERVER_ERROR):
                raise ValueError(f"kind must be {CLIENT_ERROR!r} or {SERVER_ERROR!r}; got {kind!r}")
            self.kind = kind
        if neo_class is not None:
            if neo_class not in NEO_CLASSES:
                raise ValueError(f"neo_class must be one of {sorted(NEO_CLASSES)}; got {neo_class!r}")
            self.neo_class = neo_class

    @property
    def failure_reason(self) -> str:
        """The job's FailureReason for this error, in Neo's form."""
        return failure_reason(self)


class ModelArchiveError(LocalCompilationError, ValueError):
    """The model archive is corrupt or unsafe, or the model file in it is missing or ambiguous."""

    neo_class = INPUT_CONFIGURATION


class ModelInputError(LocalCompilationError, ValueError):
    """DataInputConfig or the ``dtype`` option does not match the model's real inputs."""

    neo_class = INPUT_CONFIGURATION


class UnsupportedFrameworkError(LocalCompilationError, ValueError):
    """A Framework that the local backend cannot import."""

    neo_class = INPUT_CONFIGURATION


class UnsupportedTargetError(LocalCompilationError, ValueError):
    """A TargetDevice, TargetPlatform or CPU option that the local backend cannot build for."""

    neo_class = INPUT_CONFIGURATION


class CompilationError(LocalCompilationError):
    """TVM (or tl2cgen) failed: a missing C compiler or package, a build error (a ServerError)."""

    kind = SERVER_ERROR


class UnsupportedOperatorsError(CompilationError):
    """The model uses operators that TVM's frontend cannot convert; ``operators`` lists them.

    The subclasses below are the attribute-level failures of an operator TVM does convert.
    """

    kind = CLIENT_ERROR
    neo_class = OPERATOR_NOT_IMPLEMENTED

    def __init__(self, message: str, operators: list[str] | None = None, *, neo_class: str | None = None):
        super().__init__(message, neo_class=neo_class)
        self.operators = list(operators or [])


class OperatorAttributeNotImplementedError(UnsupportedOperatorsError):
    """TVM converts the operator, but not with this attribute, value or input form."""

    neo_class = OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED


class OperatorAttributeRequiredError(UnsupportedOperatorsError):
    """The operator lacks an attribute that TVM's converter needs."""

    neo_class = OPERATOR_ATTRIBUTE_REQUIRED


class OperatorAttributeValueNotValidError(UnsupportedOperatorsError):
    """An attribute of the operator has a value the operator does not allow."""

    neo_class = OPERATOR_ATTRIBUTE_VALUE_NOT_VALID


class IncompatibleArtifactError(LocalCompilationError):
    """A compiled artifact that cannot run on this machine (another CPU architecture or features)."""


class AccuracyCheckError(LocalCompilationError):
    """The artifact's outputs differ from the source framework's beyond tolerance (``[neo] verify = gate``)."""

    neo_class = ACCURACY_CHECK_FAILED


class ArtifactCheckAborted(LocalCompilationError):
    """The process that checks an artifact on a deploy host (:mod:`airflow_neo.local.verify_artifact`)
    ended without a verdict: the check failed to run, not the artifact's outputs. A ServerError:
    the failure of a process, like a compile's crash or time limit.

    Not a compile FailureReason, so not in :data:`NEO_FORMS`: only the deploy-host check raises it.
    """

    kind = SERVER_ERROR


class ArtifactCheckCrashed(ArtifactCheckAborted):
    """The check process died (a signal: SIGSEGV, SIGILL, SIGABRT, SIGBUS, SIGKILL of the
    out-of-memory killer) or exited without a result, while it loaded, ran or profiled the artifact."""


class ArtifactCheckTimedOut(ArtifactCheckAborted):
    """The check process did not finish within its time limit and was killed."""


#: Our classes and their Neo form (kind, neo_class); docs/troubleshooting.rst lists every one.
NEO_FORMS = {
    cls.__name__: (cls.kind, cls.neo_class)
    for cls in (
        ModelArchiveError,
        ModelInputError,
        UnsupportedFrameworkError,
        UnsupportedTargetError,
        CompilationError,
        UnsupportedOperatorsError,
        OperatorAttributeNotImplementedError,
        OperatorAttributeRequiredError,
        OperatorAttributeValueNotValidError,
        IncompatibleArtifactError,
        AccuracyCheckError,
    )
}


def neo_reason(kind: str, neo_class: str | None, message: str) -> str:
    """``kind: neo_class: message`` (``kind: message`` without a class); a message already in
    Neo's form is returned as it is."""
    text = (message or "").strip() or "(no message)"
    if text.startswith(_PREFIXES):
        return text
    prefix = f"{kind}: {neo_class}: " if neo_class else f"{kind}: "
    return prefix + text


def is_neo_reason(reason: str) -> bool:
    """Whether ``reason`` is already in Neo's form (starts ``ClientError: `` or ``ServerError: ``)."""
    return reason.startswith(_PREFIXES)


def failure_reason(err: BaseException) -> str:
    """The FailureReason of a compile that raised ``err``, in Neo's form.

    Our errors carry their form; another :class:`NeoError` with a ``kind`` of ``ClientError`` or
    ``ServerError`` uses it; any other exception (a bug, an unexpected library error) is a
    ServerError naming its type.
    """
    if isinstance(err, LocalCompilationError):
        return neo_reason(err.kind, err.neo_class, str(err))
    kind = getattr(err, "kind", None)
    if isinstance(err, NeoError) and kind in (CLIENT_ERROR, SERVER_ERROR):
        return neo_reason(kind, None, str(err))
    if isinstance(err, MemoryError):
        return neo_reason(SERVER_ERROR, None, f"Compilation ran out of memory (MemoryError in the compile process){_colon(err)}")
    return neo_reason(SERVER_ERROR, None, f"{type(err).__name__}: {str(err).strip() or '(no message)'}")


def _colon(err: BaseException) -> str:
    text = str(err).strip()
    return f": {text}" if text else ""


__all__ = [
    "CLIENT_ERROR",
    "INPUT_CONFIGURATION",
    "OPERATOR_ATTRIBUTE_NOT_IMPLEMENTED",
    "OPERATOR_ATTRIBUTE_REQUIRED",
    "OPERATOR_ATTRIBUTE_VALUE_NOT_VALID",
    "OPERATOR_NOT_IMPLEMENTED",
    "NEO_CLASSES",
    "NEO_FORMS",
    "SERVER_ERROR",
    "AccuracyCheckError",
    "ArtifactCheckAborted",
    "ArtifactCheckCrashed",
    "ArtifactCheckTimedOut",
    "CompilationError",
    "IncompatibleArtifactError",
    "LocalCompilationError",
    "ModelArchiveError",
    "ModelInputError",
    "OperatorAttributeNotImplementedError",
    "OperatorAttributeRequiredError",
    "OperatorAttributeValueNotValidError",
    "UnsupportedFrameworkError",
    "UnsupportedOperatorsError",
    "UnsupportedTargetError",
    "failure_reason",
    "is_neo_reason",
    "neo_reason",
]
