"""Light WHEP viewers: the figures of a decoding viewer, at a fraction of its cost.

A decoding viewer spends most of its CPU in aiortc's receive path and the decoders. A light
viewer (``decode = "none"`` or ``"sample"``) keeps aiortc's transport (SRTP, RTCP, NACK and
RTX, REMB) but not its video jitter buffer or decoders:

- **Freezes**: frames are assembled from RTP timestamps, sequence numbers and marker bits
  (:mod:`probes.webrtc.assembly`) and played out through the same libwebrtc model as a
  decoding viewer's (:mod:`probes.webrtc.playout`), with the decode time the test signal
  takes (:data:`LIGHT_DECODE_SECONDS`), so freezes follow the same rule on the same render
  times.
- **Dropped frames**: frames lost for good in RTP sequence gaps, and frames the player model
  dropped, from the first frame shown on.
- **Glass-to-glass**: each frame's render time on the wall clock minus the capture time its
  packets carry in the ``abs-capture-time`` header extension (:mod:`qoe.rtcpatch`). Where a
  server strips the extension, the code of the frames decoded in windows stands in.
- **Decoding in windows** (:class:`DecodeGate`): for a few seconds at a time the viewer
  waits for a keyframe (asking for one, PLI, if none comes within :data:`KEYFRAME_GRACE`),
  then decodes video and audio from it: the frames' codes are read (verifying the picture)
  and the flash and tone markers give the A/V offset. ``sample`` opens a window every
  ``sample_every`` seconds on its own (:data:`SAMPLE_EVERY`); ``none`` only when a
  process-wide :class:`Rotation` visits it, one viewer at a time.

Audio is never decoded outside a window: Opus packet timing says nothing of the tone
markers the A/V offset is paired on.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc import RTCRtpReceiver
from aiortc.codecs import get_decoder
from aiortc.mediastreams import VIDEO_TIME_BASE
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, pack_remb_fci, unpack_remb_fci

from probes.webrtc.assembly import FrameAssembler, RtpFrame
from probes.webrtc.peer import VIDEO_DECODERS, is_keyframe, repeat_nacks
from probes.webrtc.playout import EncodedFrame, Played, Playout
from qoe import clock, rtcpatch

__all__ = [
    "DECODE_MODES",
    "LIGHT_DECODE_SECONDS",
    "SAMPLE_EVERY",
    "SAMPLE_FOR",
    "DecodeGate",
    "GatedAudio",
    "LightFrame",
    "LightVideo",
    "Rotation",
    "rotation",
]

DECODE_MODES = ("full", "sample", "none")
LIGHT_DECODE_SECONDS = 0.0002
"""Decode time the player model is given for a frame not decoded: what FFmpeg's VP8 decoder
takes for a frame of the test signal here (0.15 to 0.2 ms; docs/PLAYOUT.md)."""
SAMPLE_EVERY = 20.0
"""Seconds from the start of one decoding window to the next (``sample``, its
``sample_every`` option's default): 15 % of the time decoding."""
VISIT_EVERY = 10.0
"""The least time between two visits of the rotation to one viewer."""
SAMPLE_FOR = 4.0
"""Seconds a window lasts: a keyframe waited for (or asked for), then at least two seconds,
each with a flash and a tone to pair."""
KEYFRAME_GRACE = 2.0
"""Seconds a window waits for the stream's own next keyframe before asking for one (PLI). A
server's encoder serves every viewer: each keyframe asked for is a large frame sent to all of
them, so fifty sampling viewers asking at every window made the stream itself heavier."""
KEYFRAME_RETRY = 0.5
"""Seconds before a window still waiting for its keyframe asks again."""
REMB_INTERVAL = 0.2
"""Seconds between two bandwidth estimates (REMB) sent, unless one falls by 3 % or more:
libwebrtc's ``RembThrottler`` (``modules/congestion_controller/remb_throttler.cc``). aiortc
sends one with every video packet while its detector says overuse, which a busy probe's
own late timestamps make it say: a feedback loop of hundreds of RTCP packets a second."""
FIXED_REMB_EVERY = 1.0
"""Seconds between two fixed bandwidth estimates (the ``remb`` option): libwebrtc repeats an
unchanged REMB about once a second."""


class DecodeGate:
    """When a light viewer decodes: windows of a few seconds, opened by its own schedule or by
    a :class:`Rotation`; ``listeners`` are called as each opens."""

    def __init__(self) -> None:
        self.until = -math.inf
        self.windows: list[tuple[float, float]] = []
        """(start, end) monotonic seconds of each window opened."""
        self.listeners: list[Callable[[], None]] = []
        self.last_opened = -math.inf

    def open(self, seconds: float) -> None:
        now = clock.monotonic()
        self.until = now + seconds
        self.last_opened = now
        self.windows.append((now, self.until))
        for listener in self.listeners:
            listener()

    def is_open(self, now: float | None = None) -> bool:
        return (clock.monotonic() if now is None else now) < self.until


class Rotation:
    """One decoder for many light viewers: visits them one at a time, each for ``visit``
    seconds and at most once every ``every`` seconds, the least recently visited first."""

    def __init__(self, visit: float = SAMPLE_FOR, every: float = VISIT_EVERY) -> None:
        self.visit = visit
        self.every = every
        self.gates: list[DecodeGate] = []
        self._task: asyncio.Task[None] | None = None

    def join(self, gate: DecodeGate) -> None:
        self.gates.append(gate)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="light-rotation")

    def leave(self, gate: DecodeGate) -> None:
        if gate in self.gates:
            self.gates.remove(gate)
        if not self.gates and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while self.gates:
            gate = min(self.gates, key=lambda g: g.last_opened)
            wait = gate.last_opened + self.every - clock.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.5))
                continue
            gate.open(self.visit)
            await asyncio.sleep(self.visit)


_ROTATIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Rotation] = weakref.WeakKeyDictionary()


def rotation() -> Rotation:
    """The running event loop's rotation, shared by its light viewers."""
    loop = asyncio.get_running_loop()
    found = _ROTATIONS.get(loop)
    if found is None:
        found = _ROTATIONS[loop] = Rotation()
    return found


@dataclass(slots=True)
class LightFrame:
    """What a light viewer knows of a frame the player model settled."""

    rtp: int
    stream_time: float
    """Seconds on the video's media timeline (RTP time since the first frame)."""
    complete: float
    size: int
    capture: float | None
    """Capture time from abs-capture-time, Unix seconds."""
    width: int
    height: int
    picture: av.VideoFrame | None = None
    """The decoded picture, for a frame decoded in a window."""


class _Idle(rtcpatch.LoopDecodeQueue):
    """A video receiver's decoder queue when nothing reaches it: its thread returns at once."""

    def put(self, task: Any) -> None:
        pass


class LightVideo:
    """Takes the place of an aiortc video receiver's jitter buffer (see the module).

    aiortc hands ``add`` each packet, depayloaded, and sends a keyframe request (PLI) when it
    returns True; it never gets a frame to decode. ``on_played`` is called with each frame
    the player model settles, and its :class:`LightFrame` (None if it was never noted).
    """

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        gate: DecodeGate,
        on_played: Callable[[Played, LightFrame | None], None],
        remb: float | None = None,
    ) -> None:
        if not rtcpatch.installed():
            raise RuntimeError("LightVideo needs qoe.rtcpatch.install() first")
        self.gate = gate
        self.on_played = on_played
        self.assembler = FrameAssembler()
        self.playout = Playout()
        self.errors = 0
        """Frames that failed to decode in a window."""
        self.frames = 0
        self.keyframes = 0
        self.decoded = 0
        """Frames decoded in windows."""
        self.origin: int | None = None
        """RTP timestamp (unwrapped) of the first frame: stream time 0."""
        self.lost_before_first: int | None = None
        self.dropped_after_first = 0
        self.player_dropped = 0
        self._codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        self._mimes: dict[int, str] = {}
        self._held: dict[int, LightFrame] = {}
        self._size = (0, 0)
        self._decoder: Any = None
        self._awaiting_keyframe = False
        self._asked = -math.inf
        self._holes = 0
        self._receiver = receiver
        self.remb = remb
        """Bit/s of the fixed bandwidth estimate sent (None: aiortc's estimator's own)."""
        self._remb_sent = -math.inf
        self._sending: set[asyncio.Future[None]] = set()
        if remb is not None:
            # aiortc's delay-based estimator is some 15 % of a light viewer's CPU.
            receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]
        receiver._RTCRtpReceiver__jitter_buffer = self  # type: ignore[attr-defined]
        receiver._RTCRtpReceiver__decoder_queue = _Idle()  # type: ignore[attr-defined]
        repeat_nacks(receiver)
        throttle_remb(receiver)
        gate.listeners.append(self._window_opened)

    def _window_opened(self) -> None:
        self.assembler.keep_payloads = True
        self._awaiting_keyframe = True
        self._asked = clock.monotonic() + KEYFRAME_GRACE - KEYFRAME_RETRY

    def _window_closed(self) -> None:
        self.assembler.keep_payloads = False
        self._decoder = None
        self._awaiting_keyframe = False

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        """One RTP packet, depayloaded (``packet._data``); True asks for a keyframe."""
        now = clock.monotonic()
        mime = self._mimes.get(packet.payload_type)
        if mime is None:
            codec = self._codecs.get(packet.payload_type)
            mime = self._mimes[packet.payload_type] = codec.mimeType.lower() if codec is not None else ""
        data: bytes = getattr(packet, "_data", b"")
        payload = packet.payload
        starts = False
        if mime == "video/vp8":
            # Payload descriptor: S bit set on partition 0 (RFC 7741 section 4.2).
            starts = bool(payload) and payload[0] & 0x17 == 0x10
            keyframe = starts and is_keyframe(mime, data)
        else:
            keyframe = is_keyframe(mime, data)
        frames = self.assembler.add(
            packet.sequence_number,
            packet.timestamp,
            bool(packet.marker),
            now,
            len(data),
            keyframe=keyframe,
            starts=starts,
            first_bytes=data[:10] if keyframe else b"",
            capture=getattr(packet.extensions, "abs_capture_time", None),
            payload=data,
        )
        keyframe_wanted = self.assembler.holes != self._holes  # a hole given up: refresh the picture
        self._holes = self.assembler.holes
        for frame in frames:
            self._frame(frame, mime)
        if self.assembler.keep_payloads and not self.gate.is_open(now):
            self._window_closed()
        elif self._awaiting_keyframe and now - self._asked >= KEYFRAME_RETRY:
            self._asked = now
            keyframe_wanted = True
        if self.remb is not None and now - self._remb_sent >= FIXED_REMB_EVERY:
            self._send_remb(packet.ssrc, now)
        return keyframe_wanted, None

    def _send_remb(self, media_ssrc: int, now: float) -> None:
        own: int | None = self._receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
        if own is None or self.remb is None:
            return  # the receiver has not started its RTCP yet
        self._remb_sent = now
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=own, media_ssrc=0, fci=pack_remb_fci(int(self.remb), [media_ssrc])
        )
        sending = asyncio.ensure_future(self._receiver._send_rtcp(remb))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    def _frame(self, frame: RtpFrame, mime: str) -> None:
        self.frames += 1
        self.keyframes += frame.keyframe
        if self.origin is None:
            self.origin = frame.rtp
        if frame.keyframe and mime == "video/vp8" and len(frame.first_bytes) >= 10:
            head = frame.first_bytes
            self._size = ((head[6] | head[7] << 8) & 0x3FFF, (head[8] | head[9] << 8) & 0x3FFF)
        noted = LightFrame(
            rtp=frame.rtp,
            stream_time=(frame.rtp - self.origin) / 90000,
            complete=frame.complete,
            size=frame.size,
            capture=frame.capture,
            width=self._size[0],
            height=self._size[1],
        )
        decode_seconds, intact = LIGHT_DECODE_SECONDS, frame.continuous
        if frame.payloads is not None and self.gate.is_open():
            started = clock.monotonic()
            picture, ok = self._decode(frame, mime)
            if ok is not None:
                decode_seconds, intact = clock.monotonic() - started, intact and ok
            if picture is not None:
                noted.picture = picture
                noted.width, noted.height = picture.width, picture.height
                self._size = (picture.width, picture.height)
        self._held[frame.rtp] = noted
        encoded = EncodedFrame(
            rtp=frame.rtp,
            complete=frame.complete,
            keyframe=frame.keyframe,
            intact=intact,
            retransmitted=frame.retransmitted,
            size=frame.size,
            decode_seconds=decode_seconds,
        )
        for played in self.playout.add(encoded):
            self._settle(played)

    def _decode(self, frame: RtpFrame, mime: str) -> tuple[av.VideoFrame | None, bool | None]:
        """Decode ``frame`` in a window: (its picture, whether the decoder took it); (None,
        None) while the window waits for its keyframe."""
        if self._awaiting_keyframe:
            if not frame.keyframe:
                return None, None
            name = VIDEO_DECODERS.get(mime)
            if name is None:
                return None, None
            context = av.CodecContext.create(name, "r")
            context.thread_count = 1
            self._decoder, self._awaiting_keyframe = context, False
        if self._decoder is None:
            return None, None
        packet = av.Packet(b"".join(frame.payloads or ()))
        packet.pts = frame.rtp
        packet.time_base = VIDEO_TIME_BASE
        try:
            pictures = list(self._decoder.decode(packet))
        except av.FFmpegError:
            self.errors += 1
            self._awaiting_keyframe = True
            return None, False
        self.decoded += 1
        return (pictures[-1] if pictures else None), True

    def _settle(self, played: Played) -> None:
        noted = self._held.pop(played.frame.rtp, None)
        if played.render_at is None:
            self.player_dropped += 1
            if self.lost_before_first is not None:
                self.dropped_after_first += 1
        elif self.lost_before_first is None:
            self.lost_before_first = self.assembler.frames_lost
        self.on_played(played, noted)

    def flush(self) -> None:
        """Settle the frames still pending: the viewer stopped watching."""
        for played in self.playout.flush():
            self._settle(played)

    @property
    def frames_lost(self) -> int | None:
        """Dropped frames from the first frame shown on (None before one was)."""
        if self.lost_before_first is None:
            return None
        return self.assembler.frames_lost - self.lost_before_first + self.dropped_after_first

    def arrivals_through(self, pts: int) -> list[Any]:
        return []


