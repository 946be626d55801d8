"""A short soak (bench/soak.py) in the suite: the room and the exporter under a few churning
viewers for half a minute, then checked for what is left once every viewer has left.

A minute tells little of RSS, which in its first minutes follows the allocator's warm-up
more than any leak (bench/soak.py's hour-long run holds it to 10 %); so here RSS may grow
by 25 % while everything countable may not grow at all: open fds and threads (a slack of 2,
for a socket closing late), the room's event-loop tasks and its sessions. A session, a
task or a socket that outlives its viewer shows in under a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_bench

pytestmark = pytest.mark.slow(seconds=65)

SCRIPT, ARGS = "soak.py", "--minutes 0.5 --warmup 10 --viewers 4 --watch 2 6 --rss-bound 0.25 --slack 2"


def test_a_short_soak_leaves_nothing_behind(tmp_path: Path) -> None:
    summary = tmp_path / "soak.json"
    done, figures = run_bench(SCRIPT, ARGS, summary, timeout=240)
    assert done.returncode == 0, done.stdout + "\n".join(figures["problems"])
    base, end = figures["base"], figures["end"]
    assert end["room_sessions"] == 0 and end["room_tasks"] <= base["room_tasks"]
    for name in ("room", "exporter"):
        assert end[f"{name}_fds"] <= base[f"{name}_fds"] + 2, (name, base, end)
        assert end[f"{name}_threads"] <= base[f"{name}_threads"] + 2, (name, base, end)
        assert end[f"{name}_rss_mb"] < 1.25 * base[f"{name}_rss_mb"], (name, base, end)
    # The viewers did churn, and the exporter answered Prometheus throughout.
    assert figures["runs"] >= 8 and not figures["failed"], figures
    assert figures["scrapes_failed"] == 0
