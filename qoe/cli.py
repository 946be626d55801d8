"""The ``qoe`` command: argument parsing only; the work lives in the modules it calls.

Exit codes: 0 all went well, 1 a probe failed (or, later, an SLO was breached), 2 a usage or
configuration error. Expected failures print one line on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from qoe import __version__
from qoe.errors import ConfigError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROFILE_HELP = "emulated network (default none): a built-in name (see qoe netem profiles) or a profile file"

DESCRIPTION = """\
Live-stream QoE monitor and simulator: synthetic viewers and hosts that join rooms, measure
join time, freezes, glass-to-glass latency and A/V sync, and report them.

Start here:
  qoe demo                         room + host + 3 viewers in one process, prints a table
  qoe room --port 8080             the embedded live room (WHIP in, WHEP out) until Ctrl-C
  qoe probe http://127.0.0.1:8080/whep/demo --duration 10
  qoe publish http://127.0.0.1:8080/whip/myroom --duration 30
  qoe probe ws://127.0.0.1:8080/chat/demo   chat echo latency
  qoe fleet run examples/fleet.toml --junit junit.xml    SLO gates for CI
  qoe serve --fleet examples/fleet.toml     Prometheus exporter on :9464
  qoe netem profiles                        weak networks for --profile
  qoe impact sessions.parquet               what QoE costs in drop-off and return visits

Each command explains itself: qoe COMMAND --help.
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 320 or height < 180 or width % 2 or height % 2 or width > 3840 or height > 2160:
        raise argparse.ArgumentTypeError(f"size must be even, from 320x180 to 3840x2160, got {text}")
    return width, height


def _add_knobs(parser: argparse.ArgumentParser, *, freeze: bool = True) -> None:
    group = parser.add_argument_group("ground-truth knobs (the host injects exactly these)")
    group.add_argument(
        "--av-offset",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="audio ahead of video by S seconds (negative: behind; ITU-R BT.1359 sign)",
    )
    if freeze:
        group.add_argument(
            "--freeze-every",
            type=_positive,
            metavar="S",
            help="stop sending video at every multiple of S seconds of wall time...",
        )
        group.add_argument(
            "--freeze-for",
            type=_positive,
            default=None,
            metavar="S",
            help="...for S seconds each time",
        )
    group.add_argument(
        "--delay",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="extra one-way delay before media leaves, seconds",
    )
    if freeze:  # a room's knob: a publisher has no signaling answer to hold
        group.add_argument(
            "--join-delay",
            type=_seconds,
            default=0.0,
            metavar="S",
            help="hold each WHEP answer S seconds, as a slow signaling server would",
        )
        group.add_argument(
            "--chat-delay",
            type=_seconds,
            default=0.0,
            metavar="S",
            help="hold each chat message S seconds before broadcasting it",
        )
        group.add_argument(
            "--cohost-offset",
            type=_seconds,
            default=0.0,
            metavar="S",
            help="delay a co-host's media S seconds behind the host's (in the mix and its own tracks)",
        )
        group.add_argument(
            "--chat-drop-every",
            type=int,
            default=0,
            metavar="N",
            help="drop every Nth chat message the room receives",
        )


