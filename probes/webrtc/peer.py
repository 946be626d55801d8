"""aiortc set-up shared by the probes and the embedded room.

Four things aiortc does not do for us, kept in one place:

- ICE on loopback. aioice leaves 127.0.0.1 out of its host candidates, so two peers on a
  loopback-only host find no pair. Inside :func:`candidate_addresses` the host candidates are
  exactly the given addresses; a peer whose signaling goes to a loopback address uses only
  loopback, so nothing leaves the machine.
- No public STUN. aiortc falls back to a public STUN server when given no configuration;
  :func:`rtc_configuration` names none (a WHIP or WHEP server announces its own, see
  :mod:`probes.webrtc.session`).
- Observation. :class:`RtpObserver` sees each RTP packet and RTCP sender report a receiver
  handles, which aiortc's stats do not expose: the join's "first RTP packet" instant and the
  sender-report mapping from RTP time to the sender's clock (RFC 3550 section 6.4.1).
- Decoding on the event loop. aiortc gives every receiver a decoder thread and hands each
  frame over twice (a thread queue in, a task scheduled back on the loop out). A VP8 frame of
  the test signal decodes in 0.16 ms and an Opus frame in less, so the hand-overs cost more
  than the decoding, and with a hundred receivers in one process the threads contend for the
  GIL besides. :func:`decode_on_loop` decodes a receiver's frames where they are assembled.
- How each video frame arrived. aiortc's jitter buffer hands a frame over when the first
  packet of the next one comes, and only one frame per packet; it says nothing of when the
  frame's own packets came, whether one was retransmitted, or whether it skipped packets
  it gave up waiting for. A player models its playout on exactly that
  (:mod:`probes.webrtc.playout`), so :func:`decode_on_loop` also notes it, per frame, as a
  :class:`FrameArrival`.
- Repeated NACKs. aiortc asks for a missing packet again only when a new gap appears, so a
  lost retransmission stalls its video until the next loss, or until its buffer overflows
  seconds later. libwebrtc asks again every round trip; :func:`decode_on_loop` has a video
  receiver do so too (:class:`_NackRepeater`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import av
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RtcpSrPacket, RtpPacket
from aiortc.utils import uint16_add
from av import AudioFrame, VideoFrame

from qoe import clock, rtcpatch
from qoe.timeline import ClockPoint

__all__ = [
    "FrameArrival",
    "LoopDecoding",
    "RtpObserver",
    "addresses_for_host",
    "candidate_addresses",
    "decode_on_loop",
    "is_keyframe",
    "next_audio_frame",
    "next_video_frame",
    "prefer_codecs",
    "repeat_nacks",
    "rtc_configuration",
    "selected_pair",
    "stream_seconds",
]

NTP_UNIX_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""

log = logging.getLogger(__name__)


def addresses_for_host(host: str) -> tuple[str, ...] | None:
    """Host candidates for talking to (or serving on) ``host``: loopback only for loopback."""
    if host in ("localhost", ""):
        return ("127.0.0.1",)
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if address.is_loopback:
        return (str(address),) if address.version == 4 else ("::1",)
    return None


@contextmanager
def candidate_addresses(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Gather ICE host candidates from ``addresses`` only (None: every interface)."""
    rtcpatch.install()  # without the patch, aioice would ignore the addresses
    token = rtcpatch.ICE_ADDRESSES.set(addresses)
    try:
        yield
    finally:
        rtcpatch.ICE_ADDRESSES.reset(token)


