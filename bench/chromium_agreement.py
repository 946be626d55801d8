"""Benchmark: does the probe count freezes as Chromium does, watching the same room at once?

Each run starts a fresh Chromium session in the room (a page of one headless Chromium,
driven over the DevTools protocol), waits until it plays, then runs ``qoe probe`` beside it
and reads Chromium's ``getStats()`` at the start and end of the probe's own watch window:
both count over the same seconds. The room's JSON gives the freezes its host injected in
that window (the ground truth). Cases:

- **clean**: no knobs, no impairment;
- **freezes**: ``--freeze-every 3 --freeze-for 0.5``;
- **lossy-wifi**, **slow-3g**: the same injected freezes, with the profile on both paths:
  Chromium through a :class:`~sim.proxy.UdpProxy`, the probe through its own ``--profile``
  (independent random draws: each path loses its own packets).

Frozen seconds are totals over the window; the room's are the injected freezes' length.
Chromium's fps is frames decoded over the window; the probe's is its ``video.fps``, frames
from its first to its last (a slow link's join delays the first, which raises it). A run
whose room loop stalled or whose probe host was overloaded is flagged ``busy``: its extra
freezes may be the machine's, not the network's.

    python bench/chromium_agreement.py                 # 3 runs per case, 12 s windows
    python bench/chromium_agreement.py --runs 5 --cases lossy-wifi slow-3g
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Column, header, row

from tests.browser import Chromium, joined, watch_beside
from tests.conftest import room_process

FREEZES = ("--freeze-every", "3", "--freeze-for", "0.5")
EVERY = 3.0
CASES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "clean": ((), None),
    "freezes": (FREEZES, None),
    "lossy-wifi": (FREEZES, "lossy-wifi"),
    "slow-3g": (FREEZES, "slow-3g"),
}
"""Case name: (the room's knobs, the netem profile on both paths)."""

COLUMNS: list[Column] = [
    ("run", "run", 3, 0),
    ("room", "truth", 4, 0),
    ("chromium", "chromium", 8, 0),
    ("probe", "probe", 5, 0),
    ("room s", "truth_s", 6, 2),
    ("chromium s", "chromium_s", 10, 3),
    ("probe s", "probe_s", 7, 3),
    ("chromium fps", "chromium_fps", 12, 1),
    ("probe fps", "probe_fps", 9, 1),
    ("nacks", "nacks", 5, 0),
    ("busy", "busy", 4, 0),
]
MEAN_COLUMNS = [
    (title, key, width, 2 if digits == 0 and key != "run" else digits)
    for title, key, width, digits in COLUMNS
]
"""Counts averaged over runs, with two decimals."""


async def one_run(
    browser: Chromium, url: str, profile: str | None, seed: int, duration: float
) -> dict[str, float]:
    """One session in the room: Chromium and the probe side by side, as the table's figures."""
    page = await browser.new_page(f"{url}/healthz")
    try:
        async with joined(page, f"{url}/whep/demo", profile=profile, seed=seed) as session:
            if session.state != "connected":
                raise RuntimeError(f"Chromium did not connect ({session.status}): {session.answer[:200]}")
            await page.wait_for("qoe.stats().then((s) => s.inbound && s.inbound.framesDecoded >= 10)")
            seen = await watch_beside(
                page, url, duration, profile=profile, seed=seed + 1000, phase=(EVERY, 0.5)
            )
    finally:
        await page.close()
    video = seen.probe["video"]
    if not seen.probe["success"]:
        raise RuntimeError(f"the probe failed: {seen.probe['error']}")
    span = seen.after.at - seen.before.at
    busy = seen.room_stalls > 0 or bool(seen.probe["probe_host"]["overloaded"])
    return {
        "truth": len(seen.injected),
        "chromium": seen.chromium("freezeCount"),
        "probe": video["freeze_count"],
        "truth_s": sum(b - a for a, b in seen.injected),
        "chromium_s": seen.chromium("totalFreezesDuration"),
        "probe_s": video["freeze_seconds"],
        "chromium_fps": seen.chromium("framesDecoded") / span,
        "probe_fps": video["fps"],
        "nacks": seen.chromium("nackCount"),
        "busy": float(busy),
        "straddling": len(seen.straddling),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument(
        "--duration", type=float, default=12.0, help="seconds each probe watches (default 12)"
    )
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()

    print(header([("case", "case", 15, 0), *COLUMNS]))
    with tempfile.TemporaryDirectory(prefix="chromium-agreement-") as logs:
        async with Chromium(Path(logs)) as browser:
            for case in args.cases:
                knobs, profile = CASES[case]
                figures = []
                with room_process(*knobs) as url:
                    for run in range(args.runs):
                        got = await one_run(browser, url, profile, run, args.duration)
                        got["run"] = run + 1
                        figures.append(got)
                        flag = "  (a freeze straddled the window)" if got["straddling"] else ""
                        print(f"{case:>15}  {row(COLUMNS, got)}{flag}", flush=True)
                means = {key: statistics.fmean(f[key] for f in figures) for _, key, _, _ in COLUMNS}
                means["run"] = float("nan")
                print(f"{case + ' mean':>15}  {row(MEAN_COLUMNS, means)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
