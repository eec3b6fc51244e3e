"""A long-lived process that imports ONNX files the way the compile child does, one per request.

``python -m tests.fuzz.onnx_import_worker``: reads JSON lines ``{"model": path, "data_input": ...,
"dtype": ...}`` on stdin and answers one JSON line each on stdout: ``{"outcome": "imported"}`` or
``{"outcome": "error", "class": ..., "raw": ..., "reason": FailureReason}``, where ``class`` is
the error the compile would fail with (the importer inside ``compiler._phase("import")``, as in
``compile_model``) and ``raw`` the type the importer raised before the translation. Anything
else (an exception that is not a LocalCompilationError) is answered as ``"outcome": "escaped"``.
A crash (a signal) of this process is the parent's finding: it sees EOF and the exit status.
The address space is capped (``--memory-mb``) like the compile child's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path


def _import_one(case: dict) -> dict:
    from airflow_neo.local.compiler import _phase
    from airflow_neo.local.errors import LocalCompilationError, failure_reason
    from airflow_neo.local.frontends import IMPORTERS, importer_key

    model_file = Path(case["model"])
    raw = None
    try:
        with _phase("import", {}, lambda line: None):
            try:
                IMPORTERS[importer_key("ONNX", model_file)](model_file, case.get("data_input"), case.get("dtype"), lambda line: None)
            except BaseException as err:
                raw = type(err).__name__
                raise
    except LocalCompilationError as err:
        return {"outcome": "error", "class": type(err).__name__, "raw": raw, "message": str(err)[:2000],
                "reason": failure_reason(err)[:2000]}
    except BaseException as err:  # noqa: BLE001 - the finding: reported, not raised
        return {"outcome": "escaped", "class": type(err).__name__, "raw": raw, "message": str(err)[:2000]}
    return {"outcome": "imported"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-mb", type=int, default=4096)
    args = parser.parse_args()
    limit = args.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The answers get their own descriptor: TVM and onnx print to stdout, which goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    import tvm.relax.frontend.onnx  # noqa: F401 - once, before the first request

    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        print(json.dumps(_import_one(json.loads(line))), file=answers, flush=True)


if __name__ == "__main__":
    main()