def _knobs(args: argparse.Namespace) -> Any:
    from qoe.media import Knobs

    return Knobs(
        av_offset=args.av_offset,
        freeze_every=getattr(args, "freeze_every", None),
        freeze_for=getattr(args, "freeze_for", None) or 0.0,
        delay=args.delay,
        join_delay=getattr(args, "join_delay", 0.0),
        chat_delay=getattr(args, "chat_delay", 0.0),
        chat_drop_every=getattr(args, "chat_drop_every", 0),
        cohost_offset=getattr(args, "cohost_offset", 0.0),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qoe", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"qoe {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="run the embedded room and N viewer probes, print a table",
        description="Start the embedded live room with its synthetic host on a free "
        "loopback port, watch it with N WHEP viewer probes at once, print their figures.",
    )
    demo.add_argument(
        "--duration",
        type=_positive,
        default=10.0,
        metavar="S",
        help="seconds each viewer watches (default 10)",
    )
    demo.add_argument("--viewers", type=int, default=3, metavar="N", help="concurrent viewers (default 3)")
    demo.add_argument(
        "--json", action="store_true", help="print a JSON array of ProbeResults instead of a table"
    )
    demo.add_argument(
        "--cohost",
        action="store_true",
        help="add a co-host (a WHIP publisher of ours) and watch the room's mix and separate tracks",
    )
    demo.add_argument(
        "--profile",
        action="append",
        metavar="NAME",
        help="watch under this emulated network; repeat to compare profiles side by side (default none)",
    )
    _add_knobs(demo)
    demo.set_defaults(handler=_cmd_demo)

    room = sub.add_parser(
        "room",
        help="serve the embedded live room (WHIP ingest, WHEP playback)",
        description="Serve the embedded live room until interrupted. POST an SDP offer to "
        "/whip/ROOM to publish or /whep/ROOM to watch (RFC 9725 semantics); room 'demo' has "
        "a built-in host sending the test signal. Open http://HOST:PORT/ in a browser to watch.",
    )
    room.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    room.add_argument(
        "--port", type=int, default=8080, help="port to bind, 0 for any free one (default 8080)"
    )
    room.add_argument(
        "--size",
        type=_size,
        default=(640, 360),
        metavar="WxH",
        help="the built-in host's video size (default 640x360; even, at least 320x180)",
    )
    _add_knobs(room)
    room.set_defaults(handler=_cmd_room)

    probe = sub.add_parser(
        "probe",
        help="watch a stream once and report its QoE",
        description="Join URL as a viewer, watch for --duration seconds, report join time "
        "and phases, freezes, glass-to-glass latency and A/V offset. Exit 1 if the probe failed.",
    )
    probe.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:8080/whep/demo")
    probe.add_argument(
        "--kind",
        choices=["whep", "chat", "rtmp", "flv", "hls", "rtsp"],
        help="probe kind (default from the URL: http(s) WHEP, ws chat, rtmp, .flv, .m3u8, rtsp)",
    )
    probe.add_argument(
        "--duration",
        type=_positive,
        default=10.0,
        metavar="S",
        help="seconds from start to stop (default 10)",
    )
    probe.add_argument(
        "--join-timeout",
        type=_positive,
        default=10.0,
        metavar="S",
        help="give up if no frame by then (default 10)",
    )
    probe.add_argument(
        "--media-timeout",
        type=_positive,
        default=5.0,
        metavar="S",
        help="fail as disconnected after S seconds without any packet (default 5)",
    )
    probe.add_argument("--name", default="", help="the probe's label in the result (default: the kind)")
    probe.add_argument(
        "--profile",
        default="none",
        metavar="NAME",
        help="emulated network (default none): a built-in name (qoe netem profiles) or a profile file",
    )
    probe.add_argument("--seed", type=int, help="seed for the emulated network's random loss and jitter")
    chat = probe.add_argument_group("chat probes (ws:// URLs: echo latency between two clients)")
    chat.add_argument("--chat-rate", type=float, metavar="PER_S", help="messages per second (default 5)")
    chat.add_argument("--chat-count", type=int, metavar="N", help="messages (default: as many as fit)")
    chat.add_argument(
        "--chat-template", metavar="JSON", help="message to send; {nonce} and {sent_at} are filled in"
    )
    chat.add_argument("--chat-nonce-path", metavar="PATH", help="dotted JSON path of the nonce in echoes")
    chat.add_argument(
        "--chat-nonce-regex", metavar="RE", help="regex whose group 1 is the nonce (text chats)"
    )
    probe.add_argument(
        "--push-gateway", metavar="URL", help="also push the result to this Prometheus Pushgateway"
    )
    probe.add_argument("--json", action="store_true", help="print the ProbeResult as JSON")
    probe.set_defaults(handler=_cmd_probe)

    publish = sub.add_parser(
        "publish",
        help="publish the test signal into a room",
        description="Publish the test signal (coded frames, flashes and tones) to URL, as a "
        "canary host, for --duration seconds. Viewer probes read it back.",
    )
    publish.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:8080/whip/myroom")
    publish.add_argument(
        "--kind", choices=["whip", "rtmp"], help="publisher kind (default from the URL: http(s) WHIP, rtmp)"
    )
    publish.add_argument(
        "--duration",
        type=_positive,
        default=30.0,
        metavar="S",
        help="seconds to publish (default 30)",
    )
    publish.add_argument(
        "--cohost",
        action="store_true",
        help="publish as a co-host: the co-host's flash marker (right) and tone (1500 Hz)",
    )
    publish.add_argument("--json", action="store_true", help="print the ProbeResult as JSON")
    publish.add_argument(
        "--profile",
        default="none",
        metavar="NAME",
        help="emulated network (default none): a built-in name (qoe netem profiles) or a profile file",
    )
    _add_knobs(publish, freeze=False)
    publish.set_defaults(handler=_cmd_publish)

    netem = sub.add_parser(
        "netem",
        help="weak-network emulation: list profiles, check one, run an impairment proxy",
        description="Emulate weak networks in user space (no root): profiles of delay, jitter, loss, burst "
        "loss, capacity, outages and cellular traces. Probes take them with --profile; other clients go "
        "through 'qoe netem proxy'.",
    )
    netem_sub = netem.add_subparsers(dest="netem_command", metavar="ACTION", parser_class=_Parser)
    netem_sub.required = True
    listing = netem_sub.add_parser("profiles", help="list the built-in profiles with their sources")
    listing.set_defaults(handler=_cmd_netem_profiles)
    nc = netem_sub.add_parser(
        "check",
        help="measure a profile on this machine: configured vs measured",
        description="Send packets through the emulator on loopback and print configured vs measured delay "
        "(mean, p50, p99), jitter, loss rate, mean burst length and capacity.",
    )
    nc.add_argument("profile", metavar="PROFILE", help="a built-in profile name or a profile file")
    nc.add_argument("--packets", type=int, default=10000, metavar="N", help="packets to send (default 10000)")
    nc.add_argument("--direction", choices=["downlink", "uplink"], default="downlink")
    nc.add_argument("--rate", type=float, metavar="PPS", help="packets per second for the delay/loss phase")
    nc.add_argument("--seed", type=int, help="seed for the emulation's random draws")
    nc.add_argument("--json", action="store_true", help="print the report as JSON")
    nc.set_defaults(handler=_cmd_netem_check)
    proxy = netem_sub.add_parser(
        "proxy",
        help="relay UDP or TCP through a profile, for clients that cannot be shaped in-process",
        description="Listen on --listen and relay to --to through PROFILE's links (uplink: client to "
        "server). "
        "TCP loss shows as the stall a retransmission causes, never as corruption. Runs until Ctrl-C.",
    )
    proxy.add_argument("--listen", required=True, metavar="HOST:PORT")
    proxy.add_argument("--to", required=True, metavar="HOST:PORT")
    proxy.add_argument("--profile", required=True, metavar="NAME")
    transport = proxy.add_mutually_exclusive_group()
    transport.add_argument("--udp", action="store_true", help="relay UDP datagrams (default)")
    transport.add_argument("--tcp", action="store_true", help="relay TCP connections")
    proxy.add_argument("--seed", type=int, help="seed for the emulation's random draws")
    proxy.set_defaults(handler=_cmd_netem_proxy)

    audience = sub.add_parser(
        "audience",
        help="simulate a viewer population whose behaviour depends on QoE",
        description="Simulate viewers, rooms and sessions with a documented QoE -> behaviour model "
        "(calibrated to published studies; see sim/audience), writing the ground truth beside the "
        "data.",
    )
    audience_sub = audience.add_subparsers(dest="audience_command", metavar="ACTION", parser_class=_Parser)
    audience_sub.required = True
    sim = audience_sub.add_parser("simulate", help="write a session log (Parquet or CSV) and its truth")
    sim.add_argument(
        "--viewers", type=int, default=10000, metavar="N", help="viewers to simulate (default 10000)"
    )
    sim.add_argument(
        "--days", type=int, default=30, metavar="D", help="length of the log in days (default 30)"
    )
    sim.add_argument(
        "--seed", type=int, metavar="S", help="seed for every random draw (recorded in the truth)"
    )
    sim.add_argument("--out", required=True, metavar="FILE", help="sessions file: .parquet, or .csv")
    sim.add_argument(
        "--rooms", type=int, metavar="R", help="live rooms (default one per 5000 viewers, >= 12)"
    )
    sim.add_argument(
        "--model", metavar="FILE", help="TOML overriding the behaviour, population and QoE model"
    )
    sim.add_argument(
        "--probes", metavar="FILE", help="also write the probe results a fleet would have produced"
    )
    sim.add_argument(
        "--probe-interval",
        type=float,
        default=900,
        metavar="S",
        help="seconds between simulated probe runs per room and profile (default 900)",
    )
    sim.add_argument(
        "--start", default="2026-03-02T00:00:00Z", metavar="TIME", help="start of the log, ISO 8601"
    )
    sim.add_argument(
        "--chunk", type=int, default=50000, metavar="N", help="viewers generated at once (memory)"
    )
    sim.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sim.set_defaults(handler=_cmd_audience_simulate)

    impact = sub.add_parser(
        "impact",
        help="link QoE to drop-off, return visits and repurchase; report and alert thresholds",
        description="Analyse a session log (Parquet or CSV; schema in qoe/impact/SCHEMA.md): drop-off "
        "against join time, watch time by stall and A/V bands (Kaplan-Meier), return and repurchase rates, "
        "and causal estimates (matched pairs and regression beside the naive difference). Writes an "
        "HTML report with "
        "plots, the figures as JSON, and recommended SLO alert rules.",
    )
    impact.add_argument("sessions", metavar="SESSIONS", help="session log, Parquet or CSV")
    impact.add_argument(
        "--probes", metavar="RESULTS.jsonl", help="fleet results joined to sessions by room and time"
    )
    impact.add_argument(
        "--out", default="impact-report", metavar="DIR", help="output directory (default impact-report)"
    )
    impact.add_argument(
        "--json", action="store_true", help="print the figures as JSON instead of the summary"
    )
    impact.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed for pair matching and jackknife"
    )
    impact.add_argument("--log-end", metavar="TIME", help="end of the log (default: from the data)")
    impact.add_argument(
        "--visit-gap",
        type=float,
        default=1800,
        metavar="S",
        help="sessions closer than this form one visit (default 1800)",
    )
    impact.add_argument(
        "--stall-threshold",
        type=float,
        default=0.01,
        metavar="RATIO",
        help="stall ratio that counts as a stalled session (default 0.01)",
    )
    impact.add_argument(
        "--watch-loss-budget",
        type=float,
        default=0.05,
        metavar="SHARE",
        help="watch-time loss the stall alert tolerates (default 0.05)",
    )
    impact.add_argument(
        "--controls",
        default="room_id,device,network,region,hour",
        metavar="LIST",
        help="confounders to match and control on",
    )
    impact.add_argument(
        "--probe-room",
        default="target",
        metavar="KEY",
        help="room of a probe result: target or label:NAME (default target)",
    )
    impact.add_argument(
        "--probe-window",
        type=float,
        default=900,
        metavar="S",
        help="oldest probe result a session may take (default 900)",
    )
    impact.add_argument(
        "--qoe-source",
        choices=["auto", "client", "probe"],
        default="auto",
        help="client figures, probe figures, or client with probe filling gaps (default auto)",
    )
    impact.add_argument(
        "--truth", metavar="FILE", help="a simulator's truth file, shown beside the estimates"
    )
    impact.add_argument(
        "--jackknife-groups",
        type=int,
        default=10,
        metavar="G",
        help="viewer groups for the drop-off intervals (default 10)",
    )
    impact.add_argument("--threads", type=int, metavar="N", help="DuckDB threads (default all cores)")
    impact.add_argument("--memory-limit", default="4GB", metavar="SIZE", help="DuckDB memory before spilling")
    impact.set_defaults(handler=_cmd_impact)

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
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=9464, help="port to bind (default 9464)")
    serve.set_defaults(handler=_cmd_serve)

    fleet = sub.add_parser(
        "fleet",
        help="run a fleet of probes from a file and judge its SLOs",
        description="Probe fleets for CI: a TOML file of targets, probe runs and SLOs "
        "(see examples/fleet.toml). Exit 0 when every SLO holds, 1 when any fails, "
        "2 for a bad file or option.",
    )
    fleet_sub = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", parser_class=_Parser)
    fleet_sub.required = True
    check = fleet_sub.add_parser(
        "check",
        help="validate a fleet file and exit",
        description="Validate FILE: every key, type, field path, aggregate and bound.",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=_cmd_fleet_check)
    run = fleet_sub.add_parser(
        "run",
        help="run the fleet's probes and judge its SLOs",
        description="Run every probe run of FILE (or one shard's share), at most "
        "--concurrency at once; write results and verdicts; exit 1 if an SLO fails.",
    )
    run.add_argument("file", metavar="FILE")
    run.add_argument("--json", metavar="F", help="write every ProbeResult to F as JSON lines")
    run.add_argument("--junit", metavar="F", help="write JUnit XML to F: one test case per SLO per target")
    run.add_argument("--push-gateway", metavar="URL", help="push every result to this Prometheus Pushgateway")
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="run shard I of N (1-based); auto/N takes I from JOB_COMPLETION_INDEX",
    )
    run.add_argument(
        "--concurrency",
        type=int,
        metavar="K",
        help="probe runs at once (default: the file's, or 8)",
    )
    run.set_defaults(handler=_cmd_fleet_run)
    run.add_argument(
        "--workers",
        type=int,
        metavar="W",
        help="processes to spread the probes over (default: one per 12 concurrent probes, at most "
        "one per core)",
    )
    worker = fleet_sub.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("file", metavar="FILE")
    worker.set_defaults(handler=_cmd_fleet_worker)
    report = fleet_sub.add_parser(
        "report",
        help="judge SLOs over results files (e.g. from all shards)",
        description="Merge the JSON-lines results of a fleet's shards and judge its "
        "SLOs over all of them, as one unsharded run would.",
    )
    report.add_argument("results", metavar="RESULTS.jsonl", nargs="+")
    report.add_argument("--fleet", metavar="FILE", required=True, help="the fleet file the results came from")
    report.add_argument("--junit", metavar="F", help="write JUnit XML to F")
    report.set_defaults(handler=_cmd_fleet_report)
    return parser


