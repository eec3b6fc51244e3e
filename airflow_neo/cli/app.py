"""``airflow-neo``: the AWS CLI's compilation-job commands over both airflow-neo backends."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_neo.cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OTHER,
    CliError,
    ParamError,
    ServiceError,
    UsageError,
    WaiterError,
    service_error_from,
)

PROG = "airflow-neo"
USAGE = f"{PROG} [options] <command> [<subcommand>] [parameters]"
SKELETON_CHOICES = ("input", "yaml-input", "output")


@dataclass(frozen=True)
class Command:
    name: str
    operation: str
    summary: str


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("create-compilation-job", "CreateCompilationJob", "Start a model compilation job."),
        Command("describe-compilation-job", "DescribeCompilationJob", "Show a model compilation job."),
        Command("list-compilation-jobs", "ListCompilationJobs", "List model compilation jobs (filters, sort, paging)."),
        Command("stop-compilation-job", "StopCompilationJob", "Stop a running model compilation job."),
        Command("delete-compilation-job", "DeleteCompilationJob", "Delete a finished model compilation job."),
        Command(
            "describe-compilation-report", "DescribeCompilationJob",
            "Show a finished job's report: verification and profile of its artifact (airflow-neo).",
        ),
    )
}

REPORT_COMMAND = "describe-compilation-report"
REPORT_HELP = """Show the verification and profile report of a compilation job.

Not an AWS operation: the report that the compile operator pushes to XCom as neo_report
(airflow_neo.core.report). A local job's report holds its artifact's verification against the
source framework and its profile (latency, load time, peak RSS, top kernels, the framework's
baseline, speedup and slowdown), read from the artifact's metadata.json (s3:// artifacts through
--aws-conn-id). A SageMaker job, or a job that did not complete, has "available": false and a
"reason". --output text prints the report as a few lines for people (unless --query is given)."""


@dataclass(frozen=True)
class Waiter:
    name: str  # the AWS waiter name
    operation: str
    status_path: str
    success: tuple[str, ...]
    failure: tuple[str, ...]
    delay: int
    max_attempts: int
    summary: str


WAITERS: dict[str, Waiter] = {
    "compilation-job-completed": Waiter(
        "CompilationJobCompleted",
        "DescribeCompilationJob",
        "CompilationJobStatus",
        success=("COMPLETED",),
        failure=("FAILED", "STOPPED"),
        delay=30,
        max_attempts=120,
        summary="Wait until a compilation job is COMPLETED (fails on FAILED or STOPPED).",
    ),
}

EXIT_CODES_HELP = """exit codes:
  0    success
  252  usage error: bad syntax, unknown/missing/unparsable parameters, --cli-input-json with
       --cli-input-yaml, a request failing client-side parameter validation
  253  configuration error: no credentials or region, unknown [neo] default_backend,
       unknown --aws-conn-id
  254  service error: the request was rejected, "An error occurred (Code) when calling the
       Operation operation: ..." (ResourceNotFound, ResourceInUse, ValidationException...)
  255  any other error, including a waiter that reached a failure state"""


# --------------------------------------------------------------------------- parsing


class _Exit(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, with the AWS CLI's exit code for usage errors."""

    def error(self, message: str):
        raise UsageError(message, usage=self.format_usage(), prog=self.prog.split()[0])

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def _add_global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--backend", choices=("local", "sagemaker"), default=default,
        help="Where the jobs are: 'sagemaker' (the SageMaker API) or 'local' (the local TVM backend's job "
        "store). Default: [neo] default_backend (env AIRFLOW__NEO__DEFAULT_BACKEND), else sagemaker.",
    )
    group.add_argument("--region", default=default, metavar="<value>", help="AWS region (SageMaker; S3 for the local backend).")
    group.add_argument(
        "--endpoint-url", default=default, metavar="<value>",
        help="Send SageMaker requests to this URL instead of the region's endpoint.",
    )
    group.add_argument(
        "--aws-conn-id", default=default, metavar="<value>",
        help="Airflow AWS connection to use. Default: none, the usual AWS environment (variables, profile, role).",
    )
    group.add_argument(
        "--local-store", default=default, metavar="<path>",
        help="Job store of the local backend (what [neo] local_store accepts). Default: the store the operators "
        "use, configured in [neo] (by default $AIRFLOW_HOME/neo/jobs.sqlite).",
    )
    group.add_argument(
        "--output", choices=("json", "yaml", "text", "table"), default=default,
        help="Output format (default json).",
    )
    group.add_argument("--query", default=default, metavar="<value>", help="JMESPath query applied to the response.")
    group.add_argument(
        "--no-paginate", action="store_true", default=default,
        help="List commands: make one call and print that page (with the service's NextToken).",
    )
    group.add_argument(
        "--no-verify-ssl", action="store_true", default=default, help="Do not verify SSL certificates."
    )
    group.add_argument("--debug", action="store_true", default=default, help="Show log messages on stderr.")


