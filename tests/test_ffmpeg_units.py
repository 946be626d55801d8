"""The FFmpeg probes' parts on their own: URL rules, the render clock, tone onsets on container
timestamps, the AAC codec delay, error mapping and the byte bridge. No servers, no sockets.
"""

from __future__ import annotations

import io
import threading

import av
import numpy as np
import pytest

from probes import guess_kind
from probes.ffmpeg.failures import classify
from probes.ffmpeg.inputs import ByteBridge
from probes.ffmpeg.playout import MAX_STEP_SECONDS, Playout
from probes.ffmpeg.target import endpoint, kind_of, with_endpoint
from probes.ffmpeg.tones import ToneScanner
from qoe.errors import ConfigError, CorruptStreamError, ProbeError
from qoe.media.encode import AudioEncoder
from qoe.signal import SignalAudio, identify_markers

RATE = 48000


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("rtmp://cdn.example/live/key", "rtmp"),
        ("rtmps://cdn.example:443/live/key", "rtmp"),
        ("http://cdn.example/live/room.flv", "flv"),
        ("https://cdn.example/live/room.FLV?token=t", "flv"),
        ("https://cdn.example/hls/room.m3u8", "hls"),
        ("http://cdn.example/hls/room.m3u8?t=1", "hls"),
        ("rtsp://camera.example/stream", "rtsp"),
        ("http://room.example/whep/demo", "whep"),
        ("http://room.example/whip/demo", "whip"),
    ],
)
def test_kind_from_scheme_and_extension(url: str, kind: str) -> None:
    assert guess_kind(url) == kind


def test_srt_is_refused_without_leaking_its_secret() -> None:
    with pytest.raises(ConfigError, match="no SRT") as caught:
        guess_kind("srt://ingest.example:9000?streamid=secret")
    assert "secret" not in str(caught.value)


def test_kind_of_leaves_other_urls_alone() -> None:
    assert kind_of("http://room.example/whep/demo") is None
    assert kind_of("ftp://example/x") is None


def test_endpoint_defaults_and_rewrite() -> None:
    assert endpoint("rtmp://h/live/k") == ("h", 1935)
    assert endpoint("https://h/x.m3u8") == ("h", 443)
    assert endpoint("http://h:8080/x.flv") == ("h", 8080)
    with pytest.raises(ConfigError):
        endpoint("gopher://h/x")
    assert (
        with_endpoint("rtmp://u:p@h:1935/live/k?x=1", "127.0.0.1", 5) == "rtmp://u:p@127.0.0.1:5/live/k?x=1"
    )
    assert with_endpoint("http://h/x.flv", "::1", 8) == "http://[::1]:8/x.flv"


def test_playout_shows_frames_on_time_at_arrival() -> None:
    playout = Playout()
    pts = [k / 30 for k in range(10)]
    arrivals = [10.0 + t + 0.003 * (k % 3) for k, t in enumerate(pts)]
    renders = [playout.render(a, t) for a, t in zip(arrivals, pts, strict=True)]
    # Never shown early, never before it arrived: the player's delay is the largest lateness
    # so far (jitter below it is absorbed, as a jitter buffer does).
    lateness = np.maximum.accumulate(np.array(arrivals) - np.array(pts))
    assert renders == pytest.approx(list(np.array(pts) + lateness))
    assert renders[0] == arrivals[0]


def test_playout_paces_a_burst_and_stalls_on_a_late_frame() -> None:
    playout = Playout()
    # A whole segment arrives at once: shown at its pace.
    burst = [playout.render(5.0, k / 30) for k in range(30)]
    assert burst == pytest.approx([5.0 + k / 30 for k in range(30)])
    # The next one is late: the player waits for it (a freeze), then goes on from there.
    assert playout.render(6.5, 1.0) == 6.5
    assert playout.render(6.5, 1.0 + 1 / 30) == pytest.approx(6.5 + 1 / 30)


