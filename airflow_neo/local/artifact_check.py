"""The check process of :mod:`airflow_neo.local.verify_artifact`: load, run, compare and profile an artifact.

:func:`airflow_neo.local.verify_artifact.verify_artifact` runs ``python -m
airflow_neo.local.artifact_check <request.json>`` in a process of its own, because loading an
artifact's library runs native code that can crash (SIGSEGV, SIGILL, an abort, the out-of-memory
killer) or hang, and must not take the Airflow task process with it. The request (JSON) names the
artifact's local ``.tar.gz``, its metadata, the recorded verification arrays (a ``.npz`` the parent
extracted, or None), the user's inputs (a local ``.npz`` and its URI, or None), the mode, ``rtol``,
the profile's budget, a scratch directory and the result file.

Invariants: the child writes exactly one result file, atomically (a temporary name renamed), before
it exits 0: ``{"report": {"verification": ..., "profile": ...}}`` (JSON-safe) or ``{"error":
{"class", "module", "message", "kind", "neo_class", "traceback"}}`` for an exception, which the
parent raises again as the same class of :mod:`airflow_neo.local.errors` with the same message;
no result file means the process died. Its log lines go to stdout, one per line; what it writes to
stderr is the parent's evidence of a crash. It dies with its parent (Linux ``PR_SET_PDEATHSIG``).
At module level this imports only the standard library and the errors; TVM only when the artifact
is loaded (:mod:`airflow_neo.runtime`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from airflow_neo.local.errors import AccuracyCheckError, LocalCompilationError, ModelArchiveError

__all__ = ["ADVICE", "describe_error", "main", "run_checks", "unrunnable"]

Log = Callable[[str], Any]
ADVICE = "the artifact does not reproduce its compile's outputs on this host; do not deploy it"


def run_checks(request: dict, log: Log) -> dict:
    """``{"verification": ..., "profile": ...}`` of the artifact the request names, run in this process."""
    from airflow_neo.local.verify import read_npz
    from airflow_neo.runtime import load

    metadata, mode, seconds = request["metadata"], request["mode"], float(request["seconds"])
    record = read_npz(Path(request["record"]), request["record_label"]) if request.get("record") else None
    user = (Path(request["user"][0]), request["user"][1]) if request.get("user") else None
    began = time.perf_counter()
    try:
        model = load(Path(request["artifact"]), workdir=Path(request["scratch"]) / "extracted", check_host=False)
    except Exception as err:  # noqa: BLE001 - a library that cannot load is the check's finding
        why = f"its library could not be loaded: {type(err).__name__}: {str(err)[:300]}"
        if mode == "gate":
            raise ModelArchiveError(f"the artifact cannot run on this host: {why}") from err
        return unrunnable(why, mode, seconds, log)
    load_seconds = round(time.perf_counter() - began, 4)
    inputs, label, expected, why = _inputs(metadata, record, user)
    rtol = request.get("rtol")
    verification = _verify(model, metadata, inputs, label, expected, why, mode, rtol, log) if mode != "off" else None
    profile = _profile(model, inputs, label, load_seconds, seconds, log) if seconds else None
    return {"verification": verification, "profile": profile}


def unrunnable(why: str, mode: str, seconds: float, log: Log) -> dict:
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


# ----------------------------------------------------------------------------- the process


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it is already gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(70)


def describe_error(err: BaseException) -> dict:
    """The JSON-safe description of ``err`` that the parent raises again."""
    return {"class": type(err).__name__, "module": type(err).__module__, "message": str(err),
            "kind": getattr(err, "kind", None) if isinstance(err, LocalCompilationError) else None,
            "neo_class": getattr(err, "neo_class", None) if isinstance(err, LocalCompilationError) else None,
            "traceback": traceback.format_exc()}


def _write_result(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    _die_with_parent(int(request["parent_pid"]))
    try:
        text = json.dumps({"report": run_checks(request, _print)})  # a report that is not JSON-safe is an error too
    except BaseException as err:  # noqa: BLE001 - every failure goes back to the parent
        text = json.dumps({"error": describe_error(err)})
    _write_result(Path(request["result"]), text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
