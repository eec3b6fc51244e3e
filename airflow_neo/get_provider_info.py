"""Provider metadata for Airflow's providers manager (``apache_airflow_provider`` entry point)."""

from __future__ import annotations


def get_provider_info() -> dict:
    from airflow_neo import __version__

    return {
        "package-name": "airflow-neo",
        "name": "SageMaker Neo (airflow-neo)",
        "description": "SageMaker Neo compilation jobs on SageMaker or compiled locally with Apache TVM.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Amazon SageMaker Neo",
                "external-doc-url": "https://docs.aws.amazon.com/sagemaker/latest/dg/neo.html",
                "tags": ["aws"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Amazon SageMaker Neo",
                "python-modules": ["airflow_neo.hooks.neo", "airflow_neo.hooks.local"],
            }
        ],
        "operators": [
            {
                "integration-name": "Amazon SageMaker Neo",
                "python-modules": ["airflow_neo.operators.neo", "airflow_neo.operators.verify"],
            }
        ],
        "sensors": [{"integration-name": "Amazon SageMaker Neo", "python-modules": ["airflow_neo.sensors.neo"]}],
        "triggers": [{"integration-name": "Amazon SageMaker Neo", "python-modules": ["airflow_neo.triggers.neo"]}],
        "extra-links": ["airflow_neo.links.neo.NeoCompilationJobLink"],
        "config": {
            "neo": {
                "description": "Settings of airflow-neo.",
                "options": {
                    "default_backend": {
                        "description": "Backend used by the command line when --backend is not given: sagemaker or local.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "local",
                        "default": "sagemaker",
                    },
                    "local_store": {
                        "description": (
                            "Job store of the local backend: a SQLite file path, or a SQLAlchemy URL of a database "
                            "shared by all workers and the triggerer (postgresql://user:password@host:5432/db). "
                            "Empty: $AIRFLOW_HOME/neo/jobs.sqlite. Ignored when local_store_conn_id is set."
                        ),
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "postgresql://neo:secret@db.internal:5432/neo",
                        "default": "",
                    },
                    "local_store_conn_id": {
                        "description": (
                            "Airflow connection (type Postgres) of a database that holds the local backend's job "
                            "store, shared by all workers, the triggerer and the CLI. Takes precedence over "
                            "local_store. Tables neo_jobs and neo_meta are created on first use."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "neo_job_store",
                        "default": "",
                    },
                    "local_work_dir": {
                        "description": (
                            "This machine's directory for local compile logs and work dirs. Empty: next to a SQLite "
                            "job store's file, or $AIRFLOW_HOME/neo for a store on a database server."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "/var/tmp/airflow-neo",
                        "default": "",
                    },
                    "local_allowed_paths": {
                        "description": (
                            "The directories a local job's file:// URIs and absolute paths (InputConfig.S3Uri, "
                            "OutputConfig.S3OutputLocation, verify_inputs) must lie under, symlinks resolved; "
                            "checked when the job is created and again by its runner right before each read or "
                            "write. Comma-separated absolute directories. Empty: $AIRFLOW_HOME and the system "
                            "temp dir. * allows every path the worker can reach (the explicit opt-out)."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "/data/models,/data/artifacts",
                        "default": "",
                    },
                    "local_lease_seconds": {
                        "description": (
                            "Lease of a local compile worker on its job, renewed while it works. A job whose "
                            "worker stops renewing (killed, machine lost) is marked FAILED by the next reader "
                            "once the lease has run out. Keep the clocks of the machines within a few seconds."
                        ),
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "60",
                        "default": "30",
                    },
                    "local_memory_limit_mb": {
                        "description": (
                            "Address-space cap of a local compile process, in MiB (0: no cap). Empty (the "
                            "default): derived so that local_max_concurrent_compiles x cap fits the host's memory "
                            "(physical memory or the cgroup's limit, whichever is lower), at most 8192."
                        ),
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "8192",
                        "default": "",
                    },
                    "local_max_concurrent_compiles": {
                        "description": (
                            "Compile slots of one worker host: at most this many local jobs compile at once on it; "
                            "the others stay STARTING, queued in creation order (their log shows the queue "
                            "position). 0 or empty (the default): min(CPUs, memory // local_memory_limit_mb "
                            "(8192 MiB when that is derived)), at least 1."
                        ),
                        "version_added": "0.2.0",
                        "type": "integer",
                        "example": "2",
                        "default": "0",
                    },
                    "local_max_concurrent_compiles_cluster": {
                        "description": (
                            "With a job store shared by several hosts: at most this many local jobs compile at once "
                            "on all of them together (0: no cluster-wide cap; the per-host slots still apply)."
                        ),
                        "version_added": "0.2.0",
                        "type": "integer",
                        "example": "8",
                        "default": "0",
                    },
                    "tuning_trials": {
                        "description": (
                            "MetaSchedule trials a local compile job may spend tuning its model (the operator's and "
                            "hook's tuning_trials override it). Trials already spent on the model's kernels (by any "
                            "job) count towards it, so a repeat compile runs none and only applies the records. "
                            "About 1-2 s a trial on 2 cores; tuning also stops in time for the job's "
                            "MaxRuntimeInSeconds. 0 (the default): no tuning; every kernel gets a default CPU "
                            "schedule (about 1.0-1.5x of onnxruntime on the reference models), and a record already "
                            "in the database is applied only where it beats that schedule. Worth it only for large "
                            "budgets (512 and up) on models that serve a lot of traffic (docs/tuning.rst)."
                        ),
                        "version_added": "0.2.0",
                        "type": "integer",
                        "example": "1024",
                        "default": "0",
                    },
                    "tuning_database": {
                        "description": (
                            "Directory of the local backend's tuning databases (one per target and core count), "
                            "shared by all jobs on the machine, or an s3://bucket/prefix URL that all workers share "
                            "(each keeps a local mirror; records move as immutable batch objects). Empty: tuning/ "
                            "in the local work directory ($AIRFLOW_HOME/neo/tuning by default)."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "/var/lib/airflow/neo/tuning",
                        "default": "",
                    },
                    "cache_dir": {
                        "description": (
                            "Directory of the local backend's compile cache: a job whose model archive, request, "
                            "TVM version and applicable tuning records match an earlier compile publishes that "
                            "artifact in about a second. An s3://bucket/prefix URL shares it between workers (a local "
                            "tier in front of S3; expire old S3 entries with a lifecycle rule). Empty: cache/ in the "
                            "local work directory ($AIRFLOW_HOME/neo/cache by default)."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "/var/cache/airflow-neo",
                        "default": "",
                    },
                    "cache_max_bytes": {
                        "description": (
                            "Size cap of the compile cache in bytes; least recently used artifacts are evicted. "
                            "0 turns the cache off."
                        ),
                        "version_added": "0.2.0",
                        "type": "integer",
                        "example": "10737418240",
                        "default": "2147483648",
                    },
                    "tuning_pack": {
                        "description": (
                            "Apply the tuning pack shipped with the provider: schedule knobs measured for the "
                            "kernels of a standard model set, per CPU family (x86-avx2...) and TVM version; a "
                            "kernel of the same shape on a target of the same family gets them without tuning. "
                            "False: kernels without a tuned config get their default plans (docs/tuning.rst)."
                        ),
                        "version_added": "0.2.0",
                        "type": "boolean",
                        "example": "False",
                        "default": "True",
                    },
                    "verify": {
                        "description": (
                            "What every local compile does with the check of its artifact against the source "
                            "framework on the same inputs (onnxruntime, torch, xgboost, a TFLite interpreter): gate "
                            "(outputs beyond tolerance fail the job with ClientError: AccuracyCheckFailed and nothing "
                            "is published), report (the comparison is recorded in metadata.json only) or off. The "
                            "operator's verify_mode= overrides it (docs/local_backend.rst)."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "report",
                        "default": "gate",
                    },
                    "verify_rtol": {
                        "description": (
                            "Relative tolerance of the verification's float outputs, of the output's largest "
                            "absolute reference value (plus 1e-5 absolute). Empty: per output dtype (float32 1e-3, "
                            "float16 1e-2, bfloat16 5e-2; float outputs of quantized graphs 5e-2)."
                        ),
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "0.01",
                        "default": "",
                    },
                    "profile_seconds": {
                        "description": (
                            "Seconds the latency profile of each local compile's artifact may take: p50/p90/p99 "
                            "after a warm-up run, the thread count, the load time, and the same latency in the "
                            "source framework (onnxruntime, torch, xgboost, TFLite) and the speedup, in the "
                            "artifact's metadata.json (with peak RSS and time per kernel). 0: no profile."
                        ),
                        "version_added": "0.2.0",
                        "type": "float",
                        "example": "0",
                        "default": "2.0",
                    },
                    "ui_aws_conn_id": {
                        "description": (
                            "AWS connection whose SageMaker compilation jobs the Compilation jobs page of the Airflow "
                            "UI lists beside the local job store's (ListCompilationJobs through it). Empty: the page "
                            "lists local jobs only."
                        ),
                        "version_added": "0.3.0",
                        "type": "string",
                        "example": "aws_default",
                        "default": "",
                    },
                    "ui_region_name": {
                        "description": "Region of the SageMaker jobs the UI lists. Empty: the connection's region.",
                        "version_added": "0.3.0",
                        "type": "string",
                        "example": "eu-west-1",
                        "default": "",
                    },
                    "rpc_tracker": {
                        "description": (
                            "host:port of a TVM RPC tracker (python -m tvm.exec.rpc_tracker) whose devices measure "
                            "the local backend's tuning candidates for the targets named in rpc_keys: the worker "
                            "builds (cross-compiling for ARM) and the board runs each candidate, so targets this "
                            "machine cannot run, such as ARM boards, can be tuned. Empty: everything is measured on "
                            "this machine. An unreachable tracker, or no free device of the key within a minute, "
                            "skips tuning (logged); the job still compiles (docs/tuning.rst)."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "10.0.0.5:9190",
                        "default": "",
                    },
                    "rpc_keys": {
                        "description": (
                            "Which tracker key (the --key of the boards' python -m tvm.exec.rpc_server) measures "
                            "which target: target=key pairs separated by commas, or a JSON object; a target is a "
                            "TargetDevice (rasp4b, ml_c6g) or a TargetPlatform OS/ARCH (LINUX/ARM64). Targets not "
                            "named here are measured on this machine (or not at all, when it cannot run them)."
                        ),
                        "version_added": "0.2.0",
                        "type": "string",
                        "example": "rasp4b=pi4, LINUX/ARM64=graviton2",
                        "default": "",
                    },
                },
            }
        },
    }
