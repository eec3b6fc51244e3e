"""The main job: compile a small real model with the local TVM backend, no AWS at all.

A task writes a small ONNX CNN (random weights) as a Neo-style ``model.tar.gz`` under
``$AIRFLOW_HOME/neo/models``; the compile task compiles it for the machine's CPU family
(``LINUX``/``X86_64``) into ``$AIRFLOW_HOME/neo/artifacts``, verifying it against onnxruntime
and profiling it; its report (XCom ``neo_report``) rides on the asset event of the artifacts
location. Downstream, ``verify_artifact`` re-checks the artifact on the worker that runs it (the
smoke test of a deploy host), and the last task reads the report from the asset event, prints the
full DescribeCompilationJob payload and runs the artifact once through ``airflow_neo.runtime``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum

from airflow.sdk import Asset, dag, task
from airflow_neo.operators.neo import NeoCompilationOperator
from airflow_neo.operators.verify import NeoVerifyArtifactOperator

HOME = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser().resolve()
# [START howto_neo_report_asset]
ARTIFACTS = Asset((HOME / "neo" / "artifacts").as_uri())  # the compile's S3OutputLocation
# [END howto_neo_report_asset]

# [START howto_operator_neo_local_compile]
LOCAL_CONFIG = {
    "CompilationJobName": "sample-cnn-x86-64",
    "RoleArn": "arn:aws:iam::000000000000:role/local",
    "InputConfig": {
        "S3Uri": "{{ ti.xcom_pull(task_ids='make_model')['input_uri'] }}",
        "Framework": "ONNX",
        "DataInputConfig": {"data": [1, 3, 32, 32]},
    },
    "OutputConfig": {
        "S3OutputLocation": ARTIFACTS.uri,
        "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"},
    },
    "StoppingCondition": {"MaxRuntimeInSeconds": 900},
}
# [END howto_operator_neo_local_compile]


@dag(
    dag_id="neo_local_compile",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["neo", "local"],
    doc_md=__doc__,
)
def neo_local_compile():
    @task
    def make_model() -> dict:
        from airflow_neo.samples import write_sample_archive

        archive = write_sample_archive(HOME / "neo" / "models" / "sample-cnn" / "model.tar.gz")
        return {"input_uri": archive.as_uri()}

    # [START howto_operator_neo_compilation_local]
    compile_model = NeoCompilationOperator(
        task_id="compile",
        backend="local",
        config=LOCAL_CONFIG,
        action_if_job_exists="timestamp",
        check_interval=2,
        outlets=[ARTIFACTS],  # the job's report goes on this asset's event
    )
    # [END howto_operator_neo_compilation_local]

    # [START howto_operator_neo_verify_artifact]
    verify_artifact = NeoVerifyArtifactOperator(
        task_id="verify_artifact",
        artifact_uri="{{ ti.xcom_pull(task_ids='compile')['ModelArtifacts']['S3ModelArtifacts'] }}",
        verify_mode="gate",
        profile_seconds=1,
    )
    # [END howto_operator_neo_verify_artifact]

    # [START howto_neo_report_inlet]
    @task(inlets=[ARTIFACTS])
    def smoke_test(payload: dict, *, inlet_events=None) -> dict:
        import json

        import numpy as np

        from airflow_neo import runtime

        report = inlet_events[ARTIFACTS][-1].extra["neo_report"]
        verification = report["verification"]
        print(f"Report from the asset event: verification {verification['mode']}: passed={verification['passed']} "
              f"against {verification['reference']}; speedup {(report.get('profile') or {}).get('speedup', '-')}")
        # [END howto_neo_report_inlet]
        print("DescribeCompilationJob payload:")
        print(json.dumps(payload, indent=2))
        artifact = payload["ModelArtifacts"]["S3ModelArtifacts"]
        model = runtime.load(artifact)
        outputs = model.run({"data": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("float32")})
        print(f"Artifact: {artifact}")
        print(f"Ran once: output shapes {[list(o.shape) for o in outputs]}, top class {int(np.argmax(outputs[0]))}")
        return {"artifact": artifact, "output_shapes": [list(o.shape) for o in outputs]}

    make_model() >> compile_model >> verify_artifact
    smoke_test(compile_model.output)


neo_local_compile()
