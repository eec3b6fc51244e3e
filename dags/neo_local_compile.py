"""The main job: compile a small real model with the local TVM backend, no AWS at all.

A task writes a small ONNX CNN (random weights) as a Neo-style ``model.tar.gz`` under
``$AIRFLOW_HOME/neo/models``; the compile task compiles it for the machine's CPU family
(``LINUX``/``X86_64``) into ``$AIRFLOW_HOME/neo/artifacts``; the last task prints the full
DescribeCompilationJob payload and runs the artifact once through ``airflow_neo.runtime``.
"""

from __future__ import annotations

import pendulum

from airflow.sdk import dag, task
from airflow_neo.operators.neo import NeoCompilationOperator

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
        "S3OutputLocation": "{{ ti.xcom_pull(task_ids='make_model')['output_uri'] }}",
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
        import os
        from pathlib import Path

        from airflow_neo.samples import write_sample_archive

        home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser().resolve()
        archive = write_sample_archive(home / "neo" / "models" / "sample-cnn" / "model.tar.gz")
        return {"input_uri": archive.as_uri(), "output_uri": (home / "neo" / "artifacts").as_uri()}

    # [START howto_operator_neo_compilation_local]
    compile_model = NeoCompilationOperator(
        task_id="compile",
        backend="local",
        config=LOCAL_CONFIG,
        action_if_job_exists="timestamp",
        check_interval=2,
    )
    # [END howto_operator_neo_compilation_local]

    @task
    def smoke_test(payload: dict) -> dict:
        import json

        import numpy as np

        from airflow_neo import runtime

        print("DescribeCompilationJob payload:")
        print(json.dumps(payload, indent=2))
        artifact = payload["ModelArtifacts"]["S3ModelArtifacts"]
        model = runtime.load(artifact)
        outputs = model.run({"data": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("float32")})
        print(f"Artifact: {artifact}")
        print(f"Ran once: output shapes {[list(o.shape) for o in outputs]}, top class {int(np.argmax(outputs[0]))}")
        return {"artifact": artifact, "output_shapes": [list(o.shape) for o in outputs]}

    make_model() >> compile_model
    smoke_test(compile_model.output)


neo_local_compile()
