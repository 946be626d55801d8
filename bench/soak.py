"""Soak: the room and the exporter under churning viewers for a stated time, watched for leaks.

Starts ``qoe room`` (its host at 320x180, so the viewers' decoding stays cheap) and ``qoe
serve`` probing it every 10 s, then runs ``--viewers`` WHEP viewers that each join, watch
3-15 s (``--watch``) and leave, again and again (``decode=False``: they skip reading the
test signal, the lightest a probe gets, since aiortc still decodes the VP8; 50 fit beside
the servers on two cores), while Prometheus's part is played by a ``/metrics`` and a
``/probe`` scrape every sample. Every 10 s it samples each server process from /proc: RSS,
open file descriptors and threads; the room's event-loop tasks and sessions come from its
``/stats``. The exporter has no such count of tasks (it serves Prometheus metrics only), so
for it fds, threads and RSS stand alone.

Leaks show as what is left once everyone has left, so the run is cut in three:

1. warm-up (``--warmup`` seconds): viewers churn while caches, thread pools and the
   allocator's arenas fill;
2. quiet: every viewer leaves, the servers settle, and a baseline is sampled;
3. soak: viewers churn for the rest of ``--minutes``, then leave, and the servers settle again.

It fails (exit 1) when, from that baseline to the end: RSS grew by ``--rss-bound`` (10 %) or
more; or open fds, threads or the room's tasks or sessions grew at all (a slack of
``--slack`` for fds and threads, which a socket closing late or a pool worker may hold). It
prints the table of samples and each figure's growth per hour, fitted over the soak's
samples by least squares.

    python bench/soak.py                          # 60 minutes, 50 viewers
    python bench/soak.py --minutes 5 --viewers 20 --warmup 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from probes import ProbeSpec, run_probe
from qoe import looplag

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_EVERY = 10.0
SETTLE = 6.0
"""Seconds the servers get, once every viewer left, before a quiet sample: the room's DELETE
handling and aiortc's transport shutdown."""
FLEET = """\
[fleet]
duration = 3
interval = 10
profiles = ["none"]
[[targets]]
name = "soak"
url = "{url}/whep/demo"
"""


@dataclass
class Sample:
    at: float
    phase: str
    viewers: int
    figures: dict[str, float] = field(default_factory=dict)


