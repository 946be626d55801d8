"""Benchmark: datagrams per second one core pushes through the shaper and the UDP proxy.

Both paths run a profile with 10 ms one-way delay each way (every datagram waits in the
scheduler and leaves on a timer, the costly case) and no loss. The far end is a separate
process (an echo, or a traffic generator plus echo), so the CPU measured here, this
process's user + system time from ``getrusage``, is the path's own:

- **shaper**: an asyncio datagram endpoint shaped as an aiortc peer's sockets are
  (:mod:`sim.shaper.aioice_hook`), sending ``--rate`` datagrams/s to an echo and receiving
  the echoes; every datagram passes the shaper twice (uplink, then downlink). The same run
  without shaping gives the baseline; the difference is the shaper's own cost.
- **proxy**: a :class:`~sim.proxy.UdpProxy` relaying ``--rate`` datagrams/s from the
  generator to an echo and back (two relayed datagrams per round trip).

Datagrams per CPU-second is what one core would push at 100 %; a 500 kbit/s stream (video
plus audio) is about 100 datagrams/s, which gives the streams column. With uvloop importable
(``pip install uvloop``; not a project dependency) every path also runs on it.

    python bench/netem.py                       # 4000 datagrams/s for 3 s per case
    python bench/netem.py --rate 8000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.netem import LinkConfig
from sim.profiles import Profile
from sim.proxy import UdpProxy
from sim.shaper import Scheduler, Shaper
from sim.shaper.aioice_hook import _ShapedEndpoint

STREAM_PPS = 100
"""Datagrams per second of one 500 kbit/s audio + video stream."""
SIZE = 1200
PROFILE = Profile("bench", "10 ms each way", "bench", LinkConfig(delay=0.01), LinkConfig(delay=0.01))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the far end (a separate process) ------------------------------------------------------


def peer_main(mode: str, rate: float, seconds: float) -> None:
    """``echo``: echo datagrams until stdin closes. ``drive``: also send ``rate``/s to the
    address read from stdin for ``seconds``, and count what comes back."""
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    echo.setblocking(False)
    print(echo.getsockname()[1], flush=True)
    if mode == "echo":
        watch = [echo, sys.stdin]
        while True:
            ready, _, _ = select.select(watch, [], [])
            if sys.stdin in ready and not sys.stdin.readline():
                return
            _drain(echo, echo=True)
    host, port = sys.stdin.readline().split()
    target = (host, int(port))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    payload = bytes(SIZE)
    sent = received = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        due = min(int((now - start) * rate), int(seconds * rate))
        while sent < due:
            with contextlib.suppress(BlockingIOError):
                client.sendto(payload, target)
            sent += 1
        if now > end + 0.5:
            break
        select.select([echo, client], [], [], 0.001)
        _drain(echo, echo=True)
        received += _drain(client, echo=False)
    print(json.dumps({"sent": sent, "received": received}), flush=True)


def _drain(sock: socket.socket, echo: bool) -> int:
    count = 0
    while True:
        try:
            data, addr = sock.recvfrom(65535)
        except BlockingIOError:
            return count
        count += 1
        if echo:
            with contextlib.suppress(BlockingIOError):
                sock.sendto(data, addr)


def start_peer(mode: str, rate: float, seconds: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "_peer", mode, str(rate), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


# -- the measured paths --------------------------------------------------------------------


class _App(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1


async def shaper_case(rate: float, seconds: float, shaped: bool) -> dict[str, Any]:
    """Send ``rate``/s through one (shaped) endpoint to an echo; CPU per datagram."""
    proc, port = start_peer("echo", rate, seconds)
    loop = asyncio.get_running_loop()
    app = _App()
    shaper = Shaper(PROFILE, np.random.default_rng(1)) if shaped else None
    if shaper is not None:
        _ShapedEndpoint(app, shaper)
    transport, _ = await loop.create_datagram_endpoint(lambda: app, local_addr=("127.0.0.1", 0))
    await asyncio.sleep(0.05)
    payload = bytes(SIZE)
    target = ("127.0.0.1", port)
    pacer = Scheduler()
    total = int(rate * seconds)
    start = time.monotonic() + 0.01
    sent = 0

    def send(i: int) -> None:
        nonlocal sent
        app.transport.sendto(payload, target)
        sent += 1
        if i + 1 < total:
            pacer.at(start + (i + 1) / rate, send, i + 1)

    cpu0 = cpu_seconds()
    pacer.at(start, send, 0)
    await asyncio.sleep(seconds + 0.3)
    cpu = cpu_seconds() - cpu0
    transport.close()
    pacer.close()
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    datagrams = sent + app.received
    result: dict[str, Any] = {
        "datagrams": datagrams,
        "lost": sent - app.received,
        "cpu": cpu,
        "cpu_per_datagram": cpu / datagrams if datagrams else float("nan"),
    }
    if shaper is not None:
        stats = shaper.stats()
        result["p50_ms"] = _ms(stats["uplink"]["scheduling_error"], "p50")
        result["p99_ms"] = _ms(stats["uplink"]["scheduling_error"], "p99")
        shaper.close()
    return result


async def proxy_case(rate: float, seconds: float) -> dict[str, Any]:
    """Relay ``rate``/s each way through a UdpProxy; CPU per relayed datagram."""
    proc, port = start_peer("drive", rate, seconds)
    async with UdpProxy(("127.0.0.1", 0), ("127.0.0.1", port), PROFILE, np.random.default_rng(1)) as proxy:
        cpu0 = cpu_seconds()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(" ".join(map(str, proxy.address)) + "\n")
        proc.stdin.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        cpu = cpu_seconds() - cpu0
        peer = json.loads(line)
        stats = proxy.stats()
    proc.stdin.close()
    proc.wait(timeout=10)
    relayed = stats["uplink"]["delivered"] + stats["downlink"]["delivered"]
    return {
        "datagrams": relayed,
        "lost": peer["sent"] - peer["received"],
        "cpu": cpu,
        "cpu_per_datagram": cpu / relayed if relayed else float("nan"),
        "p50_ms": _ms(stats["downlink"]["scheduling_error"], "p50"),
        "p99_ms": _ms(stats["downlink"]["scheduling_error"], "p99"),
    }


def _ms(summary: dict[str, Any], key: str) -> float:
    value = summary.get(key)
    return float("nan") if value is None else value * 1e3


def loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_peer":
        peer_main(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=4000.0, help="datagrams/s offered")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each case")
    args = parser.parse_args()

    rows = []
    for loop_name, factory in loop_factories().items():
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("unshaped endpoint", lambda: shaper_case(args.rate, args.seconds, shaped=False)),
            ("shaped endpoint", lambda: shaper_case(args.rate, args.seconds, shaped=True)),
            ("udp proxy", lambda: proxy_case(args.rate, args.seconds)),
        ]
        results = {}
        for name, case in cases:
            with asyncio.Runner(loop_factory=factory) as runner:
                results[name] = runner.run(case())
        base = results["unshaped endpoint"]["cpu_per_datagram"]
        shaped = results["shaped endpoint"]["cpu_per_datagram"]
        results["shaper alone"] = {"cpu_per_datagram": max(shaped - base, 1e-9)}
        for name in ("unshaped endpoint", "shaped endpoint", "shaper alone", "udp proxy"):
            r = results[name]
            pps = 1.0 / r["cpu_per_datagram"]
            rows.append(
                (
                    loop_name,
                    name,
                    f"{r['cpu_per_datagram'] * 1e6:.1f}",
                    f"{pps:,.0f}",
                    f"{pps / STREAM_PPS:,.0f}",
                    f"{r['lost']}" if "lost" in r else "",
                    f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}" if "p50_ms" in r else "",
                )
            )
    head = ("loop", "path", "us/datagram", "datagrams/s/core", "500k streams", "lost", "sched ms")
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    print(f"offered {args.rate:g} datagrams/s for {args.seconds:g} s; 10 ms delay each way")
    for row in [head, *rows]:
        print("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
