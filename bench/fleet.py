"""Benchmark: a fleet of WHEP viewers against the embedded room, as a user runs it.

Starts ``qoe room`` and then ``qoe fleet run`` with N viewer runs at ``--concurrency N``,
both unpinned on this machine's cores, and reports what the fleet cost and whether it held:
wall time, CPU of the fleet (its worker processes included) and of the room, freezes, and
glass-to-glass. The room has no knobs set, so any freeze, or glass-to-glass rising over a
lone viewer's by more than the slack, is the machine failing to keep up, not the stream.
Who fell behind shows too: runs whose own event loop ran over 100 ms late (the probes'
host, ``probe_host.overloaded``) and the room's loop stalls over 100 ms (``loop_stalls``).

    python bench/fleet.py                       # 50 viewers, 20 s each, all at once
    python bench/fleet.py --viewers 80 --duration 30 --room-size 320x180
    python bench/fleet.py --viewers 500 --decode none   # light viewers (docs/METRICS.md)
    python bench/fleet.py --viewers 200 300 --decode none --room-size 320x180 --room-bitrate 200

Light viewers send a fixed bandwidth estimate (``remb``, ``--remb`` bit/s, above the room's
bitrate) in place of aiortc's delay-based one. A run that froze without its host saying it was
overloaded is counted apart (``unflagged``): unless the room stalled, that would be a wrong
figure, where one flagged overloaded is an honest "this host could not tell". Failed runs are
counted by error kind. The room's limit of viewers is raised to the largest fleet.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    failure_reasons,
    header,
    room,
    row,
    viewer_figures,
)

from qoe.result import ProbeResult

COLUMNS: list[Column] = [
    ("viewers", "viewers", 7, 0),
    ("failed", "failed", 6, 0),
    ("wall s", "wall", 6, 1),
    ("fleet cores", "fleet_cores", 11, 2),
    ("room cores", "room_cores", 10, 2),
    ("per viewer %", "per_viewer_pct", 12, 2),
    ("freezes", "freezes", 7, 0),
    ("frozen", "frozen_viewers", 6, 0),
    ("overloaded", "overloaded", 10, 0),
    ("unflagged", "unflagged", 9, 0),
    ("room stalls", "room_stalls", 11, 0),
    ("g2g p50 ms", "g2g_p50_ms", 10, 0),
    ("g2g max ms", "g2g_max_ms", 10, 0),
    ("join p95 ms", "join_p95_ms", 11, 0),
    ("max RSS MB", "rss_mb", 10, 0),
]

FLEET = """\
slos = ["success min >= 1", "video.freeze_count max <= 0"]
[fleet]
duration = {duration}
count = {count}
profiles = ["none"]
[[targets]]
name = "bench"
url = "{url}/whep/demo"
{options}
"""


REMB = 2_000_000
"""Bit/s of the fixed bandwidth estimate light viewers send (``--remb``; 0: estimate)."""


def measure(
    url: str,
    room_pid: int,
    viewers: int,
    duration: float,
    workdir: Path,
    decode: str | None = None,
    remb: float = 0.0,
) -> tuple[dict[str, float], str]:
    """Run the fleet and add the room's CPU over the same time to its figures; also why runs
    failed."""
    room_cpu, t0, began = cpu_seconds_of(room_pid), time.monotonic(), time.time()
    figures, reasons = run_fleet(url, viewers, duration, workdir, decode, remb)
    figures["room_cores"] = (cpu_seconds_of(room_pid) - room_cpu) / (time.monotonic() - t0)
    with urllib.request.urlopen(f"{url}/rooms/demo", timeout=5) as answer:
        stalls = json.load(answer)["loop_stalls"]
    figures["room_stalls"] = sum(1 for s in stalls if s["at"] >= began)
    return figures, reasons


def run_fleet(
    url: str, viewers: int, duration: float, workdir: Path, decode: str | None = None, remb: float = 0.0
) -> tuple[dict[str, float], str]:
    fleet, results = workdir / f"fleet{viewers}.toml", workdir / f"results{viewers}.jsonl"
    fixed = f", remb = {remb:.0f}.0" if decode in ("sample", "none") and remb > 0 else ""
    options = f'options = {{ decode = "{decode}", quality = "off"{fixed} }}' if decode else ""
    fleet.write_text(FLEET.format(duration=duration, count=viewers, url=url, options=options))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    command = ["qoe", "fleet", "run", str(fleet), "--json-out", str(results), "--concurrency", str(viewers)]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode == 2:
        raise SystemExit(f"qoe fleet run failed: {done.stderr.strip().splitlines()[-1]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    probes = [ProbeResult.from_dict(json.loads(line)) for line in results.read_text().splitlines()]
    figures = {
        "viewers": viewers,
        "wall": wall,
        "fleet_cores": cpu / wall,
        "per_viewer_pct": 100 * cpu / wall / viewers,
        "rss_mb": after.ru_maxrss / 1024,
        **viewer_figures(probes),
    }
    return figures, failure_reasons(probes)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", type=int, nargs="+", default=[50], help="fleet sizes to run, in turn")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each viewer watches")
    parser.add_argument("--room-size", default=None, help="the room's picture, e.g. 320x180")
    parser.add_argument("--room-bitrate", type=int, default=None, help="the room's video kbit/s")
    parser.add_argument("--renditions", type=int, default=None, help="the room's renditions")
    parser.add_argument(
        "--remb",
        type=float,
        default=REMB,
        help=f"light viewers' fixed REMB, bit/s (default {REMB}; 0: estimate)",
    )
    parser.add_argument(
        "--decode",
        choices=("full", "sample", "none"),
        help="the viewers' decode mode (default: full, scoring)",
    )
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; room and fleet share them", flush=True)
    room_args = ["--size", args.room_size] if args.room_size else []
    room_args += ["--bitrate", str(args.room_bitrate)] if args.room_bitrate else []
    room_args += ["--renditions", str(args.renditions)] if args.renditions else []
    print(f"room: {' '.join(room_args) or 'defaults'}", flush=True)
    # The room's own limit of viewers (250) would refuse a fleet beyond it: raised to the
    # largest fleet, so what fails is the machine, not the room's bound.
    with tempfile.TemporaryDirectory() as tmp:
        with room(*room_args) as (server, url):
            baseline, _ = measure(url, server.pid, 1, min(args.duration, 10.0), Path(tmp))
        print(header(COLUMNS))
        print(row(COLUMNS, baseline), flush=True)
        for viewers in args.viewers:
            # A fresh room for each fleet: a room's collector reclaims the peers one fleet left
            # behind while the next one watches, in full passes that stall it (150 ms after 500
            # viewers left), and those stalls would be charged to the next fleet.
            with room(*room_args, viewers=max(viewers, 250)) as (server, url):
                figures, reasons = measure(
                    url, server.pid, viewers, args.duration, Path(tmp), args.decode, args.remb
                )
            print(row(COLUMNS, figures), flush=True)
            lagging = figures["g2g_max_ms"] > baseline["g2g_p50_ms"] + LATENCY_SLACK_MS
            held = not (figures["frozen_viewers"] or figures["failed"] or lagging)
            verdict = "held" if held else "did not hold"
            print(
                f"{viewers} viewers {verdict}: {figures['frozen_viewers']:.0f} froze, "
                f"{figures['failed']:.0f} failed, glass-to-glass at most "
                f"{figures['g2g_max_ms']:.0f} ms against a lone viewer's "
                f"{baseline['g2g_p50_ms']:.0f} ms; "
                f"{figures['overloaded']:.0f} runs flagged their host overloaded, "
                f"{figures['unflagged']:.0f} froze without that flag, "
                f"{figures['room_stalls']:.0f} room stalls; failures: {reasons}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
