"""The local backend's compiler: a Neo model archive in, a TVM-compiled artifact (``.tar.gz``) out.

:func:`compile_model` runs inside the compile child process. TVM, ONNX, PyTorch, TFLite and
treelite are imported inside functions only, so importing this module is cheap and never
imports Airflow.

Artifact layout (a gzip'ed tar, members at the top level)::

    model.so        the compiled library: a TVM Relax VM executable (ONNX, PYTORCH, TFLITE)
                    or a tl2cgen tree-ensemble library (XGBOOST)
    metadata.json   see METADATA_SCHEMA_VERSION and compile_model()
    verification.npz  when the verification compared outputs and they fit its size cap: the sample
                    inputs (``input:<name>``) and the reference's outputs (``output:<index>``),
                    named by ``metadata["verification"]["record"]``
                    (:mod:`airflow_neo.local.verify_artifact` checks an artifact against it)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import platform
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from airflow_neo.core.validation import (
    ValidatedRequest,
    parse_compiler_options,
    parse_data_input_config,
)
from airflow_neo.local.archive import find_model_file, safe_extract
from airflow_neo.local.errors import (
    CompilationError,
    LocalCompilationError,
    ModelArchiveError,
    ModelInputError,
    UnsupportedFrameworkError,
)
from airflow_neo.local.files import atomic_file, blake2b_file
from airflow_neo.local.frameworks import SUPPORTED_FRAMEWORKS, UNSUPPORTED_FRAMEWORKS, framework_problem
from airflow_neo.local.convert import CONVERTERS, Source
from airflow_neo.local.frontends import IMPORTERS, Imported, InputSpec, first_line, import_converted, importer_key, quiet
from airflow_neo.local.precision import apply_to_imported, precision_for
from airflow_neo.local.targets import ResolvedTarget, is_coreml, resolve_target

__all__ = [
    "ALLOWED_DTYPES",
    "LIBRARY_NAME",
    "METADATA_NAME",
    "METADATA_SCHEMA_VERSION",
    "SUPPORTED_FRAMEWORKS",
    "UNSUPPORTED_FRAMEWORKS",
    "InputSpec",
    "compile_model",
]

LIBRARY_NAME = "model.so"
METADATA_NAME = "metadata.json"
METADATA_SCHEMA_VERSION = 1
ALLOWED_DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")

Log = Callable[[str], Any]


# --------------------------------------------------------------------------------------------
# entry point


def compile_model(
    request: ValidatedRequest | dict,
    archive_path: str,
    artifact_path: str,
    *,
    log: Log = print,
    tuning_trials: int | None = None,
    tuning_database: str | None = None,
    work_dir: str | os.PathLike | None = None,
    rpc_tracker: str | None = None,
    rpc_keys: dict | None = None,
    tuning_pack: bool = True,
    verify: str = "gate",
    verify_rtol: float | None = None,
    profile_seconds: float = 0.0,
    verify_inputs: str | None = None,
    verify_inputs_file: str | os.PathLike | None = None,
) -> dict:
    """Compile the model in ``archive_path`` as ``request`` says, and write the artifact to ``artifact_path``.

    :param request: a :class:`~airflow_neo.core.validation.ValidatedRequest`, or a normalized
        CreateCompilationJob request dict (wrapped with ``ValidatedRequest.from_normalized``):
        InputConfig.Framework, InputConfig.DataInputConfig, OutputConfig.TargetDevice or
        TargetPlatform, OutputConfig.CompilerOptions (``dtype``, ``mcpu``, ``mattr``,
        ``ANDROID_PLATFORM``).
    :param archive_path: the model archive (``.tar.gz``) on local disk.
    :param artifact_path: where to write the compiled artifact (``.tar.gz``); written atomically.
    :param log: called with one line per event (phases and their timings).
    :param tuning_trials: MetaSchedule trial budget of the model (see :mod:`airflow_neo.local.tuning`);
        None: 0 (``[neo] tuning_trials``' default). Records already in the target's tuning database
        are applied even with 0.
    :param tuning_database: root of the tuning databases; None: ``$AIRFLOW_HOME/neo/tuning``.
    :param rpc_tracker, rpc_keys: ``[neo] rpc_tracker``/``rpc_keys``: the target's tuning is measured
        on the tracker's devices of its key (:mod:`airflow_neo.local.tuning_rpc`); None: here.
    :param tuning_pack: ``[neo] tuning_pack``: apply the shipped tuning pack (see
        :mod:`airflow_neo.local.configs.pack`).
    :param verify, verify_rtol: ``[neo] verify``/``verify_rtol``: run the artifact against the source
        framework before it is written (:mod:`airflow_neo.local.verify`; ``metadata["verification"]``);
        under ``"gate"`` outputs beyond tolerance raise AccuracyCheckError and nothing is written.
    :param profile_seconds: ``[neo] profile_seconds``: the artifact's profile, and the source
        framework's baseline, may take this long (:mod:`airflow_neo.local.profile`;
        ``metadata["profile"]``); 0 (this function's default; the runner passes the setting): none.
    :param verify_inputs: the job's ``verify_inputs``: the URI of the user's sample inputs (a ``.npz``),
        verified on in preference to the archive's ``.npz`` (``verification["inputs"]`` names it).
    :param verify_inputs_file: the local copy of ``verify_inputs`` (the runner fetches it into the
        job's work dir); None: ``verify_inputs`` itself, which must then be a ``file://`` URI or
        an absolute path.
    :param work_dir: where the model is extracted and built; it belongs to the caller, who removes
        it (the runner gives a directory inside the job's work dir, which it removes whatever
        happens to this process). None: a temporary directory removed on return.
    :return: the metadata dict written as ``metadata.json`` in the artifact (``tuning``: the
        tuning report: database, workloads, trials, records digest).
    :raises LocalCompilationError: a subclass naming what was wrong (archive, inputs, framework,
        target, operators, toolchain).
    """
    started = time.monotonic()
    validated = _as_validated(request)
    framework = validated.framework
    _check_framework(framework)
    options = validated.compiler_options
    if not isinstance(options, dict):
        raise ModelInputError(f"OutputConfig.CompilerOptions must be a JSON object; got {options!r}")
    data_input = validated.data_input_config
    if is_coreml(validated.output_config):
        from airflow_neo.local.coreml.job import compile_coreml_job

        return compile_coreml_job(validated, archive_path, artifact_path, log=log, work_dir=work_dir, verify=verify)
    dtype_option = _dtype_option(options)
    target = resolve_target(validated.output_config, options)
    log(
        f"target: {target.source} -> {json.dumps(target.target, sort_keys=True)}"
        + (f" (cross-compiling with {target.cross_compiler})" if target.is_cross else "")
    )
    if target.is_cuda:
        _refuse_ranges(data_input, target)
    compiler_path = target.compiler()  # fail before the long work when the (cross) C compiler is missing
    precision = precision_for(options, target, framework)  # precision_mode: FP16 needs float16 arithmetic
    digest = blake2b_file(archive_path)
    timings: dict[str, float] = {}
    with _work_dir(work_dir) as work:
        with _phase("extract", timings, log):
            files = safe_extract(archive_path, work / "model")
            model_file = find_model_file(work / "model", framework)
            log(f"model file: {model_file.relative_to(work / 'model').as_posix()} ({len(files)} file(s) in the archive)")
        out_dir = work / "out"
        out_dir.mkdir(exist_ok=True)
        library = out_dir / LIBRARY_NAME
        tuning_report = schedules_report = cuda_report = None
        if framework == "XGBOOST":
            with _phase("import", timings, log):
                tree_model, versions = _load_xgboost(model_file)
                log(f"XGBoost model: {int(tree_model.num_tree)} trees, {int(tree_model.num_feature)} features")
            with _phase("build", timings, log):
                source_dir = work / "c-source"
                _generate_xgboost_c(tree_model, source_dir)
            with _phase("export", timings, log):
                inputs, outputs = _export_xgboost(tree_model, source_dir, library, compiler_path)
            runtime = "tl2cgen"
        else:
            with _phase("import", timings, log):
                imported = _import(framework, model_file, work, data_input, precision.import_dtype(dtype_option),
                                   options, log)
                log("inputs: " + "; ".join(spec.describe() for spec in imported.inputs))
            with _phase("build", timings, log):
                precision_report = apply_to_imported(imported, precision, target, log)  # before lowering
                tuning = _tuning_settings(validated.payload, started, tuning_trials, tuning_database, work)
                tuning.update(rpc_tracker=rpc_tracker, rpc_keys=rpc_keys)
                try:
                    executable, outputs, tuning_report, schedules_report = _build(imported, target, tuning, log,
                                                                                  pack=tuning_pack)
                except Exception as err:  # noqa: BLE001 - a symbolic build that TVM cannot finish is the ranges' doing
                    _raise_if_flexible(err, data_input)
                    raise
            with _phase("export", timings, log):
                cuda_report = _export(executable, library, compiler_path, target, log)
            inputs, versions = imported.inputs, imported.framework_versions
            runtime = "tvm-relax-vm"
        metadata = _metadata(
            request=validated.payload,
            framework=framework,
            model_file=model_file.relative_to(work / "model").as_posix(),
            runtime=runtime,
            inputs=inputs,
            outputs=outputs,
            target=target,
            options=options,
            data_input=data_input,
            digest=digest,
            versions=versions,
            timings=timings,
        )
        if tuning_report is not None:
            metadata["tuning"] = tuning_report
        if runtime == "tvm-relax-vm":
            metadata["precision"] = precision.with_tolerance(precision_report, verify_rtol)
        if schedules_report is not None:
            metadata["schedules"] = schedules_report
        if cuda_report is not None:
            metadata["cuda"] = cuda_report
        user_inputs = _user_inputs(verify_inputs, verify_inputs_file) if verify != "off" else None
        with _phase("check", timings, log):
            checks, record = _check(metadata, library, model_file, work / "model", log, verify=verify,
                                    rtol=precision.verify_rtol(verify_rtol, metadata.get("precision")),
                                    profile_seconds=profile_seconds, user_inputs=user_inputs)
            metadata.update(checks)
        _write_artifact(artifact_path, library, metadata, record=record)
    log(f"artifact: {artifact_path} ({os.path.getsize(artifact_path)} bytes) in {time.monotonic() - started:.2f} s")
    return metadata


def _import(framework: str, model_file: Path, work: Path, data_input, dtype_option, options: dict, log: Log) -> Imported:
    if framework in CONVERTERS:
        if data_input is not None and not isinstance(data_input, dict):
            raise ModelInputError(f"InputConfig.DataInputConfig for {framework} names its inputs: give a JSON object "
                                  f"{{input name: shape}} (Neo's form), not {json.dumps(data_input)}")
        source = Source(framework, model_file, work / "model", data_input or {}, options, work / "converted", log)
        return import_converted(source, dtype_option)
    return IMPORTERS[importer_key(framework, model_file)](model_file, data_input, dtype_option, log)


def _check(metadata: dict, library: Path, model_file: Path, model_dir: Path, log: Log, *, verify: str, rtol,
           profile_seconds: float, user_inputs: tuple[Path, str] | None = None) -> tuple[dict, dict | None]:
    """``{"profile": ..., "verification": ...}`` of the built library, those that ran (the profile
    first: it times the library's first load in this process), and the verification record
    (arrays for ``verification.npz``; None when there is none)."""
    from airflow_neo.local.profile import profile_build
    from airflow_neo.local.verify import check_build

    found = {"profile": profile_build(metadata, library, model_file, model_dir, profile_seconds, log=log,
                                      user_inputs=user_inputs)}
    found["verification"], record = check_build(metadata, library, model_file, model_dir, mode=verify, rtol=rtol,
                                                log=log, user_inputs=user_inputs)
    return {key: value for key, value in found.items() if value is not None}, record


def _user_inputs(uri: str | None, local: str | os.PathLike | None) -> tuple[Path, str] | None:
    """``(local .npz, URI)`` of the job's ``verify_inputs``; ModelInputError naming the parameter
    when there is no readable local copy."""
    from airflow_neo.local.preflight import local_path

    if not uri:
        return None
    path = Path(local) if local is not None else (Path(local_path(uri)) if local_path(uri) else None)
    if path is None:
        raise ModelInputError(f"verify_inputs {uri}: an s3:// URI must be fetched first (the runner does it); "
                              "give verify_inputs_file, or a file:// URI or an absolute path")
    if not path.is_file():
        raise ModelInputError(f"verify_inputs {uri}: the sample inputs file {path} does not exist")
    return path, uri


@contextlib.contextmanager
def _work_dir(given: str | os.PathLike | None) -> Iterator[Path]:
    """The caller's work dir (left for its owner to remove), else a temporary one removed on exit."""
    if given is not None:
        work = Path(given)
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="airflow-neo-compile-") as temporary:
        yield Path(temporary)


def _as_validated(request: ValidatedRequest | dict) -> ValidatedRequest:
    """``request`` as a ValidatedRequest; a JSON member that does not parse is a ModelInputError naming it."""
    if isinstance(request, ValidatedRequest):
        return request
    try:
        return ValidatedRequest.from_normalized(request)
    except ValueError as err:
        for path, parse in (
            ("OutputConfig.CompilerOptions", parse_compiler_options),
            ("InputConfig.DataInputConfig", parse_data_input_config),
        ):
            try:
                parse(request)
            except ValueError as member_err:
                raise ModelInputError(f"{path} must be valid JSON: {member_err}") from member_err
        raise ModelInputError(str(err)) from err


# --------------------------------------------------------------------------------------------
# request helpers


def _check_framework(framework: str) -> None:
    if framework in SUPPORTED_FRAMEWORKS:
        return
    raise UnsupportedFrameworkError(f"Framework {framework or None!r} {framework_problem(framework)}")


def _dtype_option(options: dict) -> str | dict | None:
    value = options.get("dtype")
    if value is None:
        return None
    values = value.values() if isinstance(value, dict) else [value]
    for item in values:
        if not isinstance(item, str) or item not in ALLOWED_DTYPES:
            raise ModelInputError(
                f"CompilerOptions dtype {item!r} is not supported; use one of {', '.join(ALLOWED_DTYPES)} "
                "(a string for every input, or an object {input name: dtype})"
            )
    return value


@contextlib.contextmanager
def _phase(name: str, timings: dict, log: Log):
    started = time.monotonic()
    log(f"phase {name}: started")
    try:
        yield
    except LocalCompilationError:
        log(f"phase {name}: failed after {time.monotonic() - started:.2f} s")
        raise
    except Exception as err:  # noqa: BLE001 - every other failure becomes a CompilationError
        log(f"phase {name}: failed after {time.monotonic() - started:.2f} s")
        raise _translate(err, name) from err
    timings[name] = round(time.monotonic() - started, 3)
    log(f"phase {name}: {timings[name]:.2f} s")


def _translate(err: Exception, phase: str) -> LocalCompilationError:
    """``err`` (raised in ``phase``) as one of our errors in Neo's classes, the failing node named
    (:func:`airflow_neo.local.failures.translate`)."""
    from airflow_neo.local.failures import translate

    return translate(err, phase)


# --------------------------------------------------------------------------------------------
# build and export (TVM)


def _tuning_settings(request: dict, started: float, trials: int | None, database: str | None, work: Path) -> dict:
    """The job's tuning budget, database root, deadline (the time limit less a reserve for the
    build) and scratch directory, from the arguments the caller gave (defaults: CompileSettings')."""
    from airflow_neo.local.settings import CompileSettings

    defaults = CompileSettings()
    trials = defaults.tuning_trials if trials is None else int(trials)
    database = database or defaults.resolved().tuning_database
    max_runtime = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    deadline = None
    if max_runtime:
        deadline = started + float(max_runtime) - max(60.0, 0.2 * float(max_runtime))
    return {"trials": max(0, trials), "database_root": database, "deadline": deadline, "work_dir": work}


def _build(imported: Imported, target: ResolvedTarget, tuning: dict | None = None, log: Log = print, *, pack: bool = True):
    import tvm

    from airflow_neo.local.schedules.lowering import lower

    tvm_target = tvm.target.Target(target.target)
    if target.is_cuda:
        return _build_cuda(imported, tvm_target, log)
    mod = lower(imported.mod, tvm_target)
    outputs = _output_specs(mod["main"], imported.output_names)
    report = None
    pack = _pack_for(tvm_target, log, enabled=pack)
    if tuning is not None:
        from airflow_neo.local.tuning import optimize

        mod, report = optimize(mod, target, log=log, pack=pack, **tuning)
    from airflow_neo.local.configs import JsonConfigStore, OrderedUnion
    from airflow_neo.local.schedules import compile_with_default_schedules

    tuned = JsonConfigStore(report["database"]) if report and report.get("database") else None
    configs = OrderedUnion(tuned, pack if len(pack) else None)
    executable, schedules = compile_with_default_schedules(mod, tvm_target, log=log, configs=configs)
    return executable, outputs, report, schedules


def _flexible_inputs(data_input) -> list[str]:
    """The inputs DataInputConfig gives a range ('lo..hi') for ([] when none, or when it is malformed:
    the importer reports that with its own words)."""
    from airflow_neo.core.input_shapes import parse_data_input

    try:
        return [str(entry.name) for entry in parse_data_input(data_input) if entry.has_range] if data_input else []
    except ValueError:
        return []


def _raise_if_flexible(err: Exception, data_input) -> None:
    """A build that fails with ranges in DataInputConfig: ModelInputError naming them and what to do
    (TVM's symbolic build has limits the import cannot see, e.g. a Range over a symbolic length)."""
    flexible = _flexible_inputs(data_input)
    if not flexible or isinstance(err, LocalCompilationError):
        return
    raise ModelInputError(
        f"DataInputConfig gives ranges for {', '.join(flexible)}, and TVM could not build the model with those "
        f"dimensions symbolic: {type(err).__name__}: {first_line(err)[:300]}. Give static sizes there (one artifact "
        "per size), or a range on another dimension (a batch range often builds where a sequence range does not)"
    ) from err


def _refuse_ranges(data_input, target: ResolvedTarget) -> None:
    """Ranges ('lo..hi') compile for CPU targets only: a flexible CUDA artifact could not be run here
    at several sizes, so it would ship unchecked."""
    flexible = _flexible_inputs(data_input)
    if flexible:
        raise ModelInputError(
            f"DataInputConfig gives a range for {', '.join(map(str, flexible))}, but {target.source} is an NVIDIA "
            "target: flexible shapes compile for CPU targets only; give a static shape (compile one artifact per size)")


def _build_cuda(imported: Imported, tvm_target, log: Log):
    """A CUDA target's build: TVM's GPU pipeline with DLight's default schedules; no tuning (the
    tuning database and pack hold CPU kernels), so the tuning report is None."""
    from airflow_neo.local.cuda.build import build

    outputs = _output_specs(imported.mod["main"], imported.output_names)
    executable = build(imported.mod, tvm_target, log)
    schedules = {"kind": "dlight", "rules": ["Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback"]}
    return executable, outputs, None, schedules


def _export(executable, library: Path, compiler: str, target: ResolvedTarget, log: Log) -> dict | None:
    """Link the library; for CUDA targets the kernels are compiled to a cubin first and the report
    (NVRTC version, cubin size, kernels, the requested versions) is returned."""
    if not target.is_cuda:
        _export_library(executable, library, compiler)
        return None
    from airflow_neo.local.cuda.build import export

    report = export(executable, library, compiler, target.accelerator["arch"], log)
    requested = {key: target.accelerator[key] for key in ("cuda_ver", "trt_ver") if key in target.accelerator}
    report.update(arch=target.accelerator["arch"], requested=requested,
                  tensorrt="not used: kernels are TVM's, compiled by NVRTC")
    if "cuda_ver" in requested and int(requested["cuda_ver"].split(".")[0]) < int(report["nvrtc"].split(".")[0]):
        report["driver_note"] = (f"built by NVRTC {report['nvrtc']}; the device's driver must support CUDA "
                                 f"{report['nvrtc']} or newer (cuda-ver {requested['cuda_ver']} was asked)")
        log(f"warning: {report['driver_note']}")
    if "trt_ver" in requested:
        log(f"trt-ver {requested['trt_ver']} recorded; TensorRT is not used by the local backend")
    return report


def _pack_for(tvm_target, log: Log, *, enabled: bool = True):
    """The shipped tuning pack's records for the target's CPU family (empty when it has none, or
    when ``[neo] tuning_pack`` is off)."""
    import tvm

    from airflow_neo.local.configs import PackStore, cpu_family
    from airflow_neo.local.configs import pack as shipped
    from airflow_neo.local.schedules.cpu import cpu_info

    cpu = cpu_info(tvm_target)
    family = cpu_family(cpu.arch, cpu.vector_bits, cpu.fma)
    if not enabled:
        log(f"tuning pack: off ([neo] tuning_pack); {family} kernels get their default plans")
        return PackStore(family, tvm.__version__, shipped.PACK_FILE, empty=True)
    pack = PackStore(family, tvm.__version__, shipped.PACK_FILE)
    log(f"tuning pack: {len(pack)} kernel configs for {pack.family}" if len(pack)
        else f"tuning pack: none for {pack.family} (TVM {tvm.__version__})")
    return pack


def _output_specs(function, names: list[str]) -> list[InputSpec]:
    from tvm import relax

    leaves = []

    def walk(ty):
        if isinstance(ty, relax.TupleType) or hasattr(ty, "fields"):
            for field_ty in ty.fields:
                walk(field_ty)
        else:
            leaves.append(ty)

    walk(function.ret_ty)
    specs = []
    for index, ty in enumerate(leaves):
        shape = None
        dtype = None
        if isinstance(ty, relax.TensorType):
            dtype = str(ty.dtype) if ty.dtype else None
            if ty.shape is not None and hasattr(ty.shape, "values"):
                shape = [int(d) if _is_int(d) else None for d in ty.shape.values]
        name = names[index] if index < len(names) and len(names) == len(leaves) else f"output{index}"
        specs.append(InputSpec(name, shape, dtype))
    return specs


def _is_int(value) -> bool:
    try:
        int(value)
        return True
    except (TypeError, ValueError):
        return False


def _export_library(executable, library: Path, compiler: str) -> None:
    from tvm.support import cc

    # A fresh fcompile per export: tvm's cross_compiler appends to its option list in place.
    fcompile = cc.cross_compiler(compiler, options=[])
    try:
        executable.export_library(str(library), fcompile=fcompile)
    except RuntimeError as err:
        raise CompilationError(f"linking the library with {compiler} failed: {first_line(err)}\n{str(err)[-1500:]}") from err


# --------------------------------------------------------------------------------------------
# XGBoost (treelite + tl2cgen)


def _load_xgboost(model_file: Path):
    import treelite

    suffix = model_file.suffix.lower()
    format_choice = {".json": "json", ".ubj": "ubjson"}.get(suffix, "inspect")
    errors = []
    try:
        model = treelite.frontend.load_xgboost_model(str(model_file), format_choice=format_choice)
        return model, _tree_versions()
    except Exception as err:  # noqa: BLE001 - treelite raises its own TreeliteError
        errors.append(f"{type(err).__name__}: {str(err).strip()[:300]}")
    try:
        model = treelite.frontend.load_xgboost_model_legacy_binary(str(model_file))
        return model, _tree_versions()
    except Exception as err:  # noqa: BLE001
        errors.append(f"{type(err).__name__}: {str(err).strip()[:300]}")
    raise ModelArchiveError(
        f"{model_file.name} is not an XGBoost model treelite can read (JSON, UBJSON or legacy binary, from "
        f"Booster.save_model): {' / '.join(errors)}"
    )


def _tree_versions() -> dict:
    import tl2cgen
    import treelite

    return {"treelite": treelite.__version__, "tl2cgen": tl2cgen.__version__}


def _generate_xgboost_c(model, source_dir: Path) -> None:
    import tl2cgen

    num_tree = int(model.num_tree)
    # Split big ensembles into several translation units so that gcc can compile them in parallel.
    params = {"parallel_comp": max(1, min(os.cpu_count() or 1, num_tree // 100))} if num_tree >= 200 else {}
    source_dir.mkdir(parents=True, exist_ok=True)
    with quiet():
        tl2cgen.generate_c_code(model, str(source_dir), params, verbose=False)


def _export_xgboost(model, source_dir: Path, library: Path, compiler_path: str):
    import shutil

    import tl2cgen

    with quiet():
        built = tl2cgen.create_shared(compiler_path, str(source_dir), verbose=False, long_build_time_warning=False)
    shutil.move(str(built), str(library))
    input_dtype = str(model.input_type) if getattr(model, "input_type", None) else "float32"
    output_dtype = str(model.output_type) if getattr(model, "output_type", None) else "float32"
    inputs = [InputSpec("data", [None, int(model.num_feature)], input_dtype)]
    # tl2cgen predicts (rows, targets, classes); the runtime returns that array as is.
    try:
        header = model.get_header_accessor()
        num_target = int(header.get_field("num_target")[0])
        num_class = int(max(header.get_field("num_class")))
    except Exception:  # noqa: BLE001 - only a description
        num_target = num_class = None
    outputs = [InputSpec("predictions", [None, num_target, num_class], output_dtype)]
    return inputs, outputs


# --------------------------------------------------------------------------------------------
# metadata and artifact


def _metadata(*, request, framework, model_file, runtime, inputs, outputs, target, options, data_input, digest, versions, timings) -> dict:
    import airflow_neo

    try:
        import tvm

        tvm_version = tvm.__version__
    except ImportError:  # pragma: no cover
        tvm_version = None
    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "producer": f"airflow-neo {airflow_neo.__version__} (local backend)",
        "runtime": runtime,
        "library": LIBRARY_NAME,
        "entry_function": "main" if runtime == "tvm-relax-vm" else None,
        "framework": framework,
        "framework_version": (request.get("InputConfig") or {}).get("FrameworkVersion"),
        "model_file": model_file,
        "inputs": [asdict(spec) for spec in inputs],
        "outputs": [asdict(spec) for spec in outputs],
        "target": {
            "label": target.label,
            "source": target.source,
            "tvm_target": target.target,
            "triple": target.triple,
            "machine": target.machine,
            "os": target.os,
            "cross_compiled": target.is_cross,
            "cross_compiler": target.cross_compiler,
            **({"accelerator": target.accelerator} if target.accelerator else {}),
        },
        "compiler_options": options,
        "data_input_config": data_input,
        "input_archive_blake2b": digest,
        "versions": {
            "tvm": tvm_version,
            "airflow_neo": airflow_neo.__version__,
            "python": platform.python_version(),
            **{key: value for key, value in versions.items() if value is not None},
        },
        "timings_s": timings,
        "compiled_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _write_artifact(artifact_path: str | os.PathLike, library: Path | None, metadata: dict, *,
                    record: dict | None = None, files: list[tuple[str, Path]] = ()) -> None:
    """The artifact: the library (None: there is none, e.g. a Core ML model), metadata.json, the
    other ``files`` (``(member name, path)``) and, with a ``record`` (arrays by name), the
    verification record under the name ``metadata["verification"]["record"]``."""
    import gzip

    payload = json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8")
    record_name = (metadata.get("verification") or {}).get("record") if record is not None else None
    with atomic_file(artifact_path) as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            if library is not None:
                _add_file(tar, LIBRARY_NAME, library.read_bytes(), 0o755)
            _add_file(tar, METADATA_NAME, payload, 0o644)
            for name, path in files:
                _add_file(tar, name, path.read_bytes(), 0o644)
            if record_name:
                _add_file(tar, record_name, _npz_bytes(record), 0o644)


def _npz_bytes(arrays: dict) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))
