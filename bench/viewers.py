"""Benchmark: viewers per core, for decoding and light WHEP viewers side by side.

The room runs in its own process pinned to one core; the viewers run pinned to the other,
so each side's CPU is measured on its own. For each decode mode (``full``, ``sample``,
``none``; docs/METRICS.md) N grows until a viewer sees a freeze the room did not inject (the
room has no knobs set, so every freeze is the probe's own lateness), a probe fails, or
glass-to-glass p50 rises 50 ms over the mode's first step (a step whose room fell behind says
so, with its loop stalls: a freeze those cause is the server's): a saturated core shows as a
growing backlog before it shows as freezes. Viewers join one every 0.05 s, as ``qoe fleet
run`` starts them; CPU and RSS are read once all have joined (steady state). Each step runs
in a process of its own against a fresh room, so its RSS per viewer is its own, and no step
inherits the room's garbage from the one before. A step whose room core was 95 % busy says
so: its limit is the room's, not the viewers'.

``--chromium N`` also watches the room with N pages of one headless Chromium (each a WHEP
player, as the tests drive it) and prints Chromium's CPU per page, and each mode's CPU per
viewer as a share of it.

    python bench/viewers.py                                   # every mode, 20 s steps
    python bench/viewers.py --modes none --steps 200 300 --duration 30
    python bench/viewers.py --chromium 4
    python bench/viewers.py --modes full --quality 2          # full viewers scoring pictures
    python bench/viewers.py --remb 0                          # light viewers estimate bandwidth

Light viewers send a fixed bandwidth estimate (their ``remb`` option, :data:`REMB` bit/s,
above the room's bitrate) instead of aiortc's delay-based one: a dense fleet on loopback
measures the probes' cost, not the path's congestion.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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
START_INTERVAL = 0.05
"""Seconds between two viewers' joins (``qoe fleet run``'s pace within a process)."""
STEPS = {"full": [10, 20, 30, 40, 50], "sample": [50, 100, 150, 200], "none": [100, 150, 200, 250, 300]}
REMB = 2_000_000
"""Bit/s of the fixed bandwidth estimate light viewers send (``--remb``; 0: estimate)."""
ROOM_ARGS = ("--renditions", "1")
"""The room every step watches: one rendition, its default picture."""
ROOM_BOUND = 95.0
"""Room core % at which a step's limit is the room's."""

COLUMNS: list[Column] = [
    ("viewers", "viewers", 7, 0),
    ("failed", "failed", 6, 0),
    ("probe core %", "probe_core_pct", 12, 1),
    ("per viewer %", "per_viewer_pct", 12, 3),
    ("RSS/viewer MB", "rss_per_viewer_mb", 13, 2),
    ("room core %", "room_core_pct", 11, 1),
    ("freezes", "freezes", 7, 0),
    ("frozen", "frozen_viewers", 6, 0),
    ("overloaded", "overloaded", 10, 0),
    ("unflagged", "unflagged", 9, 0),
    ("g2g p50 ms", "g2g_p50_ms", 10, 0),
    ("worst GC ms", "gc_max_ms", 11, 0),
    ("room stalls", "room_stalls", 11, 0),
    ("join max ms", "join_max_ms", 11, 0),
]


class GcPauses:
    """The longest full pass of the garbage collector since :meth:`reset`: each holds the
    event loop, so one of 100 ms or more is a freeze for every viewer in the process at once."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif info["generation"] == 2:
            self.worst = max(self.worst, time.perf_counter() - self._started)

    def reset(self) -> None:
        self.worst = 0.0


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def step(
    url: str,
    room_pid: int,
    mode: str,
    viewers: int,
    duration: float,
    quality: str,
    remb: float,
    pauses: GcPauses,
) -> dict[str, float]:
    """``viewers`` viewers joining one every START_INTERVAL, each watching ``duration`` s."""
    base_rss = rss_mb()
    pauses.reset()
    began = time.time()
    options: dict[str, object] = {"decode": mode, "quality": quality}
    if mode != "full" and remb > 0:
        options["remb"] = remb

    async def one(i: int) -> object:
        await asyncio.sleep(i * START_INTERVAL)
        spec = probe_spec(url, kind="whep", duration=duration, name=f"v{i}", options=options)
        return await run_probe(spec)

    runs = [asyncio.create_task(one(i)) for i in range(viewers)]
    await asyncio.sleep(viewers * START_INTERVAL + 2)  # all joined: the steady state
    cpu0, room0, t0 = own_cpu_seconds(), cpu_seconds_of(room_pid), time.monotonic()
    await asyncio.sleep(max(1.0, duration - 3))
    wall = time.monotonic() - t0
    cpu, room_cpu = own_cpu_seconds() - cpu0, cpu_seconds_of(room_pid) - room0
    rss = rss_mb() - base_rss
    results = await asyncio.gather(*runs)
    stalls = await asyncio.to_thread(room_stalls, url.split("/whep/")[0], began)
    return {
        "viewers": viewers,
        "probe_core_pct": 100 * cpu / wall,
        "per_viewer_pct": 100 * cpu / wall / viewers,
        "rss_per_viewer_mb": max(0.0, rss) / viewers,
        "room_core_pct": 100 * room_cpu / wall,
        **viewer_figures(results),  # type: ignore[arg-type]
        "gc_max_ms": 1000 * pauses.worst,
        "room_stalls": stalls,
    }


