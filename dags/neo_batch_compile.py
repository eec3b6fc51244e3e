"""Scheduled batch compilation of a matrix of models x targets with dynamic task mapping.

Every day, each model in ``MODELS`` is compiled for each target in ``TARGETS`` on the local
backend (one mapped task per pair); a summary task collects every payload (status, target,
digest, artifact URI, compile time) and fails the run if any job did not complete.
"""

from __future__ import annotations

import pendulum

from airflow.sdk import dag, task
from airflow_neo.operators.neo import NeoCompilationOperator

# [START howto_neo_batch_matrix]
MODELS = {"cnn-small": 0, "cnn-alt": 1}  # model name -> seed of the sample CNN's random weights
TARGETS = {
    "x86-64": {"TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
    "c5": {"TargetDevice": "ml_c5"},
    "arm64": {"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}},
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
        import os
        from pathlib import Path

        from airflow_neo.samples import sample_data_input_config, write_sample_archive

        home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser().resolve()
        requests = []
        for model, seed in MODELS.items():
            archive = home / "neo" / "models" / model / "model.tar.gz"
            if not archive.exists():  # unchanged models keep their bytes (and their cache key)
                write_sample_archive(archive, seed=seed)
            for target_name, target in TARGETS.items():
                requests.append(
                    {
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
                )
        return requests

    requests = build_requests()

    # [START howto_operator_neo_compilation_mapped]
    compiled = NeoCompilationOperator.partial(
        task_id="compile",
        backend="local",
        action_if_job_exists="timestamp",
        check_interval=2,
        max_active_tis_per_dagrun=2,
    ).expand(config=requests)
    # [END howto_operator_neo_compilation_mapped]

    @task(trigger_rule="all_done")
    def summarize(payloads, requests: list[dict]) -> list[dict]:
        from airflow_neo.hooks.local import LocalNeoHook

        by_name = {p["CompilationJobName"]: p for p in payloads if p}
        hook = LocalNeoHook(aws_conn_id=None)
        rows = []
        for request in requests:
            name = request["CompilationJobName"]
            payload = by_name.get(name) or _latest_payload(hook, name)
            rows.append(_summary_row(name, payload))
        for row in rows:
            print("{job:40} {status:10} {target:14} {compile_seconds:>8} {artifact}".format(**row))
        failed = [row["job"] for row in rows if row["status"] != "COMPLETED"]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(rows)} compilation jobs did not complete: {failed}")
        return rows

    summarize(compiled.output, requests)


def _latest_payload(hook, name: str) -> dict | None:
    """The payload of the job that a failed task left behind (its XCom is empty)."""
    summaries = hook.list_compilation_jobs(NameContains=name, SortBy="CreationTime", SortOrder="Descending")
    return hook.describe_compilation_job(summaries[0]["CompilationJobName"]) if summaries else None


def _summary_row(name: str, payload: dict | None) -> dict:
    import datetime as dt

    if not payload:
        return {"job": name, "status": "MISSING", "target": "-", "compile_seconds": "-", "artifact": "-", "digest": "-"}
    output = payload["OutputConfig"]
    platform = output.get("TargetPlatform")
    target = output.get("TargetDevice") or f"{platform['Os']}/{platform['Arch']}"
    seconds = "-"
    if payload.get("CompilationStartTime") and payload.get("CompilationEndTime"):
        start = dt.datetime.fromisoformat(payload["CompilationStartTime"])
        seconds = f"{(dt.datetime.fromisoformat(payload['CompilationEndTime']) - start).total_seconds():.1f}"
    return {
        "job": payload["CompilationJobName"],
        "status": payload["CompilationJobStatus"],
        "target": target,
        "compile_seconds": seconds,
        "artifact": (payload.get("ModelArtifacts") or {}).get("S3ModelArtifacts", "-"),
        "digest": (payload.get("ModelDigests") or {}).get("ArtifactDigest", "-"),
        "failure_reason": payload.get("FailureReason") or "",
    }


neo_batch_compile()
