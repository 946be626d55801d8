"""Coupon-grab fairness over a fleet's results: who sees a drop later, and who wins it.

Grab probes under several network profiles watch the same drops. Per profile this pools
every drop its runs saw (``grab.drops``) and reports how long after opening they saw it
(p50, p95), the gap between its median and the quickest profile's (the fairness gap: how
much later a 3g viewer sees a drop than one on a perfect link), how fast grabs were
answered, and the share of all coupons won that its runs won. Sold-out answers are
counted as outcomes. A run on an overloaded probe host is counted apart and its drops left
out of the figures: its lateness may be the host's own, not the profile's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qoe.redact import clean_text
from qoe.result import get_path

__all__ = ["ProfileGrabs", "fairness", "fairness_table"]


@dataclass(frozen=True)
class ProfileGrabs:
    profile: str
    runs: int
    """Grab runs of this profile (every one, failed and overloaded included)."""
    failed: int
    overloaded: int
    """Runs on an overloaded probe host; their drops are left out of the figures below."""
    seen: int
    """Drops seen, over the counted runs."""
    seen_after_p50: float | None
    seen_after_p95: float | None
    gap_seconds: float | None
    """This profile's median seen-after minus the quickest profile's."""
    answer_p95: float | None
    won: int
    sold_out: int
    win_share: float | None
    """Of all coupons the fleet's counted runs won, the share this profile's runs won."""
    errors: dict[str, int]
    """Failed runs by error kind."""


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def fairness(results: Iterable[dict[str, Any]]) -> list[ProfileGrabs]:
    """Per profile, in order of first appearance, over the results of kind ``grab``."""
    by_profile: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        if result.get("kind") == "grab":
            by_profile[str(result.get("profile"))].append(result)
    rows: list[dict[str, Any]] = []
    for profile, runs in by_profile.items():
        counted = [r for r in runs if get_path(r, "probe_host.overloaded") is not True]
        drops = [d for r in counted for d in (get_path(r, "grab.drops") or []) if isinstance(d, dict)]
        seen_after = [
            d["seen_after_seconds"] for d in drops if isinstance(d.get("seen_after_seconds"), float)
        ]
        answers = [d["answer_seconds"] for d in drops if isinstance(d.get("answer_seconds"), float)]
        errors: dict[str, int] = defaultdict(int)
        for r in runs:
            if not r.get("success"):
                errors[str(get_path(r, "error.kind") or "unknown")] += 1
        rows.append(
            {
                "profile": profile,
                "runs": len(runs),
                "failed": sum(1 for r in runs if not r.get("success")),
                "overloaded": len(runs) - len(counted),
                "seen": len(drops),
                "seen_after_p50": _quantile(seen_after, 50),
                "seen_after_p95": _quantile(seen_after, 95),
                "answer_p95": _quantile(answers, 95),
                "won": sum(1 for d in drops if d.get("won") is True),
                "sold_out": sum(1 for d in drops if d.get("won") is False),
                "errors": dict(errors),
            }
        )
    medians = [row["seen_after_p50"] for row in rows if row["seen_after_p50"] is not None]
    quickest = min(medians) if medians else None
    total_won = sum(row["won"] for row in rows)
    return [
        ProfileGrabs(
            **row,
            gap_seconds=None
            if quickest is None or row["seen_after_p50"] is None
            else row["seen_after_p50"] - quickest,
            win_share=row["won"] / total_won if total_won else None,
        )
        for row in rows
    ]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def fairness_table(rows: list[ProfileGrabs]) -> str:
    """The per-profile table ``qoe fleet run`` and ``qoe fleet report`` print."""
    head = (
        "profile",
        "runs",
        "failed",
        "overloaded",
        "seen",
        "seen-after p50 ms",
        "p95 ms",
        "gap ms",
        "answer p95 ms",
        "won",
        "win share",
        "sold out",
    )
    lines = [head]
    for r in rows:
        share = "-" if r.win_share is None else f"{100 * r.win_share:.0f} %"
        lines.append(
            (
                clean_text(r.profile, 24),
                str(r.runs),
                str(r.failed),
                str(r.overloaded),
                str(r.seen),
                _ms(r.seen_after_p50),
                _ms(r.seen_after_p95),
                _ms(r.gap_seconds),
                _ms(r.answer_p95),
                str(r.won),
                share,
                str(r.sold_out),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    notes = []
    for r in rows:
        if r.errors:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.errors.items()))
            notes.append(f"{clean_text(r.profile, 24)}: failed runs by error: {kinds}")
        if r.overloaded:
            notes.append(
                f"{clean_text(r.profile, 24)}: {r.overloaded} runs on an overloaded probe host are left out "
                "of its figures (their lateness may be the host's own)"
            )
    return "\n".join(
        ["coupon grabs by profile (gap: median seen-after over the quickest profile's)", *text, *notes]
    )
