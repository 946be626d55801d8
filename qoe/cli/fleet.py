"""``qoe serve`` and ``qoe fleet``: probes on a schedule, in CI, against SLOs."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

from qoe.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    INCIDENT_HELP,
    Parser,
    at_least_one,
    listen_port,
    push,
    serve_until_signalled,
    write,
)
from qoe.errors import ConfigError

__all__ = ["add_commands"]

# Heavy modules are imported in the handlers that use them (see qoe.cli).


class _OldJsonOut(argparse.Action):
    """``qoe fleet run --json FILE``, the spelling before ``--json-out``: taken for one more
    release, with a one-line warning, so CI jobs keep their results while they move to
    ``--json-out`` (everywhere else ``--json`` prints JSON to stdout). Without it argparse
    would take ``--json`` silently, as an abbreviation of ``--json-out``."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: Any = None) -> None:
        print(
            f"{parser.prog}: warning: --json FILE is deprecated, use --json-out FILE "
            "(--json will print JSON to stdout, as in the other commands)",
            file=sys.stderr,
        )
        namespace.json_out = values


def add_commands(sub: Any) -> None:
    """Add this family's commands to the ``qoe`` subparsers ``sub``."""
    serve = sub.add_parser(
        "serve",
        help="run a fleet on its schedule and serve the results to Prometheus",
        description="Run the fleet file's probes every [fleet] interval seconds and serve the latest results "
        "on /metrics; /probe?target=NAME runs one probe per scrape, as blackbox_exporter does (only fleet "
        "targets and its allow patterns; anything else is refused with 403). Binds to loopback by default.",
    )
    serve.add_argument(
        "--fleet", metavar="FILE", required=True, help="the fleet file (see examples/fleet.toml)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument(
        "--port",
        type=listen_port,
        default=9464,
        help="port to bind; 0 takes any free one, which the banner names",
    )
    serve.add_argument(
        "--probe-concurrency",
        type=at_least_one,
        metavar="K",
        help="/probe runs at once; more are answered 503 with Retry-After (default: the file's "
        "[fleet] probe_concurrency, or 8)",
    )
    serve.set_defaults(handler=_cmd_serve, media=("qoe.exporter.server",))

    fleet = sub.add_parser(
        "fleet",
        help="run a fleet of probes from a file and judge its SLOs",
        description="Probe fleets for CI: a TOML file of targets, probe runs and SLOs "
        "(see examples/fleet.toml). Exit 0 when every SLO holds, 1 when any fails, "
        "2 for a bad file or option.",
    )
    fleet_sub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", parser_class=Parser)
    fleet_sub.required = True
    check = fleet_sub.add_parser(
        "check",
        help="validate a fleet file and exit",
        description="Validate FILE: every key, type, field path, aggregate and bound.",
    )
    check.add_argument("file", metavar="FILE", help="the fleet file (TOML)")
    check.set_defaults(handler=_cmd_fleet_check)
    run = fleet_sub.add_parser(
        "run",
        help="run the fleet's probes and judge its SLOs",
        description="Run every probe run of FILE (or one shard's share), at most "
        "--concurrency at once; write results and verdicts; exit 1 if an SLO fails.",
    )
    run.add_argument("file", metavar="FILE", help="the fleet file (TOML)")
    run.add_argument(
        "--json-out", metavar="F", help="write every ProbeResult to F as JSON lines, as each run ends"
    )
    run.add_argument("--json", dest="json_out", metavar="F", action=_OldJsonOut, help=argparse.SUPPRESS)
    run.add_argument("--junit", metavar="F", help="write JUnit XML to F: one test case per SLO per target")
    run.add_argument("--save-incident", type=Path, metavar="DIR", help=INCIDENT_HELP)
    run.add_argument("--push-gateway", metavar="URL", help="push every result to this Prometheus Pushgateway")
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="run shard I of N (1-based); auto/N takes I from JOB_COMPLETION_INDEX",
    )
    run.add_argument(
        "--concurrency",
        type=at_least_one,
        metavar="K",
        help="probe runs at once (default: the file's, or 8)",
    )
    run.add_argument(
        "--workers",
        type=at_least_one,
        metavar="W",
        help="processes to spread the probes over (default: one per 12 concurrent probes, at most "
        "one per core)",
    )
    run.set_defaults(handler=_cmd_fleet_run, media=("qoe.fleet.runner",), refreeze_heap=True)
    # The runner's own worker processes (qoe.fleet.runner), not a command for people. Without
    # help= argparse lists no entry for it under ACTION; help=SUPPRESS would list one.
    worker = fleet_sub.add_parser("worker")
    worker.add_argument("file", metavar="FILE")
    worker.set_defaults(handler=_cmd_fleet_worker, media=("qoe.fleet.runner",), refreeze_heap=True)
    report = fleet_sub.add_parser(
        "report",
        help="judge SLOs over results files (e.g. from all shards)",
        description="Merge the JSON-lines results of a fleet's shards and judge its "
        "SLOs over all of them, as one unsharded run would.",
    )
    report.add_argument(
        "results", metavar="RESULTS.jsonl", nargs="+", help="results files (qoe fleet run --json-out)"
    )
    report.add_argument("--fleet", metavar="FILE", required=True, help="the fleet file the results came from")
    report.add_argument("--junit", metavar="F", help="write JUnit XML to F")
    report.set_defaults(handler=_cmd_fleet_report)


