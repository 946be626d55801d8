"""The libwebrtc playout model on synthetic frame traces, and the arrivals the probe feeds it.

Traces are 30 fps (3000 ticks of the 90 kHz clock a frame), a keyframe every 60 frames, with
the network's one-way delay and jitter stated per test. Tolerances and why:

- "Near the floor": on a clean link the playout delay settles at the jitter estimate's floor
  (1 ms + 10 ms for the operating system) plus decode time and the 10 ms render delay: 22 ms
  here, held to +-5 ms (the jitter drawn is 2 ms).
- Render gaps are compared with what libwebrtc's rules give to the millisecond, less 1 ms for
  rounding, or stated with the slack the trace's jitter leaves.
- Freeze counts are exact (:func:`qoe.metrics.freezes`, Chrome's rule).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from probes.webrtc.peer import _ArrivalJitterBuffer, is_keyframe
from probes.webrtc.playout import EncodedFrame, JitterEstimator, Played, Playout, ReceiveClock
from qoe import clock
from qoe.media.encode import VideoEncoder
from qoe.metrics import freezes

TICKS = 3000
"""RTP ticks between frames at 30 fps."""
START = 100.0


def trace(
    count: int, rng: np.random.Generator, *, delay: float = 0.05, jitter: float = 0.002, gop: int = 60
) -> list[EncodedFrame]:
    """Frames whose last packet arrives ``delay`` plus |N(0, jitter)| after capture."""
    return [
        EncodedFrame(
            rtp=i * TICKS,
            complete=START + i / 30 + delay + abs(rng.normal(0, jitter)),
            keyframe=i % gop == 0,
            size=8000 if i % gop == 0 else 1000,
            decode_seconds=0.001,
        )
        for i in range(count)
    ]


def play(frames: list[EncodedFrame], **options: float | None) -> tuple[Playout, list[Played]]:
    playout = Playout(**options)  # type: ignore[arg-type]
    out: list[Played] = []
    for frame in frames:
        out += playout.add(frame)
    out += playout.flush()
    return playout, out


def shown(out: list[Played]) -> list[float]:
    return [p.render_at for p in out if p.render_at is not None]


def test_a_clean_stream_plays_smoothly_near_the_floor_delay() -> None:
    frames = trace(600, np.random.default_rng(1))
    playout, out = play(frames)
    assert [p.frame for p in out] == frames
    times = shown(out)
    assert len(times) == 600 and playout.dropped == 0
    assert times == sorted(times)
    assert freezes(times).freeze_count == 0
    assert playout.jitter_delay == pytest.approx(0.011, abs=0.001)
    delays = [p.render_at - p.frame.complete for p in out[-300:] if p.render_at is not None]
    assert np.median(delays) == pytest.approx(0.022, abs=0.005)
    # Rendering follows the capture clock, not the arrivals' jitter.
    assert np.diff(times[-300:]).std() < 0.001


def test_a_retransmitted_packet_holds_the_frames_behind_it_and_none_is_skipped() -> None:
    frames = trace(600, np.random.default_rng(2))
    frames[300] = replace(frames[300], complete=frames[300].complete + 0.150, retransmitted=True)
    playout, out = play(frames)
    times = shown(out)
    assert len(times) == 600 and playout.dropped == 0
    gaps = np.diff(times)
    # The frame before is shown on time, the retransmitted one 150 ms after its own time
    # (less the playout delay it had in hand), the frames behind it right after it.
    assert gaps[299] == pytest.approx(0.150 + 1 / 30 - 0.022, abs=0.006)
    assert max(gaps[300:303]) < 0.003
    # Those frames were late, so the delay grew (up to its target); no freeze by Chrome's rule.
    assert playout.current_delay > 0.022
    assert playout.current_delay <= playout.target_delay + 1e-9
    assert freezes(times).freeze_count == 0


def test_repeated_retransmissions_add_the_round_trip_to_the_delay() -> None:
    """After three retransmitted frames the jitter delay carries 0.9 RTT (at most 200 ms). The
    current delay rises only as frames come late, so it follows the target only so far; then
    a 100 ms retransmission no longer stalls the frames."""
    frames = trace(600, np.random.default_rng(3))
    for i in (60, 90, 120, 150):
        frames[i] = replace(frames[i], complete=frames[i].complete + 0.150, retransmitted=True)
    frames[450] = replace(frames[450], complete=frames[450].complete + 0.100, retransmitted=True)
    playout, out = play(frames, rtt=0.150)
    assert playout.jitter_delay == pytest.approx(0.011 + 0.9 * 0.150, abs=0.002)
    assert 0.100 < playout.current_delay <= playout.target_delay
    gaps = np.diff(shown(out))
    assert max(gaps[440:460]) == pytest.approx(1 / 30, abs=0.006)
    assert not any(p.late for p in out[440:460])


def test_a_frame_lost_for_good_freezes_the_picture_until_the_next_keyframe() -> None:
    frames = trace(600, np.random.default_rng(4))
    # Frame 300 never came whole; the one after it follows skipped packets.
    lossy = [*frames[:300], replace(frames[301], intact=False), *frames[302:]]
    playout, out = play(lossy)
    assert playout.dropped == 59  # 301 to 359: the keyframe at 360 is the next one shown
    assert [p.frame.rtp // TICKS for p in out if p.render_at is None] == list(range(301, 360))
    times = shown(out)
    stats = freezes(times)
    assert stats.freeze_count == 1
    # One freeze from frame 299 to the keyframe, 61 frames (2.03 s) later.
    assert stats.freeze_seconds == pytest.approx(61 / 30, abs=0.010)


def test_a_frame_the_decoder_rejects_breaks_the_references_the_same_way() -> None:
    frames = trace(200, np.random.default_rng(5))
    frames[70] = replace(frames[70], intact=False)
    playout, out = play(frames)
    assert playout.dropped == 50  # 70 to 119
    assert freezes(shown(out)).freeze_count == 1


def test_nothing_is_shown_before_the_first_keyframe() -> None:
    frames = trace(130, np.random.default_rng(6))[10:]  # joined mid-GOP: frames 10 to 59 wait
    playout, out = play(frames)
    assert playout.dropped == 50
    assert out[50].frame.keyframe and out[50].render_at is not None


def test_a_keyframe_complete_before_a_late_retransmission_is_played_instead() -> None:
    """libwebrtc decodes a keyframe as soon as it is complete; the frames still waiting for a
    packet older than it are dropped, however late that packet comes."""
    frames = trace(200, np.random.default_rng(7))
    frames[100] = replace(frames[100], complete=frames[100].complete + 2.5, retransmitted=True)
    _playout, out = play(frames)
    assert [p.frame.rtp // TICKS for p in out if p.render_at is None] == list(range(100, 120))
    keyframe = out[120]
    assert keyframe.frame.keyframe and keyframe.render_at is not None
    assert keyframe.render_at - keyframe.frame.complete < 0.030
    assert freezes(shown(out)).freeze_count == 1


def test_a_burst_at_join_plays_as_it_comes_and_the_clock_re_anchors_later() -> None:
    """A room that queued 1.5 s of media during a slow handshake sends it at once. libwebrtc
    fits its receive clock to the burst, so the burst plays as fast as it arrives, and the
    fitted rate, far off, makes frames late until the delay-change test re-anchors the clock
    some seconds on (Chromium did so under slow-3g at 6 and 12 s)."""
    rng = np.random.default_rng(8)
    frames = []
    for i in range(600):
        arrives = i * 0.01 if i < 45 else 0.45 + (i - 45) / 30
        frames.append(
            EncodedFrame(i * TICKS, START + arrives + abs(rng.normal(0, 0.003)), i % 60 == 0, size=1000)
        )
    playout, out = play(frames)
    assert playout.dropped == 0
    assert max(p.render_at - p.frame.complete for p in out[:45] if p.render_at is not None) < 0.040
    assert freezes(shown(out)).freeze_count == 0
    assert playout.clock.alarms >= 1


def test_the_minimum_playout_delay_holds_frames() -> None:
    frames = trace(300, np.random.default_rng(9))
    _, out = play(frames, min_delay=0.200)
    delays = [p.render_at - p.frame.complete for p in out[100:] if p.render_at is not None]
    assert np.median(delays) == pytest.approx(0.200, abs=0.005)


def test_playout_delays_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="0 <= min <= max"):
        Playout(min_delay=0.5, max_delay=0.2)


@pytest.mark.parametrize(("step", "bound", "alarms"), [(0.2, 0.07, 0), (1.0, 0.30, 2)])
def test_the_receive_clock_follows_a_lasting_delay_change(step: float, bound: float, alarms: int) -> None:
    """A fit with no forgetting takes a step in delay partly into its rate, so it overshoots.
    A 200 ms step leaves the residuals under the CUSUM test's 75 ms drift: the line stays
    within 70 ms of the arrivals from 5 s on. A 1 s step overshoots by up to 0.3 s, and the
    test re-anchors the offset each time (twice in 20 s): the sawtooth Chromium's delay
    showed after a join burst."""
    receive = ReceiveClock()
    for i in range(300):
        receive.update(START + i / 30 + 0.050, i * TICKS)
    assert receive.local_time(300 * TICKS) == pytest.approx(START + 10.050, abs=0.001)
    errors = []
    for i in range(300, 900):
        arrives = START + i / 30 + 0.050 + step
        receive.update(arrives, i * TICKS)
        errors.append(receive.local_time(i * TICKS) - arrives)  # type: ignore[operator]
    assert max(abs(e) for e in errors[150:]) < bound
    assert receive.alarms == alarms


@pytest.mark.parametrize(("sigma_ms", "expected_ms"), [(0, 11.0), (20, 2.33 * 20 * 2**0.5 - 30 + 10)])
def test_the_jitter_estimate_is_a_noise_margin_over_a_floor(sigma_ms: float, expected_ms: float) -> None:
    """Arrival offsets drawn N(0, sigma) give frame delay variations of sigma * sqrt(2); the
    margin is 2.33 of those less 30 ms, at least 1 ms, plus 10 ms. Held to 10 % (the
    estimator clamps samples beyond 3.5 sigma, so it runs a little under)."""
    estimator, offsets = JitterEstimator(), np.random.default_rng(10).normal(0, sigma_ms, 901)
    for before, after in itertools.pairwise(offsets):
        estimator.update(after - before, 1000)
    assert estimator.estimate(0.0) * 1000 == pytest.approx(expected_ms, rel=0.10)


# -- the arrivals the probe notes for the model -------------------------------------------


def packet(seq: int, timestamp: int, payload: bytes = b"\x10\x00") -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=timestamp)
    p.payload = payload
    p._data = payload  # type: ignore[attr-defined]  # as aiortc's receiver depayloads it
    return p


def test_the_jitter_buffer_notes_completion_retransmission_and_skipped_packets() -> None:
    now = [0.0]
    buffer = _ArrivalJitterBuffer(capacity=16)
    released = []
    with clock.use_clock(lambda: now[0], lambda: now[0]):
        for at, seq, ts in [(0.00, 1, 0), (0.01, 2, 0), (0.04, 3, 3000), (0.05, 5, 3000), (0.06, 6, 6000)]:
            now[0] = at
            released.append(buffer.add(packet(seq, ts))[1])
        now[0] = 0.20  # packet 4 retransmitted: frame 3000 is complete, frame 6000 not yet
        released.append(buffer.add(packet(4, 3000))[1])
        now[0] = 0.21
        released.append(buffer.add(packet(7, 9000))[1])
    frames = [f for f in released if f is not None]
    first, second, third = (f.arrival for f in frames)  # type: ignore[attr-defined]
    assert (first.complete, first.continuous, first.retransmitted) == (0.01, True, False)
    assert (second.complete, second.released, second.retransmitted) == (0.20, 0.20, True)
    assert second.continuous and third.continuous and third.complete == 0.06
    # Packets aiortc gives up on: 16 slots on, it drops the frame it was waiting for.
    with clock.use_clock(lambda: now[0], lambda: now[0]):
        for seq in range(9, 40):
            now[0] += 0.01
            frame = buffer.add(packet(seq, (seq // 2) * 3000))[1]
            if frame is not None and not frame.arrival.continuous:  # type: ignore[attr-defined]
                break
        else:
            pytest.fail("no frame after the skipped packet 8 was marked discontinuous")


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_keyframes_are_told_from_their_first_bytes(codec: str) -> None:
    encoder = VideoEncoder(320, 180, codec=codec)
    image = np.full((270, 320), 128, dtype=np.uint8)
    frames = [b"".join(bytes(p) for p in encoder.encode(image, i * TICKS, keyframe=i == 0)) for i in range(3)]
    mime = {"vp8": "video/VP8", "h264": "video/H264"}[codec]
    assert [is_keyframe(mime, f) for f in frames] == [True, False, False]
    assert not is_keyframe(mime, frames[0][7:])  # a keyframe whose first packet is missing
