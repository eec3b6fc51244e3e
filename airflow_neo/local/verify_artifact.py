"""Verify an existing artifact on the machine that runs this: a smoke test on the deploy host.

:func:`verify_artifact` fetches a compiled artifact (``s3://``, ``file://`` or an absolute path),
checks that this host can run it, loads it with :mod:`airflow_neo.runtime` (the cold load is
timed), runs it on the inputs its compile recorded (``verification.npz``, see
:mod:`airflow_neo.local.verify`) or on the user's ``.npz`` at ``inputs_uri``, and compares the
outputs with the reference outputs recorded at compile time, within the same tolerances as the
compile's verification (:func:`~airflow_neo.local.verify.compare_outputs`, the recorded rule for
quantized graphs and the recorded ``verify_rtol`` unless ``rtol`` is given). Then it profiles the
artifact here (:func:`airflow_neo.local.profile.latency`: cold load, p50/p90/p99, threads; and
:func:`~airflow_neo.local.profile.kernel_profile`: the time per kernel of one run).

Without recorded outputs for the inputs used (the user's inputs differ from the record's, or the
artifact has no record: an older one, a verification that was off or not run, a record over its
size cap) the outputs are not compared: the run must give finite outputs of the shapes the
metadata declares (``passed`` None: not verified; False when they are not), and the report says
why nothing was compared (``not_compared``).

Invariants: the report is JSON-safe (artifact URI and BLAKE2b, metadata.json's BLAKE2b, the host,
``verification``, ``profile``). Under ``"gate"`` an output beyond its tolerance, a non-finite or
misshapen output, or an artifact that raises on its inputs raises
:class:`~airflow_neo.local.errors.AccuracyCheckError`, a host that cannot run the artifact
raises :class:`~airflow_neo.local.errors.IncompatibleArtifactError` (a deploy smoke test on the
wrong host must fail, not pass unverified) and a library that does not load raises
:class:`~airflow_neo.local.errors.ModelArchiveError`; under ``"report"`` those are in the report
(``passed`` False, or ``not_verified``). The artifact runs in this process: the host check
(OS, architecture, CPU features) is what keeps an illegal instruction from killing it. Everything fetched or extracted lives in a temporary
directory removed on return. TVM is imported only when the artifact is loaded; never Airflow.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from airflow_neo.local.errors import AccuracyCheckError, IncompatibleArtifactError, ModelArchiveError, ModelInputError
from airflow_neo.local.files import blake2b_file, split_s3_url
from airflow_neo.local.preflight import local_path
from airflow_neo.local.settings import check_verify, check_verify_inputs

__all__ = ["verify_artifact"]

Log = Callable[[str], Any]
METADATA_NAME = "metadata.json"
ADVICE = "the artifact does not reproduce its compile's outputs on this host; do not deploy it"


def verify_artifact(artifact_uri: str, *, inputs_uri: str | None = None, mode: str = "gate", rtol: float | None = None,
                    profile_seconds: float | None = None, s3_client=None, log: Log = print) -> dict:
    """Check the artifact at ``artifact_uri`` on this machine; returns the report (see the module docstring).

    :param inputs_uri: a ``.npz`` of sample inputs (``s3://``, ``file://``, absolute path) to run
        instead of the recorded ones.
    :param mode: ``gate`` (failures raise), ``report`` or ``off`` (no verification, profile only).
    :param rtol: relative tolerance of float outputs; None: the one the compile used.
    :param profile_seconds: the latency profile's budget (0: none; None: ``[neo] profile_seconds``' default).
    :param s3_client: a boto3 S3 client, for ``s3://`` locations.
    :raises AccuracyCheckError, IncompatibleArtifactError: under ``gate`` (see the module docstring).
    :raises ModelArchiveError, ModelInputError: the artifact or the inputs cannot be fetched or read.
    """
    mode = check_verify(mode)
    check_verify_inputs(inputs_uri, name="inputs_uri")
    if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not rtol > 0):
        raise ValueError(f"rtol must be a number > 0 (or None: the compile's tolerance); got {rtol!r}")
    seconds = _profile_budget(profile_seconds)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airflow-neo-verify-") as scratch:
        local = _fetch(artifact_uri, Path(scratch) / "artifact.tar.gz", "artifact_uri", ModelArchiveError, s3_client)
        metadata, metadata_digest, record = _read_artifact(local, artifact_uri, Path(scratch))
        report: dict[str, Any] = {
            "artifact": artifact_uri, "artifact_blake2b": blake2b_file(local), "metadata_blake2b": metadata_digest,
            "model": _model_facts(metadata), "host": host_facts(),
        }
        user = None
        if inputs_uri:
            user = _fetch(inputs_uri, Path(scratch) / "inputs.npz", "inputs_uri", ModelInputError, s3_client)
        report.update(_check(local, metadata, record, (user, inputs_uri) if user else None, mode, rtol, seconds,
                             Path(scratch), log))
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _profile_budget(value: float | None) -> float:
    from airflow_neo.local import settings

    seconds = settings.DEFAULT_PROFILE_SECONDS if value is None else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"profile_seconds must be a number of seconds >= 0 (0: no profile); got {value!r}")
    return float(seconds)


def _fetch(uri: str, target: Path, name: str, error: type, s3_client) -> Path:
    """The local file of ``uri`` (downloaded to ``target`` for ``s3://``); ``error`` naming ``name`` otherwise."""
    if not isinstance(uri, str) or not uri:
        raise error(f"{name} must be an s3://, file:// URI or an absolute path; got {uri!r}")
    if uri.startswith("s3://"):
        if s3_client is None:
            raise error(f"{name} {uri}: reading s3:// needs an S3 client (an AWS connection)")
        bucket, key = split_s3_url(uri)
        try:
            s3_client.download_file(bucket, key, str(target))
        except Exception as err:  # noqa: BLE001 - botocore's errors, reported with the location
            raise error(f"{name} {uri}: could not download it: {type(err).__name__}: {err}") from None
        return target
    path = local_path(uri)
    if path is None:
        raise error(f"{name} {uri!r}: only s3://, file:// URIs and absolute paths are read")
    if not os.path.isfile(path):
        raise error(f"{name} {uri}: {path} does not exist or is not a file")
    return Path(path)


def _read_artifact(path: Path, uri: str, scratch: Path) -> tuple[dict, str, dict | None]:
    """metadata.json, its BLAKE2b and the verification record's arrays (None without one)."""
    import json

    from airflow_neo.local.verify import read_npz

    try:
        with tarfile.open(path, "r:*") as tar:
            raw = _member(tar, METADATA_NAME)
            if raw is None:
                raise ModelArchiveError(f"artifact_uri {uri} has no {METADATA_NAME}; it is not an airflow-neo artifact")
            metadata = json.loads(raw.decode("utf-8"))
            name = (metadata.get("verification") or {}).get("record")
            data = _member(tar, name) if name else None
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise ModelArchiveError(f"artifact_uri {uri} is not a valid artifact (.tar.gz): {type(err).__name__}: {err}") from err
    record = None
    if data is not None:
        (scratch / "record.npz").write_bytes(data)
        record = read_npz(scratch / "record.npz", f"{name} in {uri}")
    return metadata, hashlib.blake2b(raw, digest_size=32).hexdigest(), record


def _member(tar: tarfile.TarFile, name: str) -> bytes | None:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        return None
    return handle.read() if handle is not None else None


def _model_facts(metadata: dict) -> dict:
    target = metadata.get("target") or {}
    return {key: metadata.get(key) for key in ("framework", "runtime", "producer", "compiled_at", "inputs", "outputs")} | {
        "target": target.get("label") or target.get("source"), "machine": target.get("machine"),
    }


def host_facts() -> dict:
    """This machine: OS, architecture, Python, and the CPU's instruction-set flags the runtime checks."""
    from airflow_neo import runtime

    flags = runtime._host_cpu_flags() or set()  # noqa: SLF001 - the runtime's one reader of /proc/cpuinfo
    known = set(runtime._X86_FLAGS.values()) | set(runtime._AARCH64_FLAGS.values())  # noqa: SLF001
    return {"system": platform.system(), "machine": platform.machine(), "python": platform.python_version(),
            "cpu_flags": sorted(flags & known)}


# ----------------------------------------------------------------------------- the checks


def _check(local: Path, metadata: dict, record: dict | None, user: tuple[Path, str] | None, mode: str, rtol,
           seconds: float, scratch: Path, log: Log) -> dict:
    """``{"verification": ..., "profile": ...}`` of the artifact on this host."""
    from airflow_neo.runtime import check_host_compatible, load

    try:
        check_host_compatible(metadata)
    except IncompatibleArtifactError as err:
        if mode == "gate":
            raise IncompatibleArtifactError(f"the artifact cannot run on this host: {err}") from err
        return _unrunnable(str(err), mode, seconds, log)
    began = time.perf_counter()
    try:
        model = load(local, workdir=scratch / "extracted", check_host=False)
    except Exception as err:  # noqa: BLE001 - a library that cannot load is the check's finding
        why = f"its library could not be loaded: {type(err).__name__}: {str(err)[:300]}"
        if mode == "gate":
            raise ModelArchiveError(f"the artifact cannot run on this host: {why}") from err
        return _unrunnable(why, mode, seconds, log)
    load_seconds = round(time.perf_counter() - began, 4)
    inputs, label, expected, why = _inputs(metadata, record, user)
    verification = _verify(model, metadata, inputs, label, expected, why, mode, rtol, log) if mode != "off" else None
    profile = _profile(model, inputs, label, load_seconds, seconds, log) if seconds else None
    return {"verification": verification, "profile": profile}


def _unrunnable(why: str, mode: str, seconds: float, log: Log) -> dict:
    """The report's entries for an artifact that cannot run here (not under the gate)."""
    log(f"verification: not verified: {why}")
    verification = None if mode == "off" else {"mode": mode, "passed": None, "not_verified": why}
    return {"verification": verification, "profile": {"skipped": why} if seconds else None}


def _inputs(metadata: dict, record: dict | None, user: tuple[Path, str] | None):
    """``(inputs, their label, recorded outputs or None, why not compared)``."""
    import numpy as np

    from airflow_neo.local.verify import SEED, npz_inputs, sample_inputs

    specs = metadata.get("inputs") or []
    recorded = None
    if record is not None:
        recorded = ({spec["name"]: record.get(f"input:{spec['name']}") for spec in specs},
                    [record[key] for key in sorted((k for k in record if k.startswith("output:")),
                                                   key=lambda k: int(k.split(":", 1)[1]))])
        if any(value is None for value in recorded[0].values()):
            recorded = None
    verification = metadata.get("verification") or {}
    missing = ("the artifact holds no verification record ("
               + (verification.get("record_skipped") or verification.get("not_verified")
                  or ("its compile did not verify it" if not verification else "none was written")) + ")")
    if user is not None:
        path, uri = user
        inputs = npz_inputs(path, specs, f"inputs_uri {uri}", uri)
        if recorded and all(np.array_equal(inputs[name], recorded[0][name]) and inputs[name].dtype == recorded[0][name].dtype
                            for name in inputs):
            return inputs, uri, recorded[1], None
        return inputs, uri, None, ("no outputs were recorded for these inputs (the record holds other inputs)"
                                   if recorded else missing)
    if recorded:
        return recorded[0], f"{verification.get('inputs')} (recorded at compile)", recorded[1], None
    return sample_inputs(specs), f"random (seed {SEED})", None, missing


def _verify(model, metadata: dict, inputs: dict, label: str, expected: list | None, why: str | None, mode: str,
            rtol, log: Log) -> dict:
    from airflow_neo.local.verify import compare_outputs, raise_if_failed, summary

    started = time.monotonic()
    recorded = metadata.get("verification") or {}
    result: dict[str, Any] = {"mode": mode, "inputs": label, "reference": None, "passed": None}
    try:
        outputs = model.run(dict(inputs))
    except Exception as err:  # noqa: BLE001 - an artifact that raises fails the check
        outputs, problem = None, f"the artifact raised on the inputs: {type(err).__name__}: {str(err)[:300]}"
        result.update(passed=False, outputs=[{"name": "*", "passed": False, "problem": problem}])
    if outputs is not None and expected is not None:
        result["reference"] = f"{recorded.get('reference')} (recorded at compile)"
        rule = rtol if rtol is not None else recorded.get("rtol")
        if len(outputs) != len(expected):
            result["outputs"] = [{"name": "*", "passed": False, "problem": f"the artifact has {len(outputs)} output(s); "
                                  f"{len(expected)} were recorded"}]
        else:
            result["outputs"] = compare_outputs(metadata, list(zip(outputs, expected)),
                                                quantized=bool(recorded.get("quantized")), rtol=rule)
        result["passed"] = all(item["passed"] for item in result["outputs"])
    elif outputs is not None:
        result["not_compared"] = why
        result["outputs"] = _sanity(metadata, outputs)
        # sane outputs are still not verified (None); insane ones are wrong (False)
        result["passed"] = None if all(item["passed"] for item in result["outputs"]) else False
    result["seconds"] = round(time.monotonic() - started, 3)
    compared = result["reference"] and all("max_abs_diff" in item for item in result["outputs"])
    log(summary(result) if compared else _summary(result))
    if mode == "gate":
        if result["reference"] is None and result["passed"] is False:
            item = next(item for item in result["outputs"] if not item["passed"])
            raise AccuracyCheckError(f"output {item['name']}: {item['problem']} (inputs: {label}): {ADVICE}")
        raise_if_failed(result, advice=ADVICE)
    return result


def _sanity(metadata: dict, outputs: list) -> list[dict]:
    """Each output: finite, and of the shape the metadata declares (None: any size)."""
    import numpy as np

    specs = list(metadata.get("outputs") or [])
    items = []
    for index, value in enumerate(outputs):
        array = np.asarray(value)
        spec = specs[index] if index < len(specs) else {}
        want = spec.get("shape")
        shaped = want is None or (array.ndim == len(want) and all(w is None or w == g for w, g in zip(want, array.shape)))
        finite = bool(np.all(np.isfinite(array))) if array.dtype.kind in "fc" else True
        item = {"name": spec.get("name") or f"output{index}", "dtype": str(array.dtype), "shape": list(array.shape),
                "finite": finite, "passed": shaped and finite}
        if not shaped:
            item["problem"] = f"shape {list(array.shape)} differs from the metadata's {want}"
        elif not finite:
            item["problem"] = "holds NaN or infinite values"
        items.append(item)
    if len(outputs) != len(specs):
        items.append({"name": "*", "passed": False,
                      "problem": f"the artifact gave {len(outputs)} output(s); its metadata declares {len(specs)}"})
    return items


def _summary(result: dict) -> str:
    verdict = {True: "passed", False: "FAILED", None: "not verified"}[result["passed"]]
    if result["passed"] is None and result.get("not_compared"):
        verdict = "ran"
    problems = "; ".join(f"{item['name']}: {item['problem']}" for item in result.get("outputs", []) if item.get("problem"))
    line = f"verification ({result['mode']}): {verdict} on {result['inputs']}"
    if result.get("not_compared"):
        line += f"; outputs finite and shaped as declared, not compared: {result['not_compared']}"
    return line + (f"; {problems}" if problems else "")


def _profile(model, inputs: dict, label: str, load_seconds: float, seconds: float, log: Log) -> dict:
    from airflow_neo.local import profile

    result: dict[str, Any] = {"budget_seconds": seconds, "inputs": label, "load_seconds": load_seconds,
                              "threads": _threads() if model.runtime == "tvm-relax-vm" else None}
    ordered = [inputs[name] for name in model.input_names]
    try:
        result.update(profile.latency(lambda: model.run(ordered), seconds))
    except Exception as err:  # noqa: BLE001 - the verification reports a raising artifact
        result = {"skipped": f"the artifact raised: {type(err).__name__}: {str(err)[:300]}"}
    else:
        result.update(profile.kernel_profile(model.metadata, model.library_path, ordered))
    log(profile.summary(result))
    return result


def _threads() -> int | None:
    import tvm

    count = tvm.get_global_func("runtime.NumThreads", allow_missing=True)
    return int(count()) if count is not None else None