def test_playout_restarts_on_a_timestamp_discontinuity() -> None:
    playout = Playout()
    playout.render(1.0, 100.0)
    assert playout.render(1.1, 3.0) == 1.1  # backwards
    assert playout.render(1.2, 3.0 + MAX_STEP_SECONDS + 1) == 1.2  # far forwards
    assert playout.render(1.25, None) == 1.25


def tone_frames(seconds: float, offset: float = 0.0, size: int = 1024) -> list[tuple[float, np.ndarray]]:
    """Tone bursts at whole seconds - offset, cut into blocks stamped in whole milliseconds
    (as FLV stamps them), starting at stream time 0 = Unix second 1_700_000_000. That second
    is a multiple of 16, so second S's identity burst is 0.2 + 0.016 * S after its marker."""
    audio = SignalAudio(offset_seconds=offset)
    first = 1_700_000_000 * RATE
    frames = []
    for start in range(0, round(seconds * RATE), size):
        frames.append((round(start / RATE * 1000) / 1000, audio.render(first + start, size)))
    return frames


def test_tone_scanner_numbers_samples_across_rounded_timestamps() -> None:
    scanner = ToneScanner(1000.0)
    onsets = []
    for stream_time, pcm in tone_frames(4.0, offset=0.25):
        onsets += scanner.add(stream_time, pcm, RATE)
    onsets += scanner.flush()
    # Markers at 0.75, 1.75, 2.75, 3.75 s and the identity bursts of seconds 1..3 (that of 4
    # is past the end); the timestamps' rounding never breaks the run.
    times = [o.stream_time for o in onsets]
    assert times == pytest.approx([0.75, 0.966, 1.75, 1.982, 2.75, 2.998, 3.75], abs=2e-4)
    assert [(round(m.at, 3), m.identity) for m in identify_markers(times)] == [
        (0.75, 1),
        (1.75, 2),
        (2.75, 3),
        (3.75, None),
    ]


def test_tone_scanner_resyncs_on_a_gap() -> None:
    scanner = ToneScanner(1000.0)
    frames = tone_frames(4.0)
    onsets = []
    for stream_time, pcm in frames[:50] + frames[100:]:  # about 1.07 s of audio missing
        onsets += scanner.add(stream_time, pcm, RATE)
    onsets += scanner.flush()
    # The marker of 2.0 is lost in the gap (with the burst of 1.0 at 1.216); after it the
    # count restarts from a rounded timestamp (<= 0.5 ms).
    assert [o.stream_time for o in onsets] == pytest.approx([0.2, 1.0, 2.232, 3.0, 3.248], abs=6e-4)


def test_aac_codec_delay_is_carried_by_the_timestamps() -> None:
    """Known answer for the AAC path end to end, without a network: tones at whole seconds,
    AAC-encoded by the publisher's encoder, muxed into FLV, demuxed and decoded as the viewer
    does. FFmpeg's encoder primes 1024 samples (21.3 ms) and stamps its packets 1024 samples
    early; the decoder outputs the priming, so decoded samples sit at their input times: the
    onsets come out within 1 ms (FLV's millisecond timestamps), not 21 ms late.

    The input starts 0.5 s into the stream so no timestamp is negative: the FLV muxer would
    shift every stream by the first packet's -21.3 ms (all alike, so A/V is kept, but this
    test compares with absolute stream times)."""
    encoder = AudioEncoder(codec="aac", bitrate=128_000)
    buffer = io.BytesIO()
    lead = RATE // 2
    with av.open(buffer, "w", format="flv") as out:
        stream = out.add_stream("aac", rate=RATE)
        stream.codec_context.extradata = encoder.extradata
        audio = SignalAudio()
        first = 1_700_000_000 * RATE
        for start in range(lead, 4 * RATE, 960):
            for packet in encoder.encode(audio.render(first + start, 960), start):
                packet.stream = stream
                out.mux(packet)
    buffer.seek(0)
    scanner = ToneScanner(1000.0)
    onsets = []
    decoded_from = None
    with av.open(buffer, "r", format="flv") as source:
        for packet in source.demux(audio=0):
            for frame in packet.decode():
                decoded_from = frame.time if decoded_from is None else decoded_from
                onsets += scanner.add(frame.time, frame.to_ndarray()[0], frame.sample_rate)
    onsets += scanner.flush()
    times = [o.stream_time for o in onsets]
    errors = np.array(times) - np.array([1.0, 1.216, 2.0, 2.232, 3.0, 3.248])
    assert np.abs(errors).max() < 0.001, errors
    # Through AAC each marker still names its second (1_700_000_000 + S is S mod 16).
    assert [m.identity for m in identify_markers(times)] == [1, 2, 3]
    # The decoder hands out the priming: its first frame starts 1024 samples before the input.
    assert decoded_from == pytest.approx((lead - 1024) / RATE, abs=0.001)


