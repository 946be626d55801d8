"""Benchmark: CPU per RTMP viewer probe (demux + H.264/AAC decode + reading the test signal),
and how many viewers one core holds.

nginx-rtmp and the publisher of the test signal (640x360 at 30 fps, H.264 + AAC, our
RtmpPublisher in a process of its own) run pinned to one core; the viewers run in this
process pinned to the other, so their CPU is measured on its own (user + system time of this
process over the step's wall time). N grows until a viewer sees a freeze the publisher did
not inject or a probe fails. Glass-to-glass p50 is watched too: it rises with N before any
freeze, as viewer threads wait for the GIL and the core, and a probe's render clock keeps the
largest lateness it has seen (see probes/ffmpeg/playout.py); the first N at which it is
50 ms over the single viewer's is reported, not taken as the limit.

    python bench/ffmpeg.py                      # steps 1 5 10 20 30 40, 8 s each
    python bench/ffmpeg.py --steps 10 20 --duration 10 --no-signal
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import LATENCY_SLACK_MS, Column, header, own_cpu_seconds, row, viewer_figures

from probes import ProbeSpec, run_probe
from qoe import looplag

SERVER_CORE, PROBE_CORE = 1, 0
STREAM = "bench"

COLUMNS: list[Column] = [
    ("viewers", "viewers", 7, 0),
    ("failed", "failed", 6, 0),
    ("probe core %", "probe_core_pct", 12, 1),
    ("per viewer %", "per_viewer_pct", 12, 2),
    ("freezes", "freezes", 7, 0),
    ("frozen", "frozen_viewers", 6, 0),
    ("g2g p50 ms", "g2g_p50_ms", 10, 0),
    ("join max ms", "join_max_ms", 11, 0),
    ("threads", "threads", 7, 0),
]


async def step(url: str, viewers: int, duration: float, signal: bool) -> dict[str, float]:
    import threading

    specs = [
        ProbeSpec(url=url, kind="rtmp", duration=duration, name=f"v{i}", decode=signal, join_timeout=5)
        for i in range(viewers)
    ]
    cpu0, t0 = own_cpu_seconds(), time.monotonic()
    tasks = [asyncio.create_task(run_probe(s)) for s in specs]
    await asyncio.sleep(duration / 2)
    threads = sum(1 for t in threading.enumerate() if t.name.startswith("qoe-ffmpeg"))
    results = await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    cpu = own_cpu_seconds() - cpu0
    return {
        "viewers": viewers,
        "probe_core_pct": 100 * cpu / wall,
        "per_viewer_pct": 100 * cpu / wall / viewers,
        "threads": threads,
        **viewer_figures(results),
    }


async def publish_forever(url: str) -> None:
    """The publisher process: our RtmpPublisher until killed."""
    from probes.ffmpeg import RtmpPublisher

    async with RtmpPublisher(url):
        await asyncio.Event().wait()


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20, 30, 40])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--no-signal", action="store_true", help="decode only: do not read the test signal")
    parser.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        await publish_forever(args.publish)
        return 0
    if (os.cpu_count() or 1) < 2:
        print("bench needs two cores (server and publisher on one, viewers on the other)", file=sys.stderr)
        return 2
    from tests.servers import nginx_rtmp

    with tempfile.TemporaryDirectory() as tmp, nginx_rtmp(Path(tmp)) as nginx:
        url = nginx.rtmp_url(STREAM)
        publisher = subprocess.Popen([sys.executable, __file__, "--publish", url], stdin=subprocess.DEVNULL)
        try:
            nginx_pids = [int((Path(tmp) / "nginx.pid").read_text())]
            nginx_pids += [
                int(p)
                for p in subprocess.run(
                    ["pgrep", "-P", str(nginx_pids[0])], capture_output=True, text=True
                ).stdout.split()
            ]
            for pid in [publisher.pid, *nginx_pids]:
                os.sched_setaffinity(pid, {SERVER_CORE})
            os.sched_setaffinity(0, {PROBE_CORE})
            await asyncio.to_thread(nginx.wait_publishing, STREAM)
            what = "decode only" if args.no_signal else "decode + test signal"
            print(
                f"RTMP viewers of one 640x360 30 fps H.264 + AAC stream ({what}), {args.duration:g} s steps"
            )
            print(header(COLUMNS))
            baseline, held, lagging_from = None, 0, None
            for n in args.steps:
                r = await step(url, n, args.duration, not args.no_signal)
                baseline = r["g2g_p50_ms"] if baseline is None else baseline
                print(row(COLUMNS, r), flush=True)
                if lagging_from is None and r["g2g_p50_ms"] > baseline + LATENCY_SLACK_MS:
                    lagging_from = n
                if r["frozen_viewers"] or r["failed"]:
                    why = "freezes" if r["frozen_viewers"] else "failures"
                    print(f"{n} viewers: {why} the publisher did not cause; one core held {held} viewers")
                    break
                held = n
            else:
                print(f"one core held every step, up to {held} viewers")
            if lagging_from is not None:
                slack = LATENCY_SLACK_MS
                print(f"glass-to-glass p50 was {slack} ms over one viewer's from {lagging_from} viewers")
        finally:
            publisher.terminate()
            publisher.wait(timeout=10)
    return 0


if __name__ == "__main__":
    looplag.settle_heap()  # as the qoe commands do before timing media
    sys.exit(asyncio.run(main()))