def room_stalls(base: str, since: float) -> int:
    """Times the room's event loop fell over 100 ms behind since ``since`` (Unix seconds): a
    freeze they cause is the server's, which a viewer rightly counts."""
    with urllib.request.urlopen(f"{base}/rooms/demo", timeout=5) as answer:
        return sum(1 for s in json.load(answer)["loop_stalls"] if s["at"] >= since)


async def run_mode(
    url: str, room_pid: int, mode: str, steps: list[int], duration: float, quality: str, remb: float
) -> None:
    """One mode's steps, in this process (the child's side): a JSON line per step."""
    os.sched_setaffinity(0, {PROBE_CORE})
    pauses = GcPauses()
    for n in steps:
        figures = await step(f"{url}/whep/demo", room_pid, mode, n, duration, quality, remb, pauses)
        print(json.dumps(figures), flush=True)


def step_in_child(mode: str, viewers: int, args: argparse.Namespace) -> dict[str, float]:
    """One step in a fresh room and a process of its own: a room's collector reclaims the
    peers one step left behind while the next one watches, in full passes that stall it, and
    a process's heap keeps what its earlier viewers made."""
    with room(*ROOM_ARGS) as (server, url):
        os.sched_setaffinity(server.pid, {ROOM_CORE})
        command = [sys.executable, __file__, "--child", url, str(server.pid), mode]
        command += ["--duration", str(args.duration), "--quality", args.quality, "--remb", str(args.remb)]
        done = subprocess.run(
            [*command, "--steps", str(viewers)], stdout=subprocess.PIPE, text=True, check=True
        )
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


def mode_steps(mode: str, steps: list[int], args: argparse.Namespace) -> dict[str, float]:
    """Run ``mode``'s steps in turn, printing each, until one does not hold; its best step that
    held."""
    print(f"\n{mode}:\n{header(COLUMNS)}", flush=True)
    baseline, held, best = None, 0, {"viewers": 0.0, "per_viewer_pct": float("nan"), "rss_per_viewer_mb": 0.0}
    verdict = f"one core held every step, up to {steps[-1]} viewers"
    for n in steps:
        r = step_in_child(mode, n, args)
        print(row(COLUMNS, r), flush=True)
        baseline = r["g2g_p50_ms"] if baseline is None else baseline
        lagging = r["g2g_p50_ms"] > baseline + LATENCY_SLACK_MS
        if r["frozen_viewers"] or r["failed"] or lagging:
            why = "freezes" if r["frozen_viewers"] else "failures" if r["failed"] else "latency"
            bound = " (the room's core was saturated)" if r["room_core_pct"] >= ROOM_BOUND else ""
            if r["room_stalls"]:
                bound += f", though the room's loop stalled {r['room_stalls']:.0f} times"
            verdict = f"{r['viewers']:.0f} viewers: {why} the room did not cause{bound}; one core held {held}"
            break
        held, best = int(r["viewers"]), r
    room_bound = best.get("room_core_pct", 0.0) >= ROOM_BOUND
    print(
        f"{mode}: {verdict}"
        + (" (the room's core was saturated)" if room_bound and "every" in verdict else "")
    )
    return {"held": held, **{k: v for k, v in best.items() if k != "viewers"}}


