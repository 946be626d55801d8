"""``qoe netem``, ``audience`` and ``impact``: weak networks and what QoE costs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import signal
from typing import Any

import numpy as np

from qoe.cli.common import EXIT_OK, PROFILE_HELP, Parser, address, listen_address
from qoe.errors import ConfigError
from sim.profiles import list_profiles, load_profile

__all__ = ["add_commands"]

# Heavy modules are imported in the handlers that use them (see qoe.cli).


def add_commands(sub: Any) -> None:
    """Add this family's commands to the ``qoe`` subparsers ``sub``."""
    netem = sub.add_parser(
        "netem",
        help="weak-network emulation: list profiles, check one, run an impairment proxy",
        description="Emulate weak networks in user space (no root): profiles of delay, jitter, loss, burst "
        "loss, capacity, outages and cellular traces. Probes take them with --profile; other clients go "
        "through 'qoe netem proxy'.",
    )
    netem_sub = netem.add_subparsers(dest="netem_command", metavar="ACTION", parser_class=Parser)
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
    nc.add_argument("--packets", type=int, default=10000, metavar="N", help="packets to send, at least 100")
    nc.add_argument(
        "--direction",
        choices=["downlink", "uplink"],
        default="downlink",
        help="which of the profile's links to measure (uplink: client to server)",
    )
    nc.add_argument(
        "--rate",
        type=float,
        metavar="PPS",
        help="packets per second for the delay/loss phase (default: a fast test pace; a 2 Mbit/s video "
        "stream is about 200)",
    )
    nc.add_argument("--seed", type=int, help="seed for the emulation's random draws")
    nc.add_argument("--json", action="store_true", help="print the report as JSON")
    nc.set_defaults(handler=_cmd_netem_check, media=("sim.proxy.check",))
    proxy = netem_sub.add_parser(
        "proxy",
        help="relay UDP or TCP through a profile, for clients that cannot be shaped in-process",
        description="Listen on --listen and relay to --to through PROFILE's links (uplink: client to "
        "server). TCP loss shows as the stall a retransmission causes, never as corruption. Runs until "
        "Ctrl-C. A probe through the proxy cannot tell: its result reports the --profile the probe was "
        "given (its own in-process emulation, default none), so tell such runs apart by their name "
        "(qoe probe --name, or a fleet target's name and labels).",
    )
    proxy.add_argument(
        "--listen",
        required=True,
        type=listen_address,
        metavar="HOST:PORT",
        help="where clients connect ([::1]:PORT for IPv6); port 0 takes any free one, which the "
        "start-up line names",
    )
    proxy.add_argument(
        "--to", required=True, type=address, metavar="HOST:PORT", help="the server to relay to"
    )
    proxy.add_argument("--profile", required=True, metavar="NAME", help=PROFILE_HELP)
    transport = proxy.add_mutually_exclusive_group()
    transport.add_argument("--udp", action="store_true", help="relay UDP datagrams (default)")
    transport.add_argument("--tcp", action="store_true", help="relay TCP connections")
    proxy.add_argument("--seed", type=int, help="seed for the emulation's random draws")
    proxy.set_defaults(handler=_cmd_netem_proxy, media=("sim.proxy",))

    audience = sub.add_parser(
        "audience",
        help="simulate a viewer population whose behaviour depends on QoE",
        description="Simulate viewers, rooms and sessions with a documented QoE -> behaviour model "
        "(calibrated to published studies; see sim/audience), writing the ground truth beside the "
        "data.",
    )
    audience_sub = audience.add_subparsers(dest="audience_command", metavar="ACTION", parser_class=Parser)
    audience_sub.required = True
    sim = audience_sub.add_parser("simulate", help="write a session log (Parquet or CSV) and its truth")
    sim.add_argument("--viewers", type=int, default=10000, metavar="N", help="viewers to simulate")
    sim.add_argument("--days", type=int, default=30, metavar="D", help="length of the log in days")
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
        help="seconds between simulated probe runs per room and profile, at least 60",
    )
    sim.add_argument(
        "--start", default="2026-03-02T00:00:00Z", metavar="TIME", help="start of the log, ISO 8601"
    )
    sim.add_argument(
        "--chunk",
        type=int,
        default=50000,
        metavar="N",
        help="viewers generated at once (memory), at least 1000",
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
    impact.add_argument(
        "sessions",
        metavar="SESSIONS",
        help="session log, Parquet or CSV: one file, its name taken literally (*, ? and [ are no pattern), "
        "or a directory of Parquet partitions (every *.parquet under it, read in parallel; "
        "key=value folder names become columns)",
    )
    impact.add_argument(
        "--probes", metavar="RESULTS.jsonl", help="fleet results joined to sessions by room and time"
    )
    impact.add_argument("--out", default="impact-report", metavar="DIR", help="output directory")
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
        help="sessions closer than this form one visit",
    )
    impact.add_argument(
        "--stall-threshold",
        type=float,
        default=0.01,
        metavar="RATIO",
        help="stall ratio that counts as a stalled session",
    )
    impact.add_argument(
        "--watch-loss-budget",
        type=float,
        default=0.05,
        metavar="SHARE",
        help="watch-time loss the stall alert tolerates",
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
        help="room of a probe result: target or label:NAME",
    )
    impact.add_argument(
        "--probe-window",
        type=float,
        default=900,
        metavar="S",
        help="oldest probe result a session may take, seconds",
    )
    impact.add_argument(
        "--qoe-source",
        choices=["auto", "client", "probe"],
        default="auto",
        help="whose figures: the client's, the probe's, or auto: the client's with the probe's filling gaps",
    )
    impact.add_argument(
        "--truth", metavar="FILE", help="a simulator's truth file, shown beside the estimates"
    )
    impact.add_argument(
        "--jackknife-groups",
        type=int,
        default=10,
        metavar="G",
        help="viewer groups for the drop-off intervals",
    )
    impact.add_argument("--threads", type=int, metavar="N", help="DuckDB threads (default all cores)")
    impact.add_argument("--memory-limit", default="4GB", metavar="SIZE", help="DuckDB memory before spilling")
    impact.add_argument(
        "--temp-dir",
        metavar="DIR",
        help="where DuckDB spills and the arrays no step reads for a while wait (default: the system's "
        "temporary folder; about 20 bytes a session, 2 GB at 100 M sessions, more while DuckDB sorts)",
    )
    impact.add_argument(
        "--segment-by",
        metavar="LIST",
        help="also run every effect per level of these category columns (region, device, network, "
        "app_version, arm, room_id, or any column of the log outside the schema; e.g. region,device), "
        "and rank each column's levels by the 7-day returns their QoE lost beyond the other levels'. "
        "The tiers first-time, repeat, high-value and lapsing are always segments",
    )
    impact.add_argument("--quiet", action="store_true", help="no progress on stderr")
    impact.add_argument(
        "--high-value",
        type=float,
        metavar="VALUE",
        help="order value over a viewer's earlier sessions from which they are high-value "
        "(default: the 90th percentile among earlier customers)",
    )
    impact.add_argument(
        "--lapsing-days",
        type=float,
        default=7.0,
        metavar="D",
        help="days since a viewer's previous session from which a session is a lapsing viewer's",
    )
    impact.add_argument(
        "--arm-from",
        metavar="COLUMN",
        help="A/B test: the column holding each session's arm (default: arm, when the log has it; or "
        "app_version, device, network, region, room_id). Per arm: QoE, watch time, 7-day return and "
        "repurchase, differences from the first arm with intervals, and CUPED from the pre-period",
    )
    impact.add_argument(
        "--arm-split",
        metavar="SHARES",
        help="intended split of viewers over the arms in name order, like 50/50 (the default: equal) "
        "or 10/90; a chi-square sample-ratio check warns when the viewers do not match it",
    )
    impact.set_defaults(handler=_cmd_impact)


