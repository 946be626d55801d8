"""What every ``qoe`` command shares: exit codes, argument types, knobs, output helpers."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from qoe.errors import ConfigError
from qoe.report import host_note, results_table

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROFILE_HELP",
    "HelpFormatter",
    "Parser",
    "RawDescriptionHelpFormatter",
    "add_knobs",
    "address",
    "at_least_one",
    "kbps",
    "knobs_from",
    "listen_address",
    "listen_port",
    "port",
    "positive",
    "print_result",
    "push",
    "quiet_default",
    "seconds",
    "serve_until_signalled",
    "size",
    "write",
]

# Heavy modules are imported in the handlers that use them (see qoe.cli).

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROFILE_HELP = "emulated network: a built-in name (see qoe netem profiles) or a profile file"


class HelpFormatter(argparse.HelpFormatter):
    """Ends each option's help with its default, ``(default 10)``, written once here so no
    help text can go stale when a default changes.

    Only a default that says something is shown: not None, False, an empty string or list
    (an option that is simply off or absent), nor in a help text that already explains its
    default in words, as ``(default: the kind)`` does for a default computed later.
    ``argparse.ArgumentDefaultsHelpFormatter`` would print ``(default: None)`` and
    ``(default: 10.0)``; this prints floats as given (``10``, ``0.5``).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help, default = action.help or "", action.default
        if quiet_default(default):
            return action.help
        if "(default" in help:
            return help
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        return f"{help} (default {shown.replace('%', '%%')})"


def quiet_default(default: object) -> bool:
    """True for a default that says nothing in ``--help``: None, False (an option that is
    off), an empty string or list (absent), or argparse's SUPPRESS."""
    return default is None or default is False or default is argparse.SUPPRESS or default in ("", [])


class RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """:class:`HelpFormatter` that keeps the description's own line breaks (``qoe --help``'s
    list of first commands)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2, and whose help shows
    each option's default (:class:`HelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port_number(text: str, *, free: bool) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    lowest = 0 if free else 1
    if not lowest <= value <= 65535:
        what = "0 (any free one)" if free else "1"
        raise argparse.ArgumentTypeError(f"a port is from {what} to 65535, got {value}")
    return value


def port(text: str) -> int:
    """A port to reach a server on: 1-65535. Checked here so a port out of range is a usage
    error at parse time, not an ``OverflowError`` from the socket layer."""
    return _port_number(text, free=False)


def listen_port(text: str) -> int:
    """A port to listen on: 1-65535, or 0 for any free one (the command prints the port it
    got, so 0 is only for servers whose start-up line names it)."""
    return _port_number(text, free=True)


def _host_port(text: str, *, free: bool) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"put an IPv6 host in brackets, as [::1]:PORT, got {text!r}")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, _port_number(port_text, free=free)


def address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) to reach, as ``(host, port)``; port 1-65535."""
    return _host_port(text, free=False)


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` to listen on, as ``(host, port)``; port 0 takes any free one."""
    return _host_port(text, free=True)


def at_least_one(text: str) -> int:
    """A count that must be at least 1 (processes, probes at once): 0 or less is refused
    rather than read as "not given"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 320 or height < 180 or width % 2 or height % 2 or width > 3840 or height > 2160:
        raise argparse.ArgumentTypeError(f"size must be even, from 320x180 to 3840x2160, got {text}")
    return width, height


def kbps(text: str) -> int:
    """A video bit rate in kbit/s, 50 to 20000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of kbit/s, got {text!r}") from None
    if not 50 <= value <= 20_000:
        raise argparse.ArgumentTypeError(f"must be from 50 to 20000 kbit/s, got {text}")
    return value


def add_knobs(parser: argparse.ArgumentParser, *, freeze: bool = True) -> None:
    group = parser.add_argument_group("ground-truth knobs (the host injects exactly these)")
    group.add_argument(
        "--av-offset",
        type=seconds,
        default=0.0,
        metavar="S",
        help="audio ahead of video by S seconds, -5..5 (negative: behind; ITU-R BT.1359 sign);"
        " probes measure +-3 s and report more as out of range",
    )
    if freeze:
        group.add_argument(
            "--freeze-every",
            type=positive,
            metavar="S",
            help="stop sending video at every multiple of S seconds of wall time...",
        )
        group.add_argument(
            "--freeze-for",
            type=positive,
            default=None,
            metavar="S",
            help="...for S seconds each time",
        )
        group.add_argument(
            "--quality-drop-every",
            type=positive,
            metavar="S",
            help="starve the video encoder (its coarsest quantizer: about 31 dB PSNR at 640x360 "
            "against 38 at 500 kbit/s) at every multiple of S seconds of wall time...",
        )
        group.add_argument(
            "--quality-drop-for",
            type=positive,
            default=None,
            metavar="S",
            help="...for S seconds each time (probes see the dips in video.quality)",
        )
    group.add_argument(
        "--delay",
        type=seconds,
        default=0.0,
        metavar="S",
        help="extra one-way delay before media leaves, seconds",
    )
    group.add_argument(
        "--mute-every",
        type=positive,
        metavar="S",
        help="send no audio at every multiple of S seconds of wall time...",
    )
    group.add_argument(
        "--mute-for",
        type=positive,
        default=None,
        metavar="S",
        help="...for S seconds each time (viewers count the gaps in audio.dropouts)",
    )
    if not freeze:  # a co-host publisher's own knobs
        group.add_argument(
            "--echo-gain",
            type=float,
            default=0.0,
            metavar="G",
            help="leak G (0..1, amplitude) of the host's test signal back into the audio, as an "
            "open loudspeaker would (0.3: an echo return loss of 10.5 dB); for --cohost",
        )
        group.add_argument(
            "--echo-delay",
            type=seconds,
            default=0.0,
            metavar="S",
            help="...S seconds (0..1) after the host's signal on the shared wall clock",
        )
    if freeze:  # a room's knob: a publisher has no signaling answer to hold
        group.add_argument(
            "--join-delay",
            type=seconds,
            default=0.0,
            metavar="S",
            help="hold each WHEP answer S seconds, as a slow signaling server would",
        )
        group.add_argument(
            "--chat-delay",
            type=seconds,
            default=0.0,
            metavar="S",
            help="hold each chat message S seconds before broadcasting it",
        )
        group.add_argument(
            "--cohost-offset",
            type=seconds,
            default=0.0,
            metavar="S",
            help="delay a co-host's media S seconds behind the host's (in the mix and its own tracks)",
        )
        group.add_argument(
            "--cohost-echo",
            type=float,
            default=0.0,
            metavar="G",
            help="leak G (0..1, amplitude) of the host's audio into a co-host's, as its open "
            "loudspeaker would...",
        )
        group.add_argument(
            "--cohost-echo-delay",
            type=seconds,
            default=0.0,
            metavar="S",
            help="...S seconds (0..1) after the host sent it",
        )
        group.add_argument(
            "--cohost-noise-db",
            type=float,
            metavar="DB",
            help="add white noise to a co-host's audio, DB (0..60) below the marker tone's power "
            "(the co-host's audio.snr_db then reads about DB)",
        )
        group.add_argument(
            "--chat-drop-every",
            type=int,
            default=0,
            metavar="N",
            help="drop every Nth chat message the room receives; 0 drops none",
        )


def knobs_from(args: argparse.Namespace) -> Any:
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
        quality_drop_every=getattr(args, "quality_drop_every", None),
        quality_drop_for=getattr(args, "quality_drop_for", None) or 0.0,
        mute_every=getattr(args, "mute_every", None),
        mute_for=getattr(args, "mute_for", None) or 0.0,
        echo_gain=getattr(args, "echo_gain", 0.0),
        echo_delay=getattr(args, "echo_delay", 0.0),
        cohost_echo_gain=getattr(args, "cohost_echo", 0.0),
        cohost_echo_delay=getattr(args, "cohost_echo_delay", 0.0),
        cohost_noise_db=getattr(args, "cohost_noise_db", None),
    )


def print_result(result: Any, as_json: bool) -> int:
    if as_json:
        print(result.to_json(indent=2))
    else:
        print(results_table([result]))
        if (note := host_note([result])) is not None:
            print(note)
    if not result.success:
        error = result.error
        print(f"qoe: probe failed: {error.kind}: {error.message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


INCIDENT_HELP = (
    "for a failed run, write an incident bundle into a new folder under DIR: the SDP offer and "
    "answer, every signaling request and answer (secrets masked), the event log and the result, "
    "to attach to a ticket with the server's vendor"
)


def save_incident(directory: Path | None, result: Any, log: Any) -> None:
    """Write ``result``'s incident bundle under ``directory`` if it failed (and a directory
    was given), saying where on stderr; a directory that cannot be written is a usage error."""
    if directory is None or result.success or log is None:
        return
    from qoe.incident import save_incident as save

    try:
        folder = save(directory, result, log)
    except OSError as exc:
        raise ConfigError(f"--save-incident {directory}: {exc.strerror or exc}") from exc
    print(f"qoe: incident of {result.probe} saved in {folder}", file=sys.stderr)


async def push(gateway: str | None, results: list[Any], instance: str | None = None) -> int:
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


async def serve_until_signalled(server: Any, host: str, port: int, banner: Callable[[], str]) -> int:
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


def write(path: str | None, text: str) -> None:
    if path:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
