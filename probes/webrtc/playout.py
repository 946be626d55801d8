"""When a libwebrtc player (Chrome's) shows each received video frame, and which it never shows.

A player does not show a frame when it is decoded. libwebrtc's receiver gives every frame a
render time: an estimate of when a frame with that RTP timestamp arrives, plus a playout
delay that follows its jitter estimate (``modules/video_coding/timing/timing.cc``). Frames
wait until then, are decoded in order, and only from intact references: a frame whose
reference was lost is never decoded, and nothing is shown until a keyframe comes
(``api/video/frame_buffer.cc``). aiortc hands over every frame it completes, references
broken or not, the moment it has it, and its decoder conceals the damage: a probe stamping
frames on arrival sees neither the waiting nor the frozen picture. :class:`Playout` replays a
receiver's frames through libwebrtc's rules and says when each is shown, or that it is not.

The parts, each a plain estimator (``update`` with a sample, read an estimate):

- :class:`ReceiveClock` maps an RTP timestamp to the local time a frame with it is expected
  to be complete: a least-squares line through (arrival, RTP time) of the frames that came
  without retransmission, with a CUSUM test that re-anchors the line's offset when the
  network delay changes for good (libwebrtc's ``TimestampExtrapolator``).
- :class:`JitterEstimator` says how much later than that line a frame may come: the part of
  frame delay variation explained by frame size (a Kalman filter of delay against size
  change, times how much larger than average the largest frames are) plus a noise margin
  (2.33 standard deviations less 30 ms), plus 10 ms for the operating system, plus 0.9 RTT
  (at most 200 ms) once three frames needed retransmission (libwebrtc's ``JitterEstimator``).
- :class:`DecodeTime` is the 95th percentile of recent decode times.
- :class:`Playout` holds the delays (``VCMTiming``) and the decode order
  (``VideoStreamBufferController``): target delay = jitter delay + decode time + 10 ms render
  delay, clamped to the playout-delay bounds; the current delay, which render times use,
  rises by how late frames are decoded up to the target and falls to the target at once.

Times are seconds on the caller's monotonic clock; RTP timestamps are 90 kHz ticks, unwrapped.
The estimators keep libwebrtc's units inside (milliseconds, 90 kHz ticks, bytes) so that its
tuning constants mean what they mean there. docs/PLAYOUT.md says where the model stops.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass

__all__ = [
    "RENDER_DELAY",
    "DecodeTime",
    "EncodedFrame",
    "JitterEstimator",
    "Played",
    "Playout",
    "ReceiveClock",
]

RTP_TICKS_PER_MS = 90.0
"""Video RTP clock (RFC 7741 for VP8, RFC 6184 for H.264): 90 kHz."""
RENDER_DELAY = 0.010
"""Seconds libwebrtc allows for rendering a decoded frame (``kDefaultRenderDelay``)."""
MAX_PLAYOUT_DELAY = 10.0
"""libwebrtc's upper bound on the playout delay when the sender does not set one, seconds."""


