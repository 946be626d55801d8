"""Rooms: one media source each (the built-in host or a WHIP publisher) and its viewers.

The room named ``demo`` has a built-in synthetic host that publishes the test signal with the
ground-truth knobs; any other room comes into being when a WHIP publisher posts to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from qoe import clock
from qoe.media import Fanout, Knobs, PacketTrack, SignalSource
from qoe.media.compose import Compositor, RawTap
from qoe.signal import DROP_SHOW_SECONDS, NONCE_MAX
from sim.room.chat import ChatKnobs, ChatRoom
from sim.room.containers import ContainerOutput
from sim.room.drops import CouponDrops, host_tag
from sim.room.limits import RoomLimits
from sim.room.relay import RelaySource

__all__ = ["DEMO_ROOM", "Peer", "Room"]

DEMO_ROOM = "demo"
DEPARTED_KEPT = 100
"""Viewers that left whose renditions a room's ground truth keeps."""


@dataclass
class Peer:
    """One WHIP or WHEP session: its peer connection and its resource id."""

    pc: RTCPeerConnection
    role: str
    id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    created: float = field(default_factory=clock.wall)
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    """A viewer's subscriptions, stopped when it leaves (so its codec's encoder can stop)."""


class Room:
    def __init__(
        self,
        name: str,
        knobs: Knobs | None = None,
        limits: RoomLimits | None = None,
        coupons: CouponDrops | None = None,
    ) -> None:
        self.name = name
        self.coupons = coupons
        """Timed coupon drops the built-in host announces (:mod:`sim.room.drops`); None: none."""
        self.nonce = 0
        """The latest chat nonce the host was asked to show (it waits while a drop shows)."""
        self._drops_task: asyncio.Task[None] | None = None
        knobs = knobs or Knobs()
        limits = limits or RoomLimits()
        self.chat = ChatRoom(
            ChatKnobs(knobs.chat_delay, knobs.chat_drop_every),
            queue_size=limits.chat_queue,
            rate=limits.chat_rate,
        )
        self.empty_since: float | None = None
        """Monotonic time the room was first seen with nobody in it (see :meth:`empty`)."""
        self.knobs = knobs
        self.fanout = Fanout()
        self.source: SignalSource | RelaySource | None = None
        self.publisher: Peer | None = None
        self.viewers: dict[str, Peer] = {}
        # A co-host (a second WHIP publisher) gets its own fanout for viewers that take the
        # participants' tracks separately, and both feed the mix through their raw taps.
        self.host_tap, self.cohost_tap = RawTap(), RawTap()
        self.cohost: Peer | None = None
        self.cohost_source: RelaySource | None = None
        self.cohost_fanout = Fanout()
        self.mix_fanout = Fanout()
        self.compositor: Compositor | None = None
        self.containers: ContainerOutput | None = None
        """The room as HTTP-FLV and HLS, while someone watches it so."""
        self.departed: deque[dict[str, Any]] = deque(maxlen=DEPARTED_KEPT)
        """Renditions of the viewers that left, latest last (see :meth:`remember_viewer`)."""

    @property
    def builtin(self) -> bool:
        return isinstance(self.source, SignalSource)

    @property
    def live(self) -> bool:
        return self.source is not None

    async def start_host(self, knobs: Knobs, **options: Any) -> SignalSource:
        source = SignalSource(self.fanout, knobs=knobs, **options)
        source.tap = self.host_tap
        self.source = source
        self.chat.listeners.append(self._answer_on_camera)
        await source.start()
        if self.coupons is not None:
            self._drops_task = asyncio.create_task(self._run_drops(self.coupons), name="room-drops")
        return source

    def _show_tag(self) -> None:
        """The host's tag: the drop on show, else the latest chat nonce (qoe.signal.code)."""
        source = self.source
        if not isinstance(source, SignalSource):
            return
        source.tag = host_tag(self.coupons, self.nonce, clock.wall())

    def _answer_on_camera(self, message: dict[str, object]) -> None:
        """The host reads a chat message and shows its nonce in the video code's tag field."""
        nonce = message.get("nonce")
        if isinstance(nonce, int) and not isinstance(nonce, bool) and 0 < nonce <= NONCE_MAX:
            self.nonce = nonce
            self._show_tag()

    async def _run_drops(self, coupons: CouponDrops) -> None:
        """Open a drop at each multiple of ``coupons.every`` Unix seconds; the tag shows it
        from the instant it opens for DROP_SHOW_SECONDS."""
        while True:
            await asyncio.sleep(max(0.0, coupons.next_opening(clock.wall()) - clock.wall()))
            coupons.open(clock.wall())
            self._show_tag()
            await asyncio.sleep(DROP_SHOW_SECONDS)
            self._show_tag()

    def _renditions_of(self, peer: Peer, left: float | None = None) -> dict[str, Any] | None:
        """A WHEP viewer of the built-in host: when it joined (and left) and the renditions
        it was sent, each from when the room switched to it; None for any other peer."""
        source = self.source
        if not isinstance(source, SignalSource):
            return None
        for track in peer.tracks:
            if isinstance(track, PacketTrack) and track.kind == "video" and track.fanout is self.fanout:
                ladder = source.ladder
                return {
                    "joined": peer.created,
                    "left": left,
                    "renditions": [
                        {"at": at, "width": ladder[rung].width, "height": ladder[rung].height}
                        for at, rung in track.history
                    ],
                }
        return None

    def remember_viewer(self, peer: Peer) -> None:
        """Keep a leaving viewer's renditions in the room's ground truth (the latest
        :data:`DEPARTED_KEPT`)."""
        if (record := self._renditions_of(peer, left=clock.wall())) is not None:
            self.departed.append(record)

    async def start_mix(self) -> None:
        """Start mixing host and co-host (once, when the first co-host arrives)."""
        if self.compositor is None:
            self.compositor = Compositor(
                self.mix_fanout, self.host_tap, self.cohost_tap, cohost_offset=self.knobs.cohost_offset
            )
            await self.compositor.start()

    def empty(self) -> bool:
        """No publisher, co-host, viewer, chat client or HTTP-FLV client: nobody to serve."""
        return (
            self.source is None
            and self.cohost is None
            and not self.viewers
            and not self.chat.clients
            and (self.containers is None or self.containers.idle())
        )

    async def stop_mix_if_unwatched(self) -> None:
        """Stop mixing once the co-host has gone and no viewer takes the mix: a room whose
        co-host came and went must not keep encoding a mix for nobody. A later co-host
        starts it again."""
        if self.compositor is not None and self.cohost is None and self.mix_fanout.subscribers == 0:
            compositor, self.compositor = self.compositor, None
            await compositor.stop()

    async def container_output(self) -> ContainerOutput:
        """The room's HTTP-FLV and HLS output, started on first use; a new one once the last
        has ended (its source started over) or gone idle."""
        output = self.containers
        if output is not None and (output.ended.is_set() or output.idle()):
            await output.stop()
            output = self.containers = None
        if output is None:
            output = self.containers = ContainerOutput(self.fanout, self.name)
            await output.start()
        return output

    async def close(self) -> None:
        if self._drops_task is not None:
            self._drops_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drops_task
            self._drops_task = None
        if self.containers is not None:
            await self.containers.stop()
            self.containers = None
        peers = [*self.viewers.values(), *(p for p in (self.publisher, self.cohost) if p is not None)]
        for peer in peers:
            await peer.pc.close()
        self.viewers.clear()
        self.publisher = self.cohost = None
        for stage in (self.compositor, self.cohost_source):
            if stage is not None:
                await stage.stop()
        self.compositor = self.cohost_source = None
        for fanout in (self.cohost_fanout, self.mix_fanout):
            fanout.close()
        await self.chat.close()
        if self.source is not None:
            await self.source.stop()
            self.source = None
        self.fanout.close()

    def info(self) -> dict[str, Any]:
        """The room's state and, for the built-in host, its ground truth (for tests)."""
        late_packets, late_seconds = self.compositor.late_output if self.compositor else (0, 0.0)
        data: dict[str, Any] = {
            "name": self.name,
            "live": self.live,
            "source": "host" if self.builtin else ("whip" if self.source else None),
            "viewers": len(self.viewers),
            "cohost": self.cohost is not None,
            "mixing": self.compositor is not None,
            "mix_frames": self.compositor.frames_sent if self.compositor else 0,
            # Media that reached the mix after its slot, and mix output encoded after its
            # release time (a room too busy to keep up): the mix then differs from what the
            # knobs say, and so do its viewers' figures.
            "mix_late": {
                "host_frames": self.host_tap.late_frames,
                "cohost_frames": self.cohost_tap.late_frames,
                "host_samples": self.host_tap.late_samples,
                "cohost_samples": self.cohost_tap.late_samples,
                "output_packets": late_packets,
                "output_seconds_max": late_seconds,
            },
            "containers": None if self.containers is None else self.containers.info(),
            "chat": {
                "clients": len(self.chat.clients),
                "received": self.chat.received,
                "dropped": list(self.chat.dropped),
                "slow_drops": self.chat.slow_drops,
                "flood_drops": self.chat.flood_drops,
            },
        }
        source = self.source
        if isinstance(source, SignalSource):
            knobs = source.knobs
            data["knobs"] = {
                "av_offset": knobs.av_offset,
                "freeze_every": knobs.freeze_every,
                "freeze_for": knobs.freeze_for,
                "delay": knobs.delay,
                "join_delay": knobs.join_delay,
                "quality_drop_every": knobs.quality_drop_every,
                "quality_drop_for": knobs.quality_drop_for,
                "mute_every": knobs.mute_every,
                "mute_for": knobs.mute_for,
                "cohost_echo_gain": knobs.cohost_echo_gain,
                "cohost_echo_delay": knobs.cohost_echo_delay,
                "cohost_noise_db": knobs.cohost_noise_db,
            }
            data["frames_sent"] = source.frames_sent
            # H.264 appears here while some viewer takes it, and goes when the last one leaves.
            data["video_codecs"] = list(source.video_codecs)
            data["injected_freezes"] = [list(f) for f in source.injected_freezes]
            data["injected_quality_drops"] = [list(f) for f in source.injected_quality_drops]
            data["renditions"] = [
                {"width": r.width, "height": r.height, "bitrate": r.bitrate} for r in source.ladder
            ]
            data["viewer_renditions"] = [
                *self.departed,
                *(record for peer in self.viewers.values() if (record := self._renditions_of(peer))),
            ]
            data["coupons"] = None if self.coupons is None else self.coupons.info()
            data["knobs"]["chat_delay"] = self.chat.knobs.chat_delay
            data["knobs"]["chat_drop_every"] = self.chat.knobs.chat_drop_every
        elif isinstance(source, RelaySource):
            data["frames_sent"] = source.frames_sent
            data["video_codecs"] = list(source.video_codecs)
            data["unplaced_frames"] = source.unplaced
        return data
