"""Replayed render traces against the answers libwebrtc's VideoQualityObserver gives.

Each case is a list of intervals between rendered frames (whole milliseconds, as libwebrtc
takes them) and the freeze and pause figures Chrome's getStats() would report for it; ``why``
names the libwebrtc behaviour it pins down (video/video_quality_observer2.cc,
rtc_base/numerics/moving_average.cc, video/video_receive_stream2.cc). The arithmetic is
integer and exact, so the answers are exact too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from qoe import freeze, metrics
from qoe.freeze import FreezeObserver, freeze_stats, stalls_over
from qoe.result import ProbeResult
from qoe.timeline import Timeline, VideoFrameEvent


def trace(*intervals_ms: int) -> list[float]:
    """Render times in seconds: a first frame at 0, then one after each interval."""
    return [float(t) / 1000 for t in np.cumsum([0, *intervals_ms])]


@dataclass(frozen=True)
class Case:
    name: str
    intervals_ms: list[int]
    freezes: tuple[int, int]
    """(freezeCount, totalFreezesDuration in ms)"""
    pauses: tuple[int, int] = (0, 0)
    """(pauseCount, totalPausesDuration in ms)"""
    why: str = ""


CASES = [
    Case(
        "freeze_right_after_a_pause",
        [33] * 30 + [7000, 200],
        freezes=(1, 200),
        pauses=(1, 7000),
        why="OnRenderedFrame: the interval closing a pause is counted in pauses_durations_, not "
        "added to the moving average nor judged; the next one is judged against the window as "
        "it was before the pause: (29 * 33 + 200) // 30 = 38, threshold 188 ms. An average that "
        "took the 7 s in would hide freezes for 30 frames.",
    ),
    Case(
        "burst_of_frames_at_join",
        [0, 0, 0, 0, 170] + [33] * 10,
        freezes=(0, 0),
        why="The current interval is in the average: at the fifth sample 170 // 5 = 34 ms, "
        "threshold 184 ms. An average of the earlier (zero) intervals alone would make the "
        "170 ms after a join burst a freeze.",
    ),
    Case(
        "186_ms_after_29_intervals_of_33_ms",
        [33] * 29 + [186],
        freezes=(0, 0),
        why="AddSample before GetAverageRoundedDown: (29 * 33 + 186) // 30 = 38, threshold "
        "188 ms, so no freeze; without the current interval the threshold would be 183 ms.",
    ),
    Case(
        "188_ms_after_29_intervals_of_33_ms",
        [33] * 29 + [188],
        freezes=(1, 188),
        why="The same window reaches its threshold: (957 + 188) // 30 = 38, 188 >= 188.",
    ),
    Case(
        "fewer_than_five_samples",
        [33, 33, 33, 1000],
        freezes=(0, 0),
        why="kMinFrameSamplesToDetectFreeze = 5, counted with the current interval: the "
        "fourth interval is never judged, however long.",
    ),
    Case(
        "five_samples",
        [33, 33, 33, 33, 1000],
        freezes=(1, 1000),
        why="The fifth interval is judged: (4 * 33 + 1000) // 5 = 226, threshold 678 ms.",
    ),
    Case(
        "average_rounded_down_150_ms_frames",
        [2000] + [150] * 31 + [483],
        freezes=(1, 483),
        why="GetAverageRoundedDown: (29 * 150 + 483) // 30 = 161, threshold 483 ms; the "
        "unrounded 161.1 would want 483.3 ms. libwebrtc's own FreezeDetection case (the "
        "2 s first interval has left the window).",
    ),
    Case(
        "average_rounded_down_150_ms_frames_one_short",
        [2000] + [150] * 31 + [482],
        freezes=(0, 0),
        why="FreezeDetection's counterpart: 482 < 3 * 161.",
    ),
    Case(
        "avg_plus_150_ms_at_30_ms_frames",
        [2000] + [30] * 31 + [185],
        freezes=(1, 185),
        why="FreezeDetection, avg + 150 ms dominating: (29 * 30 + 185) // 30 = 35, 185 >= 185.",
    ),
    Case(
        "avg_plus_150_ms_at_30_ms_frames_one_short",
        [2000] + [30] * 31 + [184],
        freezes=(0, 0),
        why="FreezeDetection's counterpart: 184 < 35 + 150.",
    ),
    Case(
        "freeze_stays_in_the_average",
        [33] * 30 + [400, 33, 199],
        freezes=(1, 400),
        why="The freeze interval was added to the window before judging and stays there: "
        "(27 * 33 + 400 + 33 + 199) // 30 = 50, so 199 ms right after it is no freeze "
        "(it would be against a window of 33 ms intervals, threshold 188 ms).",
    ),
    Case(
        "gap_of_5_5_s_is_a_freeze",
        [33] * 30 + [5500],
        freezes=(1, 5500),
        why="OnDecodableFrameTimeout checks for inactivity (no packet for 5 s) every 3 s "
        "without a decodable frame: at 3 s the stream is active, and the frame at 5.5 s "
        "comes before the 6 s check. Chrome counts a freeze, not a pause.",
    ),
    Case(
        "gap_of_6_5_s_is_a_pause",
        [33] * 30 + [6500, 33, 33],
        freezes=(0, 0),
        pauses=(1, 6500),
        why="The 6 s check finds no packet for 5 s: OnStreamInactive, so the gap is a pause.",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_replayed_trace_gives_libwebrtcs_figures(case: Case) -> None:
    stats = freeze_stats(trace(*case.intervals_ms))
    assert (stats.freeze_count, round(stats.freeze_seconds * 1000)) == case.freezes, case.why
    assert (stats.pause_count, round(stats.pause_seconds * 1000)) == case.pauses, case.why
    assert stats.trailing_seconds == 0.0


class TestTrailingGap:
    """Every counter moves in OnRenderedFrame: a gap that no frame closes is never counted."""

    def test_stream_stopping_before_the_probe_is_no_freeze_but_trailing(self) -> None:
        times = trace(*[33] * 150)
        stats = freeze_stats(times, end=times[-1] + 1.0)
        assert (stats.freeze_count, stats.freeze_seconds) == (0, 0.0)
        assert stats.trailing_seconds == pytest.approx(1.0)
        assert metrics.stall_ratio(stats, 6.0) == pytest.approx(1.0 / 6.0)

    def test_a_gap_too_short_to_freeze_is_not_trailing(self) -> None:
        times = trace(*[33] * 150)
        assert freeze_stats(times, end=times[-1] + 0.150).trailing_seconds == 0.0

    def test_a_gap_that_would_be_a_pause_is_trailing_not_a_pause(self) -> None:
        times = trace(*[33] * 150)
        stats = freeze_stats(times, end=times[-1] + 7.0)
        assert (stats.pause_count, stats.pause_seconds) == (0, 0.0)
        assert stats.trailing_seconds == pytest.approx(7.0)

    def test_too_few_frames_to_judge_is_not_trailing(self) -> None:
        # Four intervals with the one to the end: kMinFrameSamplesToDetectFreeze not reached.
        times = trace(33, 33, 33)
        assert freeze_stats(times, end=times[-1] + 1.0).trailing_seconds == 0.0


class TestObserver:
    """The estimator itself, fed as ReceiveStatisticsProxy feeds VideoQualityObserver."""

    def test_inactive_stream_makes_the_next_interval_a_pause(self) -> None:
        # libwebrtc's PausesAreIgnored: 10 s after OnStreamInactive is a pause, no freeze.
        observer = FreezeObserver()
        for t in trace(*[33] * 6):
            observer.add(t)
        observer.stream_inactive()
        assert observer.paused
        observer.add(0.198 + 10.0)
        assert (observer.pause_count, observer.pause_seconds) == (1, 10.0)
        assert observer.freeze_count == 0 and not observer.paused

    def test_a_long_gap_while_packets_still_arrive_is_a_freeze(self) -> None:
        # No OnStreamInactive (the stream kept sending packets): judged as a freeze.
        observer = FreezeObserver()
        for t in trace(*[33] * 6):
            observer.add(t)
        observer.add(0.198 + 10.0)
        assert (observer.freeze_count, observer.freeze_seconds, observer.pause_count) == (1, 10.0, 0)

    def test_inactive_before_the_first_frame_counts_no_pause(self) -> None:
        # OnRenderedFrame adds a pause only once a frame was rendered before it.
        observer = FreezeObserver()
        observer.stream_inactive()
        observer.add(5.0)
        observer.add(5.033)
        assert observer.pause_count == 0 and not observer.paused

    def test_frame_times_are_whole_milliseconds_rounded_half_up(self) -> None:
        # Timestamp::ms() rounds each frame's time to the nearest millisecond, and intervals
        # are differences of those: 0.4 ms is 0, 33.6 ms is 34, 318.6 ms is 319.
        observer = FreezeObserver()
        for t in (0.0004, 0.0336, 0.0671, 0.1004, 0.1329, 0.3186):
            observer.add(t)
        # Intervals 34, 33, 33, 33, 186 ms: (133 + 186) // 5 = 63, threshold 213 ms.
        assert observer.freeze_count == 0
        # A sixth interval x freezes from x >= 3 * ((319 + x) // 6), i.e. 318 ms: a frame at
        # 636.4 ms (636, so 317) does not, one at 636.6 ms (637, so 318) does.
        assert not observer.would_freeze(0.6364)
        assert observer.would_freeze(0.6366)

    def test_a_frame_before_the_previous_one_is_refused(self) -> None:
        observer = FreezeObserver()
        observer.add(1.0)
        with pytest.raises(ValueError, match="before the previous frame"):
            observer.add(0.5)


def test_render_times_that_step_back_count_as_the_previous_frame() -> None:
    # A player clock restarted at a discontinuity: no negative interval, no error.
    times = [*trace(*[33] * 10), 0.1, *[0.330 + 0.033 * i for i in range(1, 5)]]
    assert freeze_stats(times) == freeze_stats([*trace(*[33] * 10), 0.330, *times[-4:]])


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one-dimensional"):
        freeze_stats(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        stalls_over([0.0, float("nan")])


def test_metrics_freezes_is_this_rule() -> None:
    times = trace(*[33] * 30, 7000, 200)
    assert metrics.freezes(times, end=times[-1] + 1.0) == freeze_stats(times, end=times[-1] + 1.0)
    assert metrics.PAUSE_SECONDS == freeze.PAUSE_SECONDS == 6.0


class TestStallsOver:
    """A fixed 0.5 s rule, as RTC vendors count freezes: every interval of at least 0.5 s."""

    def test_counts_intervals_of_half_a_second_or_more(self) -> None:
        stats = stalls_over(trace(*[33] * 10, 499, 33, 500, 33, 800, 7000))
        assert (stats.threshold, stats.count) == (0.5, 3)
        assert stats.seconds == pytest.approx(8.3)

    def test_another_threshold(self) -> None:
        stats = stalls_over(trace(33, 200, 33, 199), threshold=0.2)
        assert (stats.count, stats.seconds) == (1, pytest.approx(0.2))

    def test_no_interval_no_stall(self) -> None:
        assert stalls_over([]).count == 0
        assert stalls_over([1.0]).seconds == 0.0

    def test_threshold_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            stalls_over([0.0, 1.0], threshold=0.0)


class TestProbeResult:
    """What a viewer's result says of a watch whose stream stopped early."""

    @staticmethod
    def watched(intervals_ms: list[int], end_after: float) -> ProbeResult:
        times = trace(*intervals_ms)
        timeline = Timeline(("first_frame",), start=0.0, started_at=1e9, role="viewer")
        timeline.video = [VideoFrameEvent(t, 1e9 + t, t, 64, 36) for t in times]
        timeline.end = times[-1] + end_after
        return metrics.result_of(timeline)

    def test_stream_stopping_early_stalls_but_is_no_freeze(self) -> None:
        video = self.watched([33] * 60 + [600] + [33] * 60, end_after=2.0).video
        assert (video.freeze_count, video.freeze_seconds) == (1, 0.6)
        assert video.trailing_seconds == pytest.approx(2.0)
        assert video.watched_seconds == pytest.approx(6.56)
        assert video.stall_ratio == pytest.approx((0.6 + 2.0) / 6.56)
        assert video.stalls_over_seconds == {"threshold": 0.5, "count": 1, "seconds": 0.6}

    def test_no_frames_no_stall_figures(self) -> None:
        result = metrics.result_of(
            Timeline(("first_frame",), start=0.0, started_at=1e9, end=3.0, role="viewer")
        )
        assert result.video.stalls_over_seconds == {"threshold": 0.5, "count": None, "seconds": None}
        assert result.video.trailing_seconds is None
