"""What the benchmarks share: CPU readings and the table they print."""

from __future__ import annotations

import os
import re
import resource
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from qoe.result import ProbeResult

__all__ = [
    "LATENCY_SLACK_MS",
    "Column",
    "cpu_seconds_of",
    "failure_reasons",
    "header",
    "own_cpu_seconds",
    "room",
    "row",
    "viewer_figures",
]

LATENCY_SLACK_MS = 50
"""A saturated probe core shows first as a backlog: glass-to-glass rising over the 1-viewer
baseline by more than this counts as not holding, before any freeze appears."""

Column = tuple[str, str, int, int]
"""title, key, width, decimals."""


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, its threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def header(columns: Sequence[Column]) -> str:
    return "  ".join(f"{title:>{width}}" for title, _, width, _ in columns)


def row(columns: Sequence[Column], figures: Mapping[str, float]) -> str:
    return "  ".join(f"{figures[key]:>{width}.{digits}f}" for _, key, width, digits in columns)


def viewer_figures(results: Sequence[ProbeResult]) -> dict[str, float]:
    """What a step of viewers showed: failures, freezes, glass-to-glass and join, in ms."""
    ok = [r for r in results if r.success]
    freezes = [r.video.freeze_count or 0 for r in ok]
    g2g = [g for r in ok if (g := r.latency.glass_to_glass_seconds["p50"]) is not None]
    joins = sorted(r.join.total_seconds or 0.0 for r in ok)
    nan = float("nan")
    return {
        "failed": len(results) - len(ok),
        "freezes": sum(freezes),
        "frozen_viewers": sum(1 for f in freezes if f),
        "overloaded": sum(1 for r in results if r.probe_host.overloaded),
        # A run that froze on a host it did not flag: a freeze a reader could take for the
        # stream's own. It is honest only where the server stalled (the room's stalls say).
        "unflagged": sum(1 for r in ok if (r.video.freeze_count or 0) > 0 and not r.probe_host.overloaded),
        "g2g_p50_ms": 1000 * statistics.median(g2g) if g2g else nan,
        "g2g_max_ms": 1000 * max(g2g) if g2g else nan,
        "join_max_ms": 1000 * joins[-1] if joins else nan,
        "join_p95_ms": 1000 * joins[int(0.95 * (len(joins) - 1))] if joins else nan,
    }


def failure_reasons(results: Sequence[ProbeResult]) -> str:
    """The failed runs' error kinds, most frequent first (``"-"`` if none failed)."""
    kinds = Counter(r.error.kind if r.error is not None else "unknown" for r in results if not r.success)
    return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) or "-"


ROOM_WITH_VIEWERS = """\
import functools, sys
import sim.room.server
from qoe.cli import main
sim.room.server.RoomLimits = functools.partial(
    sim.room.server.RoomLimits, sessions_per_room=int(sys.argv.pop(1))
)
sys.exit(main())
"""
"""``qoe room`` holding more viewers than its default limit (``qoe room`` has no flag for it)."""


@contextmanager
def room(*args: str, viewers: int | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``qoe room --port 0 ARGS`` in a process of its own: the process and the URL it serves,
    until the block ends (then it is stopped). Exits if the room does not start. ``viewers``:
    the room's limit of viewers, when more than its default is wanted."""
    launch = ["-m", "qoe"] if viewers is None else ["-c", ROOM_WITH_VIEWERS, str(viewers)]
    proc = subprocess.Popen(
        [sys.executable, *launch, "room", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        found = re.search(r"serving (\S+)", proc.stdout.readline())
        if found is None:
            raise SystemExit("qoe room did not start")
        yield proc, found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
