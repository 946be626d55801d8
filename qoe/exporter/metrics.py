"""Prometheus metric families for probe results, defined once, read at scrape time.

Every family has the labels ``probe, kind, target, profile`` (``target`` is the fleet's
target name, or the URL with its secrets masked). Extra, bounded labels appear only where
named: ``phase`` (join phases), ``quantile``, ``error`` (an error kind). A target's own labels
from the fleet file (region, ISP, ...) are on one info metric, ``qoe_target_info``, to join
in queries, so no family's label set depends on the fleet file.

Three kinds of family, as blackbox_exporter and client_python conventions suggest:

- gauges of the latest run (``qoe_probe_success``, ``qoe_join_seconds{phase}``, ...), and
  client-side summaries of the latest run as gauges with a ``quantile`` label (glass-to-glass
  latency, A/V offset, chat echo: the probe computed them over frames or messages);
- counters that add up every run (freezes, frozen and watched seconds, dropped frames), so
  ``rate()`` gives stall ratios over any window;
- a histogram of join time, one observation per run, with buckets at the thresholds in
  docs/SOURCES.md (viewers start leaving past 2 s: Krishnan & Sitaraman, IMC 2012).

A figure that was not measured is left out of the scrape, never exported as zero.

Beside them, :class:`ExporterCollector` exports ``qoe serve``'s own state (``qoe_exporter_*``
and the skipped scheduled runs): how many ``/probe`` runs go on, its limit, how many requests
were refused for it, and how many scheduled turns came while the probe's previous run still
went. Those are the signs of an exporter asked for more than it was set to do.
"""

from __future__ import annotations

import bisect
import importlib.metadata
import platform
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from qoe.result import ProbeResult

__all__ = ["JOIN_BUCKETS", "LABELS", "ExporterCollector", "ResultCollector", "family_names"]

LABELS = ("probe", "kind", "target", "profile")
JOIN_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Seconds. 2 s is where abandonment starts (Krishnan & Sitaraman, IMC 2012)."""

Key = tuple[str, str, str, str]


@dataclass
class _Totals:
    """One probe's running sums. A sum stays None until a run measured its figure, so a
    figure the probe's kind never measures (a WHEP viewer's chat messages, a chat probe's
    freezes) is left out of the scrape rather than counted as zero."""

    runs: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    freezes: float | None = None
    frozen_seconds: float | None = None
    pauses: float | None = None
    stalls_over: float | None = None
    watched_seconds: float | None = None
    dropped_frames: float | None = None
    decode_errors: float | None = None
    chat_sent: float | None = None
    chat_lost: float | None = None
    grab_seen: float | None = None
    grab_won: float | None = None
    grab_sold_out: float | None = None
    rendition_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds shown at each picture height ("360", ...), summed over runs."""
    rendition_switches: float | None = None
    audio_dropouts: dict[str, float] = field(default_factory=dict)
    """Dropouts counted per participant (``host``, ``cohost``), summed over runs."""
    audio_dropout_seconds: dict[str, float] = field(default_factory=dict)
    audio_missing_markers: dict[str, float] = field(default_factory=dict)
    join_buckets: list[int] = field(default_factory=lambda: [0] * (len(JOIN_BUCKETS) + 1))
    join_sum: float = 0.0
    join_count: int = 0


def _plus(total: float | None, value: float | None) -> float | None:
    """``total + value``, where None is a figure not measured: it adds nothing, and a sum of
    nothing measured stays None."""
    if value is None:
        return total
    return (total or 0) + value


@dataclass
class _Latest:
    result: ProbeResult
    finished_at: float


