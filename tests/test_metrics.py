"""Known-answer tests for qoe.metrics: each definition on its own, no event loop."""

from __future__ import annotations

import numpy as np
import pytest

from qoe import metrics
from qoe.timeline import ClockPoint, Timeline, ToneOnset, VideoFrameEvent

FRAME = 1 / 30


def frame_times(seconds: float, gaps: dict[int, float] | None = None) -> list[float]:
    """30 fps render times; ``gaps`` adds extra seconds before frame i."""
    times, t = [], 0.0
    for i in range(round(seconds * 30)):
        t += (gaps or {}).get(i, 0.0)
        times.append(t)
        t += FRAME
    return times


class TestJoin:
    ORDER = (
        "signaling",
        "ice_connected",
        "dtls_connected",
        "first_rtp_packet",
        "first_decoded_frame",
    )

    def test_phases_add_up_to_total(self) -> None:
        ms = {
            "signaling": 10.05,
            "ice_connected": 10.07,
            "dtls_connected": 10.08,
            "first_rtp_packet": 10.1,
            "first_decoded_frame": 10.15,
        }
        join = metrics.join(ms, self.ORDER, start=10.0)
        assert join.total_seconds == pytest.approx(0.15)
        assert list(join.phases) == list(self.ORDER)
        assert sum(join.phases.values()) == pytest.approx(join.total_seconds)
        assert join.phases["signaling"] == pytest.approx(0.05)

    def test_milestone_before_its_predecessor_is_a_zero_phase(self) -> None:
        ms = {
            "signaling": 1.0,
            "ice_connected": 1.2,
            "dtls_connected": 1.3,
            "first_rtp_packet": 1.25,
            "first_decoded_frame": 1.4,
        }
        join = metrics.join(ms, self.ORDER, start=0.0)
        assert join.phases["first_rtp_packet"] == 0.0
        assert all(v >= 0 for v in join.phases.values())
        assert sum(join.phases.values()) == pytest.approx(1.4)

    def test_no_total_without_the_last_milestone(self) -> None:
        join = metrics.join({"signaling": 0.1}, self.ORDER, start=0.0)
        assert join.total_seconds is None
        assert join.phases == {"signaling": pytest.approx(0.1)}


class TestFreezes:
    def test_steady_30fps_has_no_freeze(self) -> None:
        stats = metrics.freezes(frame_times(10))
        assert stats == metrics.FreezeStats(0, 0.0, 0, 0.0)

    def test_half_second_gap_is_one_freeze_of_its_whole_interval(self) -> None:
        stats = metrics.freezes(frame_times(10, {150: 0.5}))
        assert stats.freeze_count == 1
        assert stats.freeze_seconds == pytest.approx(0.5 + FRAME)

    def test_threshold_is_avg_plus_150ms_at_30fps(self) -> None:
        # avg 33.3 ms: max(3 * avg, avg + 150 ms) = 183.3 ms; 180 ms is not a freeze, 190 ms is.
        below = metrics.freezes(frame_times(5, {60: 0.180 - FRAME}))
        above = metrics.freezes(frame_times(5, {60: 0.190 - FRAME}))
        assert below.freeze_count == 0
        assert above.freeze_count == 1

    def test_threshold_is_three_frames_at_low_fps(self) -> None:
        # 5 fps: avg 200 ms, so 3 * avg = 600 ms dominates avg + 150 ms.
        t = [i * 0.2 for i in range(20)]
        assert metrics.freezes([*t, t[-1] + 0.55]).freeze_count == 0
        assert metrics.freezes([*t, t[-1] + 0.61]).freeze_count == 1

    def test_gap_over_five_seconds_is_a_pause_not_a_freeze(self) -> None:
        stats = metrics.freezes(frame_times(10, {100: 6.0}))
        assert (stats.freeze_count, stats.pause_count) == (0, 1)
        assert stats.pause_seconds == pytest.approx(6.0 + FRAME)

    def test_stream_stopping_before_the_end_is_frozen_until_the_end(self) -> None:
        times = frame_times(5)
        stats = metrics.freezes(times, end=times[-1] + 1.0)
        assert stats.freeze_count == 1
        assert stats.freeze_seconds == pytest.approx(1.0)

    def test_stall_ratio(self) -> None:
        stats = metrics.FreezeStats(2, 0.5, 1, 6.0)
        assert metrics.stall_ratio(stats, 65.0) == pytest.approx(0.1)
        assert metrics.stall_ratio(stats, 0.0) is None


def test_fps() -> None:
    assert metrics.fps(frame_times(10)) == pytest.approx(30.0)
    assert metrics.fps([1.0]) is None


