"""Coverage study: over many seeds of small simulated logs, how often the 95 % intervals cover.

For each seed a log of ``--viewers`` viewers over ``--days`` days is simulated and analysed;
counted are the seeds where the placebo's dose-response interval (chat echo time, which no
simulated viewer reacts to) covers zero, and where the stall ratio's dose-response interval
and the headline of the watch-time-per-stall contrast cover the simulator's truth. With 100
seeds at a true 95 %, 90 or more covered is expected 99 % of the time (binomial).

    python bench/impact_coverage.py                 # 100 seeds, 1 500 viewers x 14 days
    python bench/impact_coverage.py --seeds 30      # a quicker look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qoe.impact import Options, analyse  # noqa: E402
from sim.audience import simulate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=100, help="number of seeds (default 100)")
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--viewers", type=int, default=1500)
    ap.add_argument("--days", type=int, default=14)
    args = ap.parse_args()
    counts = {"placebo covers 0": 0, "stall dose-response covers truth": 0, "stall headline covers truth": 0}
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            path = Path(tmp) / "s.parquet"
            truth = simulate(
                path, viewers=args.viewers, days=args.days, rooms=8, rng=np.random.default_rng(seed)
            )
            imp = analyse(path, np.random.default_rng(seed), Options(threads=1), truth=truth)
            target = truth["effects"]["watch_change_per_stall_percent"]
            doses = {d.key: d for d in imp.doses}
            _, lo, hi = doses["dose_watch_per_chat_echo_second"].shown()
            counts["placebo covers 0"] += lo <= 0 <= hi
            _, lo, hi = doses["dose_watch_per_stall_percent"].shown()
            counts["stall dose-response covers truth"] += lo <= target <= hi
            c = imp.contrast("watch_per_stall_percent")
            assert c is not None
            _, e, _ = c.headline()
            if e is not None:
                _, lo, hi = c.shown(e)
                counts["stall headline covers truth"] += lo <= target <= hi
    for name, k in counts.items():
        print(f"{name}: {k} of {args.seeds} seeds ({100 * k / args.seeds:.0f} %)")
    print(f"{time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
