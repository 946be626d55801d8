"""The QoE by network profile dashboard: the same figures side by side per profile."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from grafana.figures import (
    ALL,
    AV_BANDS,
    CHAT,
    FREEZES_PER_MIN,
    GRAB_ANSWER,
    JOIN,
    JOIN_P95,
    QUALITY,
    STALL,
    STALL_RATIO,
    SUCCESS,
    dashboard,
    mean_over_range,
)
from grafana.panels import (
    Ids,
    bargauge_panel,
    datasource_variable,
    label_variable,
    prom,
    timeseries_panel,
    window_variable,
)

__all__ = ["profiles"]


def profiles() -> Dashboard:
    """The same figures side by side across network profiles."""
    ids = Ids()
    board = (
        dashboard(
            "qoe-profiles",
            "QoE by network profile",
            "The same figures side by side for each emulated network profile: what a weak network costs.",
        )
        .with_variable(datasource_variable())
        .with_variable(label_variable("kind", "qoe_probe_success", multi=True))
        .with_variable(label_variable("target", 'qoe_probe_success{kind=~"$kind"}', multi=True))
        .with_variable(
            label_variable("profile", 'qoe_probe_success{kind=~"$kind", target=~"$target"}', multi=True)
        )
        .with_variable(window_variable())
    )
    over = "over the dashboard's time range"
    rendition_seconds = f"increase(qoe_video_rendition_seconds_total{{{ALL}}}[$__range])"
    panels = [
        bargauge_panel(
            ids(),
            "Success",
            f"Share of the time the latest run had succeeded, {over}.",
            [
                prom(
                    mean_over_range(f"qoe_probe_success{{{ALL}}}"),
                    "{{profile}}",
                    instant=True,
                )
            ],
            unit="percentunit",
            steps=SUCCESS,
        ),
        bargauge_panel(
            ids(),
            "Join time p95",
            f"95th percentile of join time {over}; red past 2 s (Krishnan & Sitaraman, IMC 2012).",
            [
                prom(
                    JOIN_P95.format(by="profile, ", fn="increase", sel=ALL, w="$__range"),
                    "{{profile}}",
                    instant=True,
                )
            ],
            steps=JOIN,
        ),
        bargauge_panel(
            ids(),
            "Stall ratio",
            f"Frozen over watched time {over}; red past 1 %.",
            [
                prom(
                    STALL_RATIO.format(by="profile", fn="increase", sel=ALL, w="$__range"),
                    "{{profile}}",
                    instant=True,
                )
            ],
            unit="percentunit",
            steps=STALL,
        ),
        bargauge_panel(
            ids(),
            "Freezes per minute watched",
            f"Freezes per minute of video watched {over}.",
            [prom(FREEZES_PER_MIN.format(by="profile", sel=ALL, w="$__range"), "{{profile}}", instant=True)],
            unit="short",
        ),
        bargauge_panel(
            ids(),
            "Frame rate",
            f"Mean rendered frames per second {over}.",
            [
                prom(
                    mean_over_range(f"qoe_video_fps{{{ALL}}}"),
                    "{{profile}}",
                    instant=True,
                )
            ],
            unit="fps",
        ),
        bargauge_panel(
            ids(),
            "Picture quality (SSIM p50)",
            f"Mean of the runs' median luma SSIM against the test signal {over}; red under 0.95.",
            [
                prom(
                    mean_over_range(f'qoe_video_ssim{{{ALL}, quantile="0.5"}}'),
                    "{{profile}}",
                    instant=True,
                )
            ],
            unit="none",
            steps=QUALITY,
        ),
        bargauge_panel(
            ids(),
            "Time at each rendition",
            f"Share of the video shown at each picture height {over}, per profile.",
            [
                prom(
                    f"sum by (profile, height) ({rendition_seconds})"
                    f" / ignoring (height) group_left sum by (profile) ({rendition_seconds})",
                    "{{profile}} {{height}}p",
                    instant=True,
                )
            ],
            unit="percentunit",
        ),
        bargauge_panel(
            ids(),
            "Glass-to-glass p95",
            f"Mean of the runs' p95 capture-to-decode latency {over}, per profile and kind (each "
            "protocol has its own normal range).",
            [
                prom(
                    mean_over_range(f'qoe_glass_to_glass_seconds{{{ALL}, quantile="0.95"}}', "profile, kind"),
                    "{{profile}} {{kind}}",
                    instant=True,
                )
            ],
        ),
        bargauge_panel(
            ids(),
            "A/V offset (median, + = audio ahead)",
            f"Mean of the runs' median A/V offset {over}; colors as ITU-R BT.1359-1: green undetectable, "
            "yellow acceptable, red not.",
            [
                prom(
                    mean_over_range(f'qoe_av_offset_seconds{{{ALL}, quantile="0.5"}}'),
                    "{{profile}}",
                    instant=True,
                )
            ],
            steps=AV_BANDS,
            min_value=None,
        ),
        bargauge_panel(
            ids(),
            "Co-host offset (median)",
            f"Mean of the runs' median co-host offset {over}.",
            [
                prom(
                    mean_over_range(f'qoe_cohost_offset_seconds{{{ALL}, quantile="0.5"}}'),
                    "{{profile}}",
                    instant=True,
                )
            ],
            min_value=None,
        ),
        bargauge_panel(
            ids(),
            "Chat echo p95",
            f"Mean of the runs' p95 chat echo {over}; red past 1 s.",
            [
                prom(
                    mean_over_range(f'qoe_chat_echo_seconds{{{ALL}, quantile="0.95"}}'),
                    "{{profile}}",
                    instant=True,
                )
            ],
            steps=CHAT,
        ),
        timeseries_panel(
            ids(),
            "Join time p95 by profile",
            "95th percentile of join time over the last $window, one line per profile; dashed: 2 s.",
            [prom(JOIN_P95.format(by="profile, ", fn="rate", sel=ALL, w="$window"), "{{profile}}")],
            steps=JOIN,
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Stall ratio by profile",
            "Frozen over watched time over the last $window, one line per profile; dashed: 1 %.",
            [prom(STALL_RATIO.format(by="profile", fn="rate", sel=ALL, w="$window"), "{{profile}}")],
            unit="percentunit",
            steps=STALL,
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Glass-to-glass median by profile",
            "Median capture-to-decode latency of the latest run, one line per profile and kind.",
            [
                prom(
                    f'avg by (profile, kind) (qoe_glass_to_glass_seconds{{{ALL}, quantile="0.5"}})',
                    "{{profile}} {{kind}}",
                )
            ],
            min_value=0,
        ),
    ]
    for panel in panels:
        board = board.with_panel(panel)
    return _grabs(board, ids)


def _grabs(board: Dashboard, ids: Ids) -> Dashboard:
    """The row "Grabs by profile": how much later each profile sees a coupon drop, and how
    many coupons it wins (grab probes; docs/METRICS.md, coupon grabs)."""
    board = board.with_row(Row("Grabs by profile").id(ids()))
    over = "over the dashboard's time range"
    seen_p50 = mean_over_range(f'qoe_grab_seen_after_seconds{{{ALL}, quantile="0.5"}}')
    wins = f"sum by (profile) (increase(qoe_grab_wins_total{{{ALL}}}[$__range]))"
    panels = [
        bargauge_panel(
            ids(),
            "Drop seen after (p50)",
            f"Mean of the runs' median time from a coupon drop opening to its showing on screen {over}.",
            [prom(seen_p50, "{{profile}}", instant=True)],
        ),
        bargauge_panel(
            ids(),
            "Fairness gap",
            f"How much later each profile sees a drop than the quickest profile: its mean median "
            f"seen-after less the lowest {over}.",
            [prom(f"{seen_p50} - scalar(min({seen_p50}))", "{{profile}}", instant=True)],
        ),
        bargauge_panel(
            ids(),
            "Share of coupons won",
            f"Of the coupons all grab probes won {over}, the share each profile's probes won.",
            [prom(f"{wins} / scalar(sum({wins}))", "{{profile}}", instant=True)],
            unit="percentunit",
        ),
        bargauge_panel(
            ids(),
            "Grabs sold out",
            f"Grabs answered sold out per drop seen {over}: the chance a viewer on each profile "
            "loses the race (a normal outcome, not an error).",
            [
                prom(
                    f"sum by (profile) (increase(qoe_grab_sold_out_total{{{ALL}}}[$__range]))"
                    f" / sum by (profile) (increase(qoe_grab_drops_seen_total{{{ALL}}}[$__range]))",
                    "{{profile}}",
                    instant=True,
                )
            ],
            unit="percentunit",
        ),
        timeseries_panel(
            ids(),
            "Grab answer p95 by profile",
            "95th percentile of grab request to answer of the latest run, one line per profile; "
            "dashed: 0.5 s, where QoEGrabAnswerSlow fires.",
            [prom(f'avg by (profile) (qoe_grab_answer_seconds{{{ALL}, quantile="0.95"}})', "{{profile}}")],
            steps=GRAB_ANSWER,
            min_value=0,
        ),
    ]
    for panel in panels:
        board = board.with_panel(panel)
    return board
