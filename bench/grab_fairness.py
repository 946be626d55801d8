"""Benchmark: coupon-grab fairness between two network profiles, as a user runs it.

Starts ``qoe room`` with timed coupon drops, runs ``qoe fleet run`` on a fleet of grab
probes split evenly between two profiles (all at once, so they race for the same drops),
prints the fleet's per-profile table and checks it:

- the slower profile sees drops later by the profiles' difference in downlink delay (the
  media's one-way delay; the grab request is not shaped), within ``--tolerance``;
- it wins a smaller share of the coupons;
- sold-out answers are counted as outcomes: no run fails for one.

Runs on an overloaded probe host are left out of the figures and counted (a host too busy
says so; it never reports its own lateness as the network's).

    python bench/grab_fairness.py                      # 20 probes, none vs 3g, 5 coupons a drop
    python bench/grab_fairness.py --probes 4 --duration 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import room

from qoe.fleet.grabs import fairness, fairness_table
from sim.profiles import load_profile

FLEET = """\
slos = ["success min >= 1"]
[fleet]
duration = {duration}
count = {count}
profiles = [{profiles}]
concurrency = {probes}
warmup = 0
[[targets]]
name = "coupons"
kind = "grab"
url = "{url}/whep/demo"
options = {{ quality = "off" }}
"""


def downlink_delay(profile: str) -> float:
    """The profile's mean one-way downlink delay, seconds (0 for ``none``)."""
    if profile == "none":
        return 0.0
    link = load_profile(profile).downlink
    return float(getattr(link, "delay", 0.0) or 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--probes", type=int, default=20, help="grab probes in all, split evenly (default 20)"
    )
    parser.add_argument("--profiles", nargs=2, default=["none", "3g"], metavar=("FAST", "SLOW"))
    parser.add_argument("--stock", type=int, default=5, help="coupons per drop (default 5)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between drops (default 5)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each probe watches")
    parser.add_argument(
        "--tolerance", type=float, default=0.04, help="seconds the gap may differ from the delay difference"
    )
    parser.add_argument("--json", type=Path, help="also keep the fleet's results (JSON lines) here")
    args = parser.parse_args()
    fast, slow = args.profiles
    expected = downlink_delay(slow) - downlink_delay(fast)
    room_args = ("--size", "320x180", "--renditions", "1", "--coupon-every", str(args.every))
    with (
        room(*room_args, "--coupon-stock", str(args.stock)) as (_, url),
        tempfile.TemporaryDirectory() as tmp,
    ):
        fleet = Path(tmp) / "grabs.toml"
        out = args.json or Path(tmp) / "grabs.jsonl"
        fleet.write_text(
            FLEET.format(
                duration=args.duration,
                count=args.probes // 2,
                profiles=f'"{fast}", "{slow}"',
                probes=args.probes,
                url=url,
            )
        )
        done = subprocess.run(
            [sys.executable, "-m", "qoe", "fleet", "run", str(fleet), "--json-out", str(out)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode == 2:
            raise SystemExit(f"qoe fleet run failed: {done.stderr.strip().splitlines()[-1]}")
        results = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    rows = {row.profile: row for row in fairness(results)}
    print(f"{args.probes} grab probes, {fast} vs {slow}, {args.stock} coupons a drop every {args.every:g} s")
    print(fairness_table(list(rows.values())))
    a, b = rows.get(fast), rows.get(slow)
    if a is None or b is None or a.seen_after_p50 is None or b.seen_after_p50 is None:
        print("no figures: a profile saw no drop (see the failures above)")
        return 1
    gap = b.seen_after_p50 - a.seen_after_p50
    fast_g2g, slow_g2g = _g2g(results, fast), _g2g(results, slow)
    if fast_g2g is not None and slow_g2g is not None:
        print(
            f"glass-to-glass p50 (median over runs): {fast} {1000 * fast_g2g:.0f} ms, {slow} "
            f"{1000 * slow_g2g:.0f} ms: the media path differs by {1000 * (slow_g2g - fast_g2g):.0f} ms"
        )
    checks = {
        f"{slow} sees drops {1000 * gap:.0f} ms later, the downlink delays differ by "
        f"{1000 * expected:.0f} ms (+-{1000 * args.tolerance:.0f})": abs(gap - expected) <= args.tolerance,
        f"{slow} wins a smaller share: {_pct(b.win_share)} against {_pct(a.win_share)}": (b.win_share or 0)
        < (a.win_share or 0),
        f"sold-out answers counted ({a.sold_out + b.sold_out}), and no run failed "
        f"({a.failed + b.failed} did)": a.sold_out + b.sold_out > 0 and a.failed + b.failed == 0,
    }
    for text, held in checks.items():
        print(f"{'held' if held else 'FAILED'}: {text}")
    return 0 if all(checks.values()) else 1


def _g2g(results: list[dict[str, Any]], profile: str) -> float | None:
    values = [
        v
        for r in results
        if r.get("profile") == profile
        and (v := (r.get("latency") or {}).get("glass_to_glass_seconds", {}).get("p50"))
    ]
    return statistics.median(values) if values else None


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"


if __name__ == "__main__":
    sys.exit(main())
