"""The figures the dashboards show, as PromQL, and the thresholds they are judged by.

Thresholds are the alert rules' (alerts/qoe.rules.yml), with the same sources
(docs/SOURCES.md): join 2 s and stall ratio 1 % (Krishnan & Sitaraman, IMC 2012), A/V
offset acceptable within +90/-185 ms and detectable beyond +45/-125 ms (ITU-R BT.1359-1),
chat echo 1 s (a project choice), result age 600 s (QoEProbeStale), probe loop lag 100 ms
(QoEProbeHostOverloaded).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from grafana.panels import Steps

__all__ = [
    "ALL",
    "AV_BANDS",
    "CHAT",
    "FREEZES_PER_MIN",
    "GRAB_ANSWER",
    "JOIN",
    "JOIN_P95",
    "LOOP_LAG",
    "ONE",
    "QUALITY",
    "STALE",
    "STALL",
    "STALL_RATIO",
    "SUCCESS",
    "dashboard",
    "mean_over_range",
]

ALL = 'kind=~"$kind", target=~"$target", profile=~"$profile"'
"""Series of the selected kinds, targets and profiles (multi-valued variables)."""
ONE = 'probe="$probe", kind="$kind", target="$target", profile="$profile"'
"""Series of the one probe the detail dashboard shows."""

JOIN: Steps = [(None, "green"), (2.0, "red")]
"""Join time: viewers start abandoning past 2 s (Krishnan & Sitaraman, IMC 2012)."""
STALL: Steps = [(None, "green"), (0.01, "red")]
"""Stall ratio: 1 % of watched time costs about 5 % of play time (Krishnan & Sitaraman, IMC 2012)."""
AV_BANDS: Steps = [
    (None, "red"),
    (-0.185, "yellow"),
    (-0.125, "green"),
    (0.045, "yellow"),
    (0.09, "red"),
]
"""A/V offset (+ = audio ahead): green inside detectability (+45/-125 ms), yellow up to the
acceptability limits (+90/-185 ms), red beyond (ITU-R BT.1359-1)."""
CHAT: Steps = [(None, "green"), (1.0, "red")]
GRAB_ANSWER: Steps = [(None, "green"), (0.5, "red")]
"""Coupon grab answer p95: QoEGrabAnswerSlow fires past 0.5 s (a project choice)."""
LOOP_LAG: Steps = [(None, "green"), (0.1, "red")]
"""Probe host loop lag: QoEProbeHostOverloaded fires past 100 ms (150 ms makes a freeze)."""
STALE: Steps = [(None, "green"), (600.0, "red")]
"""Result age: QoEProbeStale fires past 600 s."""
SUCCESS: Steps = [(None, "red"), (0.95, "yellow"), (1.0, "green")]
QUALITY: Steps = [(None, "red"), (0.95, "green")]
"""Median luma SSIM against the test signal: QoEPictureQualityLow fires under 0.95 (a picture
coded at the encoder's coarsest quantizer scores about 0.947; 300 kbit/s at 360p, 0.97)."""

JOIN_P95 = "histogram_quantile(0.95, sum by ({by}le) ({fn}(qoe_join_duration_seconds_bucket{{{sel}}}[{w}])))"
STALL_RATIO = (
    "sum by ({by}) ({fn}(qoe_video_frozen_seconds_total{{{sel}}}[{w}]))"
    " / sum by ({by}) ({fn}(qoe_video_watched_seconds_total{{{sel}}}[{w}]))"
)
FREEZES_PER_MIN = (
    "60 * sum by ({by}) (increase(qoe_video_freezes_total{{{sel}}}[{w}]))"
    " / sum by ({by}) (increase(qoe_video_watched_seconds_total{{{sel}}}[{w}]))"
)


def mean_over_range(series: str, by: str = "profile") -> str:
    """The mean of a latest-run gauge over the dashboard's time range, by ``by``."""
    return f"avg by ({by}) (avg_over_time({series}[$__range]))"


def dashboard(uid: str, title: str, description: str) -> Dashboard:
    """An empty QoE dashboard: tags, last 6 h, refreshed every minute."""
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["qoe", "live-stream"])
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .editable()
    )