def throttle_remb(receiver: RTCRtpReceiver) -> None:
    """Have ``receiver`` send its REMB as libwebrtc does (see :data:`REMB_INTERVAL`)."""
    send = receiver._send_rtcp
    last: list[float] = [-math.inf, 0.0]  # when the last REMB went, and its bitrate

    async def send_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, _ = unpack_remb_fci(packet.fci)
            except ValueError:
                bitrate = 0
            now = clock.monotonic()
            if now - last[0] < REMB_INTERVAL and bitrate > 0.97 * last[1]:
                return
            last[0], last[1] = now, bitrate
        await send(packet)

    receiver._send_rtcp = send_rtcp  # type: ignore[method-assign]


class GatedAudio(rtcpatch.LoopDecodeQueue):
    """An audio receiver's decoder queue that decodes only while ``gate`` is open, each window
    with a decoder of its own, onto the track's queue.

    Outside windows a packet goes no further than the receiver's RTCP statistics (so its
    receiver reports stay true): no depayloading, jitter buffer or decoder.
    """

    def __init__(self, receiver: RTCRtpReceiver, gate: DecodeGate) -> None:
        self._receiver = receiver
        self.gate = gate
        self._decoder: Any = None
        self.frames = 0
        self.keyframes = 0
        self.errors = 0
        receiver._RTCRtpReceiver__decoder_queue = self  # type: ignore[attr-defined]
        streams: dict[int, Any] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        handle = receiver._handle_rtp_packet

        async def rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            stream = streams.get(packet.ssrc)
            if stream is None or gate.is_open():
                await handle(packet, arrival_time_ms=arrival_time_ms)
            else:
                stream.add(packet)

        receiver._handle_rtp_packet = rtp  # type: ignore[method-assign]

    def put(self, task: Any) -> None:
        output = self._receiver._track._queue  # type: ignore[union-attr]
        if task is None:
            output.put_nowait(None)
            return
        if not self.gate.is_open():
            self._decoder = None
            return
        codec, encoded_frame = task
        if self._decoder is None:
            self._decoder = get_decoder(codec)
        for frame in self._decoder.decode(encoded_frame):
            output.put_nowait(frame)

    def arrivals_through(self, pts: int) -> list[Any]:
        return []
