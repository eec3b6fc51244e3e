"""Scheduled batch compilation of a matrix of models x targets with dynamic task mapping.

Every day, each model in ``MODELS`` is compiled for each target in ``TARGETS`` on the local
backend (one mapped task per pair). Every compile verifies its artifact against onnxruntime and
profiles it; a target that this worker can run is also gated with ``max_slowdown``: an artifact
slower than that many times onnxruntime fails its task with the figures. A summary task tabulates
every job's payload and report (status, target, verification, p50 latency, speedup over
onnxruntime, artifact) and fails the run if any job did not complete or was refused.
"""

from __future__ import annotations

import pendulum

from airflow.sdk import dag, task
from airflow_neo.operators.neo import NeoCompilationOperator

# [START howto_neo_batch_matrix]
MODELS = {"cnn-small": 0, "cnn-alt": 1}  # model name -> seed of the sample CNN's random weights
# The sample CNN is tiny (about 0.05 ms in onnxruntime), so the runtime's per-call overhead
# dominates and its artifacts measure 3-4x onnxruntime; real models are gated at 1.0-1.5
# (see docs/benchmarks.md).
MAX_SLOWDOWN = 8.0
TARGETS = {  # target name -> (OutputConfig target, max_slowdown)
    "x86-64": ({"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}}, MAX_SLOWDOWN),
    # profiled only on a worker with AVX-512, and ARM artifacts only on the device: no gate here
    "c5": ({"TargetDevice": "ml_c5"}, None),
    "arm64": ({"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}, None),
}
# [END howto_neo_batch_matrix]


@dag(
    dag_id="neo_batch_compile",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["neo", "local", "batch"],
    doc_md=__doc__,
)
def neo_batch_compile():
    @task
    def build_requests(ds_nodash: str | None = None) -> list[dict]:
        """One ``{"config": CreateCompilationJob request, "max_slowdown": ...}`` per model and target."""
        import os
        from pathlib import Path

        from airflow_neo.samples import sample_data_input_config, write_sample_archive

        home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser().resolve()
        requests = []
        for model, seed in MODELS.items():
            archive = home / "neo" / "models" / model / "model.tar.gz"
            if not archive.exists():  # unchanged models keep their bytes (and their cache key)
                write_sample_archive(archive, seed=seed)
            for target_name, (target, max_slowdown) in TARGETS.items():
                config = {
                    "CompilationJobName": f"{model}-{target_name}-{ds_nodash}",
                    "RoleArn": "arn:aws:iam::000000000000:role/local",
                    "InputConfig": {
                        "S3Uri": archive.as_uri(),
                        "Framework": "ONNX",
                        "DataInputConfig": sample_data_input_config(),
                    },
                    "OutputConfig": {
                        "S3OutputLocation": (home / "neo" / "batch" / model).as_uri(),
                        **target,
                    },
                    "StoppingCondition": {"MaxRuntimeInSeconds": 900},
                }
                requests.append({"config": config, "max_slowdown": max_slowdown})
        return requests

    requests = build_requests()

    # [START howto_operator_neo_compilation_mapped]
    compiled = NeoCompilationOperator.partial(
        task_id="compile",
        backend="local",
        action_if_job_exists="timestamp",
        check_interval=2,
        max_active_tis_per_dagrun=2,
    ).expand_kwargs(requests)
    # [END howto_operator_neo_compilation_mapped]

    # [START howto_neo_batch_summary]
    @task(trigger_rule="all_done")
    def summarize(payloads, requests: list[dict], ti=None) -> list[dict]:
        from airflow_neo.hooks.local import LocalNeoHook

        by_name = {p["CompilationJobName"]: p for p in payloads if p}
        # every compile task pushes its job's report under "neo_report", refused ones included
        reports = [r for r in ti.xcom_pull(task_ids="compile", key="neo_report") or [] if r]
        report_of = {r["job"]: r for r in reports}
        hook = LocalNeoHook(aws_conn_id=None)
        rows = []
        for request in requests:
            name = request["config"]["CompilationJobName"]
            payload = by_name.get(name) or _latest_payload(hook, name)
            rows.append(_summary_row(name, payload, report_of, request["max_slowdown"]))
        print(ROW.format(**{key: key for key in HEADER}))
        for row in rows:
            print(ROW.format(**row))
        refused = [row["job"] for row in rows if row["status"] != "COMPLETED" or row["gate"] == "refused"]
        if refused:
            raise RuntimeError(f"{len(refused)} of {len(rows)} compilation jobs did not complete or were refused: {refused}")
        return rows

    summarize(compiled.output, requests)
    # [END howto_neo_batch_summary]


HEADER = ("job", "status", "target", "verified", "p50_ms", "speedup", "gate", "compile_seconds", "artifact")
ROW = "{job:34} {status:10} {target:12} {verified:12} {p50_ms:>8} {speedup:>8} {gate:8} {compile_seconds:>8} {artifact}"


def _latest_payload(hook, name: str) -> dict | None:
    """The payload of the job that a failed task left behind (its XCom is empty)."""
    summaries = hook.list_compilation_jobs(NameContains=name, SortBy="CreationTime", SortOrder="Descending")
    return hook.describe_compilation_job(summaries[0]["CompilationJobName"]) if summaries else None


def _summary_row(name: str, payload: dict | None, report_of: dict, max_slowdown: float | None) -> dict:
    import datetime as dt

    if not payload:
        return {**dict.fromkeys(HEADER, "-"), "job": name, "status": "MISSING", "digest": "-"}
    output = payload["OutputConfig"]
    platform = output.get("TargetPlatform")
    target = output.get("TargetDevice") or f"{platform['Os']}/{platform['Arch']}"
    seconds = "-"
    if payload.get("CompilationStartTime") and payload.get("CompilationEndTime"):
        start = dt.datetime.fromisoformat(payload["CompilationStartTime"])
        seconds = f"{(dt.datetime.fromisoformat(payload['CompilationEndTime']) - start).total_seconds():.1f}"
    report = report_of.get(payload["CompilationJobName"]) or {}
    return {
        "job": payload["CompilationJobName"],
        "status": payload["CompilationJobStatus"],
        "target": target,
        "compile_seconds": seconds,
        "artifact": (payload.get("ModelArtifacts") or {}).get("S3ModelArtifacts", "-"),
        "digest": (payload.get("ModelDigests") or {}).get("ArtifactDigest", "-"),
        "failure_reason": payload.get("FailureReason") or "",
        **_report_columns(report, max_slowdown),
    }


def _report_columns(report: dict, max_slowdown: float | None) -> dict:
    """The summary's columns from a job's report (airflow_neo.core.report): verification, speed, gate."""
    from airflow_neo.core.report import check_slowdown

    verification = report.get("verification") or {}
    verified = {True: "passed", False: "FAILED", None: "unverified"}[verification.get("passed")]
    profile = report.get("profile") or {}
    p50, speedup = profile.get("p50_ms"), profile.get("speedup")
    gate = "-"
    if max_slowdown is not None and report:
        gate = "refused" if check_slowdown(report, max_slowdown) else "passed"
    return {
        "verified": verified if report.get("available") else "-",
        "p50_ms": f"{p50:.3f}" if isinstance(p50, (int, float)) else "-",
        "speedup": f"{speedup:.2f}x" if isinstance(speedup, (int, float)) else "-",
        "gate": gate,
    }


neo_batch_compile()
