"""The ``qoe`` command: argument parsing only; the work lives in the modules it calls.

Exit codes: 0 all went well, 1 a probe failed (or, later, an SLO was breached), 2 a usage or
configuration error. Expected failures print one line on stderr and no traceback.

Only what every command needs is imported at the top. Probes, the room, the fleet, the
exporter, :mod:`qoe.media` and the proxy are imported inside the handlers that use them:
they load aiortc, PyAV or aiohttp, about half a second that ``qoe --help``, ``qoe replay``
or ``qoe netem profiles`` would otherwise pay; the analytics also need the ``[impact]``
extra. tests/test_layers.py checks that ``import qoe.cli`` loads none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence

from qoe import __version__, looplag
from qoe.cli import fleet, probing, servers, tools
from qoe.cli.common import EXIT_FAILED, EXIT_USAGE, Parser, RawDescriptionHelpFormatter
from qoe.errors import ConfigError

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
Live-stream QoE monitor and simulator: synthetic viewers and hosts that join rooms, measure
join time, freezes, glass-to-glass latency and A/V sync, and report them.

Start here:
  qoe demo                         room + host + 3 viewers in one process, prints a table
  qoe room --port 8080             the embedded live room (WHIP in; WHEP, FLV, HLS out) until Ctrl-C
  qoe probe http://127.0.0.1:8080/flv/demo.flv   the room as an HTTP-FLV player gets it
  qoe rtmp-server                  nginx-rtmp on loopback, for qoe publish/probe rtmp://...
  qoe probe http://127.0.0.1:8080/whep/demo --duration 10
  qoe publish http://127.0.0.1:8080/whip/myroom --duration 30
  qoe probe ws://127.0.0.1:8080/chat/demo   chat echo latency
  qoe fleet run examples/fleet.toml --junit junit.xml    SLO gates for CI
  qoe serve --fleet examples/fleet.toml     Prometheus exporter on :9464
  qoe netem profiles                        weak networks for --profile
  qoe impact sessions.parquet               what QoE costs in drop-off and return visits

Each command explains itself: qoe COMMAND --help.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="qoe", description=DESCRIPTION, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"qoe {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output: -v for info, -vv for debug"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    probing.add_commands(sub)
    tools.add_commands(sub)
    fleet.add_commands(sub)
    servers.add_commands(sub)
    return parser


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        # aiortc and aioice log every decode hiccup and ICE check; the probe reports what matters.
        for name in ("aiortc", "aioice"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _settle_heap(modules: Sequence[str]) -> None:
    """The process's garbage-collector policy, for commands that time real media (their
    parser's ``media``: the modules the command runs). What those load lives as long as the
    process, so it is loaded now and frozen out of the collector's full passes, which would
    otherwise hold the event loop long enough to make a freeze (see
    :func:`qoe.looplag.settle_heap`)."""
    for module in modules:
        importlib.import_module(module)
    looplag.settle_heap()


FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""Write errors that say the output has no room, rather than that the command is broken."""

MEDIA_THREADS_GRACE = 6.0
"""Seconds the process waits at exit for media threads still inside FFmpeg (a reader blocked
in a read ends within the media timeout, 5 s by default)."""


def _exit_when_media_threads_end(code: int) -> int:
    """Return ``code`` once no media thread of ours (``qoe-*``: FFmpeg readers and writers) is
    left, or end the process at once if one is still inside FFmpeg after the grace period.

    Such threads are daemons, so a probe never waits on a server that stopped answering; but
    Python's shutdown frees what a thread still running C code may touch, and a thread that
    comes back from FFmpeg into a finalising interpreter can crash the process (seen: an HLS
    viewer's reader, slowed by a busy machine, killed ``qoe probe`` with SIGSEGV after its
    table was printed). Everything the command had to say is flushed first.
    """
    deadline = time.monotonic() + MEDIA_THREADS_GRACE
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and thread.name.startswith("qoe-"):
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and t.name.startswith("qoe-") for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if getattr(args, "media", None):
        _settle_heap(args.media)
        if getattr(args, "refreeze_heap", False):  # a fleet's viewers: see looplag.keep_heap_settled
            looplag.keep_heap_settled()
    sub_command = (
        getattr(args, "fleet_command", None)
        or getattr(args, "netem_command", None)
        or getattr(args, "audience_command", None)
    )
    command = " ".join(c for c in (args.command, sub_command) if c)
    try:
        return _exit_when_media_threads_end(int(asyncio.run(args.handler(args))))
    except ConfigError as exc:
        print(f"qoe {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (qoe ... | head): say nothing more, and keep Python from
        # complaining about the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        if exc.errno not in FULL_DISK:
            raise
        # Standard output redirected to a file on a full disk (qoe probe --json > result.json):
        # a usage error in one line, as for the files the commands write themselves.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"qoe {command}: error: cannot write the output: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
