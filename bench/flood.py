"""Flood: what a burst of bad or abandoned requests costs the room and the exporter, and
whether a real viewer still watches through it.

Starts ``qoe room`` and ``qoe serve`` (probing the room), starts one normal WHEP viewer of
the demo room, and while it watches sends at once:

- ``--whip`` invalid WHIP offers, each to a new room name (refused with 400; a refused offer
  makes no room, sim/room/limits.py);
- ``--whep`` real WHEP offers whose ICE is never completed (201 up to 250 viewers a room,
  then 503 with Retry-After; each session ends after 15 s unconnected);
- ``--chat`` chat messages from one client (beyond 50 a second dropped and counted);
- ``--scrapes`` concurrent ``/probe`` scrapes of the exporter (beyond its limit of runs at
  once answered 503 with Retry-After).

It prints each flood's answers by status, the room's chat counts, both servers' RSS, fds and
threads before, at their peak and after (once the abandoned sessions expired), and the
viewer's result, which must be a success: exit 1 if it is not, if any answer was a 5xx
other than the bounds' 503, or if a server died.

    python bench/flood.py
    python bench/flood.py --whip 100 --whep 50 --chat 1000 --scrapes 20   # a short one
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiortc import RTCPeerConnection
from soak import proc_figures, start

from probes import ProbeSpec, run_probe
from probes.webrtc.peer import candidate_addresses, rtc_configuration
from qoe import looplag

SDP = {"Content-Type": "application/sdp"}
BAD_SDP = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
FLEET = """\
[fleet]
duration = 2
interval = 3600
[[targets]]
name = "room"
url = "{url}/whep/demo"
"""
EXPIRY = 15.0 + 6.0
"""The room's connect limit (sim.room.limits.RoomLimits.connect_seconds) and a margin."""


async def offer() -> str:
    """A real receive-only WHEP offer, as aiortc makes it; its ICE is never answered."""
    pc = RTCPeerConnection(rtc_configuration())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    with candidate_addresses(("127.0.0.1",)):
        await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def posts(
    http: aiohttp.ClientSession, urls: list[str], body: str, headers: dict[str, str], at_once: int
) -> collections.Counter[int]:
    statuses: collections.Counter[int] = collections.Counter()
    gate = asyncio.Semaphore(at_once)

    async def one(url: str) -> None:
        async with gate:
            try:
                async with http.post(url, data=body, headers=headers) as r:
                    await r.read()
                    statuses[r.status] += 1
            except aiohttp.ClientError:
                statuses[0] += 1

    await asyncio.gather(*(one(u) for u in urls))
    return statuses


