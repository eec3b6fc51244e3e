"""The ``airflow-neo`` command line: the AWS CLI's compilation-job commands for both backends.

``airflow-neo create-compilation-job | describe-compilation-job | list-compilation-jobs |
stop-compilation-job | delete-compilation-job | wait compilation-job-completed``, with the AWS
CLI's options, input files, skeletons, ``--query``, output formats and exit codes. Importing this
package is cheap; botocore and Airflow are loaded only when a command needs them.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    from airflow_neo.cli.app import main as run

    return run(argv)


__all__ = ["main"]