def _print_result(result: Any, as_json: bool) -> int:
    if as_json:
        print(result.to_json(indent=2))
    else:
        from qoe.report import results_table

        print(results_table([result]))
    if not result.success:
        error = result.error
        print(f"qoe: probe failed: {error.kind}: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _push(gateway: str | None, results: list[Any], instance: str | None = None) -> int:
    """Push to a Pushgateway if asked; EXIT_FAILED with one line on stderr if that failed."""
    if not gateway:
        return EXIT_OK
    from qoe.exporter.push import PushError, push_results

    try:
        await push_results(gateway, results, instance=instance)
    except PushError as exc:
        print(f"qoe: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _cmd_netem_profiles(args: argparse.Namespace) -> int:
    from sim.profiles import list_profiles, load_profile

    for name in list_profiles():
        profile = load_profile(name)
        print(f"{name:22} {profile.description}")
    return EXIT_OK


async def _cmd_netem_check(args: argparse.Namespace) -> int:
    import numpy as np

    from sim.netem.check import check_profile

    if args.packets < 100:
        raise ConfigError(f"--packets must be at least 100, got {args.packets}")
    report = await check_profile(
        args.profile,
        packets=args.packets,
        direction=args.direction,
        rate_pps=args.rate,
        rng=np.random.default_rng(args.seed),
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return EXIT_OK


async def _cmd_netem_proxy(args: argparse.Namespace) -> int:
    from sim.proxy import run_proxy

    def ready(proxy: Any) -> None:
        kind = "TCP" if args.tcp else "UDP"
        host, port = proxy.address[:2]
        print(f"qoe netem proxy: {kind} {host}:{port} -> {args.to} through '{args.profile}'", flush=True)

    task = asyncio.ensure_future(
        run_proxy(args.listen, args.to, args.profile, not args.tcp, args.seed, ready)
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):  # Ctrl-C is how a proxy ends
        await task
    return EXIT_OK


async def _serve_until_signalled(server: Any, host: str, port: int, banner: Callable[[], str]) -> int:
    """Start ``server`` (``start``/``stop`` coroutines), print ``banner()``, serve until SIGINT or
    SIGTERM. A port that cannot be bound is a usage error."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        print(banner(), flush=True)
        await stop.wait()
    finally:
        await server.stop()
    return EXIT_OK


async def _cmd_audience_simulate(args: argparse.Namespace) -> int:
    from sim.audience import simulate_command

    return await asyncio.to_thread(simulate_command, args)


async def _cmd_impact(args: argparse.Namespace) -> int:
    from qoe.impact.command import impact_command

    return await asyncio.to_thread(impact_command, args)


async def _cmd_serve(args: argparse.Namespace) -> int:
    from qoe.exporter.server import Exporter
    from qoe.fleet import load_fleet

    fleet = load_fleet(args.fleet)
    exporter = Exporter(fleet, args.host, args.port)
    targets = f"{len(fleet.targets)} targets from {args.fleet}"
    return await _serve_until_signalled(
        exporter, args.host, args.port, lambda: f"qoe serve: {targets}; metrics on {exporter.url}/metrics"
    )


async def _cmd_probe(args: argparse.Namespace) -> int:
    from probes import ProbeSpec, guess_kind, run_probe

    kind = args.kind or guess_kind(args.url)
    if kind in ("whip", "rtmp-publish"):
        raise ConfigError(f"{args.url} is a {kind} URL; use 'qoe publish' to publish")
    options: dict[str, Any] = {}
    for key in ("rate", "count", "template", "nonce_path", "nonce_regex"):
        value = getattr(args, f"chat_{key}")
        if value is not None:
            options[key] = value
    spec = ProbeSpec(
        url=args.url,
        kind=kind,
        duration=args.duration,
        name=args.name,
        join_timeout=args.join_timeout,
        media_timeout=args.media_timeout,
        profile=args.profile,
        seed=args.seed,
        options=options,
    )
    spec.network()  # an unknown profile is a usage error, before anything starts
    result = await run_probe(spec)
    code = _print_result(result, args.json)
    return max(code, await _push(args.push_gateway, [result]))


async def _cmd_publish(args: argparse.Namespace) -> int:
    from probes import ProbeSpec, run_probe
    from qoe.signal import COHOST_TONE_HZ

    kind = args.kind or ("rtmp" if args.url.startswith(("rtmp://", "rtmps://")) else "whip")
    spec = ProbeSpec(
        url=args.url,
        kind="rtmp-publish" if kind == "rtmp" else "whip",
        duration=args.duration,
        profile=args.profile,
        options={"knobs": _knobs(args), **({"slot": 1, "tone_hz": COHOST_TONE_HZ} if args.cohost else {})},
    )
    spec.network()  # an unknown profile is a usage error, before anything starts
    result = await run_probe(spec)
    if args.json:
        print(result.to_json(indent=2))
    else:
        print(
            f"published {result.publish.frames_sent or 0} frames; connected in "
            f"{(result.join.total_seconds or 0) * 1000:.0f} ms"
        )
    if not result.success:
        assert result.error is not None
        print(f"qoe: publish failed: {result.error.kind}: {result.error.message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _cmd_demo(args: argparse.Namespace) -> int:
    from probes import ProbeSpec
    from qoe.demo import run_demo
    from qoe.report import results_table

    if not 1 <= args.viewers <= 200:
        raise ConfigError(f"--viewers must be between 1 and 200, got {args.viewers}")
    knobs = _knobs(args)
    if not args.json:
        print(
            f"qoe demo: {args.viewers} viewer(s) watching the embedded room for {args.duration:g} s ...",
            file=sys.stderr,
        )
    profiles = tuple(args.profile or ["none"])
    for name in profiles:
        ProbeSpec(url="http://127.0.0.1/", kind="whep", profile=name).network()
    results = await run_demo(
        duration=args.duration, viewers=args.viewers, knobs=knobs, profiles=profiles, cohost=args.cohost
    )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(results_table(results))
    failed = [r for r in results if not r.success]
    for r in failed:
        assert r.error is not None
        print(f"qoe: {r.probe} failed: {r.error.kind}: {r.error.message}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


async def _cmd_room(args: argparse.Namespace) -> int:
    from sim.room.server import LiveRoom

    width, height = args.size
    room = LiveRoom(args.host, args.port, knobs=_knobs(args), host_options={"width": width, "height": height})
    return await _serve_until_signalled(
        room,
        args.host,
        args.port,
        lambda: f"qoe room: serving {room.url} (watch: {room.url}/whep/demo, publish: {room.url}/whip/ROOM)",
    )


async def _cmd_fleet_check(args: argparse.Namespace) -> int:
    from qoe.fleet import expand, load_fleet

    fleet = load_fleet(args.file)
    print(
        f"{args.file}: ok: {len(fleet.targets)} targets, {len(expand(fleet))} probe runs, "
        f"{len(fleet.slos)} SLOs"
    )
    return EXIT_OK


def _write(path: str | None, text: str) -> None:
    if path:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _finish_judgement(judgement: Any, junit: str | None) -> int:
    from qoe.fleet import junit_xml, summary_table

    _write(junit, junit_xml(judgement))
    print(summary_table(judgement))
    return EXIT_OK if judgement.passed else EXIT_FAILED


async def _cmd_fleet_run(args: argparse.Namespace) -> int:
    from qoe.fleet import Progress, expand, judge, load_fleet, parse_shard, run_fleet
    from qoe.fleet.runner import default_workers

    fleet = load_fleet(args.file)
    shard = parse_shard(args.shard) if args.shard else None
    concurrency = args.concurrency or fleet.concurrency
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")
    runs = expand(fleet, shard)
    out = None
    if args.json:
        try:
            out = open(args.json, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
    workers = args.workers or default_workers(concurrency, len(runs))
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    progress = Progress(len(runs))
    where = f" (shard {shard})" if shard else ""
    print(
        f"qoe fleet: {len(runs)} probe runs{where}, {concurrency} at once in {workers} process(es)",
        file=sys.stderr,
    )

    def on_result(result: Any) -> None:
        if out is not None:
            out.write(result.to_json() + "\n")
            out.flush()
        progress(result)

    try:
        results = await run_fleet(
            runs, concurrency=concurrency, workers=workers, fleet_path=fleet.path, on_result=on_result
        )
    finally:
        progress.close()
        if out is not None:
            out.close()
    instance = f"{socket.gethostname()}-shard-{shard.index}-of-{shard.count}" if shard else None
    pushed = await _push(args.push_gateway, results, instance)
    verdict = _finish_judgement(judge(fleet, runs, [r.to_dict() for r in results]), args.junit)
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
    return _finish_judgement(judgement, args.junit)


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        # aiortc and aioice log every decode hiccup and ICE check; the probe reports what matters.
        for name in ("aiortc", "aioice"):
            logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(asyncio.run(args.handler(args)))
    except ConfigError as exc:
        sub_command = (
            getattr(args, "fleet_command", None)
            or getattr(args, "netem_command", None)
            or getattr(args, "audience_command", None)
        )
        command = " ".join(c for c in (args.command, sub_command) if c)
        print(f"qoe {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (qoe ... | head): say nothing more, and keep Python from
        # complaining about the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