class ReceiveClock:
    """Expected local arrival time of an RTP timestamp, fitted to frames' arrivals.

    The line ``rtp_ticks = rate * t_ms + offset`` is fitted by recursive least squares with no
    forgetting, starting from the nominal 90 ticks/ms with the offset free (covariance 1 and
    1e10, as libwebrtc starts). A CUSUM test on the residuals (drift 6600 ticks, residuals
    capped at 7000, alarm at 60000: a shift of more than ~75 ms held for some 150 frames)
    frees the offset again, so the line follows a lasting change of network delay without
    chasing every late frame. The first two frames just step on from the previous arrival.
    Ten seconds without an update start the fit over.
    """

    STARTUP_FRAMES = 2
    CUSUM_DRIFT = 6600.0
    CUSUM_CAP = 7000.0
    CUSUM_ALARM = 60e3
    OFFSET_VARIANCE = 1e10
    RESET_AFTER_MS = 10_000.0

    def __init__(self) -> None:
        self.alarms = 0
        """How often the delay-change test re-anchored the offset."""
        self._restart(0.0)

    def _restart(self, now_ms: float) -> None:
        self._start_ms = self._prev_ms = now_ms
        self._first: int | None = None
        self._prev_rtp: int | None = None
        self._rate = RTP_TICKS_PER_MS
        self._offset = 0.0
        self._cov = [[1.0, 0.0], [0.0, self.OFFSET_VARIANCE]]
        self._frames = 0
        self._cusum_up = self._cusum_down = 0.0

    def update(self, now: float, rtp: int) -> None:
        """A frame with RTP timestamp ``rtp`` was complete at ``now`` (seconds).

        The line's time origin is the first frame's arrival (libwebrtc's is the stream's
        creation; with its loose prior on the offset the fit hardly depends on it).
        """
        now_ms = now * 1000.0
        if self._first is None or now_ms - self._prev_ms > self.RESET_AFTER_MS:
            self._restart(now_ms)
            self._first = rtp
        self._prev_ms = now_ms
        t = now_ms - self._start_ms
        residual = (rtp - self._first) - (self._rate * t + self._offset)
        if self._delay_changed(residual) and self._frames >= self.STARTUP_FRAMES:
            self._cov[1][1] = self.OFFSET_VARIANCE
        if self._prev_rtp is not None and rtp < self._prev_rtp:
            return  # reordered: it would bend the line backwards
        p = self._cov
        pt = (p[0][0] * t + p[0][1], p[1][0] * t + p[1][1])
        gain = (pt[0] / (1.0 + t * pt[0] + pt[1]), pt[1] / (1.0 + t * pt[0] + pt[1]))
        self._rate += gain[0] * residual
        self._offset += gain[1] * residual
        tp = (t * p[0][0] + p[1][0], t * p[0][1] + p[1][1])
        self._cov = [[p[i][j] - gain[i] * tp[j] for j in range(2)] for i in range(2)]
        self._prev_rtp = rtp
        self._frames = min(self._frames + 1, self.STARTUP_FRAMES)

    def _delay_changed(self, residual: float) -> bool:
        capped = max(-self.CUSUM_CAP, min(self.CUSUM_CAP, residual))
        self._cusum_up = max(self._cusum_up + capped - self.CUSUM_DRIFT, 0.0)
        self._cusum_down = min(self._cusum_down + capped + self.CUSUM_DRIFT, 0.0)
        if self._cusum_up > self.CUSUM_ALARM or self._cusum_down < -self.CUSUM_ALARM:
            self._cusum_up = self._cusum_down = 0.0
            self.alarms += 1
            return True
        return False

    def local_time(self, rtp: int) -> float | None:
        """When a frame with ``rtp`` is expected complete (seconds), None before any frame."""
        if self._first is None or self._prev_rtp is None:
            return None
        if self._frames < self.STARTUP_FRAMES:
            return (self._prev_ms + (rtp - self._prev_rtp) / RTP_TICKS_PER_MS) / 1000.0
        if self._rate < 1e-3:
            return self._start_ms / 1000.0
        return (self._start_ms + (rtp - self._first - self._offset) / self._rate) / 1000.0


