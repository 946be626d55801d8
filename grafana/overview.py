"""The QoE overview dashboard: every room and network profile at a glance."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard

from grafana.figures import (
    ALL,
    AV_BANDS,
    FREEZES_PER_MIN,
    JOIN,
    JOIN_P95,
    STALE,
    STALL,
    STALL_RATIO,
    SUCCESS,
    dashboard,
)
from grafana.panels import (
    Ids,
    datasource_variable,
    label_variable,
    prom,
    stat_panel,
    state_panel,
    table_panel,
    timeseries_panel,
    window_variable,
)

__all__ = ["overview"]


def overview() -> Dashboard:
    """Every room (target) and network profile at a glance."""
    ids = Ids()
    by = "target, profile, kind"
    board = (
        dashboard(
            "qoe-overview",
            "QoE overview",
            "Every room and network profile at a glance: are probes succeeding, how fast do they join, "
            "how much do they stall, how late and how out of sync is what they see.",
        )
        .with_variable(datasource_variable())
        .with_variable(label_variable("kind", "qoe_probe_success", multi=True))
        .with_variable(label_variable("target", 'qoe_probe_success{kind=~"$kind"}', multi=True))
        .with_variable(
            label_variable("profile", 'qoe_probe_success{kind=~"$kind", target=~"$target"}', multi=True)
        )
        .with_variable(window_variable())
    )
    panels = [
        stat_panel(
            ids(),
            "Probes succeeding",
            "Share of probes whose latest run succeeded.",
            [prom(f"sum(qoe_probe_success{{{ALL}}}) / count(qoe_probe_success{{{ALL}}})", instant=True)],
            unit="percentunit",
            steps=SUCCESS,
        ),
        stat_panel(
            ids(),
            "Join time p95",
            "95th percentile of click-to-first-frame over the dashboard's time range. Viewers start "
            "leaving past 2 s (Krishnan & Sitaraman, IMC 2012).",
            [prom(JOIN_P95.format(by="", fn="increase", sel=ALL, w="$__range"), instant=True)],
            steps=JOIN,
        ),
        stat_panel(
            ids(),
            "Stall ratio",
            "Frozen and paused time over watched time, over the dashboard's time range (W3C "
            "webrtc-stats freezes). Past 1 % viewers watch about 5 % less (Krishnan & Sitaraman).",
            [prom(STALL_RATIO.format(by="", fn="increase", sel=ALL, w="$__range"), instant=True)],
            unit="percentunit",
            steps=STALL,
        ),
        stat_panel(
            ids(),
            "Oldest result",
            "Age of the oldest latest-run among the selected probes; QoEProbeStale fires past 10 min.",
            [prom(f"max(time() - qoe_probe_last_run_timestamp_seconds{{{ALL}}})", instant=True)],
            steps=STALE,
        ),
        table_panel(
            ids(),
            "Rooms at a glance",
            "One row per room, kind and network profile. Latest run: success, glass-to-glass p95 and "
            "median A/V offset. Over the time range: join p95, stall ratio, freezes per minute watched, "
            "failures. An empty cell is a figure this probe does not measure.",
            [
                (
                    prom(f"max by ({by}) (qoe_probe_success{{{ALL}}})", ref="A", instant=True, fmt="table"),
                    "Success",
                    "bool_yes_no",
                    SUCCESS,
                ),
                (
                    prom(
                        JOIN_P95.format(by=by + ", ", fn="increase", sel=ALL, w="$__range"),
                        ref="B",
                        instant=True,
                        fmt="table",
                    ),
                    "Join p95",
                    "s",
                    JOIN,
                ),
                (
                    prom(
                        STALL_RATIO.format(by=by, fn="increase", sel=ALL, w="$__range"),
                        ref="C",
                        instant=True,
                        fmt="table",
                    ),
                    "Stall ratio",
                    "percentunit",
                    STALL,
                ),
                (
                    prom(
                        FREEZES_PER_MIN.format(by=by, sel=ALL, w="$__range"),
                        ref="D",
                        instant=True,
                        fmt="table",
                    ),
                    "Freezes/min",
                    "short",
                    None,
                ),
                (
                    prom(
                        f'max by ({by}) (qoe_glass_to_glass_seconds{{{ALL}, quantile="0.95"}})',
                        ref="E",
                        instant=True,
                        fmt="table",
                    ),
                    "Glass-to-glass p95",
                    "s",
                    None,
                ),
                (
                    prom(
                        f'avg by ({by}) (qoe_av_offset_seconds{{{ALL}, quantile="0.5"}})',
                        ref="F",
                        instant=True,
                        fmt="table",
                    ),
                    "A/V offset",
                    "s",
                    AV_BANDS,
                ),
                (
                    prom(
                        f"sum by ({by}) (increase(qoe_probe_failures_total{{{ALL}}}[$__range]))",
                        ref="G",
                        instant=True,
                        fmt="table",
                    ),
                    "Failures",
                    "short",
                    [(None, "green"), (1.0, "red")],
                ),
            ],
        ),
        state_panel(
            ids(),
            "Latest run succeeded",
            "One lane per room and profile: green while the latest run succeeded, red while it failed.",
            prom(f"min by (target, profile) (qoe_probe_success{{{ALL}}})", "{{target}} {{profile}}"),
        ),
        timeseries_panel(
            ids(),
            "Join time p95",
            "95th percentile of join time over the last $window; dashed: 2 s, where viewers start "
            "leaving (Krishnan & Sitaraman, IMC 2012).",
            [
                prom(
                    JOIN_P95.format(by="target, profile, ", fn="rate", sel=ALL, w="$window"),
                    "{{target}} {{profile}}",
                )
            ],
            steps=JOIN,
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Stall ratio",
            "Frozen over watched time in the last $window; dashed: 1 % (Krishnan & Sitaraman, IMC 2012).",
            [
                prom(
                    STALL_RATIO.format(by="target, profile", fn="rate", sel=ALL, w="$window"),
                    "{{target}} {{profile}}",
                )
            ],
            unit="percentunit",
            steps=STALL,
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Glass-to-glass latency (median)",
            "Capture-to-decode latency, median of the latest run. Typical: WebRTC well under 1 s, RTMP "
            "1-3 s, HTTP-FLV 2-5 s, HLS 6-30 s; the alerts fire above the top of each range.",
            [
                prom(
                    f'max by (target, profile, kind) (qoe_glass_to_glass_seconds{{{ALL}, quantile="0.5"}})',
                    "{{target}} {{profile}} {{kind}}",
                )
            ],
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "A/V offset (median, + = audio ahead)",
            "Median A/V offset of the latest run. Green: undetectable (+45/-125 ms); yellow: detectable "
            "but acceptable (to +90/-185 ms); red: not acceptable (ITU-R BT.1359-1).",
            [
                prom(
                    f'avg by (target, profile) (qoe_av_offset_seconds{{{ALL}, quantile="0.5"}})',
                    "{{target}} {{profile}}",
                )
            ],
            steps=AV_BANDS,
            bands=True,
        ),
        timeseries_panel(
            ids(),
            "Freezes per minute watched",
            "Freezes (W3C webrtc-stats freezeCount) per minute of video watched, over the last $window.",
            [
                prom(
                    FREEZES_PER_MIN.format(by="target, profile", sel=ALL, w="$window"),
                    "{{target}} {{profile}}",
                )
            ],
            unit="short",
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Failures by error",
            "Failed probe runs in the last $window by error kind. A counter starts at the first failure "
            "of its kind, which increase() cannot see; the success lanes above show every failure.",
            [
                prom(
                    f"sum by (target, error) (increase(qoe_probe_failures_total{{{ALL}}}[$window]))",
                    "{{target}}: {{error}}",
                )
            ],
            unit="short",
            bars=True,
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Success by region",
            "Share of probes whose latest run succeeded, by the region label the fleet file gives "
            "targets (joined from qoe_target_info; empty when targets have no labels).",
            [
                prom(
                    f"avg by (region) (qoe_probe_success{{{ALL}}} * on(target) group_left(region) "
                    "group by (target, region) (qoe_target_info))",
                    "{{region}}",
                )
            ],
            unit="percentunit",
            min_value=0,
        ),
    ]
    for panel in panels:
        board = board.with_panel(panel)
    return board
