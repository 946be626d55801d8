"""``qoe impact``: the work behind the command (the CLI only parses options into ``args``)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from qoe.errors import ConfigError

from .analysis import Options, analyse
from .report import RULES_NAME, clean, write_report
from .schema import CONTROLS

__all__ = ["impact_command", "parse_time"]


def parse_time(text: str) -> float:
    """ISO 8601 (UTC when no offset) or Unix seconds -> Unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--log-end: expected an ISO 8601 time or Unix seconds, got {text!r}") from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


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
    )
    truth = None
    if args.truth:
        try:
            truth = json.loads(Path(args.truth).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--truth {args.truth}: {getattr(exc, 'strerror', None) or exc}") from exc
    imp = analyse(args.sessions, np.random.default_rng(args.seed), options, truth=truth)
    paths = write_report(imp, args.out)
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
