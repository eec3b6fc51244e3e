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
            {"integration-name": "Amazon SageMaker Neo", "python-modules": ["airflow_neo.operators.neo"]}
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
                        "description": "Job store of the local backend: a SQLite file path. Empty: $AIRFLOW_HOME/neo/jobs.sqlite.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/lib/airflow/neo/jobs.sqlite",
                        "default": "",
                    },
                    "local_memory_limit_mb": {
                        "description": "Address-space cap of a local compile process, in MiB (0: no cap).",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "8192",
                        "default": "8192",
                    },
                },
            }
        },
    }
