"""FailureReasons in SageMaker Neo's form (airflow_neo.local.errors), end to end.

Real failing ONNX graphs (tests/local/failing_graphs.py) go through the real compiler and through
real local jobs (the runner and its compile child); each reason must start with Neo's
``ClientError: <class>: `` and name the failing node, its op type and the input shapes TVM saw.
Internal failures (a killed compile child, a time limit) are ``ServerError: ...``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from airflow_neo.core import status as st
from airflow_neo.core.exceptions import NeoError
from airflow_neo.local import errors, runner
from airflow_neo.local.compiler import compile_model
from airflow_neo.local.runner.outcomes import Failed, classify_reason
from airflow_neo.local.store import JobStore
from tests.local import failing_graphs, models

LINUX_X86_64 = {"Os": "LINUX", "Arch": "X86_64"}
TROUBLESHOOTING = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.rst"
POLL = 0.1

# (graph builder, our class, Neo prefix, words the reason must hold: node, op, shapes, advice)
GRAPH_CASES = {
    "operator-not-implemented": (
        failing_graphs.unsupported_op, errors.UnsupportedOperatorsError, "ClientError: OperatorNotImplemented: ",
        ["Celu (node '/act/Celu'; inputs: r float32[2,4])", "re-export the model"],
    ),
    "attribute-value-not-valid": (
        failing_graphs.pad_bad_mode, errors.OperatorAttributeValueNotValidError,
        "ClientError: OperatorAttributeValueNotValid: ",
        ["node '/enc/Pad' (Pad; inputs: x float32[1,3,4,4], pads int64[8]; attributes: mode='symmetric')",
         'Value symmetric in attribute "mode" is invalid', "fix it in the exporter"],
    ),
    "attribute-not-implemented": (
        failing_graphs.topk_unsorted, errors.OperatorAttributeNotImplementedError,
        "ClientError: OperatorAttributeNotImplemented: ",
        ["node '/head/TopK' (TopK; inputs: x float32[2,8], k int64[1]; attributes: sorted=0)",
         "TopK sorted must be 1", "converts TopK but not in this form"],
    ),
    "attribute-required": (
        failing_graphs.depth_to_space_without_blocksize, errors.OperatorAttributeRequiredError,
        "ClientError: OperatorAttributeRequired: ",
        ["node '/up/DepthToSpace' (DepthToSpace; inputs: x float32[1,8,2,2])", "attribute 'blocksize'"],
    ),
}


def _compile_error(builder, tmp_path: Path, **request_kwargs) -> errors.LocalCompilationError:
    case = builder(tmp_path / "model")
    request = models.make_request(case, target_platform=LINUX_X86_64, **request_kwargs)
    artifact = tmp_path / "artifact.tar.gz"
    with pytest.raises(errors.LocalCompilationError) as info:
        compile_model(request, str(case.archive), str(artifact), log=lambda *_: None)
    assert not artifact.exists()
    return info.value


# ----------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize("name", sorted(errors.NEO_FORMS))
def test_every_class_has_a_neo_form(name):
    cls = getattr(errors, name)
    kind, neo_class = errors.NEO_FORMS[name]
    assert kind in (errors.CLIENT_ERROR, errors.SERVER_ERROR)
    assert neo_class is None or neo_class in errors.NEO_CLASSES
    err = cls("what went wrong") if not issubclass(cls, errors.UnsupportedOperatorsError) else cls("what went wrong", ["Op"])
    expected = f"{kind}: {neo_class}: what went wrong" if neo_class else f"{kind}: what went wrong"
    assert errors.failure_reason(err) == err.failure_reason == expected
    assert str(err) == "what went wrong"  # the message alone: except clauses and logs are unchanged


def test_inputs_are_input_configuration_and_compiler_failures_server_errors():
    assert errors.NEO_FORMS["ModelInputError"] == ("ClientError", "InputConfiguration")
    assert errors.NEO_FORMS["ModelArchiveError"] == ("ClientError", "InputConfiguration")
    assert errors.NEO_FORMS["UnsupportedOperatorsError"] == ("ClientError", "OperatorNotImplemented")
    assert errors.NEO_FORMS["CompilationError"] == ("ServerError", None)
    assert set(errors.NEO_CLASSES) == {
        "InputConfiguration", "OperatorNotImplemented", "OperatorAttributeNotImplemented",
        "OperatorAttributeRequired", "OperatorAttributeValueNotValid",
        "AccuracyCheckFailed",  # the local backend's own: the verification's gate (airflow_neo.local.verify)
    }


def test_an_instance_may_name_its_own_form_and_bad_forms_are_refused():
    err = errors.UnsupportedOperatorsError("LSTM direction 'reverse'", ["LSTM"], neo_class="OperatorAttributeNotImplemented")
    assert err.failure_reason == "ClientError: OperatorAttributeNotImplemented: LSTM direction 'reverse'"
    assert isinstance(err, errors.CompilationError)
    assert errors.CompilationError("x", kind="ClientError").failure_reason == "ClientError: x"
    with pytest.raises(ValueError, match="kind must be 'ClientError' or 'ServerError'; got 'UserError'"):
        errors.CompilationError("x", kind="UserError")
    with pytest.raises(ValueError, match="neo_class must be one of .*'InputConfiguration'.*got 'Input'"):
        errors.ModelInputError("x", neo_class="Input")


def test_other_exceptions_are_server_errors():
    class KindError(NeoError):
        kind = "ClientError"

    assert errors.failure_reason(ValueError("shape mismatch")) == "ServerError: ValueError: shape mismatch"
    assert errors.failure_reason(MemoryError()).startswith("ServerError: Compilation ran out of memory")
    assert errors.failure_reason(KindError("bad request")) == "ClientError: bad request"
    assert errors.neo_reason("ServerError", None, "ClientError: kept as it is") == "ClientError: kept as it is"


def test_runner_reasons_are_classified_by_the_field_they_name():
    assert classify_reason("InputConfig.S3Uri: s3://b/k does not exist") == ("ClientError", "InputConfiguration")
    assert classify_reason("ModelPackageVersionArn is not supported by the local backend") == ("ClientError", "InputConfiguration")
    assert classify_reason("Could not upload the compiled model to s3://b/k: AccessDenied") == ("ClientError", None)
    assert classify_reason("Compilation job exceeded MaxRuntimeInSeconds (5 s)") == ("ServerError", None)
    assert Failed("InputConfig.S3Uri: x").reason == "ClientError: InputConfiguration: InputConfig.S3Uri: x"
    assert Failed("anything", kind="ClientError", neo_class="OperatorNotImplemented").reason == (
        "ClientError: OperatorNotImplemented: anything"
    )
    assert Failed("ServerError: as given").reason == "ServerError: as given"


def test_troubleshooting_catalogues_every_class():
    text = TROUBLESHOOTING.read_text()
    catalogue = text[text.index("Failure classes"):text.index("How TVM's messages are classified")]
    for name, (kind, neo_class) in errors.NEO_FORMS.items():
        assert f"``{name}``" in catalogue, name
        form = f"``{kind}: {neo_class}: ...``" if neo_class else f"``{kind}: ...``"
        assert form in catalogue, form
    for neo_class in errors.NEO_CLASSES:
        assert f"``ClientError: {neo_class}: ...``" in catalogue, neo_class


# ----------------------------------------------------------------------------- real compiles


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_compile_failure_names_the_node_in_neos_form(tmp_path, case):
    builder, cls, prefix, words = GRAPH_CASES[case]
    err = _compile_error(builder, tmp_path)
    assert type(err) is cls
    reason = errors.failure_reason(err)
    assert reason.startswith(prefix), reason
    for word in words:
        assert word in reason, reason
    assert len(reason) < 1024, "fits the API's FailureReason"
    assert reason.split(". ")[0] in TROUBLESHOOTING.read_text(), "docs/troubleshooting.rst quotes the reason as it is"


def test_bad_data_input_config_is_input_configuration(tmp_path):
    err = _compile_error(failing_graphs.pad_bad_mode, tmp_path, data_input_config={"data": [1, 3, 4, 4]})
    reason = errors.failure_reason(err)
    assert reason.startswith("ClientError: InputConfiguration: DataInputConfig names ['data']"), reason
    assert "x [1, 3, 4, 4] float32" in reason


def test_missing_package_is_a_server_error_saying_what_to_install():
    from airflow_neo.local.compiler import _translate

    err = _translate(ModuleNotFoundError("No module named 'tl2cgen'", name="tl2cgen"), "import")
    assert err.failure_reason == (
        "ServerError: import failed: the Python package 'tl2cgen' is not installed on this worker; "
        "install it (pip install tl2cgen) or the airflow-neo[local] extra"
    )


# ----------------------------------------------------------------------------- real local jobs


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "state" / "jobs.sqlite"


def _job(store_path: Path, tmp_path: Path, name: str, builder, compile_fn=None, **request_kwargs) -> dict:
    case = builder(tmp_path / name)
    request = models.make_request(case, target_platform=LINUX_X86_64, output_dir=tmp_path / "out", job_name=name,
                                  **request_kwargs)
    store = JobStore(store_path)
    store.create(request)
    assert runner.run_job(store_path, name, compile_fn=compile_fn, poll_interval=POLL) == st.FAILED
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    return store.describe(name)


@pytest.mark.parametrize("case", ["operator-not-implemented", "attribute-value-not-valid"])
def test_local_job_failure_reason_is_neos_and_names_the_node(store_path, tmp_path, case):
    builder, _cls, prefix, words = GRAPH_CASES[case]
    job = _job(store_path, tmp_path, case, builder)
    assert job["FailureReason"].startswith(prefix), job["FailureReason"]
    for word in words:
        assert word in job["FailureReason"], job["FailureReason"]


def killed_compile(request, archive_path, artifact_path, *, log=print, **_):
    """A compile child that the kernel kills (as its out-of-memory killer would)."""
    log("about to be killed")
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def test_killed_compile_is_a_server_error_saying_what_to_do(store_path, tmp_path):
    job = _job(store_path, tmp_path, "killed", failing_graphs.pad_bad_mode,
               compile_fn="tests.local.test_errors:killed_compile")
    reason = job["FailureReason"]
    assert reason.startswith(
        "ServerError: Compilation failed: internal compiler crash (signal 9: SIGKILL) (killed, possibly by the "
        "kernel's out-of-memory killer)"
    ), reason
    assert "[neo] local_memory_limit_mb" in reason
