"""Pure functions from a probe's :class:`~qoe.timeline.Timeline` to QoE figures.

No I/O and no event loop: every function takes plain sequences and returns plain values, so
each definition is tested on its own against known answers. A figure that cannot be measured
is ``None``, never zero.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qoe.freeze import (
    FREEZE_MIN_EXTRA_MS,
    FREEZE_WINDOW_FRAMES,
    PAUSE_SECONDS,
    STALL_THRESHOLD_SECONDS,
    FreezeStats,
    StallStats,
    freeze_stats,
    stalls_over,
)
from qoe.result import (
    AudioSection,
    AvSyncSection,
    Bitrate,
    ChatSection,
    CohostSection,
    DecodeSection,
    ErrorInfo,
    GrabDrop,
    GrabSection,
    IceSection,
    JoinSection,
    LatencySection,
    LowAndMedian,
    ProbeHostSection,
    ProbeResult,
    PublishSection,
    Quality,
    Quantiles,
    Rendition,
    VideoSection,
    iso_time,
    no_dropouts,
    quantile_fields,
)
from qoe.signal import IDENTITY_MODULUS, AudioMarker, FlashDetector, audioquality, identify_markers, nonce_of
from qoe.timeline import (
    AudioBlock,
    ChatReceived,
    ChatSent,
    ClockPoint,
    CpuReading,
    Grab,
    IcePair,
    InteractionAsked,
    Timeline,
    ToneOnset,
    VideoFrameEvent,
)

__all__ = [
    "AV_RANGE_SECONDS",
    "COHOST_GONE_SECONDS",
    "CPU_BUSY_OVERLOAD",
    "FREEZE_MIN_EXTRA_SECONDS",
    "FREEZE_WINDOW_FRAMES",
    "OVERLOAD_SECONDS",
    "PAUSE_SECONDS",
    "STALL_THRESHOLD_SECONDS",
    "AvSync",
    "CohostOffset",
    "FreezeStats",
    "Join",
    "Quantiles",
    "StallStats",
    "audio_markers",
    "audio_quality",
    "av_sync",
    "chat",
    "cohost_echo",
    "cohost_offset",
    "cohost_section",
    "cpu_busy",
    "cpu_stolen",
    "dropped_frames",
    "fill_result",
    "flash_onsets",
    "fps",
    "freezes",
    "glass_to_glass",
    "grabs",
    "ice",
    "interaction_latencies",
    "join",
    "overloaded",
    "probe_host",
    "quantiles",
    "result_of",
    "stall_ratio",
    "stalls_over",
    "to_sender_time",
]

FREEZE_MIN_EXTRA_SECONDS = FREEZE_MIN_EXTRA_MS / 1000
"""W3C webrtc-stats freezeCount: a freeze lasts at least the average frame duration + 150 ms
(the rule itself, and ``FREEZE_WINDOW_FRAMES`` and ``PAUSE_SECONDS``, are :mod:`qoe.freeze`'s)."""
SEQ_MODULUS = 1 << 16


def quantiles(values: Sequence[float] | np.ndarray) -> Quantiles | None:
    """p50, p95 (linear interpolation) and max of ``values``; None when there are none."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return None
    p50, p95 = np.percentile(a, [50, 95])
    return Quantiles(float(p50), float(p95), float(a.max()))


@dataclass(frozen=True, slots=True)
class Join:
    total_seconds: float | None
    phases: dict[str, float]
    """Seconds spent in each phase, keyed by the milestone that ends it, in join order."""


def join(milestones: dict[str, float], order: Sequence[str], start: float) -> Join:
    """Join time and its phases, from ``start`` to the last milestone of ``order``.

    Each phase runs from the previous milestone (or ``start``) to its own. A milestone seen
    before its predecessor (setup steps can overlap) closes a zero-length phase, so the
    phases are never negative and always add up to the total. Phases whose milestone never
    happened are left out, and the total is None unless the last milestone happened.
    """
    phases: dict[str, float] = {}
    previous = start
    for name in order:
        at = milestones.get(name)
        if at is None:
            continue
        at = max(at, previous)
        phases[name] = at - previous
        previous = at
    last = order[-1] if order else None
    total = previous - start if last in milestones else None
    return Join(total, phases)


def freezes(times: Sequence[float] | np.ndarray, end: float | None = None) -> FreezeStats:
    """Freezes and pauses between rendered frames, as Chrome's getStats() counts them.

    The rule is libwebrtc's (W3C webrtc-stats ``freezeCount``, ``pauseCount``): see
    :func:`qoe.freeze.freeze_stats`. Times are render times in seconds. The gap from the last
    frame to ``end`` is never counted as a freeze or a pause, as no frame closes it; when a
    frame at ``end`` would have closed one, it is ``trailing_seconds`` instead.
    """
    return freeze_stats(times, end)


def stall_ratio(stats: FreezeStats, watched_seconds: float | None) -> float | None:
    """Frozen, paused and trailing stalled time over watched time (first rendered frame to the
    end), 0..1: a stream that stopped before the probe did stalls for the rest of the watch."""
    if watched_seconds is None or watched_seconds <= 0:
        return None
    stalled = stats.freeze_seconds + stats.pause_seconds + stats.trailing_seconds
    return min(1.0, stalled / watched_seconds)


def fps(times: Sequence[float] | np.ndarray) -> float | None:
    """Mean rendered frames per second between the first and the last frame."""
    t = np.asarray(times, dtype=float)
    if t.size < 2 or t[-1] <= t[0]:
        return None
    return float((t.size - 1) / (t[-1] - t[0]))


def dropped_frames(seqs: Sequence[int | None]) -> tuple[int, int] | None:
    """Frames the sender numbered but the probe never rendered, and frames rendered twice.

    ``seqs`` are the code sequence numbers (mod 2**16) of rendered frames in rendering order,
    None where the code was unreadable. A forward jump of d between readable codes counts
    d - 1 dropped frames, less the frames rendered between them with an unreadable code (a
    damaged picture the decoder concealed was still shown); a step of 0 is a repeat; a
    backward step (reordering) counts as neither. Returns ``(dropped, repeated)``, or None
    without any readable code.
    """
    dropped = repeated = unread = 0
    previous: int | None = None
    for current in seqs:
        if current is None:
            unread += 1
            continue
        if previous is not None:
            step = (current - previous) % SEQ_MODULUS
            if step == 0:
                repeated += 1
            elif step < SEQ_MODULUS // 2:
                dropped += max(0, step - 1 - unread)
        previous, unread = current, 0
    return None if previous is None else (dropped, repeated)


def picture_quality(frames: Sequence[VideoFrameEvent], skipped: int = 0) -> Quality | None:
    """``video.quality``: p5 and p50 of the scored frames' luma PSNR (dB) and SSIM, how many
    were scored and how many a busy host had to skip; None when none was scored (a stream
    without the test signal, or scoring off)."""
    scored = [f for f in frames if f.psnr is not None and f.ssim is not None]
    if not scored:
        return None
    psnr = np.array([f.psnr for f in scored], dtype=float)
    ssim = np.array([f.ssim for f in scored], dtype=float)

    def low_and_median(a: np.ndarray) -> LowAndMedian:
        p5, p50 = np.percentile(a, [5, 50])
        return {"p5": float(p5), "p50": float(p50)}

    return {
        "psnr_db": low_and_median(psnr),
        "ssim": low_and_median(ssim),
        "scored_frames": len(scored),
        "skipped_frames": skipped,
    }


@dataclass(frozen=True, slots=True)
class Renditions:
    spans: list[Rendition]
    """``{width, height, seconds}`` per resolution shown, in order of first appearance."""
    switches: int
    """Changes of resolution from one shown frame to the next."""


def renditions(frames: Sequence[VideoFrameEvent], end: float | None = None) -> Renditions:
    """Time shown at each resolution: each frame holds the screen until the next (the last
    until ``end``), so the seconds add up to the time from the first frame to the end."""
    seconds: dict[tuple[int, int], float] = {}
    switches = 0
    for i, frame in enumerate(frames):
        size = (frame.width, frame.height)
        until = frames[i + 1].at if i + 1 < len(frames) else (end if end is not None else frame.at)
        seconds[size] = seconds.get(size, 0.0) + max(0.0, until - frame.at)
        if i and size != (frames[i - 1].width, frames[i - 1].height):
            switches += 1
    spans: list[Rendition] = [{"width": w, "height": h, "seconds": t} for (w, h), t in seconds.items()]
    return Renditions(spans, switches)


def received_bitrate(frames: Sequence[VideoFrameEvent], end: float | None = None) -> Bitrate | None:
    """``video.bitrate_kbps``: the encoded video received, in kbit/s: its mean over the time
    from the first frame shown to ``end``, and p5 and p50 over each whole second of it
    (bytes counted at the frame they were shown with). None where the probe sees no bytes."""
    counted = [f for f in frames if f.encoded_bytes is not None]
    if not counted:
        return None
    first = counted[0].at
    span = (end if end is not None else counted[-1].at) - first
    if span <= 0:
        return None
    whole = max(1, math.floor(span))
    per_second = np.zeros(whole)
    for frame in counted:
        second = math.floor(frame.at - first)
        if second < whole:
            per_second[second] += frame.encoded_bytes or 0
    kbps = per_second * 8 / 1000
    p5, p50 = np.percentile(kbps, [5, 50])
    total = sum(f.encoded_bytes or 0 for f in counted)
    return {"mean": total * 8 / 1000 / span, "p5": float(p5), "p50": float(p50)}


def glass_to_glass(frames: Sequence[VideoFrameEvent]) -> Quantiles | None:
    """Receiver wall time minus sender capture time, per frame with a readable code."""
    return quantiles([f.wall - f.capture_wall for f in frames if f.capture_wall is not None])


CLOCK_WINDOW_SECONDS = 30.0
"""Clock points within this much stream time of a moment are used to map it (drift bound)."""


def to_sender_time(points: Sequence[ClockPoint], stream_time: float) -> float | None:
    """Map a stream time onto the sender's clock.

    Each point pairs a stream time with the time the sender says it sent it. A sender can
    only send late, never early (aiortc stamps its RTCP reports with the send time of the
    last packet, behind a busy event loop), so among the points near ``stream_time`` the
    one with the smallest sender-minus-stream offset is the truest; the others carry some
    lateness. Points within CLOCK_WINDOW_SECONDS are used (the nearest one if none is), so
    a slow drift between the sender's clock and its media clock does not build up.
    """
    if not points:
        return None
    near = [p for p in points if abs(p.stream_time - stream_time) <= CLOCK_WINDOW_SECONDS]
    if not near:
        near = [min(points, key=lambda p: abs(p.stream_time - stream_time))]
    offset = min(p.sender_time - p.stream_time for p in near)
    return stream_time + offset


def flash_onsets(frames: Sequence[VideoFrameEvent]) -> list[VideoFrameEvent]:
    """Frames on which the flash marker turns on (see :class:`qoe.signal.FlashDetector`).

    An onset is kept only when the frame before it was rendered and consecutive (sequence
    step of 1 where both codes are readable): after a gap the flash may have started on a
    frame the probe never saw, and its time would be wrong by up to the gap.
    """
    onsets: list[VideoFrameEvent] = []
    detector = FlashDetector()
    previous: VideoFrameEvent | None = None
    for frame in frames:
        if frame.flash is None:
            previous, detector = None, FlashDetector()
            continue
        if (
            detector.add(frame.at, frame.flash) is not None
            and previous is not None
            and (previous.seq is None or frame.seq is None or (frame.seq - previous.seq) % SEQ_MODULUS == 1)
        ):
            onsets.append(frame)
        previous = frame
    return onsets


AV_RANGE_SECONDS = 3.0
"""A/V offsets are reported within +-3 s; beyond that the figure is null with a reason.

Markers are paired by their second's identity, ``S mod IDENTITY_MODULUS`` (16), so any
offset under 8 s (half the modulus) is read correctly and one of 3..13 s either way is
recognised as out of range. An offset beyond 13 s (the modulus less the range) is
indistinguishable from one 16 s smaller and could be reported as that in-range value."""


@dataclass(frozen=True, slots=True)
class AvSync:
    median: float | None
    """Median offset, seconds; None when not measured (see ``reason``)."""
    p95_abs: float | None
    samples: int
    offsets: tuple[float, ...]
    reason: str | None = None
    """Why the offset is null; None when it was measured."""


def _not_measured(reason: str, offsets: Sequence[float] = ()) -> AvSync:
    return AvSync(None, None, len(offsets), tuple(offsets), reason)


def audio_markers(tones: Sequence[ToneOnset], tone_hz: float | None = None) -> list[AudioMarker]:
    """The markers among tone onsets (identity bursts left out), per frequency, in stream time.

    ``tone_hz`` keeps one participant's tones; None keeps every frequency, each decoded on
    its own (see :func:`qoe.signal.identify_markers`).
    """
    by_hz: dict[float, list[float]] = {}
    for tone in tones:
        if tone_hz is None or math.isclose(tone.tone_hz, tone_hz):
            by_hz.setdefault(tone.tone_hz, []).append(tone.stream_time)
    return [m for times in by_hz.values() for m in identify_markers(times)]


def av_sync(timeline: Timeline, tone_hz: float | None = None) -> AvSync:
    """A/V offset at every whole-second marker: flash time minus tone time of the same second.

    Positive means audio ahead of video, as ITU-R BT.1359 counts it (detectable beyond
    +45/-125 ms, acceptable within +90/-185 ms). Both onsets are mapped from their own stream
    timeline onto the sender's clock through the timeline's clock points, which is what a
    lip-syncing player does (RTCP sender reports, RFC 3550 section 6.4.1; container timestamps
    for FFmpeg-read streams). The flash starts at a whole second of sender time; when the onset
    frame's capture time is known, the part of a frame interval it lies past the second is
    taken off, so frame rates that do not divide a second stay exact.

    Pairing is by identity, never by nearness alone: a flash's second ``S`` is its frame's
    capture time in the code, and its tone is the identified audio marker with identity
    ``S mod 16`` within 8 s of it (the one tone of second ``S`` for any offset under 8 s).
    The median is reported within +-:data:`AV_RANGE_SECONDS`; outside it the figure is null
    with ``reason``, as it is when nothing could be paired. Offsets beyond 13 s could alias
    onto the range (see :data:`AV_RANGE_SECONDS`).
    """
    video_map, audio_map = timeline.sync.get("video", []), timeline.sync.get("audio", [])
    if not video_map or not audio_map:
        return _not_measured("no sender clock for audio or video")
    markers = audio_markers(timeline.tones, tone_hz)
    if not markers:
        return _not_measured("no audio markers")
    tones: dict[int, list[float]] = {}  # identity -> the sender times of its markers
    for marker in markers:
        if marker.identity is not None:
            at = to_sender_time(audio_map, marker.at)
            if at is not None:
                tones.setdefault(marker.identity, []).append(at)
    if not tones:
        return _not_measured("no identified audio markers")
    half = IDENTITY_MODULUS / 2
    offsets: list[float] = []
    used: set[tuple[int, int]] = set()
    flashes = 0
    for frame in flash_onsets(timeline.video):
        flash_at = to_sender_time(video_map, frame.stream_time)
        if flash_at is None or frame.capture_wall is None:
            continue
        second = round(frame.capture_wall)
        flash_at -= frame.capture_wall - second
        flashes += 1
        identity = second % IDENTITY_MODULUS
        candidates = tones.get(identity, [])
        near = [n for n, at in enumerate(candidates) if abs(flash_at - at) < half]
        if len(near) == 1 and (identity, near[0]) not in used:
            used.add((identity, near[0]))
            offsets.append(flash_at - candidates[near[0]])
    if not offsets:
        return _not_measured("no video markers" if not flashes else "no flash and tone of the same second")
    a = np.asarray(offsets)
    median = float(np.median(a))
    if abs(median) > AV_RANGE_SECONDS:
        return _not_measured(f"offset beyond the +-{AV_RANGE_SECONDS:g} s measurement range", offsets)
    return AvSync(
        median=median,
        p95_abs=float(np.percentile(np.abs(a), 95)),
        samples=len(offsets),
        offsets=tuple(offsets),
    )


@dataclass(frozen=True, slots=True)
class CohostOffset:
    median: float
    samples: int
    offsets: tuple[float, ...]


def cohost_offset(host: Sequence[VideoFrameEvent], cohost: Sequence[VideoFrameEvent]) -> CohostOffset | None:
    """Co-host marker time minus host marker time, as the viewer sees them.

    Each participant flashes at every whole second of its own capture clock. A flash is seen
    when its onset frame reached the viewer, less the part of a frame interval its capture
    time lies past the second (so frame rates and mixing grids do not quantise the answer).
    Flashes of the same second, by the capture times in the codes, are paired: positive
    means the co-host appears late.
    """

    def seen(frames: Sequence[VideoFrameEvent]) -> dict[int, float]:
        out: dict[int, float] = {}
        for frame in flash_onsets(frames):
            if frame.capture_wall is not None:
                second = round(frame.capture_wall)
                out.setdefault(second, frame.at - (frame.capture_wall - second))
        return out

    host_seen, cohost_seen = seen(host), seen(cohost)
    offsets = [cohost_seen[s] - host_seen[s] for s in sorted(host_seen.keys() & cohost_seen.keys())]
    if not offsets:
        return None
    return CohostOffset(float(np.median(offsets)), len(offsets), tuple(offsets))


# -- a probe host's own figures ----------------------------------------------------------

OVERLOAD_SECONDS = 0.1
"""A loop this late has spent most of the 150 ms margin of the W3C freeze rule: the run's
stutter figures may be its host's own, not the stream's. A hold-up of 150 ms reads as
100-150 ms on a 50 ms ticker, so this catches every hold-up that can make a freeze by itself."""

CPU_BUSY_OVERLOAD = 0.85
"""Share of the machine's CPU time busy at which a run counts as overloaded: 50 viewers beside
the room on 2 cores held at 72 % busy, and froze at 87 % and 92 % (see :mod:`qoe.looplag`)."""


LOOP_BUSY_OVERLOAD = 0.9
"""Share of the wall time the probe's event-loop thread spent on the CPU at which a run counts
as overloaded. A loop that never sleeps still wakes its timers on time, one short callback
after another, while packets wait in the kernel: 150 sampling viewers pinned to one core kept
the loop 98 % busy, its worst lateness under 100 ms and the machine (2 cores) at 74 %, while
glass-to-glass grew to 1.6 s and two of them froze. At 100 viewers the loop was 77 % busy and
every figure held."""


def overloaded(
    worst_lag: float | None, cpu_busy: float | None, loop_busy: float | None = None
) -> bool | None:
    """Whether a run's host was overloaded (None: nothing was read to say)."""
    if worst_lag is None and cpu_busy is None and loop_busy is None:
        return None
    return (
        (worst_lag is not None and worst_lag > OVERLOAD_SECONDS)
        or (cpu_busy is not None and cpu_busy >= CPU_BUSY_OVERLOAD)
        or (loop_busy is not None and loop_busy >= LOOP_BUSY_OVERLOAD)
    )


def cpu_busy(readings: Sequence[CpuReading], until: float | None = None) -> float | None:
    """Share of the machine's CPU time busy from the first reading to the last at or before
    ``until`` (monotonic seconds); None without two readings that differ."""
    kept = [r for r in readings if until is None or r.at <= until]
    if len(kept) < 2:
        return None
    first, last = kept[0], kept[-1]
    return (last.busy - first.busy) / (last.total - first.total) if last.total > first.total else None


def loop_busy(readings: Sequence[CpuReading], until: float | None = None) -> float | None:
    """Share of the wall time, over the same span as :func:`cpu_busy`, that the probe's
    event-loop thread was on a CPU; None without two readings of it."""
    kept = [r for r in readings if r.loop is not None and (until is None or r.at <= until)]
    if len(kept) < 2 or kept[-1].at <= kept[0].at:
        return None
    first, last = kept[0], kept[-1]
    assert first.loop is not None and last.loop is not None
    return (last.loop - first.loop) / (last.at - first.at)


def cpu_stolen(readings: Sequence[CpuReading], until: float | None = None) -> float | None:
    """Share of the machine's CPU time that a hypervisor gave to other guests, over the same
    span as :func:`cpu_busy`; None without two readings that differ."""
    kept = [r for r in readings if until is None or r.at <= until]
    if len(kept) < 2:
        return None
    first, last = kept[0], kept[-1]
    return (last.stolen - first.stolen) / (last.total - first.total) if last.total > first.total else None


def probe_host(log: Timeline) -> ProbeHostSection:
    """How late the loop ran and how busy the machine was while the run watched."""
    until = log.end
    lag = quantiles([t.late for t in log.loop_ticks if until is None or t.at <= until])
    # The window's last CPU reading is taken as it closes, a moment after the body ended.
    last_reading = None if until is None else until + TICK_READING_SLACK
    busy = cpu_busy(log.cpu, last_reading)
    loop = loop_busy(log.cpu, last_reading)
    return ProbeHostSection(
        loop_lag_seconds=quantile_fields(lag),
        cpu_busy_ratio=busy,
        cpu_stolen_ratio=cpu_stolen(log.cpu, last_reading),
        loop_busy_ratio=loop,
        overloaded=overloaded(lag.max if lag else None, busy, loop),
    )


TICK_READING_SLACK = 0.05
"""Seconds after the window's end within which its closing CPU reading still counts."""


# -- a run's result from its event log ---------------------------------------------------


def result_of(log: Timeline) -> ProbeResult:
    """The result of the run ``log`` records: what :func:`probes.run_probe` returns."""
    result = ProbeResult(
        probe=log.run.probe,
        kind=log.run.kind,
        target=log.run.target,
        url=log.run.target,
        profile=log.run.profile,
    )
    fill_result(result, log)
    return result


def fill_result(result: ProbeResult, log: Timeline) -> None:
    """Every figure of ``result`` that ``log`` supports: the sections of its role (see
    :attr:`~qoe.timeline.Timeline.role`), the join, the probe host's figures, the failure."""
    result.started_at = iso_time(log.started_at)
    if log.end is not None:
        result.duration_seconds = log.end - log.start
    j = join(log.milestones, log.phases, log.start)
    result.join = JoinSection(j.total_seconds, j.phases)
    if log.role == "viewer":
        _fill_viewer(result, log)
    elif log.role == "publisher" and log.published is not None:
        result.publish = PublishSection(*log.published)
    elif log.role == "chat":
        result.chat = chat(log.chat_sent, log.chat_received)
    if log.grabs or log.role == "grab" or log.run.kind == "grab":
        first = next((f.capture_wall for f in log.video if f.capture_wall is not None), None)
        result.grab = grabs(log.grabs, log.end, first)
    if log.role:
        result.network = log.network
    result.ice = ice(log.ice_pairs, log.end)
    if log.loop_ticks or log.cpu:
        result.probe_host = probe_host(log)
    if log.run.clock_domain:
        result.latency.clock_domain = log.run.clock_domain
    if log.run.clock_offset is not None:
        result.latency.correct_for(log.run.clock_offset)
    if log.failure is not None:
        result.error = ErrorInfo(log.failure.kind, log.failure.message)
    result.success = result.error is None
    if log.body_end is not None and log.teardown_end is not None:
        result.teardown_seconds = log.teardown_end - log.body_end


def ice(pairs: Sequence[IcePair], end: float | None = None) -> IceSection:
    """The candidate pair the media took: the last one ICE selected by ``end`` (monotonic
    seconds; None: the whole log). Unmeasured when ICE selected none in the window."""
    within = [p for p in pairs if end is None or p.at <= end]
    if not within:
        return IceSection()
    return IceSection(within[-1].local_type, within[-1].remote_type)


def _fill_viewer(result: ProbeResult, log: Timeline) -> None:
    end = log.end
    # Only what was seen while the run watched: a frame that landed after the window
    # closed (while consumers were being stopped) is not part of any figure.
    frames = [f for f in log.video if end is None or f.at <= end]
    times = [f.at for f in frames]
    if frames:
        stats = freezes(times, end)
        stalls = stalls_over(times)
        watched = (end if end is not None else times[-1]) - times[0]
        drops = dropped_frames([f.seq for f in frames])
        if log.frames_lost is not None:  # a light viewer: from RTP, not from the few codes it read
            drops = (log.frames_lost, 0)
        shown = renditions(frames, end)
        last = frames[-1]
        result.video = VideoSection(
            frames=len(frames),
            fps=fps(times),
            freeze_count=stats.freeze_count,
            freeze_seconds=stats.freeze_seconds,
            pause_count=stats.pause_count,
            pause_seconds=stats.pause_seconds,
            trailing_seconds=stats.trailing_seconds,
            stall_ratio=stall_ratio(stats, watched),
            stalls_over_seconds={
                "threshold": stalls.threshold,
                "count": stalls.count,
                "seconds": stalls.seconds,
            },
            watched_seconds=watched,
            dropped_frames=drops[0] if drops else None,
            repeated_frames=drops[1] if drops else None,
            width=last.width,
            height=last.height,
            signal_frames=sum(1 for f in frames if f.seq is not None),
            decode_errors=log.decode_errors,
            frames_dropped_undecodable=log.frames_dropped_undecodable,
            quality=picture_quality(frames, log.quality_skipped),
            renditions=shown.spans,
            switches=shown.switches,
            bitrate_kbps=received_bitrate(frames, end),
        )
    else:
        result.video = VideoSection(
            frames=0,
            decode_errors=log.decode_errors,
            frames_dropped_undecodable=log.frames_dropped_undecodable,
        )
    heard = audio_quality(log)
    result.audio = AudioSection(
        frames=log.audio_frames,
        seconds=log.audio_seconds,
        tone_onsets=len(audio_markers(log.tones)),
        dropouts=heard.dropouts,
        snr_db=heard.snr_db,
        noise_floor_dbfs=heard.noise_floor_dbfs,
    )
    result.latency = LatencySection(quantile_fields(glass_to_glass(frames)))
    sync = av_sync(log, log.tone_hz)
    result.av_sync = AvSyncSection(
        {"median": sync.median, "p95_abs": sync.p95_abs}, sync.samples, sync.reason
    )
    result.decode = decode_section(log, result)
    cohost = log.participants.get("cohost")
    if cohost is not None:
        result.cohost = cohost_section(log, cohost)
    if log.asked:
        q = quantiles(interaction_latencies(log.asked, frames))
        if q is not None:
            result.chat.interaction_seconds = quantile_fields(q)


def decode_section(log: Timeline, result: ProbeResult) -> DecodeSection:
    """How the viewer read its video, and where each figure of ``result`` came from."""
    full = log.decode_mode == "full"
    decoded = "decoded_frames" if full else "sampled_frames"
    measured = result.video.frames is not None and result.video.frames > 0
    end = log.end
    windows = [(a, min(b, end) if end is not None else b) for a, b in log.decode_windows]
    return DecodeSection(
        mode=log.decode_mode,
        sampled_seconds=None if full else sum(max(0.0, b - a) for a, b in windows),
        sampled_frames=None if full else log.sampled_frames,
        sources={
            "freezes": ("decoded_frames" if full else "rtp_frames") if measured else None,
            "dropped_frames": None
            if result.video.dropped_frames is None
            else "rtp_sequence"
            if log.frames_lost is not None
            else "picture_code",
            "glass_to_glass": None
            if result.latency.glass_to_glass_seconds["p50"] is None
            else log.capture_source or "picture_code",
            "av_sync": None if result.av_sync.offset_seconds["median"] is None else decoded,
            "picture_quality": None if result.video.quality is None else decoded,
        },
    )


COHOST_GONE_SECONDS = 1.0
"""A co-host whose signal was last read this long (seconds) before the window's end has left."""


def cohost_section(host: Timeline, cohost: Timeline) -> CohostSection:
    """The co-host's figures: its offset from the host, its own A/V offset, whether it left."""
    end = host.end
    within = dataclasses.replace(cohost, end=end)
    sync = av_sync(within, cohost.tone_hz)
    offset = cohost_offset(host.video, cohost.video)
    coded = [f for f in cohost.video if f.capture_wall is not None]
    heard = audio_quality(within)
    return CohostSection(
        offset_seconds={"median": offset.median if offset else None},
        av_offset_seconds={"median": sync.median if sync else None},
        samples=offset.samples if offset else 0,
        frames=len(coded),
        left=None if not coded or end is None else coded[-1].at < end - COHOST_GONE_SECONDS,
        echo=cohost_echo(host, cohost),
        audio={
            "snr_db": heard.snr_db,
            "noise_floor_dbfs": heard.noise_floor_dbfs,
            "dropouts": heard.dropouts,
        },
    )


@dataclass(frozen=True, slots=True)
class AudioQuality:
    dropouts: dict[str, float | int | None]
    snr_db: float | None
    noise_floor_dbfs: float | None


def _blocks_within(log: Timeline) -> list[AudioBlock]:
    return [b for b in log.audio_blocks if log.end is None or b.at <= log.end]


def audio_quality(log: Timeline) -> AudioQuality:
    """A participant's dropouts, noise floor and SNR, from the audio blocks and tones of its
    timeline (see :mod:`qoe.signal.audioquality`; docs/METRICS.md defines them).

    Dropouts are the gaps between decoded blocks, and the markers of the participant's tone
    (``log.tone_hz``) missing where audio came (null under a noise within
    :data:`~qoe.signal.audioquality.MARKER_SILENCE_MIN_SNR_DB` of the tone). The noise floor
    is the median power of blocks away from every tone the log holds; the SNR sets the median
    plateau of the participant's own tones against it. Each is None when the log has no
    blocks, or no tone of its own.
    """
    blocks = _blocks_within(log)
    if not blocks:
        return AudioQuality(no_dropouts(), None, None)
    starts = [b.stream_time for b in blocks]
    lengths = [b.seconds for b in blocks]
    gaps = audioquality.dropouts(starts, lengths)
    own = [t for t in log.tones if log.tone_hz is None or math.isclose(t.tone_hz, log.tone_hz)]
    markers = [m.at for m in audio_markers(own)]
    missing = audioquality.missing_markers(markers, [t.stream_time for t in own], gaps.gaps)
    noise = audioquality.noise_power(
        starts, lengths, [b.power for b in blocks], [t.stream_time for t in log.tones]
    )
    levels = [t.level for t in own if t.level is not None]
    snr = None
    if noise is not None and levels:
        snr = audioquality.snr_db(float(np.median(levels)), noise)
    # Under noise the detector misses onsets of tones that did sound: a marker not found is
    # then no evidence of silence.
    trusted = bool(markers) and (snr is None or snr >= audioquality.MARKER_SILENCE_MIN_SNR_DB)
    return AudioQuality(
        {"count": gaps.count, "seconds": gaps.seconds, "missing_markers": missing if trusted else None},
        snr,
        None if noise is None else audioquality.dbfs(noise),
    )


def cohost_echo(host: Timeline, cohost: Timeline) -> dict[str, bool | float | None]:
    """``cohost.echo``: the host's tones returning in the co-host's own audio track.

    The host's onsets (its tone, in its stream) and the co-host track's onsets of that tone are
    each mapped onto their sender's clock through their stream's clock points, then matched
    by :func:`qoe.signal.audioquality.echo`. All null when the co-host's audio was not
    searched for the host's tone (a mix, where the host's tone sounds anyway) or either
    stream has no sender clock.
    """
    unmeasured: dict[str, bool | float | None] = {
        "detected": None,
        "delay_seconds": None,
        "return_loss_db": None,
    }
    far_hz = cohost.echo_hz
    host_map, cohost_map = host.sync.get("audio", []), cohost.sync.get("audio", [])
    if far_hz is None or not host_map or not cohost_map:
        return unmeasured

    def mapped(tones: Sequence[ToneOnset], points: Sequence[ClockPoint]) -> tuple[list[float], list[float]]:
        times, levels = [], []
        for tone in tones:
            at = to_sender_time(points, tone.stream_time)
            if math.isclose(tone.tone_hz, far_hz) and tone.level is not None and at is not None:
                times.append(at)
                levels.append(tone.level)
        return times, levels

    far = mapped(host.tones, host_map)
    if not far[0]:
        return unmeasured
    found = audioquality.echo(*far, *mapped(cohost.tones, cohost_map))
    if found is None:
        return {**unmeasured, "detected": False}
    return {"detected": True, "delay_seconds": found.delay_seconds, "return_loss_db": found.return_loss_db}


def interaction_latencies(
    asked: Sequence[InteractionAsked], frames: Sequence[VideoFrameEvent]
) -> list[float]:
    """For each question asked, from posting it to the first frame whose code shows its nonce."""
    seen: dict[int, float] = {}
    posted = {a.nonce: a.wall for a in asked}
    for frame in frames:
        nonce = nonce_of(frame.tag)
        if nonce is not None and nonce in posted and nonce not in seen:
            seen[nonce] = frame.wall
    return [seen[n] - wall for n, wall in posted.items() if n in seen]


def grabs(
    attempts: Sequence[Grab], end: float | None = None, watching_from: float | None = None
) -> GrabSection:
    """Coupon grabs: each drop seen, how soon after it opened, how soon its grab was
    answered and what the answer was (docs/METRICS.md, "Coupon grabs").

    ``seen_after_seconds`` is the drop's sighting (the viewer's wall clock) minus its opening
    (the sender's wall clock; one clock on one host, else as synchronised as the hosts are);
    ``answer_seconds`` the grab's answer minus its request (monotonic). An answer that came
    after ``end`` (monotonic; the window's close) is not counted: the run had stopped waiting.

    ``watching_from`` is the capture time (sender's clock) of the first frame the viewer
    read: a drop that opened before it was announced before the viewer watched, so its
    seen-after would time the viewer's join, not the drop's way to the screen; it is null
    (the drop still counts as seen, won or sold out).
    """
    drops: list[GrabDrop] = []
    for g in attempts:
        answered = g.answered is not None and g.sent is not None and (end is None or g.answered <= end)
        opened = g.opened_wall
        joined_late = watching_from is not None and opened is not None and opened < watching_from
        seen_after = None if opened is None or joined_late else g.seen_wall - opened
        outcome = g.outcome if answered else None
        drops.append(
            {
                "drop": g.drop,
                "seen_after_seconds": seen_after,
                "answer_seconds": g.answered - g.sent if answered else None,  # type: ignore[operator]
                "won": None if outcome is None else outcome == "won",
                "sold_out_at": g.sold_out_wall if answered else None,
            }
        )
    seen_afters = quantiles([d["seen_after_seconds"] for d in drops if d["seen_after_seconds"] is not None])
    answers = quantiles([d["answer_seconds"] for d in drops if d["answer_seconds"] is not None])
    sent = [d for g, d in zip(attempts, drops, strict=True) if g.sent is not None]
    return GrabSection(
        seen_after_seconds=quantile_fields(seen_afters),
        answer_seconds=quantile_fields(answers),
        seen=len(drops),
        won=sum(1 for d in drops if d["won"] is True),
        sold_out=sum(1 for d in drops if d["won"] is False),
        unanswered=sum(1 for d in sent if d["won"] is None),
        drops=drops,
    )


def chat(sent: Sequence[ChatSent], received: Sequence[ChatReceived]) -> ChatSection:
    """Echo latency, losses, duplicates and reordering of the probe's own chat messages.

    A message seen again is duplicated; one arriving after a message sent later than it is
    reordered; one never seen is lost.
    """
    sent_by_key = {m.key: m for m in sent}
    first: dict[str, float] = {}
    duplicated = reordered = 0
    latest = -1
    for echo in received:
        message = sent_by_key.get(echo.key)
        if message is None:
            continue
        if echo.key in first:
            duplicated += 1
            continue
        first[echo.key] = echo.wall
        if message.index < latest:
            reordered += 1
        latest = max(latest, message.index)
    q = quantiles([first[m.key] - m.wall for m in sent if m.key in first])
    return ChatSection(
        echo_seconds=quantile_fields(q),
        sent=len(sent_by_key),
        lost=len(sent_by_key) - len(first),
        duplicated=duplicated,
        reordered=reordered,
    )
