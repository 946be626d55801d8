"""Known-answer tests for qoe.metrics: each definition on its own, no event loop."""

from __future__ import annotations

import numpy as np
import pytest

from qoe import metrics
from qoe.signal import identity_delay
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
    """The rule as Chrome's getStats() applies it (more cases, each citing libwebrtc, are in
    tests/test_freeze.py). Durations are whole milliseconds, as Chrome reports them."""

    def test_steady_30fps_has_no_freeze(self) -> None:
        stats = metrics.freezes(frame_times(10))
        assert stats == metrics.FreezeStats(0, 0.0, 0, 0.0)

    def test_half_second_gap_is_one_freeze_of_its_whole_interval(self) -> None:
        stats = metrics.freezes(frame_times(10, {150: 0.5}))
        assert stats.freeze_count == 1
        assert stats.freeze_seconds == pytest.approx(0.5 + FRAME, abs=0.001)

    def test_threshold_is_avg_plus_150ms_at_30fps(self) -> None:
        # The gap is in the average: (29 * 33.3 + 180) // 30 = 38 ms, so it takes 188 ms;
        # 180 ms is not a freeze, 190 ms is.
        below = metrics.freezes(frame_times(5, {60: 0.180 - FRAME}))
        above = metrics.freezes(frame_times(5, {60: 0.190 - FRAME}))
        assert below.freeze_count == 0
        assert above.freeze_count == 1

    def test_threshold_is_three_frames_at_low_fps(self) -> None:
        # 5 fps: 3 * avg dominates avg + 150 ms. The gap itself is in the average (19 intervals
        # of 200 ms and the gap), so 660 ms gives avg 223 ms and is short of 669 ms; 670 ms is a freeze.
        t = [i * 0.2 for i in range(20)]
        assert metrics.freezes([*t, t[-1] + 0.66]).freeze_count == 0
        assert metrics.freezes([*t, t[-1] + 0.67]).freeze_count == 1

    def test_gap_over_six_seconds_is_a_pause_not_a_freeze(self) -> None:
        stats = metrics.freezes(frame_times(10, {100: 6.0}))
        assert (stats.freeze_count, stats.pause_count) == (0, 1)
        assert stats.pause_seconds == pytest.approx(6.0 + FRAME, abs=0.001)

    def test_stream_stopping_before_the_end_is_no_freeze_but_stalls(self) -> None:
        # No frame closes the last gap, so getStats counts nothing for it; the stall ratio does.
        times = frame_times(5)
        stats = metrics.freezes(times, end=times[-1] + 1.0)
        assert (stats.freeze_count, stats.freeze_seconds) == (0, 0.0)
        assert stats.trailing_seconds == pytest.approx(1.0)
        watched = times[-1] + 1.0 - times[0]
        assert metrics.stall_ratio(stats, watched) == pytest.approx(1.0 / watched)

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


SENDER0 = 5000  # the first sender second of the synthetic timelines (identity 8)


def _av_timeline(
    offset: float, seconds: int = 8, video_lag: float = 0.3, identities: bool = True, tone_hz: float = 1000.0
) -> Timeline:
    """Frames at 30 fps flashing at whole sender seconds; tones ``offset`` s before each flash.

    Video and audio stream times start at different origins (as RTP timestamps do) and reach
    the probe at different times; only the clock points relate them. Both media cover the
    same ``seconds`` of sender time, as a probe's window does: with a large offset, the tones
    of the first seconds of video were sent before the window, and those of the last ones in
    it belong to later video. Each marker has its identity burst unless ``identities`` is off.
    """
    t = Timeline(phases=("x",))
    sender0, v_origin, a_origin = float(SENDER0), 7.25, 123.5
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
    for s in range(-20, seconds + 20):
        second = SENDER0 + s
        for at in (s, s + identity_delay(second)) if identities else (s,):
            if 0 <= at - offset < seconds:
                t.tones.append(ToneOnset(a_origin + at - offset, tone_hz))
    t.sync = {"video": [ClockPoint(v_origin, sender0)], "audio": [ClockPoint(a_origin, sender0)]}
    return t


