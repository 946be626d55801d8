"""Decoding on the event loop: frames reach the track, bad frames ask for a keyframe.

The WHEP viewer decodes where aiortc assembles frames instead of in a thread per receiver;
these check the stand-in queue on its own, with frames from the project's own encoder.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import itertools
import threading
from types import SimpleNamespace

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from probes.webrtc.peer import _LoopDecoder, decode_on_loop
from qoe import rtcpatch
from qoe.media.encode import VideoEncoder
from qoe.media.frames import luma
from qoe.signal import read_code
from qoe.signal.video import SignalVideo

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)


def fake_receiver() -> SimpleNamespace:
    """What the stand-in reads of an aiortc receiver: its track's queue and error flag."""
    return SimpleNamespace(
        _track=SimpleNamespace(_queue=asyncio.Queue()),
        _RTCRtpReceiver__decoder_error=threading.Event(),
    )


def encoded_frames(count: int, codec: str = "vp8", keyframes: tuple[int, ...] = (0,)) -> list[bytes]:
    video, encoder = SignalVideo(320, 180), VideoEncoder(320, 180, codec=codec)
    frames = []
    for seq in range(count):
        packets = encoder.encode(video.render(1000 + seq / 30, seq), seq * 3000, keyframe=seq in keyframes)
        frames.append(b"".join(bytes(p) for p in packets))
    return frames


@pytest.mark.parametrize("codec", [VP8, H264], ids=["vp8", "h264"])
async def test_frames_decode_in_order_onto_the_track_queue(codec: RTCRtpCodecParameters) -> None:
    receiver = fake_receiver()
    decoder = _LoopDecoder(receiver)  # type: ignore[arg-type]
    for seq, data in enumerate(encoded_frames(5, codec.name.lower())):
        decoder.put((codec, JitterFrame(data=data, timestamp=seq * 3000)))
    queue = receiver._track._queue
    frames = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [read_code(luma(f)).seq for f in frames] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    assert [f.pts for f in frames] == [0, 3000, 6000, 9000, 12000]
    assert not receiver._RTCRtpReceiver__decoder_error.is_set()


async def test_a_frame_that_fails_to_decode_raises_the_keyframe_flag() -> None:
    receiver = fake_receiver()
    decoder = _LoopDecoder(receiver)  # type: ignore[arg-type]
    keyframe = encoded_frames(1)[0]
    decoder.put((VP8, JitterFrame(data=keyframe, timestamp=0)))
    decoder.put((VP8, JitterFrame(data=b"\x00" * 7, timestamp=3000)))
    assert receiver._RTCRtpReceiver__decoder_error.is_set()
    assert receiver._track._queue.qsize() == 1  # the first keyframe's picture
    assert decoder.errors == 1
    # The decoder keeps going: a keyframe after the bad frame decodes.
    decoder.put((VP8, JitterFrame(data=keyframe, timestamp=6000)))
    assert receiver._track._queue.qsize() == 2
    assert decoder.errors == 1


@pytest.mark.parametrize("codec", [VP8, H264], ids=["vp8", "h264"])
async def test_frames_before_the_first_keyframe_ask_for_one_and_are_not_errors(
    codec: RTCRtpCodecParameters,
) -> None:
    """A viewer that joins a forwarded stream between keyframes gets delta frames first."""
    receiver = fake_receiver()
    decoder = _LoopDecoder(receiver)  # type: ignore[arg-type]
    flag = receiver._RTCRtpReceiver__decoder_error
    frames = encoded_frames(6, codec.name.lower(), keyframes=(0, 3))
    for seq in (1, 2):
        decoder.put((codec, JitterFrame(data=frames[seq], timestamp=seq * 3000)))
        assert flag.is_set()  # a keyframe is asked for
        flag.clear()
    for seq in (3, 4, 5):
        decoder.put((codec, JitterFrame(data=frames[seq], timestamp=seq * 3000)))
    queue = receiver._track._queue
    decoded = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [read_code(luma(f)).seq for f in decoded] == [3, 4, 5]  # type: ignore[union-attr]
    assert decoder.errors == 0
    assert not flag.is_set()


async def test_stopping_ends_the_track() -> None:
    receiver = fake_receiver()
    _LoopDecoder(receiver).put(None)  # type: ignore[arg-type]
    assert receiver._track._queue.get_nowait() is None


def test_the_thread_aiortc_starts_for_a_loop_decoded_receiver_ends_at_once() -> None:
    rtcpatch.install()
    from aiortc.rtcrtpreceiver import decoder_worker  # patched by install()

    queue = _LoopDecoder(fake_receiver())  # type: ignore[arg-type]
    worker = threading.Thread(target=decoder_worker, args=(None, queue, None, None))
    worker.start()
    worker.join(timeout=1)
    assert not worker.is_alive()


