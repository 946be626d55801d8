"""Freezes and pauses between rendered video frames, counted exactly as libwebrtc counts them.

Chrome's ``getStats()`` reports ``freezeCount``, ``totalFreezesDuration``, ``pauseCount`` and
``totalPausesDuration`` (W3C webrtc-stats, RTCInboundRtpStreamStats) from libwebrtc's
``VideoQualityObserver`` (``video/video_quality_observer2.cc``), fed by
``ReceiveStatisticsProxy::OnRenderedFrame`` and ``ReceiveStatisticsProxy::OnStreamInactive``
(``video/receive_statistics_proxy.cc``). :class:`FreezeObserver` is that observer's freeze and
pause bookkeeping, rule for rule, so a probe's figures can be laid beside Chrome's:

- **Frame times in whole milliseconds.** ``VideoReceiveStream2::OnFrame`` stamps each frame
  with the receiver's clock right after handing it to the renderer (``VideoFrameMetaData``'s
  ``decode_timestamp``), read as ``Timestamp::ms()``: rounded to the nearest millisecond.
  Intervals are differences of those stamps, in integer milliseconds.
- **Average over 30 intervals, this one included, rounded down.** ``OnRenderedFrame`` adds the
  interval to a ``MovingAverage`` of ``kAvgInterframeDelaysWindowSizeFrames = 30`` samples
  *before* reading ``GetAverageRoundedDown()`` (``rtc_base/numerics/moving_average.cc``:
  the window's integer sum divided by its size, integer division). A freeze interval stays
  in the window, raising the average for the next 30 frames.
- **A freeze** is an interval ``>= max(3 * avg, avg + kMinIncreaseForFreezeMs)``, with
  ``kMinIncreaseForFreezeMs = 150``; its whole interval is freeze time
  (``TotalFreezesDurationMs``, which the stats collector divides by 1000).
- **Not before 5 samples.** Nothing is judged until the window holds
  ``kMinFrameSamplesToDetectFreeze = 5`` intervals (the current one among them): the first
  five frames can never close a freeze.
- **A pause** is the interval closed by the first frame rendered after
  ``OnStreamInactive()``: it counts as a pause of its whole length (``pauses_durations_``),
  is *not* added to the average and is not judged as a freeze. The frame after it is judged
  against the window as it was before the pause.
- **Nothing counts an open interval.** Every counter moves in ``OnRenderedFrame`` only, so a
  stream that stops and never renders again has no freeze or pause for its last gap.

When is the stream inactive? ``VideoReceiveStream2::OnDecodableFrameTimeout``
(``video/video_receive_stream2.cc``) runs when no decodable frame came for
``max_wait_for_frame``: ``kMaxWaitForFrame = 3 s`` (``video_receive_stream2.h``; Chrome keeps
it unless the SDP's ``rtx-time`` is under 1 s). ``VideoReceiveStreamTimeoutTracker`` starts
that wait when a frame is released for decoding and starts it again after every timeout, so
the check runs 3 s, 6 s, 9 s ... after the last frame. It declares the stream inactive
(``OnStreamInactive``) when no RTP packet arrived for ``kInactiveDuration = 5 s``. A probe
sees frames, not packets: taking the packets to stop when the frames do (they arrive at most
the jitter buffer's delay, well under 2 s, before their frame), the 3 s check still finds the
stream active and the 6 s one finds it inactive. So a gap of more than :data:`PAUSE_SECONDS`
(6 s: the first check at or past 5 s) is a pause, and a gap of 5 to 6 s is judged as a
freeze, as Chrome does, though the W3C text says a pause is over 5 s.

Intended deviations, each because the probe cannot see what libwebrtc sees:

- Packets that keep arriving without making a decodable frame keep libwebrtc's stream
  active, so Chrome counts such a gap as a (long) freeze; from frame times it is a pause.
- ``ReceiveStatisticsProxy::OnDecodedFrame`` starts a new observer when the content type
  switches between screenshare and camera; the probe does not know the content type.
- The millisecond rounding is of the probe's own clock, whose origin differs from Chrome's, so
  an interval may differ from Chrome's by a millisecond where a frame lands on a half.
- libwebrtc's clock is monotonic (it checks that frames never go back in time). The pure
  functions here take a time earlier than the one before it (a player clock restarted at a
  discontinuity) as shown at that one's time, an interval of 0; :meth:`FreezeObserver.add`
  refuses it.
- :attr:`FreezeStats.trailing_seconds` is this project's addition, not a getStats figure: see
  :func:`freeze_stats`.

:func:`stalls_over` is a different, fixed-threshold rule: every interval of at least 0.5 s,
as RTC vendors report freezes (Agora's ``totalFrozenTime``: two rendered frames more than
500 ms apart, at 5 fps or more).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FRAME_WAIT_SECONDS",
    "FREEZE_MIN_EXTRA_MS",
    "FREEZE_MIN_SAMPLES",
    "FREEZE_WINDOW_FRAMES",
    "INACTIVE_SECONDS",
    "PAUSE_SECONDS",
    "STALL_THRESHOLD_SECONDS",
    "FreezeObserver",
    "FreezeStats",
    "StallStats",
    "freeze_stats",
    "stalls_over",
]

FREEZE_WINDOW_FRAMES = 30
"""``VideoQualityObserver::kAvgInterframeDelaysWindowSizeFrames``: intervals averaged."""
FREEZE_MIN_SAMPLES = 5
"""``VideoQualityObserver::kMinFrameSamplesToDetectFreeze``: intervals (the current one
included) the window must hold before any interval is judged a freeze."""
FREEZE_MIN_EXTRA_MS = 150
"""``VideoQualityObserver::kMinIncreaseForFreezeMs``: a freeze is at least avg + 150 ms."""
INACTIVE_SECONDS = 5.0
"""``VideoReceiveStream2::OnDecodableFrameTimeout``: no RTP packet for this long and the
stream is inactive."""
FRAME_WAIT_SECONDS = 3.0
"""``kMaxWaitForFrame``: how often, without a decodable frame, libwebrtc checks for that."""
PAUSE_SECONDS = math.ceil(INACTIVE_SECONDS / FRAME_WAIT_SECONDS) * FRAME_WAIT_SECONDS
"""6 s: the first inactivity check that finds no packet for 5 s; a longer gap is a pause."""
STALL_THRESHOLD_SECONDS = 0.5
"""The fixed threshold of :func:`stalls_over`."""

_PAUSE_MS = round(PAUSE_SECONDS * 1000)


def _ms(seconds: float) -> int:
    """Whole milliseconds, half up, as libwebrtc's ``Timestamp::ms()`` rounds."""
    return math.floor(seconds * 1000.0 + 0.5)