class JitterEstimator:
    """How much later than expected a frame may complete, from frame delay variation.

    ``update`` takes a frame's delay variation (its arrival interval minus its RTP interval,
    ms) and size (bytes). The variation is modelled as ``slope * size_change + queue +
    noise``: a Kalman filter tracks slope (ms per byte, the inverse of the link's rate; it
    starts at 512 kbit/s) and queue, and an exponential average with weight ``(n-1)/n``
    (``n`` up to 400 frames) the noise's mean and variance. Samples are first clamped to 3.5
    standard deviations; one beyond 15 counts as 15 and does not move the filter, unless the
    frame is unusually large; a frame much smaller than the largest (a delta frame queued
    behind a keyframe) moves only the noise. The estimate is ``slope * (largest frame size -
    average frame size) + max(1, 2.33 sigma - 30)`` ms, plus 10 ms for the operating system,
    plus ``min(0.9 RTT, 200 ms)`` once three frames were retransmitted within 60 s.

    Departures from libwebrtc: the noise average's weight is not rescaled for frame rates
    other than 30 fps, and the estimate is not scaled down below 10 fps.
    """

    NOISE_FRAMES_MAX = 400
    CLAMP_SIGMAS = 3.5
    OUTLIER_SIGMAS = 15.0
    SIZE_OUTLIER_SIGMAS = 3.0
    CONGESTION_REJECTION = -0.25
    NOISE_SIGMAS = 2.33
    NOISE_OFFSET_MS = 30.0
    OS_JITTER_MS = 10.0
    SIZE_WEIGHT = 0.97
    MAX_SIZE_DECAY = 0.9999
    SIZE_STARTUP_FRAMES = 5
    NACK_LIMIT = 3
    NACK_TIMEOUT = 60.0
    RTT_MULTIPLIER = 0.9
    RTT_CAP = 0.200

    def __init__(self) -> None:
        self._avg_size = 500.0
        self._max_size = 500.0
        self._var_size = 100.0
        self._startup_sizes: list[float] = []
        self._prev_size: float | None = None
        self._noise_mean = 0.0
        self._noise_var = 4.0
        self._noise_count = 1
        self._slope = 1.0 / (512e3 / 8.0)
        self._queue = 0.0
        self._cov = [[1e-4, 0.0], [0.0, 1e2]]
        self._prev_estimate_ms = 1.0
        self._nacks = 0
        self._last_nack = -math.inf

    def update(self, delay_variation_ms: float, size: int) -> None:
        """One frame's delay variation (ms) and size (bytes)."""
        if size <= 0:
            return
        size_change = size - (self._prev_size or 0.0)
        if len(self._startup_sizes) < self.SIZE_STARTUP_FRAMES:
            self._startup_sizes.append(size)
            if len(self._startup_sizes) == self.SIZE_STARTUP_FRAMES:
                self._avg_size = sum(self._startup_sizes) / self.SIZE_STARTUP_FRAMES
        averaged = self.SIZE_WEIGHT * self._avg_size + (1 - self.SIZE_WEIGHT) * size
        if size < self._avg_size + 2 * math.sqrt(self._var_size):  # keyframes stay out of it
            self._avg_size = averaged
        self._var_size = max(
            self.SIZE_WEIGHT * self._var_size + (1 - self.SIZE_WEIGHT) * (size - averaged) ** 2, 1.0
        )
        self._max_size = max(self.MAX_SIZE_DECAY * self._max_size, size)
        if self._prev_size is None:
            self._prev_size = size
            return
        self._prev_size = size

        sigma = math.sqrt(self._noise_var)
        limit = round(self.CLAMP_SIGMAS * sigma)
        delay = max(-limit, min(limit, delay_variation_ms))
        deviation = delay - (self._slope * size_change + self._queue)
        large = size > self._avg_size + self.SIZE_OUTLIER_SIGMAS * math.sqrt(self._var_size)
        if abs(deviation) < self.OUTLIER_SIGMAS * sigma or large:
            self._add_noise(deviation)
            if size_change > self.CONGESTION_REJECTION * self._max_size:
                self._kalman(delay, size_change)
        else:
            self._add_noise(math.copysign(self.OUTLIER_SIGMAS, deviation) * sigma)

    def _add_noise(self, deviation: float) -> None:
        weight = (self._noise_count - 1) / self._noise_count
        self._noise_count = min(self._noise_count + 1, self.NOISE_FRAMES_MAX)
        mean = weight * self._noise_mean + (1 - weight) * deviation
        self._noise_var = max(
            weight * self._noise_var + (1 - weight) * (deviation - self._noise_mean) ** 2, 1.0
        )
        self._noise_mean = mean

    def _kalman(self, delay: float, size_change: float) -> None:
        """One predict-and-update step of the (slope, queue) filter.

        The state does not evolve, so prediction adds only the process noise (2.5e-10 and
        1e-10). The observation noise is the noise deviation scaled up for frames whose size
        barely changed, which say little about the slope; like libwebrtc, it is added to the
        innovation variance as a deviation, not a variance.
        """
        p = self._cov
        p[0][0] += 2.5e-10
        p[1][1] += 1e-10
        ph = (p[0][0] * size_change + p[0][1], p[1][0] * size_change + p[1][1])
        scale = 300.0 * math.exp(-abs(size_change) / self._max_size) + 1.0
        observation = max(scale * math.sqrt(self._noise_var), 1.0)
        innovation_var = size_change * ph[0] + ph[1] + observation
        if abs(innovation_var) < 1e-9:
            return
        gain = (ph[0] / innovation_var, ph[1] / innovation_var)
        innovation = delay - (self._slope * size_change + self._queue)
        self._slope = max(self._slope + gain[0] * innovation, 1e-6)
        self._queue += gain[1] * innovation
        t00, t01 = p[0][0], p[0][1]
        p[0][0] = (1 - gain[0] * size_change) * t00 - gain[0] * p[1][0]
        p[0][1] = (1 - gain[0] * size_change) * t01 - gain[0] * p[1][1]
        p[1][0] = p[1][0] * (1 - gain[1]) - gain[1] * size_change * t00
        p[1][1] = p[1][1] * (1 - gain[1]) - gain[1] * size_change * t01

    def frame_nacked(self, now: float) -> None:
        """A frame came complete only after a retransmission, at ``now`` (seconds)."""
        self._nacks = min(self._nacks + 1, self.NACK_LIMIT)
        self._last_nack = now

    def estimate(self, now: float, rtt: float | None = None) -> float:
        """The jitter delay, seconds."""
        noise = max(self.NOISE_SIGMAS * math.sqrt(self._noise_var) - self.NOISE_OFFSET_MS, 1.0)
        ms = self._slope * (self._max_size - self._avg_size) + noise
        if ms < 1.0:
            ms = self._prev_estimate_ms
        ms = min(ms, 10_000.0)
        self._prev_estimate_ms = ms
        seconds = (ms + self.OS_JITTER_MS) / 1000.0
        if now - self._last_nack > self.NACK_TIMEOUT:
            self._nacks = 0
        if self._nacks >= self.NACK_LIMIT and rtt:
            seconds += min(self.RTT_MULTIPLIER * rtt, self.RTT_CAP)
        return seconds