async def test_the_installed_aiortc_has_what_loop_decoding_relies_on() -> None:
    rtcpatch.install()  # checks every private attribute first
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        decoding = decode_on_loop(receiver)
        assert decoding.errors == 0
        assert receiver._RTCRtpReceiver__decoder_queue is decoding  # type: ignore[attr-defined]
    finally:
        await pc.close()


async def test_a_packet_still_missing_is_asked_for_again_every_round_trip() -> None:
    # aiortc NACKs a hole once, when it appears; libwebrtc asks again every RTT (100 ms
    # while none is measured). A lost retransmission must not stall the video for seconds.
    from aiortc.rtcrtpreceiver import NackGenerator
    from aiortc.rtp import RtpPacket

    from probes.webrtc.peer import NACK_INTERVAL, _NackRepeater
    from qoe import clock

    generator, sent = NackGenerator(), []
    now = [10.0]

    async def send_rtcp_nack(media_ssrc: int, lost: list[int]) -> None:
        sent.append((now[0], media_ssrc, list(lost)))

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        if generator.add(packet):  # as aiortc does: all that is missing, on a new gap only
            await receiver._send_rtcp_nack(packet.ssrc, sorted(generator.missing))

    receiver = SimpleNamespace(
        _send_rtcp_nack=send_rtcp_nack,
        _handle_rtp_packet=handle_rtp_packet,
        _RTCRtpReceiver__rtx_ssrc={},
    )
    repeater = _NackRepeater(receiver, generator)  # type: ignore[arg-type]
    with clock.use_clock(lambda: now[0], lambda: now[0]):
        for seq in (1, 2, 4, 5):  # 3 is lost
            await receiver._handle_rtp_packet(RtpPacket(sequence_number=seq, ssrc=7), arrival_time_ms=0)
            now[0] += 0.033
        assert [(round(at, 3), ssrc, lost) for at, ssrc, lost in sent] == [(10.066, 7, [3])]  # once
        for seq in range(6, 14):  # its retransmission is lost too
            await receiver._handle_rtp_packet(RtpPacket(sequence_number=seq, ssrc=7), arrival_time_ms=0)
            now[0] += 0.033
        asked_at = [at for at, _, lost in sent if lost == [3]]
        assert len(asked_at) == 3 and all(
            later - earlier >= NACK_INTERVAL - 1e-9 for earlier, later in itertools.pairwise(asked_at)
        )
        await receiver._handle_rtp_packet(RtpPacket(sequence_number=3, ssrc=7), arrival_time_ms=0)
        now[0] += 1.0
        count = len(sent)
        await receiver._handle_rtp_packet(RtpPacket(sequence_number=14, ssrc=7), arrival_time_ms=0)
        assert len(sent) == count  # it arrived: never asked for again
    assert repeater.repeats == 2


def test_an_aiortc_without_an_attribute_relied_on_is_refused_with_its_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiortc.jitterbuffer

    monkeypatch.delattr(aiortc.jitterbuffer.JitterBuffer, "_remove_frame")
    with pytest.raises(rtcpatch.IncompatibleAiortc) as raised:
        rtcpatch.check()
    message = str(raised.value)
    assert "aiortc.jitterbuffer.JitterBuffer._remove_frame" in message
    assert f"aiortc {importlib.metadata.version('aiortc')}" in message


def test_a_private_instance_attribute_is_read_from_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        rtcpatch,
        "PRIVATE",
        (("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__no_such_thing"),),
    )
    with pytest.raises(rtcpatch.IncompatibleAiortc, match=r"RTCRtpReceiver\._RTCRtpReceiver__no_such_thing"):
        rtcpatch.check()
    monkeypatch.setattr(rtcpatch, "PRIVATE", (("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_track"),))
    rtcpatch.check()


def test_a_patched_function_aiortc_no_longer_calls_by_name_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replacing a module attribute only works while aiortc's code looks it up by that name."""
    rtcpatch.check()  # the installed aiortc and aioice call all three by name
    monkeypatch.setattr(
        rtcpatch, "PRIVATE", (("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "uses:decoder_thread"),)
    )
    with pytest.raises(rtcpatch.IncompatibleAiortc) as raised:
        rtcpatch.check()
    message = str(raised.value)
    assert (
        "aiortc.rtcrtpreceiver.RTCRtpReceiver calling aiortc.rtcrtpreceiver.decoder_thread by name" in message
    )
    assert f"aiortc {importlib.metadata.version('aiortc')}" in message
