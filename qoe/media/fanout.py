"""Encode once, send to many: pre-encoded packets handed to every subscriber's aiortc track.

aiortc's RTCRtpSender packetizes an ``av.Packet`` that a track returns instead of encoding a
frame, so N viewers cost N packetizations and one encode. A subscriber that joins, or falls
behind and overflows its queue, skips video until the next keyframe and asks for one, as an
SFU forwards a PLI to its publisher.

A source may encode its video in more than one codec (one encoder per codec, not per
viewer): each video subscriber names the codec it takes, or none for the source's own, and
:attr:`Fanout.codecs` tells the source which encoders someone is watching.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = ["Fanout", "PacketTrack"]

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

    def offer(self, packet: av.Packet) -> None:
        """Queue ``packet`` for sending, or drop it (see the module docstring)."""
        if self.readyState != "live":
            return
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
                self._fanout.request_keyframe(self.codec)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
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


KeyframeHandler = Callable[[str | None], None]
"""Called with the codec a keyframe is wanted in (None: the source's own)."""


class Fanout:
    """The subscribers of one encoded source; ``push`` offers a packet to each of them."""

    def __init__(self, on_keyframe_request: KeyframeHandler | None = None) -> None:
        self._tracks: set[PacketTrack] = set()
        self._on_keyframe_request = on_keyframe_request
        self.codec: str | None = None
        """The source's own video codec, which subscribers that name none take."""

    def subscribe(self, delay: float = 0.0, codec: str | None = None) -> tuple[PacketTrack, PacketTrack]:
        """A new (audio, video) pair of tracks, the video in ``codec`` (None: the source's
        own); video starts at the next keyframe."""
        audio, video = PacketTrack("audio", self, delay), PacketTrack("video", self, delay, codec)
        self._tracks.update((audio, video))
        self.request_keyframe(codec)
        return audio, video

    def remove(self, track: PacketTrack) -> None:
        self._tracks.discard(track)

    def push(self, kind: str, packets: list[av.Packet], codec: str | None = None) -> None:
        """Offer ``packets`` to every track of ``kind``; video only to the tracks that take
        ``codec`` (None: the source's own)."""
        wanted = codec or self.codec
        for track in list(self._tracks):
            if track.kind == kind and (kind != "video" or (track.codec or self.codec) == wanted):
                for packet in packets:
                    track.offer(packet)

    @property
    def codecs(self) -> frozenset[str]:
        """The video codecs live subscribers named (the source's own when they named none)."""
        named = {t.codec or self.codec for t in self._tracks if t.kind == "video"}
        return frozenset(c for c in named if c is not None)

    def request_keyframe(self, codec: str | None = None) -> None:
        if self._on_keyframe_request is not None:
            self._on_keyframe_request(codec)

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
