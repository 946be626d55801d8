"""Encode once, send to many: pre-encoded packets handed to every subscriber's aiortc track.

aiortc's RTCRtpSender packetizes an ``av.Packet`` that a track returns instead of encoding a
frame, so N viewers cost N packetizations and one encode. A subscriber that joins, or falls
behind and overflows its queue, skips video until the next keyframe and asks for one, as an
SFU forwards a PLI to its publisher.

A source may encode its video in more than one codec (one encoder per codec, not per
viewer): each video subscriber names the codec it takes, or none for the source's own, and
:attr:`Fanout.codecs` tells the source which encoders someone is watching.

A source may also encode more than one rendition (rung 0 the best, :mod:`qoe.media.ladder`).
Each video subscriber is on one rung at a time; :meth:`PacketTrack.switch_to` moves it, at
the next keyframe of the new rung, which it asks for. :attr:`Fanout.wanted` tells the source
which (codec, rung) pairs to encode.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from qoe import clock
from qoe.media.ladder import RungChooser

__all__ = ["Fanout", "PacketTrack"]

RATE_WINDOW = 2.0
"""Seconds over which :meth:`Fanout.sending` measures a rendition's bitrate."""
QUEUE_PACKETS = 256
"""Per-subscriber backlog (about 4 s of audio and video) before packets are dropped."""


