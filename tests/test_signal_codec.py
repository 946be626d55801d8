"""The test signal survives real codecs: VP8 and H.264 at 300 kbps, Opus at 64 kbps.

Video: 90 frames of :class:`SignalVideo` at 640x360, 30 fps, encoded with realtime settings,
decoded, downscaled to 320x180 with PyAV and read. Every frame must read exactly or as None
(a wrong number would corrupt latency and drop counts), and at least 95% exactly (measured:
100% for both codecs, at 70-130 kbps actually used).

Audio: the tone track through libopus (48 kHz mono, 20 ms frames, 64 kbps) and back. The
codec delays everything by a constant (the encoder's 312-sample pre-skip, 6.5 ms, left in by a
bare decoder); onsets relative to that delay must be within 1 ms of the sent ones (measured:
within 0.02 ms), and every marker must name the same second as the one sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import cast

import av
import numpy as np
import pytest

from qoe.signal.audio import COHOST_TONE_HZ, HOST_TONE_HZ, SAMPLE_RATE, SignalAudio
from qoe.signal.code import FrameCode, read_code
from qoe.signal.detect import FlashDetector, ToneOnsetDetector
from qoe.signal.identity import identify_markers
from qoe.signal.video import SignalVideo, flash_level

FPS = 30
START = 1_700_000_000.5  # mid-second, so the first flash is seen coming from dark

VIDEO_CODECS = {
    "vp8": ("libvpx", "vp8", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}),
    "h264": ("libx264", "h264", {"preset": "veryfast", "tune": "zerolatency"}),
}


def video_round_trip(
    name: str, frames: int = 90, bit_rate: int = 300_000
) -> tuple[dict[int, FrameCode], list[tuple[int, np.ndarray]], int]:
    """Encode, decode and downscale; returns sent codes, (pts, 320x180 luma) and bytes sent."""
    encoder_name, decoder_name, options = VIDEO_CODECS[name]
    # The codec names are runtime values, so tell mypy which kind of context they make.
    encoder = cast(av.VideoCodecContext, av.CodecContext.create(encoder_name, "w"))
    encoder.width, encoder.height, encoder.pix_fmt = 640, 360, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, FPS), Fraction(FPS)
    encoder.bit_rate = bit_rate
    encoder.options = options
    decoder = cast(av.VideoCodecContext, av.CodecContext.create(decoder_name, "r"))
    video = SignalVideo(640, 360)
    sent: dict[int, FrameCode] = {}
    received: list[tuple[int, np.ndarray]] = []
    size = 0

    def decode(packets: Iterable[av.Packet]) -> None:
        nonlocal size
        for packet in packets:
            size += packet.size
            for frame in decoder.decode(packet):
                small = frame.reformat(width=320, height=180)
                assert frame.pts is not None
                received.append((frame.pts, small.to_ndarray()[:180]))

    for i in range(frames):
        t = START + i / FPS
        sent[i] = FrameCode.at(i, t)
        frame = av.VideoFrame.from_ndarray(video.render(t, i), format="yuv420p")
        frame.pts = i
        decode(encoder.encode(frame))
    decode(encoder.encode(None))
    return sent, received, size


@pytest.mark.parametrize("name", sorted(VIDEO_CODECS))
def test_code_survives_video_codec_and_downscale(name: str) -> None:
    sent, received, size = video_round_trip(name)
    assert len(received) >= 85  # realtime encoders may drop a frame or two, never more
    reads = [(pts, read_code(luma)) for pts, luma in received]
    wrong = [(pts, code) for pts, code in reads if code is not None and code != sent[pts]]
    exact = sum(code == sent[pts] for pts, code in reads)
    rate = exact / len(reads)
    print(
        f"{name} at 300 kbps (used {size * 8 * FPS / len(sent) / 1000:.0f} kbps): "
        f"read {exact}/{len(reads)} = {rate:.1%} exactly, {len(wrong)} wrong"
    )
    assert wrong == []
    assert rate >= 0.95
    # The flash survives too: onsets at every whole second in the decoded frames.
    detector = FlashDetector()
    onsets = [detector.add(START + pts / FPS, flash_level(luma, 0)) for pts, luma in received]
    assert [t for t in onsets if t is not None] == [START + 0.5, START + 1.5, START + 2.5]


def opus_round_trip(pcm: np.ndarray, bit_rate: int = 64_000) -> np.ndarray:
    """libopus encode (20 ms frames) and decode of float mono PCM at 48 kHz; int16 out."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = SAMPLE_RATE, "mono", "s16"
    encoder.bit_rate = bit_rate
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = SAMPLE_RATE, "mono"
    pcm16 = np.clip(np.round(pcm * 32767), -32768, 32767).astype(np.int16)
    out: list[np.ndarray] = []

    def decode(packets: Iterable[av.Packet]) -> None:
        for packet in packets:
            out.extend(frame.to_ndarray().reshape(-1) for frame in decoder.decode(packet))

    block = 960  # 20 ms
    for i in range(0, len(pcm16) - block + 1, block):
        frame = av.AudioFrame.from_ndarray(pcm16[None, i : i + block], format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, i
        decode(encoder.encode(frame))
    decode(encoder.encode(None))
    return np.concatenate(out)


def test_tone_onsets_survive_opus() -> None:
    base = 7 * SAMPLE_RATE
    rng = np.random.default_rng(2)
    seconds = 6
    sent_pcm = SignalAudio(HOST_TONE_HZ, amplitude=0.4, offset_seconds=0.0213).render(
        base, seconds * SAMPLE_RATE
    ) + SignalAudio(COHOST_TONE_HZ, amplitude=0.2, offset_seconds=-0.15).render(base, seconds * SAMPLE_RATE)
    received_pcm = opus_round_trip(sent_pcm)
    for tone, other in ((HOST_TONE_HZ, COHOST_TONE_HZ), (COHOST_TONE_HZ, HOST_TONE_HZ)):
        sent = np.array(ToneOnsetDetector(tone, other_hz=[other]).add(sent_pcm, base))
        detector, received, i = ToneOnsetDetector(tone, other_hz=[other]), [], 0
        while i < len(received_pcm):  # as a probe would: decoded blocks of varying size
            size = int(rng.choice([960, 480, 1920]))
            received += detector.add(received_pcm[i : i + size], base + i)
            i += size
        assert len(received) == len(sent) >= 5
        delays = np.array(received) - sent
        delay = float(np.median(delays))
        print(
            f"{tone:.0f} Hz through Opus: delay {delay:.2f} samples "
            f"({delay / SAMPLE_RATE * 1e3:.3f} ms), onset error vs that delay max "
            f"{np.abs(delays - delay).max() / SAMPLE_RATE * 1e3:.4f} ms"
        )
        assert 300 <= delay <= 330  # libopus lookahead/pre-skip: 312 samples
        assert np.abs(delays - delay).max() < 1e-3 * SAMPLE_RATE
        # Each marker still names its second: the identities read from the received onsets
        # are those of the sent ones (seconds 7..12, so the identity is the second itself).
        sent_ids = [m.identity for m in identify_markers(sent / SAMPLE_RATE)]
        received_ids = [m.identity for m in identify_markers(np.array(received) / SAMPLE_RATE)]
        assert received_ids == sent_ids
        assert [i for i in sent_ids if i is not None] == (
            [8, 9, 10, 11, 12] if tone == HOST_TONE_HZ else [7, 8, 9, 10, 11, 12]
        )
