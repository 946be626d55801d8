"""Benchmark: ``qoe audience simulate`` then ``qoe impact`` at scale, wall time and peak memory per step.

Each step runs in its own child process (so its peak resident memory is its own, DuckDB
included), sampled every 20 ms from /proc; the analysis's phases (validate, link, drop-off,
contrasts, bands, report) are timed inside and their peaks taken from the same samples.

    python bench/impact.py                                  # 1 000 000 viewers x 30 days, 2 threads
    python bench/impact.py --viewers 100000 --days 30       # a quicker look
    python bench/impact.py --keep DIR                       # keep the data and the report in DIR
    python bench/impact.py --viewers 10400000 --keep /big   # about 100 M sessions
    python bench/impact.py --data DIR/sessions.parquet      # analyse a log made before (no simulate)
    python bench/impact.py --json out.json                  # also write the figures as JSON

The log holds an A/B test (arm B joins 0.5 s slower, from day 7) and the analysis segments it
by ``--segment-by`` (default region,device), so the segments and the arms are timed too.

Expect about 9 sessions per viewer over 30 days (about 9 M sessions for the default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time
    samples = []
    stop = False
    page = os.sysconf("SC_PAGE_SIZE")
    def sample():
        while not stop:
            with open("/proc/self/statm") as f:
                samples.append((time.monotonic(), int(f.read().split()[1]) * page))
            time.sleep(0.02)
    threading.Thread(target=sample, daemon=True).start()
    t0 = time.monotonic()
    step, options = sys.argv[1], json.loads(sys.argv[2])
    marks = {}
    if step == "simulate":
        import dataclasses
        import numpy as np
        from sim.audience import AudienceModel, simulate
        m = AudienceModel()
        # An A/B test from day 7 (B joins 0.5 s slower), so the arms' figures are timed too.
        m = dataclasses.replace(m, qoe=dataclasses.replace(m.qoe, ab_share_b=0.5, ab_join_seconds=0.5,
                                                            ab_start_day=7))
        simulate(options["out"], viewers=options["viewers"], days=options["days"],
                 rng=np.random.default_rng(options["seed"]), model=m)
    else:
        import numpy as np
        from qoe.impact import Options, analyse, write_report
        impact = analyse(options["sessions"], np.random.default_rng(0), Options(threads=options["threads"],
                         memory_limit=options["memory_limit"], segment_by=tuple(options["segment_by"])))
        t = t0
        for phase, seconds in impact.timings.items():
            if phase != "total":
                marks[phase] = (t, t + seconds)
                t += seconds
        t_report = time.monotonic()
        write_report(impact, options["out"])
        marks["report"] = (t_report, time.monotonic())
        print(impact.validation.summary(), file=sys.stderr)
        for line in impact.lines:
            print("  " + line["text"], file=sys.stderr)
    stop = True
    end = time.monotonic()
    peak = {k: max((m for t, m in samples if a <= t <= b), default=0) for k, (a, b) in marks.items()}
    print(json.dumps({"wall": end - t0, "peak": max(m for _, m in samples), "phases": {
        k: {"wall": b - a, "peak": peak[k]} for k, (a, b) in marks.items()}}))
    """
)


def run(step: str, options: dict[str, Any], threads: int) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, step, json.dumps(options)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(done.stderr)
    if done.returncode:
        raise SystemExit(f"{step} failed with exit code {done.returncode}")
    return json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads for the analysis (default 2)")
    parser.add_argument(
        "--memory-limit", default="4GB", help="DuckDB memory limit (default 4GB; spills beyond)"
    )
    parser.add_argument(
        "--keep", metavar="DIR", help="keep data and report in DIR (default: a temporary directory)"
    )
    parser.add_argument("--data", metavar="SESSIONS", help="analyse this log instead of simulating one")
    parser.add_argument("--segment-by", default="region,device", help="segments (default region,device)")
    parser.add_argument(
        "--json", metavar="FILE", help="also write the figures (seconds, bytes) to FILE, as JSON"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qoe-bench-") as tmp:
        where = Path(args.keep or tmp)
        where.mkdir(parents=True, exist_ok=True)
        data = Path(args.data) if args.data else where / "sessions.parquet"
        t = time.monotonic()
        sim = None
        if not args.data:
            options = {"viewers": args.viewers, "days": args.days, "seed": args.seed, "out": str(data)}
            sim = run("simulate", options, 1)
        truth = json.loads(data.with_name(data.name.split(".")[0] + ".truth.json").read_text())
        sessions = truth["counts"]["sessions"]
        ana = run(
            "impact",
            {
                "sessions": str(data),
                "out": str(where / "report"),
                "threads": args.threads,
                "memory_limit": args.memory_limit,
                "segment_by": [c for c in args.segment_by.split(",") if c],
            },
            args.threads,
        )
        gib = 1 << 30
        print(
            f"\n{truth['viewers']} viewers x {truth['days']} days -> {sessions} sessions "
            f"({data.stat().st_size / 1e6:.0f} MB Parquet), {os.cpu_count()} cores, {args.threads} threads"
        )
        print(f"{'step':28}{'wall s':>9}{'peak GiB':>10}")
        if sim:
            print(f"{'simulate':28}{sim['wall']:9.1f}{sim['peak'] / gib:10.2f}")
        print(f"{'impact (all)':28}{ana['wall']:9.1f}{ana['peak'] / gib:10.2f}")
        for phase, p in ana["phases"].items():
            print(f"  {phase:26}{p['wall']:9.1f}{p['peak'] / gib:10.2f}")
        total = time.monotonic() - t
        print(f"total {total:.0f} s; analysis {sessions / ana['wall'] / 1e6:.2f} M sessions/s")
        if args.json:
            summary = {
                "sessions": sessions,
                "viewers": truth["viewers"],
                "days": truth["days"],
                "parquet_bytes": data.stat().st_size,
                "data": str(data) if args.data else None,
                "cores": os.cpu_count(),
                "threads": args.threads,
                "memory_limit": args.memory_limit,
                "segment_by": args.segment_by,
                "simulate": sim,
                "impact": ana,
                "total_seconds": total,
            }
            Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