def _participants_audio(result: ProbeResult, name: str) -> list[tuple[str, Any]]:
    """``(participant, value)`` of the audio figure ``name`` for the host and, when a co-host
    was watched, for it; values not measured are left out."""
    pairs = [("host", getattr(result.audio, name)), ("cohost", result.cohost.audio.get(name))]
    return [(who, value) for who, value in pairs if value is not None]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ResultCollector(Collector):
    """Holds the latest result and running totals per probe; exports them when scraped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._latest: dict[Key, _Latest] = {}
        self._totals: dict[Key, _Totals] = {}
        self._targets: dict[str, dict[str, str]] = {}
        if registry is not None:
            registry.register(self)

    def observe(self, result: ProbeResult, finished_at: float) -> None:
        """Take in one finished probe run (``finished_at`` in Unix seconds)."""
        key = (result.probe, result.kind, result.target, result.profile)
        self._latest[key] = _Latest(result, finished_at)
        totals = self._totals.setdefault(key, _Totals())
        totals.runs += 1
        if not result.success:
            kind = result.error.kind if result.error else "error"
            totals.failures[kind] = totals.failures.get(kind, 0) + 1
        video = result.video
        totals.freezes = _plus(totals.freezes, video.freeze_count)
        for frozen in (video.freeze_seconds, video.pause_seconds, video.trailing_seconds):
            totals.frozen_seconds = _plus(totals.frozen_seconds, frozen)
        totals.pauses = _plus(totals.pauses, video.pause_count)
        totals.stalls_over = _plus(totals.stalls_over, video.stalls_over_seconds.get("count"))
        totals.watched_seconds = _plus(totals.watched_seconds, video.watched_seconds)
        totals.dropped_frames = _plus(totals.dropped_frames, video.dropped_frames)
        totals.decode_errors = _plus(totals.decode_errors, video.decode_errors)
        totals.chat_sent = _plus(totals.chat_sent, result.chat.sent)
        totals.chat_lost = _plus(totals.chat_lost, result.chat.lost)
        totals.grab_seen = _plus(totals.grab_seen, result.grab.seen)
        totals.grab_won = _plus(totals.grab_won, result.grab.won)
        totals.grab_sold_out = _plus(totals.grab_sold_out, result.grab.sold_out)
        for span in video.renditions or ():
            height = str(int(span["height"]))
            shown = totals.rendition_seconds.get(height, 0.0)
            totals.rendition_seconds[height] = shown + float(span["seconds"])
        totals.rendition_switches = _plus(totals.rendition_switches, video.switches)
        for participant, dropouts in _participants_audio(result, "dropouts"):
            for store, name in (
                (totals.audio_dropouts, "count"),
                (totals.audio_dropout_seconds, "seconds"),
                (totals.audio_missing_markers, "missing_markers"),
            ):
                if (value := dropouts.get(name)) is not None:
                    store[participant] = store.get(participant, 0.0) + float(value)
        join = result.join.total_seconds
        if join is not None:
            totals.join_buckets[bisect.bisect_left(JOIN_BUCKETS, join)] += 1
            totals.join_sum += join
            totals.join_count += 1
        if result.labels:
            self._targets[result.target] = dict(result.labels)

    def forget(self, keep: Iterable[Key]) -> None:
        """Drop probes not in ``keep`` (a target removed from the fleet)."""
        wanted = set(keep)
        for store in (self._latest, self._totals):
            for key in [k for k in store if k not in wanted]:
                del store[key]

    def describe(self) -> Iterator[Metric]:
        # Listing the families up front lets a registry refuse a clash at registration.
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        index = {f.name: f for f in families}

        def add(name: str, key: Key, value: float | None, *extra: str) -> None:
            if value is not None:
                family = index[name]
                assert isinstance(family, GaugeMetricFamily | CounterMetricFamily)
                family.add_metric([*key, *extra], float(value))

        for key, latest in sorted(self._latest.items()):
            r = latest.result
            add("qoe_probe_success", key, 1.0 if r.success else 0.0)
            add("qoe_probe_duration_seconds", key, r.duration_seconds)
            add("qoe_probe_last_run_timestamp_seconds", key, latest.finished_at)
            add("qoe_join_seconds", key, r.join.total_seconds, "total")
            for phase, seconds in r.join.phases.items():
                add("qoe_join_seconds", key, seconds, phase)
            add("qoe_video_fps", key, r.video.fps)
            add("qoe_video_stall_ratio", key, r.video.stall_ratio)
            for quantile, stat in (("0.5", "p50"), ("0.95", "p95"), ("1", "max")):
                add("qoe_glass_to_glass_seconds", key, r.latency.glass_to_glass_seconds.get(stat), quantile)
                add("qoe_chat_echo_seconds", key, r.chat.echo_seconds.get(stat), quantile)
                add("qoe_probe_loop_lag_seconds", key, r.probe_host.loop_lag_seconds.get(stat), quantile)
                add("qoe_grab_seen_after_seconds", key, r.grab.seen_after_seconds.get(stat), quantile)
                add("qoe_grab_answer_seconds", key, r.grab.answer_seconds.get(stat), quantile)
            add("qoe_probe_host_cpu_busy_ratio", key, r.probe_host.cpu_busy_ratio)
            add("qoe_probe_host_cpu_stolen_ratio", key, r.probe_host.cpu_stolen_ratio)
            add("qoe_av_offset_seconds", key, r.av_sync.offset_seconds.get("median"), "0.5")
            add("qoe_av_offset_abs_seconds", key, r.av_sync.offset_seconds.get("p95_abs"), "0.95")
            add("qoe_cohost_offset_seconds", key, r.cohost.offset_seconds.get("median"), "0.5")
            echo = r.cohost.echo
            if echo.get("detected") is not None:
                add("qoe_cohost_echo_detected", key, 1.0 if echo["detected"] else 0.0)
            add("qoe_cohost_echo_delay_seconds", key, echo.get("delay_seconds"))
            add("qoe_cohost_echo_return_loss_decibels", key, echo.get("return_loss_db"))
            for participant, snr in _participants_audio(r, "snr_db"):
                add("qoe_audio_snr_decibels", key, snr, participant)
            for participant, floor in _participants_audio(r, "noise_floor_dbfs"):
                add("qoe_audio_noise_floor_dbfs", key, floor, participant)
            quality = r.video.quality
            if quality is not None:
                ssim, psnr = quality["ssim"], quality["psnr_db"]
                for quantile, ssim_value, psnr_value in (
                    ("0.05", ssim["p5"], psnr["p5"]),
                    ("0.5", ssim["p50"], psnr["p50"]),
                ):
                    add("qoe_video_ssim", key, ssim_value, quantile)
                    add("qoe_video_psnr_decibels", key, psnr_value, quantile)
            bitrate = r.video.bitrate_kbps
            if bitrate is not None:
                add("qoe_video_received_bytes_per_second", key, bitrate["mean"] * 1000 / 8)
        for key, t in sorted(self._totals.items()):
            add("qoe_probe_runs", key, t.runs)
            for kind, count in sorted(t.failures.items()):
                add("qoe_probe_failures", key, count, kind)
            add("qoe_video_freezes", key, t.freezes)
            add("qoe_video_frozen_seconds", key, t.frozen_seconds)
            add("qoe_video_pauses", key, t.pauses)
            add("qoe_video_stalls_over_threshold", key, t.stalls_over)
            add("qoe_video_watched_seconds", key, t.watched_seconds)
            add("qoe_video_dropped_frames", key, t.dropped_frames)
            add("qoe_video_decode_errors", key, t.decode_errors)
            add("qoe_chat_messages_sent", key, t.chat_sent)
            add("qoe_chat_messages_lost", key, t.chat_lost)
            add("qoe_grab_drops_seen", key, t.grab_seen)
            add("qoe_grab_wins", key, t.grab_won)
            add("qoe_grab_sold_out", key, t.grab_sold_out)
            for height, seconds in sorted(t.rendition_seconds.items(), key=lambda item: int(item[0])):
                add("qoe_video_rendition_seconds", key, seconds, height)
            add("qoe_video_rendition_switches", key, t.rendition_switches)
            for name, store in (
                ("qoe_audio_dropouts", t.audio_dropouts),
                ("qoe_audio_dropout_seconds", t.audio_dropout_seconds),
                ("qoe_audio_missing_markers", t.audio_missing_markers),
            ):
                for participant, value in sorted(store.items()):
                    add(name, key, value, participant)
            cumulative, buckets = 0, []
            for bound, count in zip((*JOIN_BUCKETS, float("inf")), t.join_buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
            histogram = index["qoe_join_duration_seconds"]
            assert isinstance(histogram, HistogramMetricFamily)
            histogram.add_metric(list(key), buckets, t.join_sum)
        info = index["qoe_target"]
        assert isinstance(info, InfoMetricFamily)
        for target, labels in sorted(self._targets.items()):
            info.add_metric([target], labels)
        return iter(families)

    @staticmethod
    def _families() -> list[Metric]:
        g, c = GaugeMetricFamily, CounterMetricFamily
        labels = list(LABELS)
        build = InfoMetricFamily("qoe_build", "Version of qoe and of the media stacks it measures with.")
        build.add_metric(
            [],
            {
                "version": _version("qoe-probe"),
                "aiortc": _version("aiortc"),
                "av": _version("av"),
                "python": platform.python_version(),
            },
        )
        return [
            build,
            InfoMetricFamily("qoe_target", "A target's labels from the fleet file.", labels=["target"]),
            g("qoe_probe_success", "1 if the latest probe run succeeded, else 0.", labels=labels),
            g("qoe_probe_duration_seconds", "How long the latest probe run took.", labels=labels),
            g(
                "qoe_probe_last_run_timestamp_seconds",
                "When the latest probe run finished (Unix time); stale means probes stopped.",
                labels=labels,
            ),
            g(
                "qoe_join_seconds",
                "Join time of the latest run: phase=total is click to first frame, the others its phases.",
                labels=[*labels, "phase"],
            ),
            g("qoe_video_fps", "Rendered frames per second in the latest run.", labels=labels),
            g(
                "qoe_video_ssim",
                "Luma SSIM of the latest run's scored frames against the test signal (quantile "
                "0.05 is the worst twentieth): 1 is a perfect copy; below 0.9 looks visibly coded.",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_video_psnr_decibels",
                "Luma PSNR of the latest run's scored frames against the test signal, dB (100: identical).",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_video_received_bytes_per_second",
                "Encoded video received in the latest run, mean bytes per second.",
                labels=labels,
            ),
            g(
                "qoe_video_stall_ratio",
                "Frozen and paused time over watched time in the latest run (W3C webrtc-stats).",
                labels=labels,
            ),
            g(
                "qoe_glass_to_glass_seconds",
                "Capture-to-decode latency over the latest run's frames (quantile 1 is the max).",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_probe_loop_lag_seconds",
                "How late the probe's own event loop ran during the latest run (quantile 1 is the max); "
                "0.1 s or more and the run's stutter figures may be the probe host's own.",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_probe_host_cpu_busy_ratio",
                "Share of the probe machine's CPU time (all cores) busy during the latest run; "
                "0.85 or more and the run's stutter figures may be the probe host's own.",
                labels=labels,
            ),
            g(
                "qoe_probe_host_cpu_stolen_ratio",
                "Share of the probe machine's CPU time a hypervisor gave to other guests during "
                "the latest run (counted in busy too): a noisy neighbour delays stamps by milliseconds.",
                labels=labels,
            ),
            g(
                "qoe_av_offset_seconds",
                "Median A/V offset of the latest run; positive = audio ahead (ITU-R BT.1359).",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_av_offset_abs_seconds",
                "95th percentile of the absolute A/V offset in the latest run.",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_cohost_offset_seconds",
                "Median co-host minus host marker time as a viewer sees them, latest run.",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_cohost_echo_detected",
                "1 if the latest run heard the host's tone return in the co-host's own audio (an "
                "echo), else 0; absent where not looked for (a mix).",
                labels=labels,
            ),
            g(
                "qoe_cohost_echo_delay_seconds",
                "Delay of that echo behind the host's tone, on the senders' clocks, latest run.",
                labels=labels,
            ),
            g(
                "qoe_cohost_echo_return_loss_decibels",
                "Echo return loss of that echo (ITU-T G.168 ERL, webrtc-stats echoReturnLoss): how "
                "far below the host's tone it is, dB; the lower, the louder the echo.",
                labels=labels,
            ),
            g(
                "qoe_audio_snr_decibels",
                "Power of a participant's marker tone over its audio's noise floor, latest run, dB.",
                labels=[*labels, "participant"],
            ),
            g(
                "qoe_audio_noise_floor_dbfs",
                "Median power of a participant's audio away from the tones, latest run, dB "
                "relative to a full-scale sine (AES17).",
                labels=[*labels, "participant"],
            ),
            g(
                "qoe_chat_echo_seconds",
                "Chat send-to-receive latency over the latest run's messages (quantile 1 is the max).",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_grab_seen_after_seconds",
                "Coupon drop opened (sender's clock) to seen on screen, over the latest run's drops "
                "(quantile 1 is the max).",
                labels=[*labels, "quantile"],
            ),
            g(
                "qoe_grab_answer_seconds",
                "Coupon grab request to its answer, over the latest run's grabs (quantile 1 is the max).",
                labels=[*labels, "quantile"],
            ),
            c("qoe_probe_runs", "Probe runs finished.", labels=labels),
            c("qoe_probe_failures", "Probe runs that failed, by error kind.", labels=[*labels, "error"]),
            c("qoe_video_freezes", "Video freezes seen (W3C webrtc-stats freezeCount).", labels=labels),
            c(
                "qoe_video_frozen_seconds",
                "Seconds of frozen or paused video seen, and of video stopped before a run ended; "
                "rate over watched seconds is the stall ratio.",
                labels=labels,
            ),
            c("qoe_video_pauses", "Video pauses (gaps over 6 s, as Chrome counts them) seen.", labels=labels),
            c(
                "qoe_video_stalls_over_threshold",
                "Render gaps of 0.5 s or more seen: a fixed-threshold count, as RTC vendors count freezes.",
                labels=labels,
            ),
            c("qoe_video_watched_seconds", "Seconds of video watched, first frame to end.", labels=labels),
            c("qoe_video_dropped_frames", "Frames the sender numbered but no probe rendered.", labels=labels),
            c(
                "qoe_video_decode_errors",
                "Encoded video frames (WebRTC) or packets (FFmpeg) the decoder rejected.",
                labels=labels,
            ),
            c(
                "qoe_video_rendition_seconds",
                "Seconds of video shown at each picture height (a rendition), first frame to end.",
                labels=[*labels, "height"],
            ),
            c(
                "qoe_video_rendition_switches",
                "Changes of picture size between consecutive frames shown.",
                labels=labels,
            ),
            c(
                "qoe_audio_dropouts",
                "Gaps in a participant's decoded audio (its media timeline) seen.",
                labels=[*labels, "participant"],
            ),
            c(
                "qoe_audio_dropout_seconds",
                "Seconds of a participant's audio missing in those gaps; rate over watched seconds "
                "is the share of the audio lost.",
                labels=[*labels, "participant"],
            ),
            c(
                "qoe_audio_missing_markers",
                "A participant's marker tones silent in audio that did arrive.",
                labels=[*labels, "participant"],
            ),
            c("qoe_chat_messages_sent", "Chat messages sent by probes.", labels=labels),
            c("qoe_chat_messages_lost", "Chat messages never echoed within the timeout.", labels=labels),
            c("qoe_grab_drops_seen", "Coupon drops grab probes saw.", labels=labels),
            c("qoe_grab_wins", "Coupon drops grab probes won (a coupon each).", labels=labels),
            c(
                "qoe_grab_sold_out",
                "Grabs answered sold out: a normal outcome; its share of grabs is the chance of losing.",
                labels=labels,
            ),
            HistogramMetricFamily(
                "qoe_join_duration_seconds",
                "Join time (click to first frame) per probe run.",
                labels=labels,
            ),
        ]


def family_names() -> list[str]:
    """Every metric name a scrape can contain (counters with ``_total``, histograms' series)."""
    names = []
    for family in ResultCollector._families():
        if family.type == "counter":
            names.append(family.name + "_total")
        elif family.type == "histogram":
            names += [family.name + suffix for suffix in ("_bucket", "_sum", "_count")]
        elif family.type == "info":
            names.append(family.name + "_info")
        else:
            names.append(family.name)
    return names


class ExporterCollector(Collector):
    """``qoe serve``'s own counts: ``/probe`` runs going and refused, scheduled turns skipped."""

    def __init__(self, probe_limit: int, registry: CollectorRegistry | None = None) -> None:
        self.probe_limit = probe_limit
        self.probes_in_flight = 0
        self.probes_refused = 0
        self.skipped: dict[Key, int] = {}
        if registry is not None:
            registry.register(self)

    def skip(self, key: Key) -> int:
        """Count one scheduled turn of probe ``key`` skipped; the probe's count so far."""
        self.skipped[key] = self.skipped.get(key, 0) + 1
        return self.skipped[key]

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        in_flight, limit, refused, skipped = self._families()
        assert isinstance(in_flight, GaugeMetricFamily) and isinstance(limit, GaugeMetricFamily)
        assert isinstance(refused, CounterMetricFamily) and isinstance(skipped, CounterMetricFamily)
        in_flight.add_metric([], self.probes_in_flight)
        limit.add_metric([], self.probe_limit)
        refused.add_metric([], self.probes_refused)
        for key, count in sorted(self.skipped.items()):
            skipped.add_metric(list(key), count)
        return iter((in_flight, limit, refused, skipped))

    @staticmethod
    def _families() -> list[Metric]:
        return [
            GaugeMetricFamily("qoe_exporter_probe_requests_in_flight", "/probe runs going now."),
            GaugeMetricFamily(
                "qoe_exporter_probe_requests_limit",
                "Most /probe runs at once; beyond it a /probe is answered 503 with Retry-After.",
            ),
            CounterMetricFamily(
                "qoe_exporter_probe_requests_refused",
                "/probe requests answered 503 because the limit of runs at once was reached.",
            ),
            CounterMetricFamily(
                "qoe_probe_runs_skipped",
                "Scheduled turns not run because the probe's previous run was still going "
                "(a run slower than its interval, or waiting for [fleet] concurrency).",
                labels=list(LABELS),
            ),
        ]
