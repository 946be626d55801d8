"""``qoe rtmp-server``: a real RTMP server to publish to and probe, for the RTMP half of the tour."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from qoe.cli.common import EXIT_FAILED, EXIT_OK
from qoe.errors import ConfigError

__all__ = ["add_commands"]

# Heavy modules are imported in the handlers that use them (see qoe.cli).


def port(text: str) -> int:
    """A TCP port a server can listen on; nginx reports no port it picked, so no 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535, got {value}")
    return value


def add_commands(sub: Any) -> None:
    """Add this family's commands to the ``qoe`` subparsers ``sub``."""
    rtmp = sub.add_parser(
        "rtmp-server",
        help="run nginx-rtmp on loopback: RTMP ingest and play, HLS, until Ctrl-C",
        description="Run nginx with its RTMP module in the foreground until Ctrl-C or SIGTERM: publish "
        "to rtmp://HOST:RTMP-PORT/live/STREAM (qoe publish), watch the same URL or the HLS nginx cuts "
        "(1 s fragments) at http://HOST:HTTP-PORT/hls/STREAM.m3u8 (qoe probe); /stat lists the streams. "
        "Needs the Debian packages nginx and libnginx-mod-rtmp (scripts/bootstrap.sh --servers "
        "installs them).",
    )
    rtmp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    rtmp.add_argument("--rtmp-port", type=port, default=1935, metavar="PORT", help="RTMP port (default 1935)")
    rtmp.add_argument(
        "--http-port",
        type=port,
        default=8081,
        metavar="PORT",
        help="HTTP port of the HLS and /stat (default 8081; the room's examples use 8080)",
    )
    rtmp.add_argument(
        "--dir",
        metavar="DIR",
        help="where nginx keeps its config, logs and HLS fragments, kept on exit "
        "(default a new temporary directory, removed on exit)",
    )
    rtmp.set_defaults(handler=_cmd_rtmp_server)


async def _cmd_rtmp_server(args: argparse.Namespace) -> int:
    from sim.room.nginx import NginxRtmp

    if args.rtmp_port == args.http_port:
        raise ConfigError(f"--rtmp-port and --http-port must differ, both are {args.rtmp_port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.ExitStack() as cleanup:
        directory = Path(args.dir or cleanup.enter_context(tempfile.TemporaryDirectory(prefix="qoe-rtmp-")))
        server = NginxRtmp(directory, host=args.host, rtmp_port=args.rtmp_port, http_port=args.http_port)
        # nginx's start and stop block (a subprocess, polled), so they run beside the loop.
        await asyncio.to_thread(server.start)
        try:
            print(
                f"qoe rtmp-server: nginx-rtmp serving on {args.host}\n"
                f"  publish and play RTMP: {server.rtmp_url('STREAM')}\n"
                f"  watch as HLS: {server.hls_url('STREAM')}\n"
                f"  statistics (streams and clients, XML): {server.stat_url}\n"
                f"  nginx pid {server.pid}, its files in {server.directory}\n"
                "  Ctrl-C stops it",
                flush=True,
            )
            # A server that died must not look like one still serving.
            while not stop.is_set() and server.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            if not stop.is_set():
                print(
                    f"qoe rtmp-server: nginx exited with code {server.returncode}: {server.failure()}",
                    file=sys.stderr,
                )
                return EXIT_FAILED
        finally:
            await asyncio.to_thread(server.stop)
    return EXIT_OK