def _top_parser() -> _Parser:
    lines = [f"  {name:<32} {c.summary}" for name, c in COMMANDS.items()]
    lines += [f"  wait {name:<27} {w.summary}" for name, w in WAITERS.items()]
    parser = _Parser(
        prog=PROG,
        usage=USAGE,
        description="SageMaker Neo compilation jobs from the command line, with the AWS CLI's commands and "
        "options, on SageMaker or on the local TVM backend.",
        epilog="commands:\n" + "\n".join(lines) + f"\n\nRun '{PROG} <command> --help' for a command's options.\n\n"
        + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_global_options(parser, suppress=False)
    parser.add_argument("command", nargs="?", metavar="<command>")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _version() -> str:
    from airflow_neo import __version__

    return __version__


def _operation_parser(prog: str, operation: str, *, relaxed: bool, extra: Callable[[argparse.ArgumentParser], None] | None = None, skeleton_choices=SKELETON_CHOICES) -> _Parser:
    """The parser of one operation: its members as options (from the model), cli-input, skeleton, globals."""
    from airflow_neo.cli import model

    op = model.operation_model(operation)
    output_lines = model.output_tree(op.output_shape)
    epilog = []
    if output_lines:
        epilog.append("output:\n" + "\n".join("  " + line for line in output_lines))
    epilog.append(EXIT_CODES_HELP)
    parser = _Parser(
        prog=prog,
        description=model.doc_paragraphs(op.documentation),
        epilog="\n\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("parameters")
    shorthands: list[str] = []
    paging = model.paginator_config(operation)
    for param in model.params_of(operation):
        help_text = f"({model.type_label(param.shape)}) {model.first_sentence(param.shape.documentation)}"
        if param.required:
            help_text = "[required] " + help_text
        if paging and param.member in (paging["input_token"], paging.get("limit_key")):
            help_text += " Given, it turns automatic pagination off: one call, its NextToken printed."
        enum = getattr(param.shape, "enum", None)
        if enum:
            help_text += " Valid values: " + ", ".join(enum) + "."
        if param.kind in ("structure", "list", "map"):
            help_text += " JSON or shorthand syntax (see below)."
            shorthands.append(f"  {param.option} {model.shorthand_hint(param.shape)}")
        group.add_argument(
            param.option,
            dest=f"p_{param.dest}",
            metavar="<value>",
            nargs="+" if param.kind == "list" else None,
            required=param.required and not relaxed,
            help=help_text.replace("%", "%%"),
        )
    if shorthands:
        parser.epilog = (
            "shorthand syntax (or JSON; any value may be file://path):\n" + "\n".join(shorthands) + "\n\n" + parser.epilog
        )
    if extra:
        extra(parser)
    inputs = parser.add_argument_group("input")
    exclusive = inputs.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--cli-input-json", metavar="<value>",
        help="Read arguments from this JSON string (or file://path), in the format of --generate-cli-skeleton. "
        "Arguments given on the command line override the JSON's values. Not with --cli-input-yaml.",
    )
    exclusive.add_argument(
        "--cli-input-yaml", metavar="<value>",
        help="Read arguments from this YAML string (or file://path), in the format of --generate-cli-skeleton "
        "yaml-input. Arguments given on the command line override the YAML's values. Not with --cli-input-json.",
    )
    inputs.add_argument(
        "--generate-cli-skeleton", nargs="?", const="input", choices=skeleton_choices, metavar="<value>",
        help="Print a skeleton without calling anything: 'input' (default) a JSON input for --cli-input-json, "
        "'yaml-input' a YAML input for --cli-input-yaml, 'output' (after validating the inputs) a sample output.",
    )
    _add_global_options(parser, suppress=True)
    return parser


def _paging_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pagination (as the AWS CLI)")
    group.add_argument("--starting-token", metavar="<value>", help="A NextToken printed by a previous truncated listing.")
    group.add_argument("--page-size", type=_positive_int, metavar="<value>", help="Jobs fetched per call (MaxResults of each call).")
    group.add_argument("--max-items", type=_positive_int, metavar="<value>", help="Print at most this many jobs, and a NextToken to resume.")


def _waiter_options(waiter: Waiter) -> Callable[[argparse.ArgumentParser], None]:
    def add(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("waiter")
        group.add_argument("--delay", type=_non_negative_float, default=waiter.delay, metavar="<seconds>",
                           help=f"Seconds between two describes (default {waiter.delay}).")
        group.add_argument("--max-attempts", type=_positive_int, default=waiter.max_attempts, metavar="<value>",
                           help=f"Describes before giving up (default {waiter.max_attempts}).")

    return add


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _relaxed(rest: list[str]) -> bool:
    """Required options are not required when the request comes from a file or a skeleton is asked for."""
    flags = ("--cli-input-json", "--cli-input-yaml", "--generate-cli-skeleton")
    return any(arg == flag or arg.startswith(flag + "=") for arg in rest for flag in flags)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run ``airflow-neo`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except _Exit as done:
        return done.status
    except (ServiceError, WaiterError) as err:
        sys.stderr.write(f"\n{err}\n")
        return err.exit_code
    except CliError as err:
        sys.stderr.write(f"{err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except Exception as err:  # the AWS CLI prints the message of anything unexpected, exit 255
        sys.stderr.write(f"\n{err}\n")
        return EXIT_OTHER


def _main(args: list[str]) -> int:
    top = _top_parser()
    top_ns = top.parse_args(args)
    if top_ns.command is None:
        top.error("the following arguments are required: <command>")
    name, rest = top_ns.command, list(top_ns.rest)
    if name == "wait":
        return _wait_main(top_ns, rest)
    if name not in COMMANDS:
        valid = ", ".join([*COMMANDS, "wait"])
        top.error(f"argument <command>: Invalid choice '{name}', valid choices are: {valid}")
    command = COMMANDS[name]
    parser = _operation_parser(
        f"{PROG} {name}", command.operation, relaxed=_relaxed(rest),
        extra=_paging_options if command.name == "list-compilation-jobs" else None,
    )
    if name == REPORT_COMMAND:
        parser.description, parser.epilog = REPORT_HELP, EXIT_CODES_HELP
        ns = parser.parse_args(rest)
        return _execute(command.operation, ns, _merge_globals(top_ns, ns), _run_report, title="CompilationReport",
                        sample=_report_sample, render=_render_report)
    ns = parser.parse_args(rest)
    options = _merge_globals(top_ns, ns)
    return _execute(command.operation, ns, options, RUNNERS[command.operation], title=command.operation)


def _wait_main(top_ns: argparse.Namespace, rest: list[str]) -> int:
    wait_parser = _Parser(
        prog=f"{PROG} wait",
        usage=f"{PROG} wait <waiter> [parameters]",
        description="Poll until a compilation job reaches a state, like the AWS CLI's waiters.",
        epilog="waiters:\n" + "\n".join(f"  {n:<28} {w.summary}" for n, w in WAITERS.items()) + "\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    wait_parser.add_argument("waiter", nargs="?", metavar="<waiter>")
    wait_parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    wait_ns = wait_parser.parse_args(rest)
    if wait_ns.waiter is None:
        wait_parser.error("the following arguments are required: <waiter>")
    if wait_ns.waiter not in WAITERS:
        wait_parser.error(f"argument <waiter>: Invalid choice '{wait_ns.waiter}', valid choices are: {', '.join(WAITERS)}")
    waiter = WAITERS[wait_ns.waiter]
    parser = _operation_parser(
        f"{PROG} wait {wait_ns.waiter}", waiter.operation, relaxed=_relaxed(wait_ns.rest), extra=_waiter_options(waiter),
    )
    parser.description = f"{waiter.summary}\n\nPolls {waiter.operation} every --delay seconds, at most --max-attempts times."
    parser.epilog = EXIT_CODES_HELP
    ns = parser.parse_args(wait_ns.rest)
    options = _merge_globals(top_ns, ns)

    def run(hook, request, ns, options):
        return _run_wait(waiter, hook, request, ns)

    return _execute(waiter.operation, ns, options, run, title=waiter.name, has_output=False)


GLOBALS = ("backend", "region", "endpoint_url", "aws_conn_id", "local_store", "output", "query", "no_paginate", "no_verify_ssl", "debug")


def _merge_globals(top_ns: argparse.Namespace, ns: argparse.Namespace) -> dict[str, Any]:
    """Global options may come before or after the command; after wins."""
    merged = {key: getattr(top_ns, key, None) for key in GLOBALS}
    for key in GLOBALS:
        if hasattr(ns, key):
            merged[key] = getattr(ns, key)
    merged["output"] = merged["output"] or "json"
    return merged


def _execute(operation: str, ns: argparse.Namespace, options: dict, run: Callable, *, title: str, has_output: bool = True,
             sample: Callable[[], Any] | None = None, render: Callable[..., str] | None = None) -> int:
    """Parse the request of ``operation``, run ``run(hook, request, ns, options)`` and print its result.

    ``sample``: what ``--generate-cli-skeleton output`` prints (default: the operation's output
    skeleton); ``render``: prints a result (default :func:`airflow_neo.cli.output.render`).
    """
    from airflow_neo.cli import model, output, params, skeleton

    render = render or output.render

    op = model.operation_model(operation)
    if ns.generate_cli_skeleton == "input":  # prints the skeleton whatever else was given
        sys.stdout.write(skeleton.input_skeleton_json(op.input_shape))
        return EXIT_OK
    if ns.generate_cli_skeleton == "yaml-input":
        sys.stdout.write(skeleton.input_skeleton_yaml(op.input_shape))
        return EXIT_OK

    query = output.compile_query(options["query"])
    op_params = model.params_of(operation)
    given = {p.member: getattr(ns, f"p_{p.dest}") for p in op_params if getattr(ns, f"p_{p.dest}") is not None}
    cli_input = params.load_cli_input(ns.cli_input_json, ns.cli_input_yaml)
    request = params.validate(operation, params.build_request(op_params, given, cli_input))
    if ns.generate_cli_skeleton == "output":
        example = (sample() if sample else skeleton.output_skeleton(op.output_shape)) if has_output else {}
        sys.stdout.write(render(example, options["output"], query, title))
        return EXIT_OK

    from airflow_neo.cli.session import Target, open_hook

    target = Target(
        backend=options["backend"],
        region=options["region"],
        endpoint_url=options["endpoint_url"],
        aws_conn_id=options["aws_conn_id"],
        local_store=options["local_store"],
        verify_ssl=not options["no_verify_ssl"],
        debug=bool(options["debug"]),
    )
    with open_hook(target) as hook:
        try:
            result = run(hook, request, ns, options)
        except CliError:
            raise
        except Exception as err:
            translated = service_error_from(err, operation)
            if translated is None:
                raise
            raise translated from err
    if result is None:
        return EXIT_OK
    from airflow_neo.core.payload import json_safe

    sys.stdout.write(render(json_safe(result), options["output"], query, title))
    return EXIT_OK


# --------------------------------------------------------------------------- the commands


def _run_create(hook, request: dict, ns, options) -> dict:
    return hook.create_compilation_job(request)


def _run_describe(hook, request: dict, ns, options) -> dict:
    return hook.describe_compilation_job(request["CompilationJobName"])


def _run_stop(hook, request: dict, ns, options) -> dict:
    hook.stop_compilation_job(request["CompilationJobName"])
    return {}


def _run_delete(hook, request: dict, ns, options) -> dict:
    hook.delete_compilation_job(request["CompilationJobName"])
    return {}


def _run_list(hook, request: dict, ns, options) -> dict:
    """One page with --no-paginate/--max-results/--next-token; else every page, the AWS CLI's way."""
    from airflow_neo.cli.model import operation_model, paginator_config
    from airflow_neo.cli.session import list_page_method

    operation = "ListCompilationJobs"
    config = paginator_config(operation)
    page = list_page_method(hook)
    if options["no_paginate"] or config["input_token"] in request or config.get("limit_key") in request:
        return page(**request)
    from botocore.exceptions import PaginationError
    from botocore.paginate import Paginator

    paging = {
        key: value
        for key, value in (("MaxItems", ns.max_items), ("PageSize", ns.page_size), ("StartingToken", ns.starting_token))
        if value is not None
    }
    paginator = Paginator(page, config, operation_model(operation))
    try:
        return paginator.paginate(**request, PaginationConfig=paging).build_full_result()
    except PaginationError as err:  # botocore's own client-side paging errors
        raise ParamError("--starting-token", str(err)) from None


def _run_report(hook, request: dict, ns, options) -> dict:
    return hook.compilation_report(request["CompilationJobName"])


def _render_report(data: Any, fmt: str, query, title: str) -> str:
    """``--output text`` without ``--query``: the report's lines for people; else as any output."""
    from airflow_neo.cli import output

    if fmt == "text" and query is None and isinstance(data, dict):
        from airflow_neo.core.report import format_report

        return format_report(data) + "\n"
    return output.render(data, fmt, query, title)


def _report_sample() -> dict:
    """A report with every field (``--generate-cli-skeleton output``)."""
    from airflow_neo.core.report import build_report

    latency = {"p50": 0.0, "p90": 0.0, "p99": 0.0}
    metadata = {
        "verification": {"mode": "", "passed": True, "reference": "", "inputs": "", "seconds": 0.0, "outputs": [
            {"name": "", "passed": True, "max_abs_diff": 0.0, "max_rel_diff": 0.0, "tolerance": 0.0}]},
        "profile": {"budget_seconds": 0.0, "runs": 0, "threads": 0, "load_seconds": 0.0, "peak_rss_mb": 0.0,
                    "latency_ms": latency, "top_kernels": [{"name": "", "calls": 0, "total_ms": 0.0, "percent": 0.0}],
                    "baseline": {"name": "", "latency_ms": latency, "runs": 0}, "speedup": 1.0},
    }
    payload = {"CompilationJobName": "", "CompilationJobStatus": "", "FailureReason": "", "InputConfig": {"Framework": ""},
               "OutputConfig": {"S3OutputLocation": "", "TargetDevice": ""}, "ModelArtifacts": {"S3ModelArtifacts": ""},
               "ModelDigests": {"ArtifactDigest": ""}}
    return build_report(payload, metadata)


RUNNERS: dict[str, Callable] = {
    "CreateCompilationJob": _run_create,
    "DescribeCompilationJob": _run_describe,
    "ListCompilationJobs": _run_list,
    "StopCompilationJob": _run_stop,
    "DeleteCompilationJob": _run_delete,
}


def _run_wait(waiter: Waiter, hook, request: dict, ns) -> None:
    """Describe until a success or failure state, at most --max-attempts times, --delay apart."""
    import time

    from airflow_neo.core.exceptions import CompilationJobTimeout
    from airflow_neo.core.waiting import wait_for_terminal

    name = request["CompilationJobName"]
    attempts = {"slept": 0}

    def sleep(_units: float) -> None:  # the clock below counts attempts, the real wait is --delay
        attempts["slept"] += 1
        time.sleep(ns.delay)

    try:
        payload = wait_for_terminal(
            hook.describe_compilation_job, name, check_interval=1, max_wait=ns.max_attempts - 1,
            sleep=sleep, clock=lambda: attempts["slept"], log=hook.log.info,
        )
    except CompilationJobTimeout:
        raise WaiterError(waiter.name, "Max attempts exceeded") from None
    except CliError:
        raise
    except Exception as err:
        translated = service_error_from(err, waiter.operation)
        if isinstance(translated, ServiceError):
            raise WaiterError(waiter.name, f"An error occurred ({translated.code}): {translated.message}") from err
        raise
    status = payload.get(waiter.status_path)
    if status in waiter.success:
        return None
    detail = f"FailureReason: {payload['FailureReason']}" if payload.get("FailureReason") else ""
    raise WaiterError(
        waiter.name,
        f'Waiter encountered a terminal failure state: For expression "{waiter.status_path}" '
        f'we matched expected path: "{status}"',
        detail,
    )


__all__ = ["COMMANDS", "WAITERS", "main"]