def proc_figures(pid: int, prefix: str) -> dict[str, float]:
    """RSS (MB), open fds and threads of process ``pid``, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return {
        f"{prefix}_rss_mb": rss_kb / 1024,
        f"{prefix}_fds": len(os.listdir(f"/proc/{pid}/fd")),
        f"{prefix}_threads": threads,
    }


def get(url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
        return bytes(r.read())


def start(args: list[str], banner: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "qoe", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    match = re.search(banner, proc.stdout.readline())
    if match is None:
        proc.kill()
        raise SystemExit(f"qoe {args[0]} did not start")
    return proc, match.group(1)


class Soak:
    def __init__(
        self, room: subprocess.Popen[str], room_url: str, serve: subprocess.Popen[str], exporter: str
    ):
        self.room, self.room_url, self.serve, self.exporter = room, room_url, serve, exporter
        self.samples: list[Sample] = []
        self.viewing = 0
        self.runs = 0
        self.failed: dict[str, int] = {}
        self.scrapes_failed = 0

    def sample(self, phase: str) -> Sample:
        s = Sample(time.monotonic(), phase, self.viewing)
        s.figures.update(proc_figures(self.room.pid, "room"))
        s.figures.update(proc_figures(self.serve.pid, "exporter"))
        stats = json.loads(get(f"{self.room_url}/stats"))
        s.figures["room_tasks"], s.figures["room_sessions"] = stats["tasks"], stats["sessions"]
        self.samples.append(s)
        return s

    async def viewer(self, rng: random.Random, stop: asyncio.Event, watch: tuple[float, float]) -> None:
        """Join, watch a while, leave; again until ``stop``, which lets the run going finish:
        a cancelled run may skip its DELETE, and the room would hold its session until ICE
        consent runs out, which no leak check should count."""
        while not stop.is_set():
            spec = ProbeSpec(
                url=f"{self.room_url}/whep/demo", kind="whep", duration=rng.uniform(*watch), decode=False
            )
            self.viewing += 1
            try:
                result = await run_probe(spec)
            finally:
                self.viewing -= 1
            self.runs += 1
            if not result.success and result.error is not None:
                self.failed[result.error.kind] = self.failed.get(result.error.kind, 0) + 1
            await asyncio.sleep(rng.uniform(0.0, 2.0))

    async def churn(
        self, viewers: int, seconds: float, phase: str, seed: int, watch: tuple[float, float]
    ) -> None:
        """``viewers`` churning viewers for ``seconds``, sampling (and scraping) every 10 s."""
        stop = asyncio.Event()
        rng = random.Random(seed)
        tasks = [
            asyncio.create_task(self.viewer(random.Random(rng.random()), stop, watch)) for _ in range(viewers)
        ]
        end = time.monotonic() + seconds
        try:
            while (left := end - time.monotonic()) > 0:
                await asyncio.sleep(min(SAMPLE_EVERY, left))
                await asyncio.to_thread(self.scrape)
                print(self.row(self.sample(phase)), flush=True)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    def scrape(self) -> None:
        """What Prometheus does each interval: /metrics, and one /probe of the room."""
        try:
            get(f"{self.exporter}/metrics")
            get(f"{self.exporter}/probe?target=soak", 8, {"X-Prometheus-Scrape-Timeout-Seconds": "4"})
        except OSError:
            self.scrapes_failed += 1

    async def quiet(self, phase: str) -> Sample:
        """A sample once every viewer has left and the exporter's own probe of the room (one
        run of 3 s every 10 s) is between runs: then nothing should hold anything."""
        await asyncio.sleep(SETTLE)
        deadline = time.monotonic() + 2 * SAMPLE_EVERY
        while time.monotonic() < deadline:
            if json.loads(get(f"{self.room_url}/stats"))["sessions"] == 0:
                await asyncio.sleep(0.5)  # the exporter's probe closing its side too
                if json.loads(get(f"{self.room_url}/stats"))["sessions"] == 0:
                    break
            await asyncio.sleep(0.2)
        sample = self.sample(phase)
        print(self.row(sample), flush=True)
        return sample

    COLUMNS: ClassVar[list[tuple[str, str, int, int]]] = [
        ("room RSS MB", "room_rss_mb", 11, 1),
        ("room fds", "room_fds", 8, 0),
        ("room thr", "room_threads", 8, 0),
        ("room tasks", "room_tasks", 10, 0),
        ("sessions", "room_sessions", 8, 0),
        ("exp RSS MB", "exporter_rss_mb", 10, 1),
        ("exp fds", "exporter_fds", 7, 0),
        ("exp thr", "exporter_threads", 7, 0),
    ]

    def header(self) -> str:
        return f"{'t s':>6}  {'phase':<7}  {'viewing':>7}  " + "  ".join(
            f"{title:>{width}}" for title, _, width, _ in self.COLUMNS
        )

    def row(self, s: Sample) -> str:
        t = s.at - self.samples[0].at if self.samples else 0.0
        return f"{t:>6.0f}  {s.phase:<7}  {s.viewers:>7}  " + "  ".join(
            f"{s.figures[key]:>{width}.{digits}f}" for _, key, width, digits in self.COLUMNS
        )


def per_hour(samples: list[Sample], key: str) -> float:
    """Least-squares slope of ``key`` over the samples' times, per hour."""
    if len(samples) < 2:
        return float("nan")
    xs = [s.at for s in samples]
    ys = [s.figures[key] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def judge(soak: Soak, base: Sample, end: Sample, rss_bound: float, slack: int) -> list[str]:
    """What grew beyond its bound from the quiet baseline to the quiet end (empty: none)."""
    problems = []
    for name in ("room", "exporter"):
        rss0, rss1 = base.figures[f"{name}_rss_mb"], end.figures[f"{name}_rss_mb"]
        if rss1 >= rss0 * (1 + rss_bound):
            problems.append(f"{name} RSS grew {100 * (rss1 / rss0 - 1):.1f} % ({rss0:.1f} -> {rss1:.1f} MB)")
        for what in ("fds", "threads"):
            a, b = base.figures[f"{name}_{what}"], end.figures[f"{name}_{what}"]
            if b > a + slack:
                problems.append(f"{name} {what} grew from {a:.0f} to {b:.0f}")
    for what in ("tasks", "sessions"):
        a, b = base.figures[f"room_{what}"], end.figures[f"room_{what}"]
        if b > a:
            problems.append(f"room {what} grew from {a:.0f} to {b:.0f}")
    return problems


async def run(args: argparse.Namespace) -> int:
    looplag.settle_heap()
    room, room_url = start(["room", "--port", "0", "--size", "320x180"], r"serving (http://\S+)")
    with tempfile.TemporaryDirectory() as tmp:
        fleet = Path(tmp) / "soak.toml"
        fleet.write_text(FLEET.format(url=room_url))
        serve, exporter = start(
            ["serve", "--fleet", str(fleet), "--port", "0"], r"metrics on (http://\S+)/metrics"
        )
        try:
            soak = Soak(room, room_url, serve, exporter)
            total = args.minutes * 60
            main = total - args.warmup
            if main < 2 * SAMPLE_EVERY:
                raise SystemExit("--minutes must leave at least 20 s after --warmup")
            print(
                f"soak: {args.viewers} churning viewers, {args.warmup:g} s warm-up then {main:g} s; "
                f"room pid {room.pid}, exporter pid {serve.pid}; a sample every {SAMPLE_EVERY:g} s",
                flush=True,
            )
            print(soak.header())
            print(soak.row(soak.sample("start")), flush=True)
            watch = (args.watch[0], args.watch[1])
            await soak.churn(args.viewers, args.warmup, "warm-up", args.seed, watch)
            base = await soak.quiet("base")
            await soak.churn(args.viewers, main, "soak", args.seed + 1, watch)
            end = await soak.quiet("end")
        finally:
            for proc in (serve, room):
                proc.terminate()
                proc.wait(timeout=15)

    soaked = [s for s in soak.samples if s.phase in ("base", "soak", "end")]
    print()
    print(f"growth per hour over the soak ({len(soaked)} samples, {soaked[-1].at - soaked[0].at:.0f} s):")
    for _, key, _, _ in Soak.COLUMNS:
        a, b = base.figures[key], end.figures[key]
        print(f"  {key:<17} {per_hour(soaked, key):>+9.1f}/h   quiet base {a:8.1f}  quiet end {b:8.1f}")
    print(
        f"{soak.runs} viewer runs, failed: {soak.failed or 'none'}; "
        f"scrapes that failed: {soak.scrapes_failed}"
    )
    problems = judge(soak, base, end, args.rss_bound, args.slack)
    summary = {
        "base": base.figures,
        "end": end.figures,
        "per_hour": {key: per_hour(soaked, key) for _, key, _, _ in Soak.COLUMNS},
        "runs": soak.runs,
        "failed": soak.failed,
        "scrapes_failed": soak.scrapes_failed,
        "problems": problems,
    }
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
    for problem in problems:
        print(f"LEAK? {problem}")
    print("held: no growth beyond the bounds" if not problems else "did not hold")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="whole run, warm-up included (default 60)"
    )
    parser.add_argument("--viewers", type=int, default=50, help="churning viewers at once (default 50)")
    parser.add_argument(
        "--warmup", type=float, default=120.0, help="seconds before the baseline (default 120)"
    )
    parser.add_argument("--rss-bound", type=float, default=0.10, help="RSS growth that fails (default 0.10)")
    parser.add_argument("--slack", type=int, default=4, help="fds and threads a quiet server may hold over")
    parser.add_argument(
        "--watch",
        type=float,
        nargs=2,
        default=[3.0, 15.0],
        metavar=("MIN", "MAX"),
        help="seconds each viewer watches, drawn between MIN and MAX (default 3 15)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the viewers' watch and pause times")
    parser.add_argument("--summary", metavar="FILE", help="also write the figures and verdict as JSON")
    args = parser.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