async def chromium_cpu(url: str, pages: int, seconds: float) -> float:
    """Per page, the share of a core one headless Chromium took to play the room in ``pages``
    pages at once (its processes' CPU, read once every page plays)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.browser import Chromium, joined  # the tests' own driver

    with tempfile.TemporaryDirectory() as tmp:
        async with Chromium(Path(tmp)) as browser:
            opened = [await browser.new_page() for _ in range(pages)]
            async with contextlib.AsyncExitStack() as stack:
                sessions = [await stack.enter_async_context(joined(p, f"{url}/whep/demo")) for p in opened]
                if any(s.state != "connected" for s in sessions):
                    raise SystemExit(f"chromium did not connect: {[s.state for s in sessions]}")
                await asyncio.sleep(3)
                assert browser.proc is not None
                group = os.getpgid(browser.proc.pid)
                cpu0, t0 = group_cpu(group), time.monotonic()
                await asyncio.sleep(seconds)
                return 100 * (group_cpu(group) - cpu0) / (time.monotonic() - t0) / pages


def group_cpu(group: int) -> float:
    """CPU seconds of every process in a process group."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getpgid(int(pid)) == group:
                    total += cpu_seconds_of(int(pid))
            except (OSError, IndexError, ValueError):
                continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--steps", type=int, nargs="+", help="viewer counts (default: per mode)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--quality", default="off", help="frames a second full viewers score (default off)")
    parser.add_argument(
        "--remb",
        type=float,
        default=REMB,
        help=f"light viewers' fixed REMB, bit/s (default {REMB}; 0: estimate)",
    )
    parser.add_argument("--chromium", type=int, default=0, metavar="N", help="also measure N Chromium pages")
    parser.add_argument("--child", nargs=3, metavar=("URL", "ROOM_PID", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        looplag.keep_heap_settled()  # as a fleet worker does
        url, pid, mode = args.child
        asyncio.run(run_mode(url, int(pid), mode, args.steps, args.duration, args.quality, args.remb))
        return 0
    if (os.cpu_count() or 1) < 2:
        print("bench needs two cores (room on one, viewers on the other)", file=sys.stderr)
        return 2
    summary: dict[str, dict[str, float]] = {}
    for mode in args.modes:
        summary[mode] = mode_steps(mode, args.steps or STEPS[mode], args)
    browser = None
    if args.chromium:
        with room(*ROOM_ARGS) as (server, url):
            os.sched_setaffinity(server.pid, {ROOM_CORE})
            os.sched_setaffinity(0, {PROBE_CORE})
            browser = asyncio.run(chromium_cpu(url, args.chromium, args.duration))
    print(
        "\nmode     viewers held   CPU/viewer %   RSS/viewer MB"
        + ("   share of a Chromium page" if browser else "")
    )
    for mode, s in summary.items():
        share = f"   {s['per_viewer_pct'] / browser:.3f}" if browser else ""
        print(
            f"{mode:<8} {s['held']:>12.0f} {s['per_viewer_pct']:>14.3f} "
            f"{s['rss_per_viewer_mb']:>15.2f}{share}"
        )
    if browser:
        print(
            f"chromium: {browser:.2f} % of a core per page ({args.chromium} pages of one headless Chromium)"
        )
    return 0


if __name__ == "__main__":
    looplag.settle_heap()  # as the qoe commands do before timing media
    sys.exit(main())