async def _cmd_serve(args: argparse.Namespace) -> int:
    from qoe.exporter.server import Exporter
    from qoe.fleet import load_fleet

    fleet = load_fleet(args.fleet)
    exporter = Exporter(fleet, args.host, args.port, probe_concurrency=args.probe_concurrency)
    targets = f"{len(fleet.targets)} targets from {args.fleet}"
    return await serve_until_signalled(
        exporter, args.host, args.port, lambda: f"qoe serve: {targets}; metrics on {exporter.url}/metrics"
    )


async def _cmd_fleet_check(args: argparse.Namespace) -> int:
    from qoe.fleet import expand, load_fleet

    fleet = load_fleet(args.file)
    print(
        f"{args.file}: ok: {len(fleet.targets)} targets, {len(expand(fleet))} probe runs, "
        f"{len(fleet.slos)} SLOs"
    )
    return EXIT_OK


def _finish_judgement(judgement: Any, junit: str | None, results: list[dict[str, Any]]) -> int:
    from qoe.fleet import junit_xml, summary_table
    from qoe.fleet.grabs import fairness, fairness_table

    write(junit, junit_xml(judgement))
    print(summary_table(judgement))
    if grabs := fairness(results):
        print("\n" + fairness_table(grabs))
    return EXIT_OK if judgement.passed else EXIT_FAILED


async def _cmd_fleet_run(args: argparse.Namespace) -> int:
    from qoe.fleet import Progress, expand, get_ready, judge, load_fleet, parse_shard, run_fleet
    from qoe.fleet.runner import default_workers

    fleet = load_fleet(args.file)
    shard = parse_shard(args.shard) if args.shard else None
    concurrency = args.concurrency or fleet.concurrency
    runs = expand(fleet, shard)
    workers = args.workers or default_workers(concurrency, len(runs))
    out = None
    if args.json_out:
        try:
            out = open(args.json_out, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json_out}: {exc.strerror or exc}") from exc
    progress = Progress(len(runs))

    def note(line: str) -> None:
        print(f"qoe fleet: {line}", file=sys.stderr, flush=True)

    where = f" (shard {shard})" if shard else ""
    print(
        f"qoe fleet: {len(runs)} probe runs{where}, {concurrency} at once in {workers} process(es)",
        file=sys.stderr,
    )

    await get_ready(fleet, list({run.target.name: run.target for run in runs}.values()), note)

    unwritten: list[OSError] = []

    def on_result(result: Any) -> None:
        nonlocal out
        if out is not None:
            try:
                out.write(result.to_json() + "\n")
                out.flush()
            except OSError as exc:  # a full disk: said once the run is judged, not a traceback
                unwritten.append(exc)
                with contextlib.suppress(OSError):
                    out.close()
                out = None
        progress(result)

    try:
        results = await run_fleet(
            runs,
            concurrency=concurrency,
            workers=workers,
            fleet_path=fleet.path,
            on_result=on_result,
            incidents=args.save_incident,
        )
    finally:
        progress.close()
        if out is not None:
            try:
                out.close()
            except OSError as exc:
                unwritten.append(exc)
    instance = f"{socket.gethostname()}-shard-{shard.index}-of-{shard.count}" if shard else None
    pushed = await push(args.push_gateway, results, instance)
    as_dicts = [r.to_dict() for r in results]
    verdict = _finish_judgement(judge(fleet, runs, as_dicts), args.junit, as_dicts)
    if unwritten:
        # The verdicts, JUnit and push above still went out; the results file is incomplete.
        raise ConfigError(f"cannot write {args.json_out}: {unwritten[0].strerror or unwritten[0]}")
    return max(verdict, pushed)


async def _cmd_fleet_worker(args: argparse.Namespace) -> int:
    from qoe.fleet.runner import run_worker

    return await run_worker(args.file)


async def _cmd_fleet_report(args: argparse.Namespace) -> int:
    from qoe.fleet import expand, judge, load_fleet, read_results

    fleet = load_fleet(args.fleet)
    results, problems = read_results(args.results)
    judgement = judge(fleet, expand(fleet), results)
    judgement.problems[:0] = problems
    return _finish_judgement(judgement, args.junit, results)