async def _cmd_netem_profiles(args: argparse.Namespace) -> int:
    for name in list_profiles():
        profile = load_profile(name)
        print(f"{name:22} {profile.description}")
    return EXIT_OK


async def _cmd_netem_check(args: argparse.Namespace) -> int:
    from sim.proxy.check import check_profile

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
    from sim.proxy import hostport, run_proxy

    def ready(proxy: Any) -> None:
        kind = "TCP" if args.tcp else "UDP"
        print(
            f"qoe netem proxy: {kind} {hostport(proxy.address)} -> {hostport(args.to)} through profile "
            f"'{args.profile}'\n"
            f"  probe results through it report the probe's own --profile (default none), not "
            f"'{args.profile}': name such runs with qoe probe --name",
            flush=True,
        )

    task = asyncio.ensure_future(
        run_proxy(args.listen, args.to, args.profile, not args.tcp, args.seed, ready)
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):  # Ctrl-C is how a proxy ends
        await task
    return EXIT_OK


IMPACT_MODULES = ("duckdb", "pyarrow", "scipy", "matplotlib")
"""What ``qoe impact`` and ``qoe audience simulate`` need beyond a probe install."""


def require_impact_extra(command: str) -> None:
    """Fail with the command that installs the analytics stack when part of it is missing."""
    missing = []
    for module in IMPACT_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(
            f"{command} needs the analytics extra ({', '.join(missing)} not installed): "
            "pip install 'qoe-probe[impact]'"
        )


async def _cmd_audience_simulate(args: argparse.Namespace) -> int:
    require_impact_extra("qoe audience simulate")
    from qoe.cli.analytics import simulate_command

    return await asyncio.to_thread(simulate_command, args)


async def _cmd_impact(args: argparse.Namespace) -> int:
    require_impact_extra("qoe impact")
    from qoe.cli.analytics import impact_command

    return await asyncio.to_thread(impact_command, args)
