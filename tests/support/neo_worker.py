"""A stand-in for one Airflow worker, for the shared-store tests (``python -m tests.support.neo_worker``).

Each invocation is its own process with its own environment (``AIRFLOW_HOME``, ``AIRFLOW_NEO_HOST``,
connections as ``AIRFLOW_CONN_*`` variables, ``[neo]`` options as ``AIRFLOW__NEO__*``), as a task on
another machine would be. It prints one JSON object on its last line of stdout.

Commands
    ``compile NAME INPUT OUTPUT [--no-wait] [--data-input-config JSON]``:
        NeoCompilationOperator(backend="local") with the job store from the configuration (the
        model's inputs: the sample CNN's ``{"data": [1, 3, 32, 32]}`` unless given); prints the
        payload (or the error).
    ``sense NAME --local-store URL``: NeoCompilationJobSensor(backend="local", local_store=URL);
        prints the payload (or the error) and, for a COMPLETED job, the BLAKE2b digest of the
        artifact read back from S3 through the AWS connection.
    ``create --store URL --names A,B,... --go FILE``: after printing ``ready``, waits for FILE to
        exist, then tries to create every name; prints the names this process won.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback

AWS_CONN_ID = "aws_neo_test"
ROLE_ARN = "arn:aws:iam::123456789012:role/NeoRole"


SAMPLE_DATA_INPUT_CONFIG = '{"data": [1, 3, 32, 32]}'


def _request(name: str, input_uri: str, output_uri: str, data_input_config: str = SAMPLE_DATA_INPUT_CONFIG) -> dict:
    return {
        "CompilationJobName": name,
        "RoleArn": ROLE_ARN,
        "InputConfig": {"S3Uri": input_uri, "Framework": "ONNX", "DataInputConfig": data_input_config},
        "OutputConfig": {"S3OutputLocation": output_uri, "TargetPlatform": {"Os": "LINUX", "Arch": "X86_64"}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def _context() -> dict:
    from tests.support.context import make_context

    return make_context()


def compile_job(args: argparse.Namespace) -> dict:
    from airflow_neo.operators.neo import NeoCompilationOperator

    operator = NeoCompilationOperator(
        task_id="compile",
        backend="local",
        aws_conn_id=AWS_CONN_ID,
        config=_request(args.name, args.input, args.output, args.data_input_config),
        wait_for_completion=not args.no_wait,
        check_interval=0.5,
    )
    try:
        payload = operator.execute(_context())
    except Exception as err:  # noqa: BLE001 - reported to the test
        return {"error": f"{type(err).__name__}: {err}"}
    return {"payload": payload}


def sense(args: argparse.Namespace) -> dict:
    from airflow_neo.sensors.neo import NeoCompilationJobSensor

    sensor = NeoCompilationJobSensor(
        task_id="wait",
        compilation_job_name=args.name,
        backend="local",
        local_store=args.local_store,
        aws_conn_id=AWS_CONN_ID,
        fail_if_not_found=False,
        poke_interval=0.5,
        timeout=600,
    )
    started = time.time()
    try:
        payload = sensor.execute(_context())
    except Exception as err:  # noqa: BLE001 - reported to the test
        return {"error": f"{type(err).__name__}: {err}", "seconds": time.time() - started}
    result = {"payload": payload, "seconds": time.time() - started}
    artifact = payload["ModelArtifacts"]["S3ModelArtifacts"]
    if artifact.startswith("s3://"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        bucket, _, key = artifact[len("s3://") :].partition("/")
        body = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn().get_object(Bucket=bucket, Key=key)["Body"].read()
        result["artifact_digest"] = hashlib.blake2b(body).hexdigest()
        result["artifact_bytes"] = len(body)
    return result


def create(args: argparse.Namespace) -> dict:
    from airflow_neo.core.exceptions import CompilationJobExists
    from airflow_neo.local.store import JobStore

    from airflow_neo.core.validation import normalize_request

    store = JobStore(args.store)
    names = args.names.split(",")
    normalize_request(_request("warm-up", "s3://m/in.tar.gz", "s3://m/out"), allow_local_uris=True)  # imports done
    store.exists("warm-up")  # connected
    print("ready", flush=True)
    while not os.path.exists(args.go):
        time.sleep(0.002)
    won, lost = [], 0
    for name in names:
        try:
            store.create(_request(name, "s3://models/in/model.tar.gz", "s3://models/out"))
            won.append(name)
        except CompilationJobExists:
            lost += 1
    return {"won": won, "lost": lost, "host": store.host}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.neo_worker")
    commands = parser.add_subparsers(dest="command", required=True)
    p_compile = commands.add_parser("compile")
    p_compile.add_argument("name")
    p_compile.add_argument("input")
    p_compile.add_argument("output")
    p_compile.add_argument("--no-wait", action="store_true")
    p_compile.add_argument("--data-input-config", default=SAMPLE_DATA_INPUT_CONFIG)
    p_sense = commands.add_parser("sense")
    p_sense.add_argument("name")
    p_sense.add_argument("--local-store", required=True)
    p_create = commands.add_parser("create")
    p_create.add_argument("--store", required=True)
    p_create.add_argument("--names", required=True)
    p_create.add_argument("--go", required=True)
    args = parser.parse_args(argv)
    try:
        result = {"compile": compile_job, "sense": sense, "create": create}[args.command](args)
    except Exception:  # noqa: BLE001
        result = {"crash": traceback.format_exc()}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