def _paired_seconds(offset: float, seconds: int = 8) -> int:
    """Seconds whose flash (1..seconds-1: 0 has no dark frame before it) and identified tone
    (marker and identity burst) are both in the window."""
    return sum(
        1 for s in range(1, seconds) if s - offset >= 0 and s - offset + identity_delay(SENDER0 + s) < seconds
    )


@pytest.mark.parametrize("offset", [0.0, 0.08, -0.12, 0.6, -0.8, 2.0, 2.9, -2.9])
def test_av_sync_recovers_the_offset(offset: float) -> None:
    """Each flash is paired with the tone of its own second: +0.6 s is not read as -0.4 s,
    which the nearest tone would give."""
    sync = metrics.av_sync(_av_timeline(offset))
    assert sync.reason is None
    assert sync.median == pytest.approx(offset, abs=1e-9)
    assert sync.offsets == pytest.approx([offset] * sync.samples, abs=1e-9)
    assert sync.samples == _paired_seconds(offset) >= 3
    if offset in (0.0, 0.08, -0.12):
        assert sync.samples == 7


@pytest.mark.parametrize("offset", [3.5, -3.5, 7.5])
def test_av_sync_beyond_the_range_is_null_with_a_reason(offset: float) -> None:
    sync = metrics.av_sync(_av_timeline(offset, seconds=12))
    assert (sync.median, sync.p95_abs) == (None, None)
    assert sync.reason == "offset beyond the +-3 s measurement range"
    assert sync.offsets == pytest.approx([offset] * sync.samples, abs=1e-9)  # measured, not wrapped
    assert sync.samples > 0


def test_av_sync_aliases_beyond_the_modulus_less_the_range() -> None:
    """The known limit: identities repeat every 16 s, so 16.6 s reads as 0.6 s (and anything
    beyond 13 s as something 16 s less). Documented, not hidden."""
    sync = metrics.av_sync(_av_timeline(16.6, seconds=30))
    assert sync.median == pytest.approx(0.6, abs=1e-9)


def test_av_sync_says_why_it_is_null() -> None:
    t = _av_timeline(0.0)
    t.sync["audio"] = []
    assert metrics.av_sync(t).reason == "no sender clock for audio or video"
    assert metrics.av_sync(t).median is None
    t = _av_timeline(0.0)
    t.tones = []
    assert metrics.av_sync(t).reason == "no audio markers"
    # Markers without identity bursts (an older signal) are never paired by nearness.
    sync = metrics.av_sync(_av_timeline(0.0, identities=False))
    assert (sync.median, sync.samples, sync.reason) == (None, 0, "no identified audio markers")
    t = _av_timeline(0.0)
    for frame in t.video:
        frame.capture_wall = None  # no code read: a flash's second is unknown
    assert metrics.av_sync(t).reason == "no video markers"
    # Audio and video of different seconds only: nothing to pair.
    t = _av_timeline(6.5, seconds=6)
    assert metrics.av_sync(t).reason == "no flash and tone of the same second"


def test_av_sync_of_one_participant_by_its_tone() -> None:
    t = _av_timeline(0.6)
    t.tones += _av_timeline(-0.8, tone_hz=1500.0).tones
    assert metrics.av_sync(t, 1000.0).median == pytest.approx(0.6, abs=1e-9)
    assert metrics.av_sync(t, 1500.0).median == pytest.approx(-0.8, abs=1e-9)


def test_result_counts_markers_and_carries_the_reason() -> None:
    t = _av_timeline(0.6)
    t.end = t.video[-1].at
    assert len(t.tones) == 16  # 8 markers in the window and their identity bursts
    t.role = "viewer"
    result = metrics.result_of(t)
    assert result.audio.tone_onsets == 8
    assert result.av_sync.offset_seconds["median"] == pytest.approx(0.6, abs=1e-9)
    assert result.av_sync.reason is None
    far = _av_timeline(3.5, seconds=12)
    far.role = "viewer"
    result = metrics.result_of(far)
    assert result.av_sync.offset_seconds == {"median": None, "p95_abs": None}
    assert result.av_sync.reason == "offset beyond the +-3 s measurement range"


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