def rtc_configuration(*, relay: bool = False) -> RTCConfiguration:
    """A configuration with no implicit public STUN server; ``relay`` gathers relayed
    candidates only (the ``relay`` ICE transport policy: media goes through TURN).

    Every m-line shares one transport (max-bundle), as RFC 9725 has WHIP and WHEP endpoints
    do. It also matters to aiortc: under its default "balanced" policy a second transceiver
    of a kind created before the offer arrives stays on a transport BUNDLE never connects,
    and its sender never starts (a second participant's audio went missing that way).
    """
    return RTCConfiguration(
        iceServers=[],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL,
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


def selected_pair(pc: RTCPeerConnection) -> tuple[str, str] | None:
    """The types (``host``, ``srflx``, ``prflx``, ``relay``) of the local and the remote
    candidate of the pair ICE selected, once it has (None before)."""
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is None:
            continue
        agent = transport.transport.iceGatherer._connection
        pair = agent._nominated.get(rtcpatch.AIORTC_COMPONENT)
        if pair is not None:
            return str(pair.local_candidate.type), str(pair.remote_candidate.type)
    return None


def prefer_codecs(transceiver: RTCRtpTransceiver, kind: str, names: tuple[str, ...]) -> None:
    """Restrict ``transceiver`` to codecs named in ``names`` (plus RTX for video)."""
    capabilities = RTCRtpSender.getCapabilities(kind)
    wanted = {f"{kind}/{n}".lower() for n in names} | {"video/rtx"}
    codecs = [c for c in capabilities.codecs if c.mimeType.lower() in wanted]
    transceiver.setCodecPreferences(codecs)


VIDEO_DECODERS = {"video/vp8": "vp8", "video/h264": "h264"}
"""FFmpeg's own decoders, one thread each. aiortc decodes VP8 with libvpx, which starts a
thread per decoder; FFmpeg's VP8 decoder took 0.15 ms a frame of the test signal where
libvpx took 0.21 ms, with twenty decoders taking turns as a probe process has them."""


class _VideoDecoder:
    def __init__(self, name: str) -> None:
        self._ctx = cast(av.VideoCodecContext, av.CodecContext.create(name, "r"))
        self._ctx.thread_count = 1  # frames come one at a time, on the loop: no threads to feed

    def decode(self, encoded_frame: Any) -> list[Any]:
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = VIDEO_TIME_BASE
        return list(self._ctx.decode(packet))


def _decoder_for(codec: Any) -> Any:
    name = VIDEO_DECODERS.get(codec.mimeType.lower())
    return _VideoDecoder(name) if name else get_decoder(codec)


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether ``data``, one depayloaded frame, is a whole keyframe from its first byte.

    VP8: the frame tag's inverted key-frame bit is clear and the key frame's start code
    follows it (RFC 6386 sections 9.1 and 19.1). H.264: the access unit starts with a start
    code and holds an IDR slice, NAL unit type 5 (ITU-T H.264 section 7.4.1.2). A frame whose
    first packet is missing starts mid-frame, so it is never taken for a keyframe.
    """
    kind = mime_type.lower()
    if kind == "video/vp8":
        return len(data) >= 6 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a"
    if kind == "video/h264":
        if not data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
            return False
        at = data.find(b"\x00\x00\x01")
        while at != -1 and at + 3 < len(data):
            if data[at + 3] & 0x1F == 5:
                return True
            at = data.find(b"\x00\x00\x01", at + 3)
    return False


@dataclass(slots=True)
class FrameArrival:
    """How one encoded video frame reached the decoder: what a player's receiver knows of it."""

    complete: float
    """Monotonic seconds when the last of its packets arrived (a retransmission, if one was):
    when libwebrtc's packet buffer would have completed it."""
    released: float
    """Monotonic seconds when aiortc's jitter buffer handed it to the decoder."""
    continuous: bool
    """Its first packet follows the previous frame's last: aiortc skipped no packets before it.
    aiortc gives up on a missing packet only when its buffer overflows or the sequence jumps,
    and then drops the frames it held, so the frame after them has broken references."""
    retransmitted: bool
    """A packet of it arrived after a later-numbered one: a retransmission (or reordering)."""
    size: int
    """Bytes of the encoded frame."""
    timestamp: int = 0
    """Its pts: the RTP timestamp as aiortc maps it (90 kHz ticks, 0 at the first frame)."""
    keyframe: bool = False
    decoded: bool = False
    """The decoder took it without error (it may still be concealing broken references)."""
    decode_seconds: float = 0.0


class _ArrivalJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, noting a :class:`FrameArrival` on each frame it releases.

    Frames are assembled exactly as aiortc assembles them; a released frame carries its
    arrival as an ``arrival`` attribute. Packets aiortc ignores (older than the buffer's start)
    are not noted, since their slot may hold a newer packet.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity=capacity, is_video=True)
        self._arrived = [0.0] * capacity
        self._late = [False] * capacity
        self._highest: int | None = None
        self._next_first: int | None = None
        """The sequence number the next frame starts at if nothing is skipped."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._origin is not None:
            delta = uint16_add(seq, -self._origin)
            misorder = uint16_add(self._origin, -seq)
            if misorder < delta and misorder < MAX_MISORDER:
                return super().add(packet)  # before the buffer's start: aiortc ignores it
        pos = seq % self.capacity
        held = self._packets[pos]
        if held is None or held.sequence_number != seq:  # a duplicate keeps the first arrival
            self._arrived[pos] = clock.monotonic()
            self._late[pos] = self._highest is not None and 0 < uint16_add(self._highest, -seq) < 0x8000
        if self._highest is None or uint16_add(seq, -self._highest) < 0x8000:
            self._highest = seq
        return super().add(packet)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        first = self._origin
        frame = super()._remove_frame(sequence_number)
        if frame is None or first is None or self._origin is None:
            return frame
        slots = [(first + i) % self.capacity for i in range(uint16_add(self._origin, -first))]
        frame.arrival = FrameArrival(  # type: ignore[attr-defined]
            complete=max(self._arrived[p] for p in slots),
            released=clock.monotonic(),
            continuous=self._next_first is None or first == self._next_first,
            retransmitted=any(self._late[p] for p in slots),
            size=len(frame.data),
        )
        self._next_first = self._origin
        return frame


NACK_INTERVAL = 0.1
"""Seconds before a packet still missing is asked for again: libwebrtc's NACK module asks
every round trip, and assumes 100 ms while it has measured none, as a receive-only viewer has
not (``modules/video_coding/nack_requester.cc``)."""


class _NackRepeater:
    """Has an aiortc video receiver ask again, every NACK_INTERVAL, for packets still missing.

    It wraps the receiver's NACK sender to note when each packet was last asked for, and its
    packet handler to ask again, after each packet it handles, for those asked for at least
    NACK_INTERVAL ago. aiortc's own list of missing packets decides what is missing (it
    forgets packets 128 behind the newest, as the sender's history does).
    """

    def __init__(self, receiver: RTCRtpReceiver, generator: Any) -> None:
        self.missing: set[int] = generator.missing
        self.asked: dict[int, float] = {}
        self.repeats = 0
        """NACKs sent again."""
        self._rtx = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
        send, handle = receiver._send_rtcp_nack, receiver._handle_rtp_packet

        async def send_nack(media_ssrc: int, lost: list[int]) -> None:
            now = clock.monotonic()
            for seq in lost:
                self.asked[seq] = now
            await send(media_ssrc, lost)

        async def rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            await handle(packet, arrival_time_ms=arrival_time_ms)
            now = clock.monotonic()
            for seq in [seq for seq in self.asked if seq not in self.missing]:
                del self.asked[seq]
            due = sorted(seq for seq in self.missing if now - self.asked.get(seq, now) >= NACK_INTERVAL)
            if due:
                self.repeats += 1
                await send_nack(self._rtx.get(packet.ssrc, packet.ssrc), due)

        receiver._send_rtcp_nack = send_nack  # type: ignore[method-assign]
        receiver._handle_rtp_packet = rtp  # type: ignore[method-assign]


ARRIVALS_KEPT = 512
"""Frame arrivals a decoder holds for its track's reader (about 17 s of 30 fps video)."""


class _LoopDecoder(rtcpatch.LoopDecodeQueue):
    """Takes the place of a receiver's decoder queue: decodes each frame as it is put.

    aiortc puts ``(codec, encoded frame)`` on the queue once the jitter buffer completes a
    frame, and ``None`` when the receiver stops; decoded frames (or the ``None`` that ends the
    track) go straight onto the track's queue. A frame that fails to decode raises the
    receiver's decode-error flag, on which aiortc asks the sender for a keyframe, as its own
    worker does; the decoder keeps its state, so the frames after it still decode.

    A VP8 or H.264 decoder is given nothing before its first keyframe. A viewer that joins a
    forwarded stream between keyframes gets delta frames first, which reference pictures it
    never had: a libwebrtc player decodes none of them and asks for a keyframe. So does this
    one, and such a frame is not a decode error.

    Frames that come with a :class:`FrameArrival` have it completed (keyframe, decode outcome)
    and queued in ``arrivals`` for the track's reader, decoded or not.
    """

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver  # its track comes with the remote description
        self._error = receiver._RTCRtpReceiver__decoder_error  # type: ignore[attr-defined]
        self._codec_name: str | None = None
        self._decoder: Any = None
        self._keyframe_needed = False
        self.errors = 0
        """Frames that failed to decode."""
        self.frames = 0
        """Encoded frames the jitter buffer handed over, decoded or not."""
        self.keyframes = 0
        """Of those, the keyframes."""
        self.arrivals: deque[FrameArrival] = deque(maxlen=ARRIVALS_KEPT)

    def put(self, task: Any) -> None:
        output = self._receiver._track._queue  # type: ignore[union-attr]
        if task is None:
            output.put_nowait(None)
            return
        codec, encoded_frame = task
        if codec.name != self._codec_name:
            self._decoder, self._codec_name = _decoder_for(codec), codec.name
            self._keyframe_needed = codec.mimeType.lower() in VIDEO_DECODERS
        keyframe = is_keyframe(codec.mimeType, encoded_frame.data)
        self.frames += 1
        self.keyframes += keyframe
        arrival: FrameArrival | None = getattr(encoded_frame, "arrival", None)
        if arrival is not None:
            arrival.timestamp = encoded_frame.timestamp
            arrival.keyframe = keyframe
            self.arrivals.append(arrival)
        if self._keyframe_needed and not keyframe:
            self._error.set()  # on which aiortc asks the sender for a keyframe (PLI)
            return
        self._keyframe_needed = False
        started = clock.monotonic()
        try:
            frames = self._decoder.decode(encoded_frame)
        except av.FFmpegError as exc:
            log.debug("%s frame failed to decode: %s", codec.mimeType, exc)
            self.errors += 1
            self._error.set()
            return
        if arrival is not None:
            arrival.decoded = True
            arrival.decode_seconds = clock.monotonic() - started
        for frame in frames:
            output.put_nowait(frame)

    def arrivals_through(self, pts: int) -> list[FrameArrival]:
        """Take the arrivals of the frames up to the one with ``pts``, in decoding order."""
        taken = []
        while self.arrivals and self.arrivals[0].timestamp <= pts:
            taken.append(self.arrivals.popleft())
        return taken


class LoopDecoding(Protocol):
    errors: int
    """Frames that failed to decode."""
    frames: int
    """Encoded frames handed to the decoder's queue, decoded or not."""
    keyframes: int
    """Of those, the keyframes."""

    def arrivals_through(self, pts: int) -> list[FrameArrival]:
        """Arrivals of the frames up to the one with ``pts`` (none if they are not noted)."""
        ...


def repeat_nacks(receiver: RTCRtpReceiver) -> None:
    """Have a video ``receiver`` ask again for missing packets as libwebrtc does
    (:class:`_NackRepeater`). Call it before the receiver starts."""
    _NackRepeater(receiver, receiver._RTCRtpReceiver__nack_generator)  # type: ignore[attr-defined]


def decode_on_loop(receiver: RTCRtpReceiver) -> LoopDecoding:
    """Have ``receiver`` decode on the event loop instead of in a thread of its own.

    Call it before the receiver starts (before the remote description is set). A video
    receiver's frames also get their :class:`FrameArrival` noted, and it asks again for
    missing packets as libwebrtc does (:class:`_NackRepeater`). Needs :func:`qoe.rtcpatch.install`
    (which checks that this aiortc has the internals relied on here).
    """
    if not rtcpatch.installed():
        raise RuntimeError("decode_on_loop needs qoe.rtcpatch.install() first")
    decoder = _LoopDecoder(receiver)
    receiver._RTCRtpReceiver__decoder_queue = decoder  # type: ignore[attr-defined]
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if getattr(receiver, "_RTCRtpReceiver__kind", None) == "video" and isinstance(buffer, JitterBuffer):
        receiver._RTCRtpReceiver__jitter_buffer = _ArrivalJitterBuffer(buffer.capacity)  # type: ignore[attr-defined]
        _NackRepeater(receiver, receiver._RTCRtpReceiver__nack_generator)  # type: ignore[attr-defined]
    return decoder


class RtpObserver:
    """Watches an aiortc receiver: first packet (``on_packet`` is called at it), last packet,
    and RTCP sender reports.

    It wraps the receiver's packet handlers on this one instance; aiortc's transport looks
    them up on every packet, so the receiver works exactly as before.
    """

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        clock_rate: int,
        on_packet: Callable[[], None] | None = None,
    ) -> None:
        self.receiver = receiver
        self.clock_rate = clock_rate
        self.first_packet_at: float | None = None
        self.last_packet_at: float | None = None
        self.packets = 0
        self.sender_reports: list[tuple[float, int]] = []
        """(sender Unix time, RTP timestamp) from each RTCP sender report."""
        self.origin: int | None = None
        """The RTP timestamp of stream time 0 where the probe maps it itself (a light
        viewer's frames never pass aiortc's timestamp mapper); None: aiortc's."""
        self._on_packet = on_packet
        handle_rtp = receiver._handle_rtp_packet
        handle_rtcp = receiver._handle_rtcp_packet

        async def rtp(packet: Any, arrival_time_ms: int) -> None:
            now = clock.monotonic()
            self.last_packet_at = now
            self.packets += 1
            if self.first_packet_at is None:
                self.first_packet_at = now
                if self._on_packet is not None:
                    self._on_packet()  # the hook is for the first packet: once is enough
            await handle_rtp(packet, arrival_time_ms=arrival_time_ms)

        async def rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                info = packet.sender_info
                ntp = info.ntp_timestamp
                unix = (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 2**32
                self.sender_reports.append((unix, info.rtp_timestamp))
                del self.sender_reports[:-64]
            await handle_rtcp(packet)

        receiver._handle_rtp_packet = rtp  # type: ignore[method-assign]
        receiver._handle_rtcp_packet = rtcp  # type: ignore[method-assign]

    def rtp_origin(self) -> int | None:
        """The RTP timestamp aiortc maps to pts 0 (its first decoded frame), if known yet."""
        if self.origin is not None:
            return self.origin % 2**32
        mapper = getattr(self.receiver, "_RTCRtpReceiver__timestamp_mapper", None)
        origin = getattr(mapper, "_origin", None)
        return None if origin is None else int(origin) % 2**32

    def clock_points(self, near_stream_time: float = 0.0) -> list[ClockPoint]:
        """Sender reports as points on the stream timeline of the decoded frames' pts.

        A report's RTP timestamp is taken relative to aiortc's origin and unwrapped to the
        32-bit cycle nearest ``near_stream_time`` (a recent frame's stream time).
        """
        origin = self.rtp_origin()
        if origin is None:
            return []
        cycle = 2**32
        near = round(near_stream_time * self.clock_rate)
        points = []
        for unix, rtp in self.sender_reports:
            ticks = (rtp - origin) % cycle
            ticks += round((near - ticks) / cycle) * cycle
            points.append(ClockPoint(ticks / self.clock_rate, unix))
        return points


async def next_video_frame(track: MediaStreamTrack) -> VideoFrame:
    """The next decoded frame of a remote video track (MediaStreamError when it ends)."""
    frame = await track.recv()
    if not isinstance(frame, VideoFrame) or frame.pts is None:
        raise MediaStreamError(f"unexpected {type(frame).__name__} on a video track")
    return frame


async def next_audio_frame(track: MediaStreamTrack) -> AudioFrame:
    """The next decoded frame of a remote audio track (MediaStreamError when it ends)."""
    frame = await track.recv()
    if not isinstance(frame, AudioFrame) or frame.pts is None:
        raise MediaStreamError(f"unexpected {type(frame).__name__} on an audio track")
    return frame


def stream_seconds(frame: VideoFrame | AudioFrame) -> float:
    """A decoded frame's timestamp on its stream's media timeline, seconds."""
    assert frame.pts is not None and frame.time_base is not None
    return float(frame.pts * frame.time_base)
