"""The ``airflow-neo`` command line: the AWS CLI's compilation-job commands for both backends.

``airflow-neo create-compilation-job | describe-compilation-job | list-compilation-jobs |
stop-compilation-job | delete-compilation-job | wait compilation-job-completed``, with the AWS
CLI's options, input files, skeletons, ``--query``, output formats and exit codes. Importing this
package is cheap; botocore and Airflow are loaded only when a command needs them.

``airflow-neo describe-compilation-report --compilation-job-name NAME`` is airflow-neo's own: it
takes ``describe-compilation-job``'s parameters and prints the job's report
(:mod:`airflow_neo.core.report`, what the compile operator pushes to XCom as ``neo_report``): the
job, its target and artifact, the artifact's verification against the source framework and its
profile (p50/p90/p99 latency, load time, peak RSS, top kernels, the framework's baseline, speedup
and slowdown), read from the artifact's ``metadata.json``. A SageMaker job, or one that did not
complete, has ``"available": false`` and the ``reason``. ``--output json``/``yaml``/``table`` and
``--query`` work as for every command; ``--output text`` prints the report as a few lines for
people (with ``--query``, the AWS CLI's text).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    from airflow_neo.cli.app import main as run

    return run(argv)


__all__ = ["main"]