class DecodeTime:
    """The 95th percentile of decode times over the last 10 s (the first 5 are ignored)."""

    WINDOW = 10.0
    IGNORED = 5

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()
        self._ranked: list[float] = []
        """The same samples' times, sorted: the estimate is read several times a frame."""
        self._seen = 0

    def update(self, seconds: float, now: float) -> None:
        self._seen += 1
        if self._seen <= self.IGNORED:
            return
        self._samples.append((now, seconds))
        bisect.insort(self._ranked, seconds)
        while self._samples and self._samples[0][0] < now - self.WINDOW:
            _, old = self._samples.popleft()
            del self._ranked[bisect.bisect_left(self._ranked, old)]

    @property
    def estimate(self) -> float:
        ranked = self._ranked
        if not ranked:
            return 0.0
        return ranked[min(len(ranked) - 1, int(0.95 * len(ranked)))]


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One received video frame, as the player's receiver knows it before decoding."""

    rtp: int
    """RTP timestamp, 90 kHz ticks, unwrapped."""
    complete: float
    """Seconds when its last packet arrived."""
    keyframe: bool
    intact: bool = True
    """It follows the previous frame with no packet missing in between, and the decoder took
    it. A frame that is not intact, and every delta frame after it, is never shown."""
    retransmitted: bool = False
    """A packet of it came by retransmission."""
    size: int = 0
    """Bytes."""
    decode_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Played:
    """What the player did with a frame."""

    frame: EncodedFrame
    render_at: float | None
    """Seconds when it is shown; None if it never is."""
    late: bool = False
    """It became decodable after its render time and was shown as soon as decoded."""


