"""What the benchmarks share: CPU readings and the table they print."""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping, Sequence

__all__ = ["LATENCY_SLACK_MS", "Column", "cpu_seconds_of", "header", "own_cpu_seconds", "row"]

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