def test_opus_default_is_unchanged() -> None:
    encoder = AudioEncoder()
    packets = [p for j in range(3) for p in encoder.encode(np.zeros(960), j * 960)]
    assert [p.pts for p in packets] == [-312, 648, 1608]


@pytest.mark.parametrize(
    ("error", "step", "kind"),
    [
        (av.HTTPNotFoundError(875574520, "Server returned 404 Not Found"), "open", "not_found"),
        (av.HTTPForbiddenError(858797304, "Server returned 403 Forbidden"), "open", "rejected"),
        (av.ExitError(1414092869, "Immediate exit requested"), "open", "no_media"),
        (av.ExitError(1414092869, "Immediate exit requested"), "read", "disconnected"),
        (av.InvalidDataError(1094995529, "Invalid data found"), "probe", "corrupt_stream"),
        (av.EOFError(541478725, "End of file"), "read", "stream_ended"),
        (av.ConnectionRefusedError(111, "Connection refused"), "open", "connect"),
        (OSError(5, "Input/output error"), "open", "rejected"),
        (OSError(104, "Connection reset by peer"), "read", "disconnected"),
        (av.UndefinedError(-1, "Undefined"), "read", "protocol"),
    ],
)
def test_ffmpeg_errors_map_to_kinds(error: Exception, step: str, kind: str) -> None:
    mapped = classify(error, step, timeout=2.0)  # type: ignore[arg-type]
    assert isinstance(mapped, ProbeError)
    assert mapped.kind == kind


def test_error_messages_redact_the_stream_key() -> None:
    error = OSError(5, "Input/output error: 'rtmp://h/live/secret-key'")
    assert "secret-key" not in str(classify(error, "read", timeout=1.0))


def test_protocol_not_found_is_a_config_error() -> None:
    mapped = classify(av.ProtocolNotFoundError(1330794744, "Protocol not found"), "open", timeout=1.0)
    assert isinstance(mapped, ConfigError)


class _Packets:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = iter(chunks)

    def __iter__(self) -> _Packets:
        return self

    def __next__(self) -> bytes:
        return next(self.chunks)


def test_byte_bridge_reads_across_packets_and_stops() -> None:
    stop = threading.Event()
    bridge = ByteBridge(_Packets([b"FLV\x01", b"abcdef", b"gh"]), stop)
    assert bridge.read(2) == b"FL"
    assert bridge.read(100) == b"V\x01"
    assert bridge.read(3) == b"abc"
    stop.set()
    assert bridge.read(3) == b"def"  # what is already here is still handed over
    assert bridge.read(3) == b""  # then the end, without reading on
    assert bridge.bytes == 10


def test_byte_bridge_refuses_what_is_not_flv() -> None:
    bridge = ByteBridge(_Packets([b"<html>"]), threading.Event())
    with pytest.raises(CorruptStreamError):
        bridge.read(10)