@dataclass(frozen=True, slots=True)
class FreezeStats:
    """The four getStats figures (seconds are whole milliseconds, as Chrome reports them)."""

    freeze_count: int
    freeze_seconds: float
    pause_count: int
    pause_seconds: float
    trailing_seconds: float = 0.0
    """The gap from the last frame to the end of the watch when a frame at the end would have
    closed a freeze or a pause, else 0; counted in none of the four figures above."""


class FreezeObserver:
    """libwebrtc's ``VideoQualityObserver``, its freeze and pause counters only.

    Call :meth:`add` with each rendered frame's time (seconds, any monotonic origin) and
    :meth:`stream_inactive` when the stream is declared inactive; read the properties at any
    time. No I/O, no clock of its own.
    """

    def __init__(self) -> None:
        self._window: deque[int] = deque(maxlen=FREEZE_WINDOW_FRAMES)
        self._last_ms: int | None = None
        self._paused = False
        self._freeze_count = 0
        self._freeze_ms = 0
        self._pause_count = 0
        self._pause_ms = 0

    def add(self, at: float) -> None:
        """A frame rendered at ``at`` seconds (``VideoQualityObserver::OnRenderedFrame``)."""
        now = _ms(at)
        last = self._last_ms
        if last is not None:
            if now < last:
                raise ValueError(f"frame time {at} s is before the previous frame's")
            interval = now - last
            if self._paused:
                self._pause_count += 1
                self._pause_ms += interval
            else:
                self._window.append(interval)
                if self._judge(interval, self._window):
                    self._freeze_count += 1
                    self._freeze_ms += interval
        # A pause before the first frame closes nothing; the flag goes either way.
        self._paused = False
        self._last_ms = now

    def stream_inactive(self) -> None:
        """The stream was declared inactive (``VideoQualityObserver::OnStreamInactive``): the
        interval the next frame closes is a pause."""
        self._paused = True

    def would_freeze(self, at: float) -> bool:
        """Whether a frame rendered at ``at`` would close a freeze; nothing is recorded."""
        if self._last_ms is None or self._paused:
            return False
        interval = _ms(at) - self._last_ms
        window = deque(self._window, maxlen=FREEZE_WINDOW_FRAMES)
        window.append(interval)
        return self._judge(interval, window)

    @staticmethod
    def _judge(interval: int, window: deque[int]) -> bool:
        if len(window) < FREEZE_MIN_SAMPLES:
            return False
        avg = sum(window) // len(window)
        return interval >= max(3 * avg, avg + FREEZE_MIN_EXTRA_MS)

    @property
    def paused(self) -> bool:
        """The stream is inactive and no frame has been rendered since."""
        return self._paused

    @property
    def freeze_count(self) -> int:
        """``freezeCount``."""
        return self._freeze_count

    @property
    def freeze_seconds(self) -> float:
        """``totalFreezesDuration``: whole milliseconds, in seconds."""
        return self._freeze_ms / 1000

    @property
    def pause_count(self) -> int:
        """``pauseCount``."""
        return self._pause_count

    @property
    def pause_seconds(self) -> float:
        """``totalPausesDuration``: whole milliseconds, in seconds."""
        return self._pause_ms / 1000


