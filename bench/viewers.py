"""Benchmark: CPU per WHEP viewer probe, and how many viewers one core holds without freezes.

The room runs in its own process pinned to one core; the viewers run in this process pinned
to the other, so each side's CPU is measured on its own. N grows until a viewer sees a freeze
the room did not inject (the room has no knobs set, so every freeze is the probe's own
lateness), a probe fails, or glass-to-glass p50 rises 50 ms over the single viewer's: a
saturated core shows as a growing backlog before it shows as freezes.

    python bench/viewers.py                     # steps 1 5 10 20 30 40 50, 10 s each
    python bench/viewers.py --steps 10 20 --duration 15
    python bench/viewers.py --quality off       # without picture-quality scoring (default: 2/s)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from common import (
    LATENCY_SLACK_MS,
    Column,
    cpu_seconds_of,
    header,
    own_cpu_seconds,
    room,
    row,
    viewer_figures,
)

from probes import probe_spec, run_probe
from qoe import looplag

ROOM_CORE, PROBE_CORE = 1, 0


COLUMNS: list[Column] = [
    ("viewers", "viewers", 7, 0),
    ("failed", "failed", 6, 0),
    ("probe core %", "probe_core_pct", 12, 1),
    ("per viewer %", "per_viewer_pct", 12, 2),
    ("room core %", "room_core_pct", 11, 1),
    ("freezes", "freezes", 7, 0),
    ("frozen", "frozen_viewers", 6, 0),
    ("g2g p50 ms", "g2g_p50_ms", 10, 0),
    ("join max ms", "join_max_ms", 11, 0),
]


async def step(url: str, room_pid: int, viewers: int, duration: float, quality: str) -> dict[str, float]:
    specs = [
        probe_spec(url, kind="whep", duration=duration, name=f"v{i}", options={"quality": quality})
        for i in range(viewers)
    ]
    cpu0, room0, t0 = own_cpu_seconds(), cpu_seconds_of(room_pid), time.monotonic()
    results = await asyncio.gather(*(run_probe(s) for s in specs))
    wall = time.monotonic() - t0
    cpu, room_cpu = own_cpu_seconds() - cpu0, cpu_seconds_of(room_pid) - room0
    return {
        "viewers": viewers,
        "probe_core_pct": 100 * cpu / wall,
        "per_viewer_pct": 100 * cpu / wall / viewers,
        "room_core_pct": 100 * room_cpu / wall,
        **viewer_figures(results),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 5, 10, 20, 30, 40, 50])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--quality", default="2", help="frames a second each viewer scores for picture quality (or all, off)"
    )
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("bench needs two cores (room on one, viewers on the other)", file=sys.stderr)
        return 2
    with room("--renditions", "1") as (server, url):
        os.sched_setaffinity(server.pid, {ROOM_CORE})
        os.sched_setaffinity(0, {PROBE_CORE})
        print(header(COLUMNS))
        baseline, held = None, 0
        for n in args.steps:
            r = await step(f"{url}/whep/demo", server.pid, n, args.duration, args.quality)
            baseline = r["g2g_p50_ms"] if baseline is None else baseline
            print(row(COLUMNS, r))
            lagging = r["g2g_p50_ms"] > baseline + LATENCY_SLACK_MS
            if r["frozen_viewers"] or r["failed"] or lagging:
                why = "freezes" if r["frozen_viewers"] else "failures" if r["failed"] else "latency"
                print(f"{n} viewers: {why} the room did not cause; one core held {held} viewers")
                break
            held = n
        else:
            print(f"one core held every step, up to {held} viewers")
    return 0


if __name__ == "__main__":
    looplag.settle_heap()  # as the qoe commands do before timing media
    sys.exit(asyncio.run(main()))
