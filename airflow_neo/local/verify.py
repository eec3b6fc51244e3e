"""Verification of a local compile: the built artifact against the source framework, same inputs.

:func:`verify_build` runs in the compile child after the library is built and before the
artifact is written: it loads the library (:class:`airflow_neo.runtime.CompiledModel`), runs it on
sample inputs (the user's ``.npz`` given as ``verify_inputs``, else the ``.npz`` in the model
archive when there is one, else random inputs per input shape and dtype, seeded), runs the
reference (:mod:`airflow_neo.local.references`) on the same inputs and compares each output.
When the outputs were compared, :func:`check_build` also hands back the record the artifact keeps
(``verification.npz``: the inputs and the reference's outputs, at most :data:`RECORD_MAX_BYTES`),
from which :mod:`airflow_neo.local.verify_artifact` checks the artifact again on a deploy host.

Modes (``[neo] verify``, the operator's and hook's ``verify_mode=``): ``"gate"`` (the default: an
output beyond its tolerance fails the job with :class:`~airflow_neo.local.errors.AccuracyCheckError`,
so nothing is written or published), ``"report"`` (the result goes into ``metadata.json`` only),
``"off"``.

Tolerance of an output (absolute): ``atol + rtol * max|reference|``; defaults per output dtype
(:data:`DEFAULT_RTOL`; integer outputs: one quantization step, ``atol = 1``); float outputs of a
quantized graph get :data:`QUANTIZED_RTOL` (a rounding tie inside may land one step apart);
``[neo] verify_rtol`` overrides the float default.

Emulation: an aarch64 artifact compiled on this x86-64 machine runs under qemu-aarch64
(:mod:`airflow_neo.local.emulation`; the result's ``emulated`` names the emulator, and the log line
says "under emulation") when qemu and the aarch64 root are there; else it is "not verified: <why>;
no emulation: <why>". armv7 artifacts are never emulated (no TVM runtime for armv7).

Flexible inputs (a DataInputConfig range, ``ranges`` in the input's metadata): the sample inputs
take each range dim at its lower bound, and the artifact is also run against the reference at
every range's lower bound, midpoint and upper bound (:func:`~airflow_neo.local.flexible_shapes.sample_shapes`;
random inputs, seeded); ``shapes`` in the result lists each size's input shapes (``inputs``), the
``max_abs_diff`` and ``tolerance`` of its worst output (``worst_output``) and ``passed``, and
``passed`` is False when any size fails. At those extra sizes an artifact that raises where the reference runs fails the size (the artifact promised that
size); a reference that raises leaves it unverified.

Invariants: verification never fails a job for its own reasons: a reference that cannot run here,
a target neither this machine nor its emulator can run, a failed emulated run, an artifact or
reference that raises on the sample inputs, or outputs that do not pair up are "not verified:
<why>" (``passed`` is None); only a comparison beyond tolerance under ``"gate"`` raises. The
result is a JSON-able dict (:func:`verify_build`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from airflow_neo.local.errors import AccuracyCheckError, IncompatibleArtifactError, ModelInputError
from airflow_neo.local.flexible_shapes import check_ranges, default_size, sample_shapes
from airflow_neo.local.references import NotVerifiable, reference_for
from airflow_neo.local.settings import DEFAULT_VERIFY, VERIFY_MODES, check_verify

__all__ = [
    "DEFAULT_RTOL", "QUANTIZED_RTOL", "RECORD_MAX_BYTES", "RECORD_NAME", "SEED", "VERIFY_MODES", "check_build",
    "compare_outputs", "inputs_for", "raise_if_failed", "read_npz", "sample_inputs", "tolerance_for", "verification_record",
    "verify_build",
]

SEED = 0
#: relative tolerance (of the output's largest |reference| value) per float output dtype
DEFAULT_RTOL = {"float64": 1e-6, "float32": 1e-3, "float16": 1e-2, "bfloat16": 5e-2}
#: relative tolerance of the float outputs of a quantized graph (compared with onnxruntime running
#: each node as written): a rounding tie inside that lands one step apart moves later layers by whole
#: steps (torchvision ResNet-18 QDQ: 0.74% of the output range; int8 models of docs/real_models.md
#: up to 1.3%)
QUANTIZED_RTOL = 3e-2
FLOAT_ATOL = 1e-5
#: the artifact's verification record (:func:`check_build`): sample inputs and reference outputs
RECORD_NAME = "verification.npz"
RECORD_MAX_BYTES = 16 * 2**20

Log = Callable[[str], Any]


def verify_build(metadata: dict, library: Path, model_file: Path, model_dir: Path, *, mode: str = DEFAULT_VERIFY,
                 rtol: float | None = None, log: Log = print, user_inputs: tuple[Path, str] | None = None) -> dict | None:
    """Verify the built ``library`` (described by ``metadata``) against ``model_file``'s framework.

    :param model_dir: the extracted model archive, searched for a ``.npz`` of sample inputs.
    :param user_inputs: ``(local .npz, URI)`` of the user's sample inputs (``verify_inputs``), used
        in preference to the archive's ``.npz``; ``inputs`` in the result names the URI.
    :return: the ``verification`` entry of ``metadata.json``; None when ``mode`` is ``"off"``.
    :raises AccuracyCheckError: under ``"gate"``, the first output beyond its tolerance.
    :raises ModelInputError: the archive's (or the user's) ``.npz`` does not match the model's inputs.
    """
    return check_build(metadata, library, model_file, model_dir, mode=mode, rtol=rtol, log=log,
                       user_inputs=user_inputs)[0]


def check_build(metadata: dict, library: Path, model_file: Path, model_dir: Path, *, mode: str = DEFAULT_VERIFY,
                rtol: float | None = None, log: Log = print,
                user_inputs: tuple[Path, str] | None = None) -> tuple[dict | None, dict | None]:
    """:func:`verify_build`'s result and the verification record to write into the artifact as
    :data:`RECORD_NAME` (``{"input:<name>": array, "output:<index>": reference array}``; None when
    the outputs were not compared or the arrays take more than :data:`RECORD_MAX_BYTES`: the
    result's ``record`` is then None and ``record_skipped`` says why, if it was compared)."""
    mode = check_verify(mode)
    if mode == "off":
        log("verification: off ([neo] verify)")
        return None, None
    started = time.monotonic()
    result: dict[str, Any] = {"mode": mode, "inputs": None, "reference": None, "passed": None}
    record = None
    try:
        inputs, result["inputs"] = inputs_for(metadata["inputs"], model_dir, user_inputs=user_inputs)
        outputs, reference, emulated = _run_both(metadata, library, model_file, inputs)
        result.update(reference=reference.name, quantized=bool(reference.quantized))
        if emulated:
            result["emulated"] = emulated
        if rtol is not None:
            result["rtol"] = rtol
        result["outputs"] = compare_outputs(metadata, outputs, quantized=reference.quantized, rtol=rtol)
        result["passed"] = all(item["passed"] for item in result["outputs"])
        sizes = verify_sizes(metadata, library, model_file, inputs, result["outputs"], quantized=reference.quantized,
                             rtol=rtol)
        if sizes:
            result["shapes"] = sizes
            result["passed"] = result["passed"] and all(item["passed"] is not False for item in sizes)
        record, result["record"], skipped = verification_record(inputs, [want for _, want in outputs])
        if skipped:
            result["record_skipped"] = skipped
    except NotVerifiable as err:
        result["not_verified"] = str(err)
    result["seconds"] = round(time.monotonic() - started, 3)
    log(summary(result))
    if mode == "gate":
        raise_if_failed(result, advice="nothing was published; report it with the model, or set "
                                       "verify_mode='report' to publish it with the figures")
    return result, record


def raise_if_failed(result: dict, *, advice: str) -> None:
    """Raise AccuracyCheckError naming the first output of ``result`` beyond its tolerance (if any)."""
    failed = [item for item in result.get("outputs", []) if not item["passed"]]
    failed_size = next((item for item in result.get("shapes") or [] if item["passed"] is False), None)
    if not failed and failed_size is not None:
        raise AccuracyCheckError(
            f"at input shapes {_shapes_text(failed_size['inputs'])} (one of the sizes of the DataInputConfig ranges): "
            f"{failed_size.get('problem') or _diff_text(failed_size)} (reference: {result['reference']}; random inputs, "
            f"seed {SEED}). The compiled model's outputs differ from the framework's at that size: {advice}"
        )
    if failed:
        item = failed[0]
        raise AccuracyCheckError(
            f"output {item['name']}: {item.get('problem') or _diff_text(item)} (reference: {result['reference']}; "
            f"inputs: {result['inputs']}). The compiled model's outputs differ from the framework's: {advice}"
        )


def verification_record(inputs: dict, expected: list) -> tuple[dict | None, str | None, str | None]:
    """``(arrays, record name, why skipped)``: the sample inputs and the reference's outputs as
    the artifact's record, when they take at most :data:`RECORD_MAX_BYTES`."""
    import numpy as np

    arrays = {f"input:{name}": np.asarray(value) for name, value in inputs.items()}
    arrays.update({f"output:{index}": np.asarray(value) for index, value in enumerate(expected)})
    size = sum(array.nbytes for array in arrays.values())
    if size > RECORD_MAX_BYTES:
        return None, None, (f"the sample inputs and reference outputs take {size / 2**20:.1f} MiB, more than the "
                            f"{RECORD_MAX_BYTES // 2**20} MiB a record may take")
    if any(array.dtype.kind not in "biuf" for array in arrays.values()):
        return None, None, "an input or output is not a numeric array numpy can save without pickling"
    return arrays, RECORD_NAME, None


def summary(result: dict) -> str:
    """One log line for a verification result."""
    if result.get("not_verified"):
        return f"verification: not verified: {result['not_verified']}"
    worst = max(result["outputs"], key=lambda item: item["max_abs_diff"] / max(item["tolerance"], 1e-30))
    verdict = "passed" if result["passed"] else "FAILED"
    if result.get("emulated"):
        verdict += f" under emulation ({result['emulated']})"
    line = (f"verification ({result['mode']}): {verdict} against {result['reference']} on {result['inputs']}; "
            f"{len(result['outputs'])} output(s), worst {worst['name']}: {_diff_text(worst)} in {result['seconds']:.2f} s")
    if result.get("shapes"):
        line += "; at the range sizes: " + ", ".join(
            f"{_shapes_text(item['inputs'])} {_size_verdict(item)}" for item in result["shapes"])
    return line


def _shapes_text(shapes: dict) -> str:
    return " ".join(f"{name}{list(shape)}" for name, shape in shapes.items())


def _size_verdict(item: dict) -> str:
    if item["passed"] is None:
        return f"not verified ({item.get('not_verified')})"
    if item.get("problem"):
        return f"FAILED ({item['problem']})"
    return f"{'passed' if item['passed'] else 'FAILED'} ({item['max_abs_diff']:.3g})"


def _diff_text(item: dict) -> str:
    if item.get("problem"):
        return item["problem"]
    relation = "<=" if item["passed"] else ">"
    return f"max abs diff {item['max_abs_diff']:.3g} {relation} tolerance {item['tolerance']:.3g}"


# ----------------------------------------------------------------------------- inputs


def sample_inputs(specs: list[dict], seed: int = SEED) -> dict:
    """Random inputs for ``specs`` (``name``, ``shape``, ``dtype``; a None dimension is 1, a range
    dim its lower bound): floats
    standard normal, 8-bit integers over their range, bools random; wider integers are 1, the one
    value valid whatever they mean (an index, a mask that attends, a sequence length: 0 would be
    an empty sequence, an edge frameworks disagree on)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        shape = [int(dim) if dim is not None else (default_size(spec, i) if str(i) in (spec.get("ranges") or {}) else 1)
                 for i, dim in enumerate(spec.get("shape") or [])]
        dtype = np.dtype(spec.get("dtype") or "float32") if spec.get("dtype") != "bfloat16" else None
        if dtype is None:
            raise NotVerifiable(f"input {spec['name']!r} is bfloat16, which numpy cannot hold")
        if dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            value = rng.integers(0, 2, shape).astype(bool)
        elif dtype.itemsize == 1:
            info = np.iinfo(dtype)
            value = rng.integers(int(info.min), int(info.max) + 1, shape).astype(dtype)
        else:
            value = np.ones(shape, dtype=dtype)
        inputs[spec["name"]] = value
    return inputs


def inputs_for(specs: list[dict], model_dir: Path, *, user_inputs: tuple[Path, str] | None = None) -> tuple[dict, str]:
    """The inputs and where they came from: the user's ``.npz`` (``(local path, URI)``: named by
    its URI), else the archive's ``.npz``, else random (seeded)."""
    if user_inputs is not None:
        path, uri = user_inputs
        return npz_inputs(Path(path), specs, f"verify_inputs {uri}", uri), uri
    found = sorted(path for path in model_dir.rglob("*.npz") if not path.name.startswith("."))
    if not found:
        return sample_inputs(specs), f"random (seed {SEED})"
    rel = found[0].relative_to(model_dir).as_posix()
    return npz_inputs(found[0], specs, f"{rel} in the model archive", rel), rel