def _render_times(times: Sequence[float] | np.ndarray) -> np.ndarray:
    """Seconds as a 1-D float array, each time at least the one before it."""
    t = np.asarray(times, dtype=float)
    if t.ndim != 1:
        raise ValueError(f"render times must be one-dimensional, got shape {t.shape}")
    if t.size and not np.isfinite(t).all():
        raise ValueError("render times must be finite")
    return np.maximum.accumulate(t) if t.size else t


def freeze_stats(times: Sequence[float] | np.ndarray, end: float | None = None) -> FreezeStats:
    """Freezes and pauses over rendered-frame times, as Chrome's getStats() would count them.

    ``times`` are render times in seconds (1-D, any origin); a time before the one preceding
    it counts as that one. A gap of more than :data:`PAUSE_SECONDS` is a pause: the frame
    closing it comes after libwebrtc's inactivity check (see the module docstring). Every
    other rule is :class:`FreezeObserver`'s.

    ``end`` (seconds, same clock) is when the watch ended. The gap from the last frame to it
    is never a freeze or a pause, as no frame closes it (libwebrtc counts none). When a frame
    at ``end`` would have closed one, that gap is :attr:`FreezeStats.trailing_seconds`, so a
    stall ratio can still count a stream that stopped before the probe did.
    """
    t = _render_times(times)
    observer = FreezeObserver()
    last: int | None = None
    for at in t:
        now = _ms(float(at))
        if last is not None and now - last > _PAUSE_MS:
            observer.stream_inactive()
        observer.add(float(at))
        last = now
    trailing = 0.0
    if end is not None and last is not None:
        gap = _ms(end) - last
        if gap > _PAUSE_MS or observer.would_freeze(end):
            trailing = gap / 1000
    return FreezeStats(
        observer.freeze_count,
        observer.freeze_seconds,
        observer.pause_count,
        observer.pause_seconds,
        trailing,
    )


@dataclass(frozen=True, slots=True)
class StallStats:
    threshold: float
    """Seconds: an interval at least this long is a stall."""
    count: int
    seconds: float
    """The stalls' whole intervals added up (whole milliseconds, in seconds)."""


def stalls_over(
    times: Sequence[float] | np.ndarray, threshold: float = STALL_THRESHOLD_SECONDS
) -> StallStats:
    """Intervals between consecutive rendered frames of at least ``threshold`` seconds.

    A fixed-threshold rule, as RTC vendors count freezes (Agora: two rendered frames more than
    500 ms apart; here 500 ms itself counts too), unlike the adaptive W3C/libwebrtc rule of
    :func:`freeze_stats`. Intervals are in whole milliseconds as there, and the gap after the
    last frame is not one. ``times`` as for :func:`freeze_stats`; ``threshold`` must be
    positive.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive seconds, got {threshold}")
    t = _render_times(times)
    ms = np.floor(t * 1000.0 + 0.5).astype(np.int64)
    intervals = np.diff(ms)
    stalls = intervals[intervals >= _ms(threshold)]
    return StallStats(threshold, int(stalls.size), int(stalls.sum()) / 1000)
