"""``qoe demo``, ``room``, ``probe`` and ``publish``: the room and the probes."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from qoe import eventlog, metrics
from qoe.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    INCIDENT_HELP,
    PROFILE_HELP,
    add_knobs,
    kbps,
    knobs_from,
    listen_port,
    positive,
    print_result,
    push,
    save_incident,
    serve_until_signalled,
    size,
)
from qoe.errors import ConfigError
from qoe.report import host_note, results_table
from qoe.signal import COHOST_TONE_HZ
from qoe.timeline import Timeline

__all__ = ["add_commands"]

# Heavy modules are imported in the handlers that use them (see qoe.cli).


def add_commands(sub: Any) -> None:
    """Add this family's commands to the ``qoe`` subparsers ``sub``."""
    demo = sub.add_parser(
        "demo",
        help="run the embedded room and N viewer probes, print a table",
        description="Start the embedded live room with its synthetic host on a free "
        "loopback port, watch it with N WHEP viewer probes at once, print their figures.",
    )
    demo.add_argument(
        "--duration",
        type=positive,
        default=10.0,
        metavar="S",
        help="seconds each viewer watches",
    )
    demo.add_argument("--viewers", type=int, default=3, metavar="N", help="concurrent viewers, 1 to 200")
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
    add_knobs(demo)
    demo.set_defaults(handler=_cmd_demo, media=("qoe.demo",))

    room = sub.add_parser(
        "room",
        help="serve the embedded live room (WHIP ingest; WHEP, HTTP-FLV and HLS playback)",
        description="Serve the embedded live room until interrupted. POST an SDP offer to "
        "/whip/ROOM to publish or /whep/ROOM to watch (RFC 9725 semantics); GET /flv/ROOM.flv "
        "or /hls/ROOM/index.m3u8 to watch as HTTP-FLV or HLS players do. Room 'demo' has "
        "a built-in host sending the test signal. Open http://HOST:PORT/ in a browser to watch.",
    )
    room.add_argument("--host", default="127.0.0.1", help="address to bind")
    room.add_argument(
        "--port",
        type=listen_port,
        default=8080,
        help="port to bind; 0 takes any free one, which the banner names",
    )
    room.add_argument(
        "--size",
        type=size,
        default="640x360",  # a string default goes through type=size, and reads well in --help
        metavar="WxH",
        help="the built-in host's video size: even, from 320x180 to 3840x2160",
    )
    room.add_argument(
        "--bitrate",
        type=kbps,
        default=500,
        metavar="KBPS",
        help="the built-in host's video bit rate, kbit/s (default 500; 50 to 20000): picture "
        "quality (video.quality) follows it",
    )
    room.add_argument(
        "--renditions",
        type=int,
        metavar="N",
        help="renditions of the built-in host, as an SFU's simulcast (default 3, as many as fit "
        "above 320x180: 640x360, 480x270 and 320x180 at the full, 0.6 and 0.3 of --bitrate); "
        "each WebRTC viewer takes one, switched at a keyframe by its bandwidth estimate (REMB) "
        "and losses. 1: one encoding for everyone",
    )
    coupons = room.add_argument_group(
        "coupon drops",
        "The built-in host announces a coupon drop every S seconds: it shows the drop's id in its "
        'video code for 2 s, and viewers POST {"drop": ID, "client": "..."} to '
        "/rooms/demo/grab; the first N distinct clients win, everyone after is told sold_out. "
        "GET /rooms/demo lists each drop's open and sold-out times. Watch it with: "
        "qoe probe --kind grab http://HOST:PORT/whep/demo",
    )
    coupons.add_argument(
        "--coupon-every",
        type=positive,
        metavar="S",
        help="open a drop at every multiple of S Unix seconds (more than 2; e.g. 5)",
    )
    coupons.add_argument(
        "--coupon-stock",
        type=int,
        default=None,
        metavar="N",
        help="coupons per drop (default 5)",
    )
    add_knobs(room)
    room.set_defaults(handler=_cmd_room, media=("sim.room.server",))

    probe = sub.add_parser(
        "probe",
        help="watch a stream once and report its QoE",
        description="Join URL as a viewer, watch for --duration seconds, report join time "
        "and phases, freezes, glass-to-glass latency and A/V offset. Exit 1 if the probe failed.",
    )
    probe.add_argument("url", metavar="URL", nargs="?", help="e.g. http://127.0.0.1:8080/whep/demo")
    probe.add_argument(
        "--kind",
        choices=["whep", "grab", "chat", "rtmp", "flv", "hls", "rtsp"],
        help="probe kind (default from the URL: http(s) WHEP, ws chat, rtmp, .flv, .m3u8, rtsp); "
        "grab watches a room over WHEP and grabs each coupon drop it sees "
        "('qoe probe --options grab' lists its options)",
    )
    probe.add_argument(
        "--duration",
        type=positive,
        default=10.0,
        metavar="S",
        help="seconds from start to stop",
    )
    probe.add_argument(
        "--join-timeout",
        type=positive,
        default=10.0,
        metavar="S",
        help="give up if no frame by then, seconds",
    )
    probe.add_argument(
        "--media-timeout",
        type=positive,
        default=5.0,
        metavar="S",
        help="fail as disconnected after S seconds without any packet",
    )
    probe.add_argument("--name", default="", help="the probe's label in the result (default: the kind)")
    probe.add_argument("--profile", default="none", metavar="NAME", help=PROFILE_HELP)
    probe.add_argument("--seed", type=int, help="seed for the emulated network's random loss and jitter")
    probe.add_argument(
        "--quality",
        metavar="RATE",
        help="frames a second to score for picture quality (PSNR, SSIM against the test signal "
        "the frame's code names; default 2), 'all' for every frame, 'off' for none",
    )
    probe.add_argument(
        "--decode",
        choices=("full", "sample", "none"),
        help="WebRTC viewers: full decodes every frame (default); sample and none count freezes, "
        "dropped frames and glass-to-glass from RTP and decode a few seconds at a time (sample: "
        "every 10 s; none: when a rotating decoder visits), at a fraction of the CPU",
    )
    probe.add_argument(
        "--clock-offset",
        type=float,
        metavar="S",
        help="the publisher's clock minus this host's, in seconds, when the publisher runs on another "
        "host (from chronyc tracking, ntpq -p or PTP on both): glass-to-glass is corrected by it and "
        "the result says clock_domain=synchronised. Without it a remote target's clock domain is "
        "'unknown'",
    )
    whep = probe.add_argument_group("WHEP probes (http(s):// URLs)")
    _add_webrtc(whep, "WHEP")
    whep.add_argument(
        "--offer",
        choices=["client", "server"],
        help="server: the endpoint makes the offer (Janus's WHEP front end): it answers the POST "
        "with its own offer and the probe PATCHes its answer; client, as when not given: the "
        "probe offers (RFC 9725)",
    )
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
    probe.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a probe option, repeatable; VALUE is read as TOML (5, 0.5, true) or else as text. "
        "'qoe probe --options KIND' lists a kind's options",
    )
    probe.add_argument(
        "--options",
        metavar="KIND",
        dest="list_options",
        help="list the options of probe kind KIND (whep, chat, rtmp, ...) and exit",
    )
    probe.add_argument("--json", action="store_true", help="print the ProbeResult as JSON")
    probe.add_argument(
        "--events",
        type=Path,
        metavar="FILE",
        help="also save the run's event log (every frame, tone, message and tick it recorded) as "
        "JSON; 'qoe replay FILE' computes the same result from it",
    )
    probe.add_argument("--save-incident", type=Path, metavar="DIR", help=INCIDENT_HELP)
    probe.set_defaults(handler=_cmd_probe, media=("probes",))

    replay = sub.add_parser(
        "replay",
        help="compute a probe's result again from its saved event log",
        description="Read an event log saved with 'qoe probe --events FILE' and print the result "
        "it gives: the same figures the probe reported, computed with no probe running. Exit 1 "
        "if the run had failed.",
    )
    replay.add_argument("file", type=Path, metavar="FILE", help="an event log (JSON)")
    replay.add_argument("--json", action="store_true", help="print the ProbeResult as JSON")
    replay.set_defaults(handler=_cmd_replay)

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
        type=positive,
        default=30.0,
        metavar="S",
        help="seconds to publish",
    )
    publish.add_argument(
        "--cohost",
        action="store_true",
        help="publish as a co-host: the co-host's flash marker (right) and tone (1500 Hz)",
    )
    publish.add_argument("--json", action="store_true", help="print the ProbeResult as JSON")
    publish.add_argument("--save-incident", type=Path, metavar="DIR", help=INCIDENT_HELP)
    publish.add_argument("--profile", default="none", metavar="NAME", help=PROFILE_HELP)
    _add_webrtc(publish.add_argument_group("WHIP publishers (http(s):// URLs)"), "WHIP")
    add_knobs(publish, freeze=False)
    publish.set_defaults(handler=_cmd_publish, media=("probes",))