class Playout:
    """libwebrtc's playout of one video stream: add frames in decoding order, read outcomes.

    ``add`` returns the frames whose fate is settled, in order; a frame stays pending until a
    later frame has arrived at least as late as it could be decoded (only then is it known
    that no keyframe completed first, which the player would have jumped to). ``flush``
    settles the rest at the end of the stream.

    ``min_delay`` and ``max_delay`` bound the playout delay (a sender's playout-delay
    extension or the application sets them; 0 and 10 s otherwise). ``rtt`` is the round-trip
    time the player knows, seconds, or None for a receive-only player that measured none.
    """

    FAST_FORWARD = 0.005
    """A decodable frame later than this past its decode time is skipped when a newer one is
    decodable too (libwebrtc's ``kMaxAllowedFrameDelay``)."""

    def __init__(
        self,
        *,
        min_delay: float = 0.0,
        max_delay: float = MAX_PLAYOUT_DELAY,
        render_delay: float = RENDER_DELAY,
        rtt: float | None = None,
    ) -> None:
        if not 0 <= min_delay <= max_delay:
            raise ValueError(f"playout delays must satisfy 0 <= min <= max, got {min_delay}, {max_delay}")
        self.min_delay, self.max_delay, self.render_delay, self.rtt = min_delay, max_delay, render_delay, rtt
        self.clock = ReceiveClock()
        self.jitter = JitterEstimator()
        self.decode = DecodeTime()
        self.jitter_delay = 0.0
        """The jitter estimate last set, seconds (libwebrtc's ``minimum_delay``)."""
        self.current_delay = 0.0
        """The delay render times use before clamping, seconds."""
        self.dropped = 0
        """Frames never shown: broken references, or skipped for a keyframe that came first."""
        self._pending: deque[EncodedFrame] = deque()
        self._arrivals: list[tuple[float, int, int]] = []
        """Frames not yet fed to the receive clock: (complete, order, rtp)."""
        self._order = 0
        self._references_ok = False
        self._decoder_free = -math.inf
        self._last_shown = -math.inf
        self._last_clean: tuple[int, float] | None = None
        """(rtp, complete) of the last frame decoded without retransmission."""

    @property
    def target_delay(self) -> float:
        """Jitter delay + decode time + render delay, at least ``min_delay``, seconds."""
        return max(self.min_delay, self.jitter_delay + self.decode.estimate + self.render_delay)

    def add(self, frame: EncodedFrame) -> list[Played]:
        """The next frame in decoding order; returns the outcomes this settles."""
        self._pending.append(frame)
        if not frame.retransmitted:
            heapq.heappush(self._arrivals, (frame.complete, self._order, frame.rtp))
            self._order += 1
        return self._settle(final=False)

    def flush(self) -> list[Played]:
        """Settle every pending frame: the stream ended."""
        return self._settle(final=True)

    def _settle(self, *, final: bool) -> list[Played]:
        out: list[Played] = []
        pending = self._pending
        while pending:
            head = pending[0]
            if not head.intact or not (head.keyframe or self._references_ok):
                if not head.intact:
                    self._references_ok = False
                out.append(self._drop(pending.popleft()))
                continue
            ready = max(head.complete, self._decoder_free)
            if not final and all(f.complete < ready for f in itertools.islice(pending, 1, None)):
                break  # frames that completed before it may still be on their way
            render = self._render_time(head.rtp, ready)
            late_by = ready - (render - self.decode.estimate - self.render_delay)
            skip_to = next(
                (i for i, f in enumerate(pending) if i and self._overtakes(f, head, ready, late_by)), None
            )
            if skip_to is not None:
                out += [self._drop(pending.popleft()) for _ in range(skip_to)]
                continue
            out.append(self._decode(pending.popleft(), ready, render))
        return out

    def _overtakes(self, frame: EncodedFrame, head: EncodedFrame, ready: float, late_by: float) -> bool:
        """Whether the player decodes keyframe ``frame`` instead of the frames before it.

        It does if the keyframe was complete before ``head`` was (its frames were waiting
        for ``head``'s references, the keyframe for none), or by the time ``head`` could be
        decoded if ``head`` is by then too late (libwebrtc fast-forwards to the newest
        decodable frame).
        """
        if not (frame.keyframe and frame.intact):
            return False
        return frame.complete < head.complete or (frame.complete <= ready and late_by > self.FAST_FORWARD)

    def _drop(self, frame: EncodedFrame) -> Played:
        self.dropped += 1
        return Played(frame, None)

    def _render_time(self, rtp: int, now: float) -> float:
        while self._arrivals and self._arrivals[0][0] <= now:
            complete, _, arrived_rtp = heapq.heappop(self._arrivals)
            self.clock.update(complete, arrived_rtp)
        local = self.clock.local_time(rtp)
        delay = min(max(self.current_delay, self.min_delay), self.max_delay)
        return (now if local is None else local) + delay

    def _decode(self, frame: EncodedFrame, ready: float, render: float) -> Played:
        lead = self.decode.estimate + self.render_delay
        decode_at = max(ready, render - lead)
        if frame.retransmitted:
            self.jitter.frame_nacked(decode_at)
        else:
            if self._last_clean is not None and frame.rtp > self._last_clean[0]:
                rtp, complete = self._last_clean
                variation = (frame.complete - complete) * 1000.0 - (frame.rtp - rtp) / RTP_TICKS_PER_MS
                self.jitter.update(variation, frame.size)
            self._last_clean = (frame.rtp, frame.complete)
            self._set_jitter_delay(self.jitter.estimate(decode_at, self.rtt))
            self._update_current_delay(render, decode_at)
        self.decode.update(frame.decode_seconds, decode_at)
        self._references_ok = True
        self._decoder_free = decode_at + frame.decode_seconds
        shown = max(render, self._decoder_free, self._last_shown)
        self._last_shown = shown
        return Played(frame, shown, late=ready > render - lead)

    def _set_jitter_delay(self, jitter: float) -> None:
        self.jitter_delay = jitter
        if self.current_delay == 0.0:
            self.current_delay = jitter

    def _update_current_delay(self, render: float, decode_at: float) -> None:
        """A frame planned for ``render`` was decoded at ``decode_at``: a late one adds its
        lateness to the current delay, up to the target; an on-time one brings a current
        delay above the target down to it."""
        late_by = decode_at - render + self.decode.estimate + self.render_delay
        if late_by <= -0.001:  # libwebrtc compares whole milliseconds
            return
        self.current_delay = min(self.current_delay + late_by, self.target_delay)
