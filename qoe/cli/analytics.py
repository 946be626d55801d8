"""``qoe impact`` and ``qoe audience simulate``: options in, the analytics run, output out.

The analytics (:mod:`qoe.impact`, :mod:`sim.audience`) take typed options and return their
figures; printing, progress lines and exit codes are the program's, and live here.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from qoe.errors import ConfigError
from qoe.impact.analysis import Options, analyse
from qoe.impact.arms import parse_split
from qoe.impact.load import TIMESTAMP_RANGE
from qoe.impact.report import RULES_NAME, clean, write_report
from qoe.impact.schema import CONTROLS
from qoe.impact.segments import Tiers
from sim.audience import DEFAULT_START, load_model, simulate, truth_path

__all__ = ["Steps", "impact_command", "parse_time", "simulate_command"]


class Steps:
    """What a long command is doing, on stderr: one line rewritten in place on a terminal,
    plain lines in a log (as ``qoe fleet run`` shows its runs), at most one per ``every``
    seconds. Nothing in the first ``after`` seconds, so a quick run, or an error found early,
    prints nothing but its result (an error stays one line)."""

    def __init__(
        self,
        name: str,
        *,
        every: float,
        after: float = 2.0,
        stream: IO[str] | None = None,
        quiet: bool = False,
    ) -> None:
        self.name = name
        self.every = every
        self.after = after
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self.started = time.monotonic()
        self.last = -math.inf
        self.width = 0

    def __call__(self, step: str) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        if (
            self.quiet
            or elapsed < self.after
            or now - self.last < (min(self.every, 0.2) if self.tty else self.every)
        ):
            return
        self.last = now
        line = f"{self.name}: {step} ({elapsed:.0f} s)"
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = max(self.width, len(line))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Clear the terminal's progress line, so what follows starts on a clean one."""
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def parse_time(text: str) -> float:
    """ISO 8601 (UTC when no offset) or Unix seconds -> Unix seconds, within the range a
    session's times may take (:data:`qoe.impact.load.TIMESTAMP_RANGE`): ``nan`` and ``1e308``
    read as floats but are no time to end a log at."""
    expected = f"--log-end: expected an ISO 8601 time or Unix seconds (1970 to 9999), got {text!r}"
    try:
        seconds = float(text)
    except ValueError:
        try:
            t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(expected) from None
        seconds = (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    low, high = TIMESTAMP_RANGE
    if not low <= seconds < high:  # also false for NaN
        raise ConfigError(expected)
    return seconds


def impact_command(args: Any) -> int:
    """Run ``qoe impact SESSIONS`` with the parsed options in ``args`` (see the README for the
    option list); writes the report into ``args.out`` and returns the exit code (0 ok; an
    unusable log raises ConfigError after writing the validation report, as bad options do)."""
    controls = tuple(c.strip() for c in (args.controls or ",".join(CONTROLS)).split(",") if c.strip())
    options = Options(
        probes=args.probes,
        log_end=parse_time(args.log_end) if args.log_end else None,
        visit_gap=args.visit_gap,
        stall_threshold=args.stall_threshold,
        watch_loss_budget=args.watch_loss_budget,
        controls=controls,
        probe_room=args.probe_room,
        probe_window=args.probe_window,
        qoe_source=args.qoe_source,
        jackknife_groups=args.jackknife_groups,
        threads=args.threads,
        memory_limit=args.memory_limit,
        temp_dir=getattr(args, "temp_dir", None),
        segment_by=tuple(
            c.strip() for c in (getattr(args, "segment_by", None) or "").split(",") if c.strip()
        ),
        tiers=Tiers(
            high_value=getattr(args, "high_value", None),
            lapsing_days=getattr(args, "lapsing_days", 7.0),
        ),
        arm_from=getattr(args, "arm_from", None),
        arm_split=parse_split(args.arm_split) if getattr(args, "arm_split", None) else None,
    )
    truth = None
    if args.truth:
        try:
            truth = json.loads(Path(args.truth).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--truth {args.truth}: {getattr(exc, 'strerror', None) or exc}") from exc
    steps = Steps("qoe impact", every=1.0, quiet=getattr(args, "quiet", False))
    try:
        imp = analyse(args.sessions, np.random.default_rng(args.seed), options, truth=truth, progress=steps)
        steps("writing the report")
        paths = write_report(imp, args.out)
    finally:
        steps.close()
    if args.json:
        print(json.dumps(clean(imp.to_dict()), indent=1, allow_nan=False))
    else:
        print(imp.validation.summary())
        for line in imp.lines:
            print(f"  {line['text']}")
        for note in imp.notes:
            print(f"  note: {note}")
        print(
            f"report: {paths['report.html']} (figures: {Path(args.out) / 'impact.json'}; "
            f"alert rules: {Path(args.out) / RULES_NAME})"
        )
    if not imp.validation.usable:
        problems = "; ".join(f"{p.count} {p.reason.replace('_', ' ')}" for p in imp.validation.problems)
        raise ConfigError(f"{args.sessions}: no usable sessions ({problems}); see {paths['report.html']}")
    print(f"done in {imp.timings.get('total', 0.0):.1f} s", file=sys.stderr)
    return 0


def simulate_command(args: Any) -> int:
    """``qoe audience simulate``: the work behind the command; ``args`` holds the parsed options
    ``viewers, days, seed, out, rooms, model, probes, probe_interval, start, chunk, quiet``."""
    start = DEFAULT_START
    if getattr(args, "start", None):
        try:
            start = dt.datetime.fromisoformat(str(args.start).replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--start: expected an ISO 8601 date or time, got {args.start!r}") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
    if args.chunk is not None and args.chunk < 1000:
        raise ConfigError(f"--chunk must be at least 1000 viewers, got {args.chunk}")
    if args.probe_interval is not None and args.probe_interval < 60:
        raise ConfigError(f"--probe-interval must be at least 60 seconds, got {args.probe_interval}")
    out = str(args.out)
    if not out.lower().endswith((".parquet", ".csv")):
        raise ConfigError(f"--out must end in .parquet or .csv, got {out}")
    model = load_model(args.model)
    quiet = getattr(args, "quiet", False)
    # No seed given: draw one, so the truth file still says how to repeat the run.
    seed = args.seed if args.seed is not None else int(np.random.default_rng().integers(1 << 62))

    steps = Steps("qoe audience simulate", every=10.0, quiet=quiet)

    def progress(done: int, total: int) -> None:
        steps(f"{done}/{total} viewers")

    try:
        truth = simulate(
            out,
            viewers=args.viewers,
            days=args.days,
            rng=np.random.default_rng(seed),
            model=model,
            rooms=args.rooms,
            start=start,
            chunk_viewers=args.chunk or 50_000,
            probes=args.probes,
            probe_interval=args.probe_interval or 900.0,
            progress=progress,
            seed=seed,
        )
    finally:
        steps.close()
    c = truth["counts"]
    print(
        f"{out}: {c['sessions']} sessions of {truth['viewers']} viewers in {truth['rooms']} rooms over "
        f"{truth['days']} days ({truth['seconds']:.1f} s); ground truth in {truth_path(out)}"
    )
    return 0