def read_npz(path: Path, label: str) -> dict:
    """The arrays of the ``.npz`` at ``path`` (no pickles); ModelInputError naming ``label`` if unreadable."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise ModelInputError(f"the sample inputs {label} are not a readable .npz: {err}") from err


def npz_inputs(path: Path, specs: list[dict], label: str, short: str) -> dict:
    """The ``.npz``'s arrays by input name (or ``arr_0``, ``arr_1``... in input order); errors name
    the file as ``label`` (``x.npz in the model archive``) or ``short``."""
    names = [spec["name"] for spec in specs]
    arrays = read_npz(path, label)
    positional = [f"arr_{index}" for index in range(len(names))]
    if sorted(arrays) == sorted(positional) and sorted(arrays) != sorted(names):
        arrays = {name: arrays[key] for name, key in zip(names, positional)}
    if sorted(arrays) != sorted(names):
        raise ModelInputError(
            f"the sample inputs {label} hold arrays {sorted(arrays)}; the model's inputs are "
            f"{names} (save them with numpy.savez(path, **{{input name: array}}))"
        )
    for spec in specs:
        array, shape = arrays[spec["name"]], spec.get("shape")
        if shape is not None and (array.ndim != len(shape) or any(w is not None and w != g for w, g in zip(shape, array.shape))):
            raise ModelInputError(
                f"the sample input {spec['name']!r} in {short} has shape {list(array.shape)}; the model's input is {shape}"
            )
        if spec.get("ranges"):
            try:
                check_ranges(spec, array.shape)
            except ModelInputError as err:
                raise ModelInputError(f"the sample inputs in {short}: {err}") from None
    return {name: arrays[name] for name in names}


# ----------------------------------------------------------------------------- running and comparing


def _run_both(metadata: dict, library: Path, model_file: Path, inputs: dict):
    """``(pairs of (artifact output, reference output), reference, emulator)``: ``emulator`` names
    the emulator that ran the artifact (``qemu-aarch64 -cpu neoverse-n1``: an aarch64 artifact on
    this x86-64 machine, :mod:`airflow_neo.local.emulation`, killed after its ``TIMEOUT_S`` = 600 s,
    the job's MaxRuntimeInSeconds bounding the whole compile), None when this machine ran it."""
    from airflow_neo.local import emulation
    from airflow_neo.runtime import CompiledModel, check_host_compatible

    emulator = None
    try:
        check_host_compatible(metadata)
    except IncompatibleArtifactError as err:
        if not emulation.foreign(metadata):
            raise NotVerifiable(str(err)) from err
        try:
            emulator = emulation.emulator_for(metadata)
        except emulation.EmulationUnavailable as why:
            raise NotVerifiable(f"{err}; no emulation: {why}") from err
    reference = reference_for(metadata["framework"], model_file, metadata=metadata)
    try:
        if emulator is None:
            outputs = CompiledModel(metadata, library).run(dict(inputs))
        else:
            outputs = emulation.run_emulated(metadata, library, dict(inputs), root=emulator)
    except (emulation.EmulationFailed, emulation.EmulationUnavailable) as err:
        why = err.reason if isinstance(err, emulation.EmulationFailed) else str(err)[:600]
        raise NotVerifiable(f"the emulated run failed ({emulator.label}): {why}") from err
    except Exception as err:  # noqa: BLE001 - see the module docstring
        raise ArtifactRaised(f"the artifact raised on the sample inputs: {type(err).__name__}: {str(err)[:300]}") from err
    try:
        expected = reference.run(dict(inputs))
    except Exception as err:  # noqa: BLE001
        raise NotVerifiable(f"{reference.name} raised on the sample inputs: {type(err).__name__}: {str(err)[:300]}") from err
    if len(outputs) != len(expected):
        raise NotVerifiable(f"the artifact has {len(outputs)} output(s), {reference.name} {len(expected)}: they do not pair up")
    return list(zip(outputs, expected)), reference, (emulator.label if emulator else None)


class ArtifactRaised(NotVerifiable):
    """The artifact (not the reference) raised on the sample inputs."""


def verify_sizes(metadata: dict, library: Path, model_file: Path, verified: dict, compared: list[dict], *,
                 quantized: bool, rtol: float | None) -> list[dict]:
    """A flexible artifact run against the reference at each size of
    :func:`~airflow_neo.local.flexible_shapes.sample_shapes` ([] for a static one); the size the
    main comparison ran at (``verified`` inputs, ``compared`` outputs) is not run again."""
    import numpy as np

    found = []
    for shapes in sample_shapes(metadata["inputs"]):
        entry: dict[str, Any] = {"inputs": shapes}
        if all(list(np.shape(verified[name])) == shape for name, shape in shapes.items()):
            outputs = compared
        else:
            specs = [{**spec, "shape": shapes[spec["name"]]} for spec in metadata["inputs"]]
            try:
                pairs = _run_both(metadata, library, model_file, sample_inputs(specs))[0]
            except ArtifactRaised as err:
                found.append({**entry, "passed": False, "max_abs_diff": float("inf"), "problem": str(err)})
                continue
            except NotVerifiable as err:
                found.append({**entry, "passed": None, "not_verified": str(err)})
                continue
            outputs = compare_outputs(metadata, pairs, quantized=quantized, rtol=rtol)
        worst = max(outputs, key=lambda item: item["max_abs_diff"] / max(item["tolerance"], 1e-30))
        entry.update(max_abs_diff=worst["max_abs_diff"], tolerance=worst["tolerance"], worst_output=worst["name"],
                     passed=all(item["passed"] for item in outputs))
        if worst.get("problem"):
            entry["problem"] = f"output {worst['name']}: {worst['problem']}"
        found.append(entry)
    return found


def tolerance_for(dtype: str, scale: float, *, quantized: bool = False, rtol: float | None = None) -> float:
    """The absolute tolerance of an output of ``dtype`` whose largest |reference| value is ``scale``."""
    if dtype in DEFAULT_RTOL:
        relative = rtol if rtol is not None else (QUANTIZED_RTOL if quantized else DEFAULT_RTOL[dtype])
        return FLOAT_ATOL + relative * scale
    return 1.0  # integer and bool outputs: one quantization step


def compare_outputs(metadata: dict, pairs: list, *, quantized: bool = False, rtol: float | None = None) -> list[dict]:
    """Each ``(artifact output, reference output)`` pair compared within :func:`tolerance_for`;
    one dict per output (``name``, ``dtype``, ``shape``, ``max_abs_diff``, ``tolerance``, ``passed``...)."""
    import numpy as np

    names = [spec.get("name") or f"output{index}" for index, spec in enumerate(metadata.get("outputs") or [])]
    results = []
    for index, (got, want) in enumerate(pairs):
        got, want = np.asarray(got), np.asarray(want)
        name = names[index] if index < len(names) else f"output{index}"
        item: dict[str, Any] = {"name": name, "dtype": str(got.dtype), "shape": list(got.shape)}
        if got.size != want.size:
            item.update(passed=False, max_abs_diff=float("inf"), max_rel_diff=float("inf"), tolerance=0.0,
                        problem=f"shape {list(got.shape)} differs from the reference's {list(want.shape)}")
            results.append(item)
            continue
        g = got.astype(np.float64).reshape(-1)
        w = want.astype(np.float64).reshape(-1)
        both_nan = np.isnan(g) & np.isnan(w)
        diff = np.where(both_nan, 0.0, np.abs(g - w))
        diff = np.where(np.isnan(diff), np.inf, diff)
        finite = w[np.isfinite(w)]
        scale = float(np.max(np.abs(finite))) if finite.size else 0.0
        max_abs = float(np.max(diff)) if diff.size else 0.0
        tolerance = tolerance_for(str(got.dtype), scale, quantized=quantized, rtol=rtol)
        item.update(max_abs_diff=max_abs, max_rel_diff=max_abs / max(scale, 1e-12), tolerance=tolerance,
                    reference_scale=scale, passed=bool(max_abs <= tolerance))
        results.append(item)
    return results