async def chat_flood(url: str, count: int) -> None:
    """``count`` messages from one client, as fast as it can send them (over one WebSocket:
    the room's answer is what it counts, in its chat figures)."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{url.replace('http', 'ws')}/chat/demo") as ws,
    ):
        for i in range(count):
            await ws.send_json({"i": i, "text": "flood"})
            if i % 500 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0.5)


async def scrapes(exporter: str, count: int) -> collections.Counter[int]:
    statuses: collections.Counter[int] = collections.Counter()
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "5"}
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def one() -> None:
            try:
                async with http.get(f"{exporter}/probe?target=room", headers=headers) as r:
                    await r.read()
                    statuses[r.status] += 1
            except (aiohttp.ClientError, TimeoutError):
                statuses[0] += 1

        await asyncio.gather(*(one() for _ in range(count)))
    return statuses


async def run(args: argparse.Namespace) -> int:
    looplag.settle_heap()
    room, url = start(["room", "--port", "0"], r"serving (http://\S+)")
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Path(tmp) / "flood.toml"
        fleet.write_text(FLEET.format(url=url))
        serve, exporter = start(
            ["serve", "--fleet", str(fleet), "--port", "0"], r"metrics on (http://\S+)/metrics"
        )
        try:
            return await flood(args, room, url, serve, exporter)
        finally:
            for proc in (serve, room):
                proc.terminate()
                proc.wait(timeout=15)


async def flood(
    args: argparse.Namespace,
    room: subprocess.Popen[str],
    url: str,
    serve: subprocess.Popen[str],
    exporter: str,
) -> int:
    pids = {"room": room.pid, "exporter": serve.pid}
    before = {name: proc_figures(pid, name) for name, pid in pids.items()}
    peak: dict[str, float] = {}
    whep_offer = await offer()

    async def watch_peaks(stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name, pid in pids.items():
                for key, value in proc_figures(pid, name).items():
                    peak[key] = max(peak.get(key, 0.0), value)
            await asyncio.sleep(0.25)

    stop = asyncio.Event()
    peaks = asyncio.create_task(watch_peaks(stop))
    viewer = asyncio.create_task(
        run_probe(ProbeSpec(url=f"{url}/whep/demo", kind="whep", duration=args.viewer_seconds, name="viewer"))
    )
    await asyncio.sleep(2.0)  # the viewer joins first: then the flood comes while it watches
    began = time.monotonic()
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as http:
        floods = {
            "invalid WHIP offers": posts(
                http, [f"{url}/whip/flood-{i}" for i in range(args.whip)], BAD_SDP, SDP, 50
            ),
            "WHEP offers never completed": posts(http, [f"{url}/whep/demo"] * args.whep, whep_offer, SDP, 50),
            "/probe scrapes": scrapes(exporter, args.scrapes),
        }
        chat_sent = asyncio.create_task(chat_flood(url, args.chat))
        answers = dict(zip(floods, await asyncio.gather(*floods.values()), strict=True))
        await chat_sent
    took = time.monotonic() - began
    result = await viewer
    async with aiohttp.ClientSession() as http, http.get(f"{url}/rooms/demo") as r:
        chat = (await r.json())["chat"]
    print(f"flood sent in {took:.1f} s while a viewer watched the demo room for {args.viewer_seconds:g} s")
    for name, statuses in answers.items():
        counts = ", ".join(f"{status or 'no answer'}: {n}" for status, n in sorted(statuses.items()))
        print(f"  {name:<28} {sum(statuses.values()):>6}  {counts}")
    print(
        f"  chat messages from one client {args.chat:>6}  received {chat['received']}, "
        f"dropped as a flood {chat['flood_drops']}, "
        f"as slow readers {chat['slow_drops']}"
    )
    await asyncio.sleep(max(0.0, EXPIRY - (time.monotonic() - began)))  # abandoned sessions end
    stop.set()
    await peaks
    after = {name: proc_figures(pid, name) for name, pid in pids.items()}
    async with aiohttp.ClientSession() as http, http.get(f"{url}/stats") as r:
        stats = await r.json()
    print()
    print(
        f"{'':<10}  {'RSS MB before':>13}  {'peak':>6}  {'after':>6}  {'fds before':>10}  {'peak':>5}  "
        f"{'after':>5}  {'threads before':>14}  {'peak':>5}  {'after':>5}"
    )
    for name in pids:
        b, p, a = (
            before[name],
            {k[len(name) + 1 :]: v for k, v in peak.items() if k.startswith(name)},
            after[name],
        )
        b, a = {k[len(name) + 1 :]: v for k, v in b.items()}, {k[len(name) + 1 :]: v for k, v in a.items()}
        print(
            f"{name:<10}  {b['rss_mb']:>13.1f}  {p['rss_mb']:>6.1f}  {a['rss_mb']:>6.1f}  "
            f"{b['fds']:>10.0f}  {p['fds']:>5.0f}  {a['fds']:>5.0f}  "
            f"{b['threads']:>14.0f}  {p['threads']:>5.0f}  {a['threads']:>5.0f}"
        )
    print(
        f"room after the flood: {stats['rooms']} rooms, {stats['sessions']} sessions, {stats['tasks']} tasks"
    )
    e = result.error
    print(
        f"viewer during the flood: {'ok' if result.success else 'FAILED'}"
        + (f" ({e.kind}: {e.message})" if e else "")
        + f", join {1000 * (result.join.total_seconds or 0):.0f} ms, {result.video.frames or 0} frames, "
        f"{result.video.freeze_count or 0} freezes ({result.video.freeze_seconds or 0:.2f} s), "
        f"g2g p50 {1000 * (result.latency.glass_to_glass_seconds['p50'] or 0):.0f} ms"
    )
    problems = []
    if not result.success:
        problems.append("the viewer failed during the flood")
    for name, statuses in answers.items():
        if any(s >= 500 and s != 503 for s in statuses) or statuses.get(0):
            problems.append(f"{name}: answers other than the bounds' ({dict(statuses)})")
    for proc, name in ((room, "room"), (serve, "exporter")):
        if proc.poll() is not None:
            problems.append(f"the {name} died (exit {proc.returncode})")
    if args.summary:
        summary = {
            "answers": {name: dict(s) for name, s in answers.items()},
            "chat": chat,
            "before": before,
            "peak": peak,
            "after": after,
            "stats_after": stats,
            "viewer": json.loads(result.to_json()),
            "problems": problems,
        }
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--whip", type=int, default=1000, help="invalid WHIP POSTs to new room names")
    parser.add_argument("--whep", type=int, default=500, help="WHEP offers never completed")
    parser.add_argument("--chat", type=int, default=10000, help="chat messages from one client")
    parser.add_argument("--scrapes", type=int, default=100, help="concurrent /probe scrapes of the exporter")
    parser.add_argument("--viewer-seconds", type=float, default=20.0, help="the normal viewer's watch time")
    parser.add_argument("--summary", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