def test_dropped_and_repeated_frames_across_the_wrap() -> None:
    seqs = [65533, 65534, None, 65535, 2, 2, 3]
    assert metrics.dropped_frames(seqs) == (2, 1)  # 0 and 1 missing, 2 twice
    assert metrics.dropped_frames([None, None]) is None


def test_frames_shown_with_an_unreadable_code_are_not_dropped() -> None:
    # A damaged picture the decoder concealed is still a rendered frame.
    assert metrics.dropped_frames([1, None, None, 4]) == (0, 0)
    assert metrics.dropped_frames([1, None, 5]) == (2, 0)  # one of 2, 3, 4 was shown
    assert metrics.dropped_frames([1, None, None, None, 3]) == (0, 0)  # more unread than the gap


def test_glass_to_glass_uses_frames_with_a_code_only() -> None:
    frames = [
        VideoFrameEvent(at=0, wall=100.10, stream_time=0, width=1, height=1, capture_wall=100.0),
        VideoFrameEvent(at=0, wall=100.20, stream_time=0, width=1, height=1, capture_wall=100.05),
        VideoFrameEvent(at=0, wall=100.30, stream_time=0, width=1, height=1),
    ]
    q = metrics.glass_to_glass(frames)
    assert q is not None
    assert q.p50 == pytest.approx(0.125) and q.max == pytest.approx(0.15)
    assert metrics.glass_to_glass(frames[2:]) is None


def test_to_sender_time_takes_the_least_late_clock_point_nearby() -> None:
    # Two reports 10 s apart; the second was sent 2 ms late. Sends are never early, so the
    # smaller offset (the first report's) is the truer mapping for both moments.
    points = [ClockPoint(0.0, 1000.0), ClockPoint(10.0, 1010.002)]
    assert metrics.to_sender_time(points, 1.0) == pytest.approx(1001.0)
    assert metrics.to_sender_time(points, 9.0) == pytest.approx(1009.0)
    # A point more than 30 s away is not used while a nearer one exists...
    far = [ClockPoint(0.0, 999.0), ClockPoint(100.0, 1100.0)]
    assert metrics.to_sender_time(far, 99.0) == pytest.approx(1099.0)
    # ...and the nearest one is, when none is within the window.
    assert metrics.to_sender_time([ClockPoint(0.0, 1000.0)], 60.0) == pytest.approx(1060.0)
    assert metrics.to_sender_time([], 1.0) is None


def _av_timeline(offset: float, seconds: int = 8, video_lag: float = 0.3) -> Timeline:
    """Frames at 30 fps flashing at whole sender seconds; tones ``offset`` s before each flash.

    Video and audio stream times start at different origins (as RTP timestamps do) and reach
    the probe at different times; only the clock points relate them.
    """
    t = Timeline(phases=("x",))
    sender0, v_origin, a_origin = 5000.0, 7.25, 123.5
    for k in range(seconds * 30):
        sender = sender0 + k / 30
        flash = 224.0 if (k % 30) < 3 else 32.0
        t.video.append(
            VideoFrameEvent(
                at=k / 30 + video_lag,
                wall=sender + video_lag,
                stream_time=v_origin + k / 30,
                width=640,
                height=360,
                seq=k,
                capture_wall=sender,
                flash=flash,
            )
        )
    for s in range(1, seconds):
        t.tones.append(ToneOnset(a_origin + s - offset, 1000.0))
    t.sync = {"video": [ClockPoint(v_origin, sender0)], "audio": [ClockPoint(a_origin, sender0)]}
    return t


@pytest.mark.parametrize("offset", [0.0, 0.08, -0.12])
def test_av_sync_recovers_the_offset(offset: float) -> None:
    sync = metrics.av_sync(_av_timeline(offset))
    assert sync is not None
    assert sync.median == pytest.approx(offset, abs=1e-9)
    assert sync.samples == 7  # the flash at second 0 has no dark frame before it


def test_av_sync_is_absent_without_sender_clock() -> None:
    t = _av_timeline(0.0)
    t.sync["audio"] = []
    assert metrics.av_sync(t) is None


def test_flash_onset_after_a_gap_is_not_used() -> None:
    t = _av_timeline(0.0)
    # Drop the frame before the flash at second 2 (k = 59): its onset time is unknown.
    del t.video[59]
    onsets = metrics.flash_onsets(t.video)
    assert [f.seq for f in onsets] == [30, 90, 120, 150, 180, 210]


def test_quantiles() -> None:
    q = metrics.quantiles(np.arange(101, dtype=float))
    assert q == metrics.Quantiles(50.0, 95.0, 100.0)
    assert metrics.quantiles([]) is None