class PacketTrack(MediaStreamTrack):
    """An outgoing track whose ``recv`` returns pre-encoded packets from a :class:`Fanout`."""

    def __init__(self, kind: str, fanout: Fanout, delay: float = 0.0, codec: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.delay = delay
        """Seconds each packet is held before it is queued (to align two participants' paths)."""
        self.codec = codec
        """The video codec this track takes (``"vp8"``, ``"h264"``); None: the source's own."""
        self._fanout = fanout
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(QUEUE_PACKETS)
        self._awaiting_keyframe = kind == "video"
        self.dropped = 0
        self.rung = 0
        """The rendition this track sends (0: the best)."""
        self.target: int | None = None
        """A rung it is switching to, at that rung's next keyframe."""
        self.history: list[tuple[float, int]] = [(clock.wall(), 0)]
        """(wall-clock time, rung) at the start and at each switch: the room's ground truth."""
        self.chooser: RungChooser | None = None
        """Moves the track between rungs by its viewer's bandwidth estimates, when set."""
        self.capture_wall: float | None = None
        """Capture time (Unix seconds) of the packet ``recv`` returned last, when the fanout's
        source says (:attr:`Fanout.pts_captured`): what its sender stamps as abs-capture-time."""
        self.due_wall: float | None = None
        """When the packet ``recv`` returned last was due to leave (Unix seconds): its time on
        the source's clock plus the source's :attr:`Fanout.send_lag` and this track's own
        ``delay``; None when the fanout's packets are not on a clock. The sender's RTCP
        reports say this time, not the moment a busy loop let the packet go."""

    @property
    def fanout(self) -> Fanout:
        """The fanout this track is subscribed to."""
        return self._fanout

    def estimate(self, bitrate: float) -> None:
        """Take the viewer's bandwidth estimate (bit/s, from its REMB)."""
        if self.chooser is not None:
            self._move(self.chooser.update(bitrate, clock.monotonic(), self._sending()))

    def lost(self, fraction: float) -> None:
        """Take the fraction of this track's packets the viewer reports lost (0..1)."""
        if self.chooser is not None:
            self._move(self.chooser.lost(fraction, clock.monotonic(), self._sending()))

    def _sending(self) -> float | None:
        return self._fanout.sending(self.codec, self.rung)

    def _move(self, rung: int | None) -> None:
        if rung is not None:
            self.switch_to(rung)

    def switch_to(self, rung: int) -> None:
        """Send rung ``rung`` from its next keyframe on (asked for now)."""
        if rung == self.rung:
            self.target = None
            return
        self.target = rung
        self._fanout.request_keyframe(self.codec, rung)

    def offer(self, packet: av.Packet, rung: int = 0) -> None:
        """Queue ``packet`` (of rendition ``rung``) for sending, or drop it (see the module
        docstring)."""
        if self.readyState != "live":
            return
        if rung != self.rung:
            if rung != self.target or not packet.is_keyframe:
                return
            self.rung, self.target = rung, None
            self.history.append((clock.wall(), rung))
            del self.history[1:-1000]
            self._awaiting_keyframe = False
        if self._awaiting_keyframe:
            if not packet.is_keyframe:
                return
            self._awaiting_keyframe = False
        if self.delay > 0:
            asyncio.get_running_loop().call_later(self.delay, self._queue_packet, packet)
        else:
            self._queue_packet(packet)

    def _queue_packet(self, packet: av.Packet) -> None:
        if self.readyState != "live":
            return
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.kind == "video":
                self._awaiting_keyframe = True
                self._fanout.request_keyframe(self.codec, self.rung)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        fanout = self._fanout
        epoch = fanout.pts_epoch
        if epoch is not None and packet.pts is not None and (base := packet.time_base) is not None:
            # Integer arithmetic: a Fraction product for every packet of every viewer was a
            # tenth of the room's sending.
            at = epoch + packet.pts * base.numerator / base.denominator
            self.due_wall = at + fanout.send_lag + self.delay
            if fanout.pts_captured:
                self.capture_wall = at
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._fanout.remove(self)
            # Wake a sender blocked in recv() so it sees the end of the track.
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self._queue.put_nowait(None)


class KeyframeHandler(Protocol):
    """Called with the codec a keyframe is wanted in (None: the source's own) and its rung."""

    def __call__(self, codec: str | None = None, rung: int = 0) -> None: ...


class Fanout:
    """The subscribers of one encoded source; ``push`` offers a packet to each of them."""

    def __init__(self, on_keyframe_request: KeyframeHandler | None = None) -> None:
        self._tracks: set[PacketTrack] = set()
        self._on_keyframe_request = on_keyframe_request
        self._meters: dict[tuple[str | None, int], deque[tuple[float, int]]] = {}
        """(monotonic time, bytes) of the video pushed per (codec, rung), over RATE_WINDOW."""
        self.codec: str | None = None
        """The source's own video codec, which subscribers that name none take."""
        self.pts_epoch: float | None = None
        """Unix seconds of pts 0 on the source's clock: a packet belongs to ``pts_epoch + pts``
        (None: the packets are on no known clock). Set by the source's :class:`~qoe.media.pacing.Pacer`."""
        self.pts_captured = False
        """Whether that clock is the capture clock (a source's own), not a publisher's
        reported one (a relay's)."""
        self.send_lag = 0.0
        """Seconds from a packet's time on that clock to its release into the fanout."""

    def subscribe(self, delay: float = 0.0, codec: str | None = None) -> tuple[PacketTrack, PacketTrack]:
        """A new (audio, video) pair of tracks, the video in ``codec`` (None: the source's
        own); video starts at the next keyframe."""
        audio, video = PacketTrack("audio", self, delay), PacketTrack("video", self, delay, codec)
        self._tracks.update((audio, video))
        self.request_keyframe(codec)
        return audio, video

    def remove(self, track: PacketTrack) -> None:
        self._tracks.discard(track)

    def push(self, kind: str, packets: list[av.Packet], codec: str | None = None, rung: int = 0) -> None:
        """Offer ``packets`` to every track of ``kind``; video only to the tracks that take
        ``codec`` (None: the source's own) and are on rung ``rung`` or switching to it."""
        wanted = codec or self.codec
        if kind == "video":
            meter = self._meters.setdefault((wanted, rung), deque())
            now = clock.monotonic()
            meter.extend((now, packet.size) for packet in packets)
            while meter and meter[0][0] < now - RATE_WINDOW:
                meter.popleft()
        for track in list(self._tracks):
            if track.kind != kind:
                continue
            if kind == "video" and (
                (track.codec or self.codec) != wanted or rung not in (track.rung, track.target)
            ):
                continue
            for packet in packets:
                track.offer(packet, rung)

    def sending(self, codec: str | None = None, rung: int = 0) -> float | None:
        """Bit/s of video pushed in ``codec`` at ``rung`` over the last :data:`RATE_WINDOW`
        seconds; None before a whole window of it was pushed."""
        meter = self._meters.get((codec or self.codec, rung))
        if not meter or clock.monotonic() - meter[0][0] < 0.9 * RATE_WINDOW:
            return None
        return 8 * sum(size for _, size in meter) / RATE_WINDOW

    @property
    def codecs(self) -> frozenset[str]:
        """The video codecs live subscribers named (the source's own when they named none)."""
        return frozenset(codec for codec, _ in self.wanted)

    @property
    def wanted(self) -> frozenset[tuple[str, int]]:
        """(codec, rung) of every live video subscriber, and of every rung one is switching to."""
        pairs = set()
        for track in self._tracks:
            codec = track.codec or self.codec
            if track.kind != "video" or codec is None:
                continue
            pairs.add((codec, track.rung))
            if track.target is not None:
                pairs.add((codec, track.target))
        return frozenset(pairs)

    def request_keyframe(self, codec: str | None = None, rung: int = 0) -> None:
        if self._on_keyframe_request is not None:
            self._on_keyframe_request(codec, rung)

    def set_keyframe_handler(self, handler: KeyframeHandler | None, codec: str | None = None) -> None:
        """Route keyframe requests to ``handler``; ``codec`` (when given) is the source's own."""
        self._on_keyframe_request = handler
        if codec is not None:
            self.codec = codec

    @property
    def subscribers(self) -> int:
        """Number of subscribed (audio, video) pairs still live."""
        return sum(1 for t in self._tracks if t.kind == "video")

    def close(self) -> None:
        for track in list(self._tracks):
            track.stop()
