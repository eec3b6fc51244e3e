"""A compilation job for TargetDevice coreml: the archive in, an artifact holding the Core ML model
(``model.mlpackage/...``) and ``metadata.json`` out, with the same phases, metadata keys and
atomic write as the TVM jobs of :mod:`airflow_neo.local.compiler`.

Invariants: the artifact has no ``model.so`` (``metadata["library"]`` names the package, runtime
``coreml``); verification is always "not verified" with the reason (Core ML cannot run on Linux)
and ``metadata["coreml"]`` holds the spec as read back from the saved package, which is what the
job could check; the profile is skipped, saying why. Imported only by ``compile_model`` when the target is coreml.
"""

from __future__ import annotations

import os
import time

from airflow_neo.core.validation import ValidatedRequest
from airflow_neo.local import compiler
from airflow_neo.local.archive import find_model_file, safe_extract
from airflow_neo.local.coreml.convert import compile_coreml
from airflow_neo.local.files import blake2b_file
from airflow_neo.local.targets import coreml_target

__all__ = ["NOT_VERIFIED", "compile_coreml_job"]

NOT_VERIFIED = ("Core ML models cannot run on Linux (coremltools converts here; Core ML runs on Apple devices): "
                "the saved model's spec was read back and checked instead (metadata coreml)")


def compile_coreml_job(validated: ValidatedRequest, archive_path: str, artifact_path: str, *, log=print,
                       work_dir: str | os.PathLike | None = None, verify: str = "gate") -> dict:
    started = time.monotonic()
    target = coreml_target()
    log(f"target: {target.source} -> Core ML (coremltools; no TVM library)")
    digest = blake2b_file(archive_path)
    timings: dict[str, float] = {}
    with compiler._work_dir(work_dir) as work:
        with compiler._phase("extract", timings, log):
            files = safe_extract(archive_path, work / "model")
            model_file = find_model_file(work / "model", validated.framework)
            log(f"model file: {model_file.relative_to(work / 'model').as_posix()} ({len(files)} file(s) in the archive)")
        with compiler._phase("convert", timings, log):
            result = compile_coreml(validated.framework, model_file, work / "model", validated.data_input_config,
                                    validated.compiler_options, work / "out", log)
        metadata = compiler._metadata(
            request=validated.payload, framework=validated.framework,
            model_file=model_file.relative_to(work / "model").as_posix(), runtime="coreml", inputs=result.inputs,
            outputs=result.outputs, target=target, options=validated.compiler_options,
            data_input=validated.data_input_config, digest=digest, versions=result.versions, timings=timings,
        )
        metadata.update(library=result.member, entry_function=None, coreml=result.spec_summary)
        metadata["profile"] = {"skipped": "Core ML models cannot run on Linux: there is nothing to time here"}
        if verify != "off":
            metadata["verification"] = {"mode": verify, "inputs": None, "reference": None, "passed": None,
                                        "not_verified": NOT_VERIFIED, "seconds": 0.0}
            log(f"verification: not verified: {NOT_VERIFIED}")
        compiler._write_artifact(artifact_path, None, metadata, files=result.files())
    log(f"artifact: {artifact_path} ({os.path.getsize(artifact_path)} bytes) in {time.monotonic() - started:.2f} s")
    return metadata
