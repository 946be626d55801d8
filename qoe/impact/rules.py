"""Recommended SLO thresholds from the measured impact, written as Prometheus alert rules in the
format of ``grafana/alerts/qoe.rules.yml`` (same metric names, labels and annotations).

- Join: the knee of the abandonment curve (the stratified estimate), rounded *down* to a bound of
  the exporter's join histogram (``qoe.exporter.metrics.JOIN_BUCKETS``), so the p95 crosses
  the threshold exactly when more than 5 % of joins take longer than a bound that exists.
- Stall: the stall ratio at which the measured watch-time loss reaches the budget (default
  5 %): ``ratio = ln(1 - budget) / b`` with ``b`` the log watch-time change per percentage
  point (matched-pair estimate). With Krishnan & Sitaraman's 5 % per 1 % this is 1 %. When the
  data show no significant loss the published default of 1 % (docs/SOURCES.md) is kept and
  the rule says so.
- A/V offset: ITU-R BT.1359-1 acceptability (+90/-185 ms); the data decide only whether the
  rule is a warning (a significant watch-time loss outside the band) or info.

Rule names carry an ``Impact`` prefix so the file can be loaded beside qoe.rules.yml.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from qoe.exporter.metrics import JOIN_BUCKETS

from .contrasts import AV_ACCEPTABLE, ContrastResult
from .dropoff import AbandonCurve

__all__ = ["DEFAULT_STALL", "Thresholds", "alert_rules", "recommend"]

WHERE = "{{ $labels.target }} ({{ $labels.profile }})"
DEFAULT_STALL = 0.01
"""Stall ratio threshold when the data cannot set one (docs/SOURCES.md; the alert's)."""


@dataclass
class Thresholds:
    join_seconds: float
    join_basis: str
    stall_ratio: float
    stall_basis: str
    av_low: float
    av_high: float
    av_severity: str
    av_basis: str
    lines: dict[str, str]
    """Measured costs quoted in the annotations, by rule."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f} %"


def recommend(
    curve: AbandonCurve | None, contrasts: dict[str, ContrastResult], *, budget: float = 0.05
) -> Thresholds:
    """Thresholds and their justification from the abandonment curve and the contrasts."""
    lines: dict[str, str] = {}
    if curve is not None and math.isfinite(curve.knee.value):
        below = [b for b in JOIN_BUCKETS if b <= curve.knee.value]
        join = below[-1] if below else JOIN_BUCKETS[0]
        s = curve.slope
        join_basis = (
            f"abandonment knee {curve.knee.value:.2f} s (95 % CI {curve.knee.low:.2f}-"
            f"{curve.knee.high:.2f}), rounded down to the histogram bound {join:g} s"
        )
        lines["join"] = (
            f"each second of join time beyond {curve.knee.value:.1f} s loses {_pct(s.value)} of viewers "
            f"(95 % CI {_pct(s.low)}-{_pct(s.high)})"
        )
    else:
        join, join_basis = 2.0, "no abandonment curve; published default (Krishnan & Sitaraman, IMC 2012)"
        lines["join"] = "viewers start abandoning past 2 s (Krishnan & Sitaraman, IMC 2012)"
    stall, stall_basis = DEFAULT_STALL, "no stall figures; published default"
    w = contrasts.get("watch_per_stall_percent")
    if w is not None:
        design, e, note = w.headline()
        if e is None:
            lines["stall"] = f"the watch-time cost of stalls is not estimable ({note})"
            stall_basis = "watch-time cost of stalls not estimable from this log; published default kept"
        else:
            v, lo, hi = w.shown(e)
            lines["stall"] = (
                f"each 1 % of stall ratio changes watch time by {_pct(v)} (95 % CI {_pct(lo)} to {_pct(hi)}; "
                f"{design})"
            )
            if e.high < 0:
                # Rounded to 0.1 % so the rule reads as a decision, not as the estimate's noise.
                stall = round(min(max(math.log(1 - budget) / e.value / 100.0, 0.001), 0.1), 3)
                stall_basis = (
                    f"stall ratio at which the {design} watch-time loss reaches the {_pct(budget, 0)} budget"
                )
            else:
                stall_basis = f"no significant watch-time loss from stalls ({design}); published default kept"
    r = contrasts.get("return7_stall")
    if r is not None:
        design, e, note = r.headline()
        lines["stall"] = lines.get("stall", "") + (
            f"; 7-day returns after a stalled visit not estimable ({note})"
            if e is None
            else f"; visits ending above the stall threshold return {100 * e.value:+.1f} points "
            f"within 7 days (95 % CI {100 * e.low:+.1f} to {100 * e.high:+.1f}; {design})"
        )
    av_sev, av_basis = "warning", "ITU-R BT.1359-1 acceptability"
    a = contrasts.get("watch_av_out_of_band")
    ae = a.headline()[1] if a is not None else None
    if a is not None and ae is not None:
        v, lo, hi = a.shown(ae)
        lines["av"] = f"sessions outside the band watch {_pct(v)} (95 % CI {_pct(lo)} to {_pct(hi)})"
        if ae.high >= 0:
            av_sev, av_basis = (
                "info",
                "ITU-R BT.1359-1 acceptability; no significant watch-time loss measured",
            )
    return Thresholds(
        join, join_basis, stall, stall_basis, AV_ACCEPTABLE[0], AV_ACCEPTABLE[1], av_sev, av_basis, lines
    )


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def alert_rules(t: Thresholds, *, source: str) -> str:
    """The rule file's text (YAML); passes ``promtool check rules``."""
    by = "probe, kind, target, profile"
    rules = [
        {
            "alert": "QoEImpactJoinSlow",
            "expr": f"histogram_quantile(0.95, sum by ({by}, le) "
            "(rate(qoe_join_duration_seconds_bucket[15m]))) "
            f"> {t.join_seconds:g}",
            "severity": "warning",
            "summary": f"Join time p95 above {t.join_seconds:g} s for {WHERE}",
            "description": f"95 % of {{{{ $labels.kind }}}} joins of {{{{ $labels.target }}}} took up to "
            f"{{{{ $value | humanizeDuration }}}}; measured: {t.lines['join']}.",
            "runbook": "qoejoinslow",
            "comment": t.join_basis,
        },
        {
            "alert": "QoEImpactStallRatioHigh",
            "expr": f"sum by ({by}) (rate(qoe_video_frozen_seconds_total[15m])) / sum by ({by}) "
            f"(rate(qoe_video_watched_seconds_total[15m])) > {t.stall_ratio:.4g}",
            "severity": "warning",
            "summary": f"Stall ratio above {100 * t.stall_ratio:.2g} % for {WHERE}",
            "description": "Video of {{ $labels.target }} was frozen {{ $value | humanizePercentage }} "
            "of the watched "
            f"time over 15 min; measured: {t.lines.get('stall', 'no stall figures in the data')}.",
            "runbook": "qoestallratiohigh",
            "comment": t.stall_basis,
        },
        {
            "alert": "QoEImpactAVOffsetOutsideAcceptable",
            "expr": f'qoe_av_offset_seconds{{quantile="0.5"}} > {t.av_high:g} or '
            f'qoe_av_offset_seconds{{quantile="0.5"}} < {t.av_low:g}',
            "severity": t.av_severity,
            "summary": f"A/V offset outside +{1000 * t.av_high:.0f}/{1000 * t.av_low:.0f} ms for "
            "{{ $labels.target }} ({{ $labels.profile }})",
            "description": "The median A/V offset of {{ $labels.target }} is {{ $value | humanizeDuration }} "
            f"(+ = audio ahead); measured: {t.lines.get('av', 'no A/V figures in the data')}.",
            "runbook": "qoeavoffsetoutsideacceptable",
            "comment": t.av_basis,
        },
    ]
    out = [
        "# Alert rules recommended by `qoe impact` from the platform's own sessions.",
        f"# Source: {source}",
        "# Format and metric names as grafana/alerts/qoe.rules.yml; load beside it (names carry 'Impact').",
        "groups:",
        "  - name: qoe-impact",
        "    interval: 1m",
        "    rules:",
    ]
    for r in rules:
        out += [
            f"      # {r['comment']}",
            f"      - alert: {r['alert']}",
            f"        expr: {_q(r['expr'])}",
            "        for: 10m",
            "        labels:",
            f"          severity: {r['severity']}",
            "        annotations:",
            f"          summary: {_q(r['summary'])}",
            f"          description: {_q(r['description'])}",
            f"          runbook_url: {_q('grafana/alerts/RUNBOOK.md#' + r['runbook'])}",
            "",
        ]
    return "\n".join(out)