def _add_webrtc(group: Any, protocol: str) -> None:
    """The flags of a WebRTC probe's options (``token``, ``ice_transport``)."""
    group.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"bearer token the {protocol} endpoint requires, sent on every request "
        "(Authorization: Bearer) and printed nowhere; a fleet target sets it as options.token",
    )
    group.add_argument(
        "--ice-transport",
        choices=["all", "relay"],
        help="relay: media only through the TURN server the endpoint announces (its Link "
        "headers), to watch a TURN-only path; all, as when not given: any candidate",
    )


def _webrtc_options(args: argparse.Namespace, kind: str, webrtc_kind: str) -> dict[str, Any]:
    """The options ``--token``, ``--ice-transport`` and ``--offer`` set, for a probe of ``kind``."""
    keys = ("token", "ice_transport", "offer")
    given = {key: value for key in keys if (value := getattr(args, key, None)) is not None}
    if given and kind != webrtc_kind:
        flag = "--" + next(iter(given)).replace("_", "-")
        raise ConfigError(f"{flag} is for {webrtc_kind.upper()} URLs; {args.url} is a {kind} URL")
    return given


def option_values(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as options; a VALUE that reads as a TOML value is that value."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            value: Any = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        options[key.strip()] = value
    return options


def _print_options(kind: str) -> int:
    from probes import OPTIONS
    from probes.options import describe

    if kind not in OPTIONS:
        raise ConfigError(f"unknown probe kind {kind!r}; known: {', '.join(sorted(OPTIONS))}")
    print(f"options of {kind} probes (qoe probe --option KEY=VALUE; a fleet target's options table):")
    for line in describe(OPTIONS[kind]):
        print(f"  {line}")
    return EXIT_OK


async def _cmd_probe(args: argparse.Namespace) -> int:
    from probes import guess_kind, probe_spec, run_probe

    if args.list_options:
        return _print_options(args.list_options)
    if not args.url:
        raise ConfigError("the URL to probe is missing (or --options KIND to list a kind's options)")

    kind = args.kind or guess_kind(args.url)
    # An rtmp:// URL is watched here: the same URL serves players and publishers, and
    # publishing to it is qoe publish's (--kind has no rtmp-publish for that reason).
    if kind == "whip":
        raise ConfigError(f"{args.url} is a WHIP URL, to publish to; use 'qoe publish' to publish")
    options: dict[str, Any] = option_values(args.option)
    for key in ("rate", "count", "template", "nonce_path", "nonce_regex"):
        value = getattr(args, f"chat_{key}")
        if value is not None:
            options[key] = value
    options.update(_webrtc_options(args, kind, "grab" if kind == "grab" else "whep"))  # grab watches as WHEP
    if args.quality is not None:
        if kind == "chat":
            raise ConfigError(f"--quality is for video viewers; {args.url} is a chat URL")
        options["quality"] = args.quality
    if args.decode is not None:
        if kind not in ("whep", "grab"):
            raise ConfigError(f"--decode is for WebRTC viewers; {args.url} is a {kind} URL")
        options["decode"] = args.decode
    spec = probe_spec(  # a bad option or profile is a usage error, before anything starts
        args.url,
        kind=kind,
        duration=args.duration,
        name=args.name,
        join_timeout=args.join_timeout,
        media_timeout=args.media_timeout,
        profile=args.profile,
        seed=args.seed,
        clock_offset=args.clock_offset,
        options=options,
    )
    logs: list[Timeline] = []
    result = await run_probe(spec, on_log=logs.append)
    code = print_result(result, args.json)
    if args.events is not None:
        try:
            eventlog.save(logs[0], args.events)
        except OSError as exc:
            raise ConfigError(f"--events {args.events}: {exc.strerror or exc}") from exc
    save_incident(args.save_incident, result, logs[0] if logs else None)
    return max(code, await push(args.push_gateway, [result]))


async def _cmd_replay(args: argparse.Namespace) -> int:
    try:
        log = eventlog.load(args.file)
    except eventlog.EventLogError as exc:
        raise ConfigError(str(exc)) from exc
    return print_result(metrics.result_of(log), args.json)


PUBLISH_SCHEMES = {"http": "whip", "https": "whip", "rtmp": "rtmp", "rtmps": "rtmp"}
"""The URL schemes ``qoe publish`` takes, and the publisher kind (``--kind``) each implies."""


def publisher_kind(url: str, kind: str | None) -> str:
    """The probe kind that publishes to ``url`` as ``--kind`` (None: from the URL) asks:
    ``whip`` for an http(s) URL, ``rtmp-publish`` for rtmp(s).

    Any other URL is a usage error here, before a publisher starts: a ``ws://`` URL would
    otherwise be posted to as WHIP and fail as a connect error, which reads as a server fault.
    """
    scheme, sep, _ = url.partition("://")
    implied = PUBLISH_SCHEMES.get(scheme.lower()) if sep else None
    if implied is None:
        given = f"{url} (scheme {scheme}://)" if sep else repr(url)
        raise ConfigError(f"cannot publish to {given}: expected a WHIP http(s):// URL or an rtmp(s):// URL")
    if kind is not None and kind != implied:
        raise ConfigError(f"--kind {kind} does not publish to {scheme}:// URLs; --kind {implied} does")
    return "rtmp-publish" if implied == "rtmp" else "whip"


async def _cmd_publish(args: argparse.Namespace) -> int:
    from probes import probe_spec, run_probe

    kind = publisher_kind(args.url, args.kind)
    cohost_options: dict[str, Any] = {"slot": 1, "tone_hz": COHOST_TONE_HZ} if args.cohost else {}
    spec = probe_spec(
        args.url,
        kind=kind,
        duration=args.duration,
        profile=args.profile,
        options={"knobs": knobs_from(args), **cohost_options, **_webrtc_options(args, kind, "whip")},
    )
    logs: list[Timeline] = []
    result = await run_probe(spec, on_log=logs.append)
    if args.json:
        print(result.to_json(indent=2))
    save_incident(args.save_incident, result, logs[0] if logs else None)
    if not result.success:
        # Only the failure: a "published 0 frames" line would read as a publish that worked.
        assert result.error is not None
        print(f"qoe: publish failed: {result.error.kind}: {result.error.message}", file=sys.stderr)
        return EXIT_FAILED
    if not args.json:
        print(
            f"published {result.publish.frames_sent or 0} frames; connected in "
            f"{(result.join.total_seconds or 0) * 1000:.0f} ms"
        )
    return EXIT_OK


async def _cmd_demo(args: argparse.Namespace) -> int:
    from probes import probe_spec
    from qoe.demo import run_demo

    # Every usage check comes before the banner: a banner then an error reads as a run that broke.
    if not 1 <= args.viewers <= 200:
        raise ConfigError(f"--viewers must be between 1 and 200, got {args.viewers}")
    knobs = knobs_from(args)
    profiles = tuple(args.profile or ["none"])
    for name in profiles:
        probe_spec("http://127.0.0.1/", kind="whep", profile=name)  # an unknown profile: a usage error
    if not args.json:
        print(
            f"qoe demo: {args.viewers} viewer(s) watching the embedded room for {args.duration:g} s ...",
            file=sys.stderr,
        )
    results = await run_demo(
        duration=args.duration, viewers=args.viewers, knobs=knobs, profiles=profiles, cohost=args.cohost
    )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(results_table(results))
        if (note := host_note(results)) is not None:
            print(note)
    failed = [r for r in results if not r.success]
    for r in failed:
        assert r.error is not None
        print(f"qoe: {r.probe} failed: {r.error.kind}: {r.error.message}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


async def _cmd_room(args: argparse.Namespace) -> int:
    from qoe.media.ladder import fitting
    from sim.room.server import LiveRoom

    width, height = args.size
    if args.coupon_stock is not None and args.coupon_every is None:
        raise ConfigError("--coupon-stock needs --coupon-every")
    coupons = None if args.coupon_every is None else (args.coupon_every, args.coupon_stock or 5)
    room = LiveRoom(
        args.host,
        args.port,
        knobs=knobs_from(args),
        host_options={
            "width": width,
            "height": height,
            "video_bitrate": args.bitrate * 1000,
            "renditions": fitting(width, height) if args.renditions is None else args.renditions,
        },
        coupons=coupons,
    )
    return await serve_until_signalled(
        room,
        args.host,
        args.port,
        lambda: (
            f"qoe room: serving {room.url}\n"
            f"  watch room demo: {room.url}/whep/demo (WebRTC), {room.url}/flv/demo.flv (HTTP-FLV), "
            f"{room.url}/hls/demo/index.m3u8 (HLS)\n"
            f"  publish a room: {room.url}/whip/ROOM (WHIP); its viewers take the same three forms"
            + (
                f"\n  coupon drops: {coupons[1]} coupons every {coupons[0]:g} s; grab at "
                f"{room.url}/rooms/demo/grab, ground truth at {room.url}/rooms/demo"
                if coupons
                else ""
            )
        ),
    )
