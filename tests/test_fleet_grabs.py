"""Coupon-grab fairness in the fleet's report and in the exporter, from hand-built results.

Every figure is known: per-drop seen-after values are chosen, so the pooled medians, the gap
and the win shares are exact (checked to 1e-9 s, float rounding only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from qoe.exporter.metrics import ResultCollector, family_names
from qoe.fleet import expand, load_fleet
from qoe.fleet.grabs import fairness, fairness_table
from qoe.result import GrabSection, ProbeHostSection, ProbeResult


def grab_result(profile: str, seen_after: list[float], won: list[bool], **fields: Any) -> ProbeResult:
    drops = [
        {"drop": str(i + 1), "seen_after_seconds": s, "answer_seconds": 0.01, "won": w, "sold_out_at": None}
        for i, (s, w) in enumerate(zip(seen_after, won, strict=True))
    ]
    result = ProbeResult(probe="grab", kind="grab", target="coupons", profile=profile, success=True, **fields)
    result.grab = GrabSection(
        seen_after_seconds={"p50": seen_after[0], "p95": seen_after[-1], "max": seen_after[-1]},
        answer_seconds={"p50": 0.01, "p95": 0.01, "max": 0.01},
        seen=len(drops),
        won=sum(won),
        sold_out=len(won) - sum(won),
        unanswered=0,
        drops=drops,  # type: ignore[typeddict-item]
    )
    return result


def fleet_results() -> list[dict[str, Any]]:
    return [
        grab_result("none", [0.10, 0.12], [True, True]).to_dict(),
        grab_result("none", [0.11, 0.13], [True, False]).to_dict(),
        grab_result("3g", [0.19, 0.21], [False, False]).to_dict(),
        grab_result("3g", [0.20, 0.22], [True, False]).to_dict(),
        # an overloaded run: counted apart, its drops left out
        grab_result(
            "3g", [0.90, 0.95], [False, False], probe_host=ProbeHostSection(overloaded=True)
        ).to_dict(),
        # a failed run
        {
            **grab_result("3g", [0.2], [False]).to_dict(),
            "success": False,
            "error": {"kind": "grab_failed", "message": "HTTP 500"},
        },
        {"kind": "whep", "profile": "none", "success": True},  # not a grab run: ignored
    ]


def test_fairness_per_profile() -> None:
    rows = {row.profile: row for row in fairness(fleet_results())}
    none, slow = rows["none"], rows["3g"]
    assert (none.runs, none.failed, none.overloaded, none.seen) == (2, 0, 0, 4)
    assert (slow.runs, slow.failed, slow.overloaded, slow.seen) == (4, 1, 1, 5)
    assert none.seen_after_p50 == pytest.approx(0.115, abs=1e-9)
    assert slow.seen_after_p50 == pytest.approx(0.20, abs=1e-9)  # the overloaded run's 0.9 s left out
    assert none.gap_seconds == 0.0
    assert slow.gap_seconds == pytest.approx(0.085, abs=1e-9)
    assert (none.won, none.sold_out, slow.won, slow.sold_out) == (3, 1, 1, 4)
    assert none.win_share == pytest.approx(0.75) and slow.win_share == pytest.approx(0.25)
    assert slow.errors == {"grab_failed": 1}
    table = fairness_table(list(rows.values()))
    assert "gap ms" in table and "  85  " in table and "75 %" in table and "25 %" in table
    assert "3g: failed runs by error: grab_failed 1" in table
    assert "3g: 1 runs on an overloaded probe host are left out" in table


def test_no_grab_runs_no_table() -> None:
    assert fairness([{"kind": "whep", "profile": "none"}]) == []


def test_the_exporter_exports_grab_figures_and_counts() -> None:
    registry = CollectorRegistry()
    collector = ResultCollector(registry)
    collector.observe(grab_result("3g", [0.2, 0.3], [True, False]), 1_700_000_000.0)
    collector.observe(grab_result("3g", [0.25], [False]), 1_700_000_010.0)
    text = generate_latest(registry).decode()
    labels = 'kind="grab",probe="grab",profile="3g",target="coupons"'
    quantile = 'kind="grab",probe="grab",profile="3g",quantile="{}",target="coupons"'
    assert f"qoe_grab_seen_after_seconds{{{quantile.format(0.5)}}} 0.25" in text  # the latest run
    assert f"qoe_grab_answer_seconds{{{quantile.format(0.95)}}} 0.01" in text
    assert f"qoe_grab_drops_seen_total{{{labels}}} 3.0" in text
    assert f"qoe_grab_wins_total{{{labels}}} 1.0" in text
    assert f"qoe_grab_sold_out_total{{{labels}}} 2.0" in text
    for name in ("qoe_grab_seen_after_seconds", "qoe_grab_wins_total", "qoe_grab_sold_out_total"):
        assert name in family_names()


def test_the_example_grab_fleet_races_twenty_probes_under_two_profiles() -> None:
    fleet = load_fleet(Path(__file__).resolve().parent.parent / "examples" / "grab-fleet.toml")
    runs = expand(fleet)
    assert len(runs) == 20 and fleet.concurrency == 20
    assert {run.profile for run in runs} == {"none", "3g"}
    assert all(run.target.kind == "grab" for run in runs)
