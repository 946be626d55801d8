"""The QoE probe detail dashboard: one probe (kind, target, profile, probe) in detail."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row

from grafana.figures import AV_BANDS, CHAT, JOIN, LOOP_LAG, ONE, QUALITY, STALE, STALL, STALL_RATIO, dashboard
from grafana.panels import (
    Ids,
    bargauge_panel,
    datasource_variable,
    label_variable,
    prom,
    stat_panel,
    timeseries_panel,
    window_variable,
)

__all__ = ["probe_detail"]


def probe_detail() -> Dashboard:
    """One probe (target, profile, kind, probe) in detail."""
    ids = Ids()
    board = (
        dashboard(
            "qoe-probe-detail",
            "QoE probe detail",
            "One probe in detail: join phases, freezes, frame rate, latency, A/V and co-host offset, "
            "chat echo.",
        )
        .with_variable(datasource_variable())
        .with_variable(label_variable("kind", "qoe_probe_success", multi=False))
        .with_variable(label_variable("target", 'qoe_probe_success{kind="$kind"}', multi=False))
        .with_variable(
            label_variable("profile", 'qoe_probe_success{kind="$kind", target="$target"}', multi=False)
        )
        .with_variable(
            label_variable(
                "probe", 'qoe_probe_success{kind="$kind", target="$target", profile="$profile"}', multi=False
            )
        )
        .with_variable(window_variable())
    )
    panels = [
        stat_panel(
            ids(),
            "Latest run",
            "Whether the latest run succeeded.",
            [prom(f"qoe_probe_success{{{ONE}}}", instant=True)],
            unit="none",
            steps=[(None, "red"), (1.0, "green")],
            mappings={"1": ("ok", "green"), "0": ("failed", "red")},
            w=4,
        ),
        stat_panel(
            ids(),
            "Result age",
            "Time since the latest run finished; QoEProbeStale fires past 10 min.",
            [prom(f"time() - qoe_probe_last_run_timestamp_seconds{{{ONE}}}", instant=True)],
            steps=STALE,
            w=4,
        ),
        stat_panel(
            ids(),
            "Join time",
            "Click to first frame in the latest run; past 2 s viewers start leaving (Krishnan & Sitaraman).",
            [prom(f'qoe_join_seconds{{{ONE}, phase="total"}}', instant=True)],
            steps=JOIN,
            w=4,
        ),
        stat_panel(
            ids(),
            "Stall ratio",
            "Frozen and paused over watched time in the latest run.",
            [prom(f"qoe_video_stall_ratio{{{ONE}}}", instant=True)],
            unit="percentunit",
            steps=STALL,
            w=4,
        ),
        stat_panel(
            ids(),
            "Frame rate",
            "Rendered frames per second in the latest run.",
            [prom(f"qoe_video_fps{{{ONE}}}", instant=True)],
            unit="fps",
            w=4,
        ),
        stat_panel(
            ids(),
            "Failed runs",
            "Failed runs over the dashboard's time range (0 when none failed).",
            [prom(f"sum(increase(qoe_probe_failures_total{{{ONE}}}[$__range])) or vector(0)", instant=True)],
            unit="short",
            steps=[(None, "green"), (1.0, "red")],
            w=4,
        ),
        timeseries_panel(
            ids(),
            "Join phases (latest run, stacked)",
            "Time spent in each join phase, stacked: the top is click to first frame. WebRTC: signaling, "
            "ICE connected, DTLS connected, first RTP packet, first decoded frame. Dashed: 2 s.",
            [prom(f'qoe_join_seconds{{{ONE}, phase!="total"}}', "{{phase}}")],
            steps=JOIN,
            stacked=True,
            min_value=0,
        ),
        bargauge_panel(
            ids(),
            "Join time distribution",
            "Runs by join time over the dashboard's time range (histogram buckets; 2 s is a bound).",
            [
                prom(
                    f"sum by (le) (increase(qoe_join_duration_seconds_bucket{{{ONE}}}[$__range]))",
                    "{{le}}",
                    instant=True,
                    fmt="heatmap",
                )
            ],
            unit="short",
            w=12,
        ),
        timeseries_panel(
            ids(),
            "Freezes and frozen time",
            "Freezes and pauses (W3C webrtc-stats) and the seconds they froze, over the last $window.",
            [
                prom(f"sum(increase(qoe_video_freezes_total{{{ONE}}}[$window]))", "freezes", ref="A"),
                prom(f"sum(increase(qoe_video_pauses_total{{{ONE}}}[$window]))", "pauses", ref="B"),
                prom(
                    f"sum(increase(qoe_video_frozen_seconds_total{{{ONE}}}[$window]))",
                    "frozen seconds",
                    ref="C",
                ),
            ],
            unit="short",
            min_value=0,
            overrides=[("frozen seconds", [("unit", "s"), ("custom.axisPlacement", "right")])],
        ),
        timeseries_panel(
            ids(),
            "Stall ratio",
            "Frozen over watched time: over the last $window (counters) and in the latest run; dashed: 1 %.",
            [
                prom(STALL_RATIO.format(by="", fn="rate", sel=ONE, w="$window"), "over $window", ref="A"),
                prom(f"qoe_video_stall_ratio{{{ONE}}}", "latest run", ref="B"),
            ],
            unit="percentunit",
            steps=STALL,
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Frame rate, dropped frames and decode errors",
            "Rendered frames per second in the latest run; over the last $window, frames the sender "
            "numbered but the probe never rendered, and encoded video the decoder rejected (a player "
            "conceals those, so they show nowhere else).",
            [
                prom(f"qoe_video_fps{{{ONE}}}", "fps", ref="A"),
                prom(
                    f"sum(increase(qoe_video_dropped_frames_total{{{ONE}}}[$window]))",
                    "dropped frames",
                    ref="B",
                ),
                prom(
                    f"sum(increase(qoe_video_decode_errors_total{{{ONE}}}[$window]))",
                    "decode errors",
                    ref="C",
                ),
            ],
            unit="fps",
            min_value=0,
            overrides=[
                (name, [("unit", "short"), ("custom.axisPlacement", "right")])
                for name in ("dropped frames", "decode errors")
            ],
        ),
        timeseries_panel(
            ids(),
            "Picture quality",
            "Luma SSIM of the latest run's scored frames against the test-signal frame each one's code "
            "names: median and worst twentieth (p5); PSNR in dB on the right axis. Red under SSIM 0.95.",
            [
                prom(f"qoe_video_ssim{{{ONE}}}", "SSIM quantile {{quantile}}", ref="A"),
                prom(f"qoe_video_psnr_decibels{{{ONE}}}", "PSNR quantile {{quantile}}", ref="B"),
            ],
            unit="none",
            steps=QUALITY,
            overrides=[
                (name, [("unit", "dB"), ("custom.axisPlacement", "right")])
                for name in ("PSNR quantile 0.05", "PSNR quantile 0.5")
            ],
        ),
        timeseries_panel(
            ids(),
            "Renditions and received bitrate",
            "Seconds of video shown at each picture height over the last $window (stacked), and the "
            "latest run's mean received video bitrate on the right axis.",
            [
                prom(
                    f"sum by (height) (increase(qoe_video_rendition_seconds_total{{{ONE}}}[$window]))",
                    "{{height}}p",
                    ref="A",
                ),
                prom(f"8 * qoe_video_received_bytes_per_second{{{ONE}}}", "bitrate", ref="B"),
            ],
            unit="s",
            min_value=0,
            overrides=[("bitrate", [("unit", "bps"), ("custom.axisPlacement", "right")])],
        ),
        timeseries_panel(
            ids(),
            "Glass-to-glass latency",
            "Capture-to-decode latency of the latest run's frames: median, p95 and max (quantile 1). "
            "Typical: WebRTC well under 1 s, RTMP 1-3 s, HTTP-FLV 2-5 s, HLS 6-30 s.",
            [prom(f"qoe_glass_to_glass_seconds{{{ONE}}}", "quantile {{quantile}}")],
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "A/V offset (+ = audio ahead)",
            "Median A/V offset and p95 of |offset| in the latest run. Green: undetectable (+45/-125 ms); "
            "yellow: acceptable (to +90/-185 ms); red: not acceptable (ITU-R BT.1359-1).",
            [
                prom(f'qoe_av_offset_seconds{{{ONE}, quantile="0.5"}}', "median", ref="A"),
                prom(f'qoe_av_offset_abs_seconds{{{ONE}, quantile="0.95"}}', "p95 |offset|", ref="B"),
            ],
            steps=AV_BANDS,
            bands=True,
            overrides=[("p95 |offset|", [("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})])],
        ),
        timeseries_panel(
            ids(),
            "Co-host offset",
            "Median co-host minus host marker time as one viewer sees the room (+ = co-host later). "
            "Absent for probes that watch no co-hosted room.",
            [prom(f'qoe_cohost_offset_seconds{{{ONE}, quantile="0.5"}}', "median")],
        ),
        timeseries_panel(
            ids(),
            "Chat echo",
            "Time from a chat message's send until another client receives it, latest run: median, p95, "
            "max. Dashed: 1 s, the alert's threshold. Absent for probes that do not chat.",
            [prom(f"qoe_chat_echo_seconds{{{ONE}}}", "quantile {{quantile}}")],
            steps=CHAT,
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Chat messages lost",
            "Share of chat messages never echoed within the timeout, over the last $window.",
            [
                prom(
                    f"sum(increase(qoe_chat_messages_lost_total{{{ONE}}}[$window])) "
                    f"/ sum(increase(qoe_chat_messages_sent_total{{{ONE}}}[$window]))",
                    "lost",
                )
            ],
            unit="percentunit",
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Probe duration and failures",
            "How long each run took, and failed runs in the last $window by error kind.",
            [
                prom(f"qoe_probe_duration_seconds{{{ONE}}}", "run duration", ref="A"),
                prom(
                    f"sum by (error) (increase(qoe_probe_failures_total{{{ONE}}}[$window]))",
                    "failed: {{error}}",
                    ref="B",
                ),
            ],
            min_value=0,
        ),
        timeseries_panel(
            ids(),
            "Probe host loop lag and CPU",
            "How late the probe's own event loop woke in the latest run: median, p95 and max (quantile 1); "
            "and how busy the probe machine's CPUs were, and how much of their time a hypervisor gave "
            "to other guests (right axis). Past the dashed 100 ms line, or "
            "at 85 % busy, the probe's host is too busy for its stutter and latency figures to be "
            "believed (QoEProbeHostOverloaded).",
            [
                prom(f"qoe_probe_loop_lag_seconds{{{ONE}}}", "quantile {{quantile}}", ref="A"),
                prom(f"qoe_probe_host_cpu_busy_ratio{{{ONE}}}", "CPU busy", ref="B"),
                prom(f"qoe_probe_host_cpu_stolen_ratio{{{ONE}}}", "CPU stolen", ref="C"),
            ],
            steps=LOOP_LAG,
            min_value=0,
            overrides=[
                (name, [("unit", "percentunit"), ("custom.axisPlacement", "right")])
                for name in ("CPU busy", "CPU stolen")
            ],
        ),
    ]
    for panel in panels:
        board = board.with_panel(panel)
    return _cohost_audio(board, ids)


def _cohost_audio(board: Dashboard, ids: Ids) -> Dashboard:
    """The row "Co-host audio": echo, noise and dropouts of host and co-host (docs/METRICS.md)."""
    board = board.with_row(Row("Co-host audio").id(ids()))
    panels = [
        timeseries_panel(
            ids(),
            "Co-host echo",
            "The host's tone returning in the co-host's own audio (latest run): its echo return loss "
            "(ITU-T G.168 ERL, webrtc-stats echoReturnLoss; the lower, the louder) and its delay behind "
            "the host (right axis). Empty: no echo, or the co-host watched in the mix only. "
            "QoECohostEcho fires on an echo in every run for 5 min.",
            [
                prom(f"qoe_cohost_echo_return_loss_decibels{{{ONE}}}", "return loss", ref="A"),
                prom(f"qoe_cohost_echo_delay_seconds{{{ONE}}}", "delay", ref="B"),
            ],
            unit="dB",
            min_value=0,
            overrides=[("delay", [("unit", "s"), ("custom.axisPlacement", "right")])],
        ),
        timeseries_panel(
            ids(),
            "Audio SNR and noise floor",
            "Each participant's marker tone over its audio's noise floor, dB (latest run), and the "
            "noise floor itself in dBFS (AES17, right axis). A clean Opus stream reads the floor "
            "at -120 dBFS.",
            [
                prom(f"qoe_audio_snr_decibels{{{ONE}}}", "SNR {{participant}}", ref="A"),
                prom(f"qoe_audio_noise_floor_dbfs{{{ONE}}}", "floor {{participant}}", ref="B"),
            ],
            unit="dB",
            overrides=[
                (f"floor {who}", [("unit", "dB"), ("custom.axisPlacement", "right")])
                for who in ("host", "cohost")
            ],
        ),
        timeseries_panel(
            ids(),
            "Audio dropouts",
            "Gaps in each participant's decoded audio, and the seconds they lasted, in the last $window; "
            "missing markers: tones silent in audio that did come. QoEAudioDropouts fires past 1 % "
            "of the watched time.",
            [
                prom(
                    f"sum by (participant) (increase(qoe_audio_dropouts_total{{{ONE}}}[$window]))",
                    "dropouts {{participant}}",
                    ref="A",
                ),
                prom(
                    f"sum by (participant) (increase(qoe_audio_dropout_seconds_total{{{ONE}}}[$window]))",
                    "seconds {{participant}}",
                    ref="B",
                ),
                prom(
                    f"sum by (participant) (increase(qoe_audio_missing_markers_total{{{ONE}}}[$window]))",
                    "missing markers {{participant}}",
                    ref="C",
                ),
            ],
            unit="short",
            bars=True,
            min_value=0,
        ),
    ]
    for panel in panels:
        board = board.with_panel(panel)
    return board
