"""The embedded live room's HTTP face: WHIP ingest and WHEP playback (RFC 9725 semantics).

Endpoints (``ROOM`` is any name; ``demo`` has the built-in host):

- ``POST /whip/ROOM``, ``POST /whep/ROOM``: an ``application/sdp`` offer in, ``201 Created``
  with the answer and a ``Location`` for the session out.
- ``DELETE`` on that location ends the session (200); ``PATCH`` with
  ``application/trickle-ice-sdpfrag`` adds the client's trickled candidates (204).
- ``OPTIONS`` on any of them answers CORS pre-flights, so a browser page can use the room.
- ``GET /flv/ROOM.flv`` and ``GET /hls/ROOM/index.m3u8``: the room as HTTP-FLV and HLS
  players take it, H.264 and AAC muxed once per room (:mod:`sim.room.containers`).
- ``POST /rooms/ROOM/grab``: grab a coupon of a drop the host announced (``qoe room
  --coupon-every S --coupon-stock N``, :mod:`sim.room.drops`): ``{"drop": ID, "client":
  "..."}`` in, ``{"outcome": "won" | "sold_out", ...}`` out; 404 an unknown drop, 410 a
  closed one, 400 a body that is not such an object, 413 one over 4 KiB.
- ``GET /rooms``, ``GET /rooms/ROOM``: state and ground truth as JSON; ``GET /stats``: the
  server's rooms, sessions and event-loop tasks; ``GET /healthz``; ``GET /`` a page with a
  WHEP player.

The room paces every packet out at its time, so a room whose event loop falls behind (a
machine too busy for it) delays media it did not mean to: viewers see freezes no knob
injected. It watches its own loop (:mod:`qoe.looplag`), warns on stderr when a tick comes
more than 100 ms late, and lists those stalls in each room's JSON as ``loop_stalls``, so a
test or a benchmark can tell the room's freezes from the probes'.

A second WHIP publisher in a room is its co-host. A WHEP offer with two video (and audio)
m-lines receives host and co-host as separate tracks; one with a single pair receives the
room's mix (side by side, audio summed) while a co-host is on, the host alone otherwise.
``ws://H:P/chat/ROOM`` is the room's chat (:mod:`sim.room.chat`).

A viewer receives VP8, or H.264 (constrained baseline, packetization mode 1) when its offer
has no VP8, per video m-line (:mod:`sim.room.codecs`). Each source encodes H.264 only while
some viewer takes it, once for all of them.

Errors are 4xx with a one-line ``text/plain`` reason: 404 no such room or session, 409 a room
that already has a host and a co-host, 413 a body over the limit, 415 a body that is not SDP,
400 an offer that cannot be used (one with video in neither codec names the codecs it
offered). Over one of its bounds (:mod:`sim.room.limits`: rooms, sessions, a session that
never connects, idle rooms, chat floods) the room answers 503 with ``Retry-After`` and logs
a line; a refused request leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from importlib import resources
from typing import Any

import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from probes.webrtc.peer import (
    RtpObserver,
    addresses_for_host,
    candidate_addresses,
    prefer_codecs,
    rtc_configuration,
)
from qoe import clock, looplag, rtcpatch
from qoe.media import Fanout, Knobs, PacketTrack, SignalSource
from qoe.media.ladder import RungChooser
from sim.room.codecs import SENDS, UnusableOffer, restrict_video, video_codecs_for
from sim.room.drops import CouponDrops, DropError, parse_grab
from sim.room.impair import CohostImpairment
from sim.room.limits import RoomLimits
from sim.room.relay import RELAY_LATENCY, RelaySource
from sim.room.room import DEMO_ROOM, Peer, Room

__all__ = ["LiveRoom"]

log = logging.getLogger(__name__)

STALL_WARNING_INTERVAL = 10.0
"""Seconds between warnings about the room's own loop stalls; the ones between are counted."""
ROOM_NAME = re.compile(r"^(?=.*[A-Za-z0-9])[A-Za-z0-9._~-]{1,64}$")
"""Letters, digits and ``._~-``, with at least one letter or digit (``.`` and ``..`` would
make a Location that resolves elsewhere)."""
GRAB_BODY_BYTES = 4096
"""Largest grab body: a drop id and a client id need a few dozen bytes."""
REAP_INTERVAL = 5.0
"""Seconds between looks for rooms that have been empty past the idle limit."""
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, Accept-Patch",
}


def _capture_of(track: PacketTrack) -> float | None:
    """The capture time of the frame ``track`` is sending (abs-capture-time)."""
    return track.capture_wall


def _due_of(track: PacketTrack) -> float | None:
    """When the packet ``track`` is sending was due to leave (sender reports)."""
    return track.due_wall


def _keyframe_for(fanout: Fanout, track: PacketTrack) -> None:
    fanout.request_keyframe(track.codec, track.rung)


def _first_kind(offer: str) -> str:
    """The kind of the offer's first media section (``"video"`` when it has none).

    The room must create that kind's transceiver first. Under max-bundle aiortc puts every
    transceiver on the transport of the first one it created, and when the offer's first
    m-line (the BUNDLE tag) goes to another transceiver, it stops that shared transport as
    one bundled away: the answer has no candidates and never connects. Browsers offer audio
    first whenever a page adds it first, as a WHIP page adding getUserMedia's tracks does.
    """
    match = re.search(r"^m=(\w+)", offer, re.M)
    return match.group(1) if match else "video"


def _error(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n", headers=CORS)


async def _body(request: web.Request) -> str | web.Response:
    """The request body as text; a 400 response for one that is not UTF-8."""
    try:
        return (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "the body is not UTF-8 text")


async def _close_refused(pc: RTCPeerConnection) -> None:
    """Close the peer of an offer that could not be used, whatever state it was left in.

    An offer without one of the kinds the room added a transceiver for (no video m-line, say)
    leaves that transceiver without a transport, and aiortc's ``close`` then raises at it
    before stopping the transports after it: the refusal became a 500, and those transports'
    sockets stayed open. So each transport that exists is stopped here as well.
    """
    try:
        await pc.close()
    except Exception as exc:
        log.info("closing a refused offer's peer: %s", exc)
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None:
            with contextlib.suppress(Exception):
                await dtls.stop()
            with contextlib.suppress(Exception):
                await dtls.transport.stop()


class LiveRoom:
    """The room server: ``async with LiveRoom(port=0) as room: room.url``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        knobs: Knobs | None = None,
        demo: bool = True,
        host_options: dict[str, Any] | None = None,
        limits: RoomLimits | None = None,
        coupons: tuple[float, int] | None = None,
    ) -> None:
        self.host = host
        self.coupons = None if coupons is None else CouponDrops(*coupons)
        """The built-in host's coupon drops, (every seconds, stock) (:mod:`sim.room.drops`)."""
        self.limits = limits or RoomLimits()
        self.port = port
        self.knobs = knobs or Knobs()
        self.demo = demo
        self.host_options = host_options or {}
        self.rooms: dict[str, Room] = {}
        self._addresses = addresses_for_host(host)
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()
        self._cleanups: set[asyncio.Future[None]] = set()
        self._lag: looplag.LagWindow | None = None
        self._warned_at = float("-inf")
        self._unwarned = 0
        self._timers: set[asyncio.Task[None]] = set()
        """Background work that is cancelled, not awaited, at stop (expiries, the reaper)."""
        self._rng = np.random.default_rng()
        """The co-host noise knob's randomness."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> LiveRoom:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        rtcpatch.install()  # before the first peer connection: checks aiortc, then patches it
        self._lag = looplag.open_window(keep_samples=False, on_stall=self._on_stall)
        if self.demo:
            room = self.rooms[DEMO_ROOM] = Room(DEMO_ROOM, self.knobs, self.limits, self.coupons)
            await room.start_host(self.knobs, **self.host_options)
        self._background(self._reap())
        app = web.Application(client_max_size=self.limits.body_bytes)
        app.add_routes(
            [
                web.get("/", self._index),
                web.get("/healthz", self._healthz),
                web.get("/rooms", self._list_rooms),
                web.get("/rooms/{room}", self._room_info),
                web.post("/rooms/{room}/grab", self._grab),
                web.options("/rooms/{room}/grab", self._options),
                web.get("/stats", self._stats),
                web.get("/chat/{room}", self._chat),
                web.get("/flv/{room}.flv", self._flv),
                web.get("/hls/{room}/{file}", self._hls),
                web.post("/{role:whip|whep}/{room}", self._post),
                web.options("/{role:whip|whep}/{room}", self._options),
                web.options("/{role:whip|whep}/{room}/{session}", self._options),
                web.delete("/{role:whip|whep}/{room}/{session}", self._delete),
                web.patch("/{role:whip|whep}/{room}/{session}", self._patch),
            ]
        )
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=self.limits.idle_connection_seconds
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        if self._lag is not None:
            self._lag.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for room in list(self.rooms.values()):
            await room.close()
        self.rooms.clear()
        await asyncio.gather(*self._cleanups, return_exceptions=True)

    # -- pages and state ---------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        page = resources.files("sim.room").joinpath("player.html").read_text()
        return web.Response(text=page, content_type="text/html")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _list_rooms(self, request: web.Request) -> web.Response:
        return web.json_response([self._info(r) for r in self.rooms.values()], headers=CORS)

    async def _room_info(self, request: web.Request) -> web.Response:
        room = self.rooms.get(request.match_info["room"])
        if room is None:
            return _error(404, f"no room {request.match_info['room']!r}")
        return web.json_response(self._info(room), headers=CORS)

    async def _grab(self, request: web.Request) -> web.Response:
        """A viewer grabs a coupon of the drop it saw (:mod:`sim.room.drops`)."""
        name = request.match_info["room"]
        room = self.rooms.get(name)
        if room is None or room.coupons is None:
            return _error(404, f"room {name!r} has no coupon drops")
        if (request.content_length or 0) > GRAB_BODY_BYTES:
            return _error(413, f"a grab body is at most {GRAB_BODY_BYTES} bytes")
        raw = await request.content.read(GRAB_BODY_BYTES + 1)
        if len(raw) > GRAB_BODY_BYTES:
            return _error(413, f"a grab body is at most {GRAB_BODY_BYTES} bytes")
        try:
            drop, client = parse_grab(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            reason = str(exc) if not isinstance(exc, json.JSONDecodeError) else "the body is not JSON"
            return _error(400, reason)
        try:
            answer = room.coupons.grab(drop, client, clock.wall())
        except DropError as exc:
            return _error(exc.status, str(exc))
        return web.json_response(answer.to_json(), headers=CORS)

    async def _stats(self, request: web.Request) -> web.Response:
        """The server's own holdings, which a soak run watches for growth: rooms, sessions
        and the event loop's tasks (each session's media runs as tasks; one that outlives its
        session is a leak no figure of a room shows)."""
        stats = {"rooms": len(self.rooms), "sessions": self._sessions(), "tasks": len(asyncio.all_tasks())}
        return web.json_response(stats, headers=CORS)

    def _info(self, room: Room) -> dict[str, Any]:
        stalls = self._lag.stalls if self._lag is not None else ()
        return {**room.info(), "loop_stalls": [{"at": at, "late_seconds": late} for at, late in stalls]}

    def _on_stall(self, at: float, late: float) -> None:
        if at - self._warned_at < STALL_WARNING_INTERVAL:
            self._unwarned += 1
            return
        more = f" (and {self._unwarned} more stalls since the last warning)" if self._unwarned else ""
        log.warning(
            "the room's event loop ran %.0f ms late%s: viewers may see freezes the room did not "
            "mean; the machine is too busy for it",
            1000 * late,
            more,
        )
        self._warned_at, self._unwarned = at, 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["room"]
        if not ROOM_NAME.match(name):
            return _error(400, f"invalid room name {name!r}")
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= self.limits.rooms:
                return self._busy(f"the server holds its limit of {self.limits.rooms} rooms")
            room = self.rooms[name] = Room(name, self.knobs, self.limits)
        return await room.chat.serve(request, name)

    # -- bounds ------------------------------------------------------------------------

    def _busy(self, reason: str) -> web.Response:
        """503 with Retry-After, and a line in the log: a bound was reached."""
        log.warning("refused a request: %s", reason)
        response = _error(503, reason)
        response.headers["Retry-After"] = str(self.limits.retry_after)
        return response

    def _sessions(self) -> int:
        return sum(
            len(room.viewers) + (room.publisher is not None) + (room.cohost is not None)
            for room in self.rooms.values()
        )

    def _background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _expire_unless_connected(self, pc: RTCPeerConnection, end: Any) -> None:
        """End a session whose ICE and DTLS have not connected within the limit.

        The timer ends as soon as the session connects or ends: it holds the peer, so a client
        that posts and deletes sessions in a loop would otherwise keep every one it ended
        alive for the whole limit, however few it holds at once.
        """
        settled = asyncio.Event()

        def on_state() -> None:
            if pc.connectionState in ("connected", "closed", "failed"):
                settled.set()

        pc.on("connectionstatechange", on_state)

        async def expire() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), self.limits.connect_seconds)
            if pc.connectionState not in ("connected", "closed"):
                log.info("ended a session that did not connect in %g s", self.limits.connect_seconds)
                await end()

        self._background(expire())

    async def _reap(self) -> None:
        """Remove rooms that have had nobody in them for the idle limit (never ``demo``)."""
        while True:
            await asyncio.sleep(min(REAP_INTERVAL, self.limits.idle_room_seconds))
            now = clock.monotonic()
            for name, room in list(self.rooms.items()):
                if room.builtin or not room.empty():
                    room.empty_since = None
                elif room.empty_since is None:
                    room.empty_since = now
                elif now - room.empty_since >= self.limits.idle_room_seconds:
                    del self.rooms[name]
                    await room.close()

    async def _live_room(self, request: web.Request) -> Room | web.Response:
        room = self.rooms.get(request.match_info["room"])
        if room is None or not room.live:
            return _error(404, f"room {request.match_info['room']!r} has no publisher")
        return room

    async def _flv(self, request: web.Request) -> web.StreamResponse:
        room = await self._live_room(request)
        if isinstance(room, web.Response):
            return room
        output = await room.container_output()
        return await output.serve_flv(request)

    async def _hls(self, request: web.Request) -> web.StreamResponse:
        room = await self._live_room(request)
        if isinstance(room, web.Response):
            return room
        output = await room.container_output()
        return await output.serve_hls(request, request.match_info["file"])

    async def _options(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                **CORS,
                "Accept-Post": "application/sdp",
                "Accept-Patch": "application/trickle-ice-sdpfrag",
            },
        )

    # -- sessions ----------------------------------------------------------------------

    async def _post(self, request: web.Request) -> web.Response:
        role, name = request.match_info["role"], request.match_info["room"]
        if not ROOM_NAME.match(name):
            return _error(400, f"invalid room name {name!r}: use 1-64 letters, digits, '.', '_', '~', '-'")
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            return _error(415, f"expected Content-Type application/sdp, got {content_type or 'none'!r}")
        offer = await _body(request)
        if isinstance(offer, web.Response):
            return offer
        if "v=0" not in offer or "m=" not in offer:
            return _error(400, "the body is not an SDP offer")
        if role == "whep" and self.knobs.join_delay:
            await asyncio.sleep(self.knobs.join_delay)
        async with self._lock:
            if self._sessions() >= self.limits.sessions:
                return self._busy(f"the server holds its limit of {self.limits.sessions} sessions")
            if role == "whep":
                room = self.rooms.get(name)
                if room is None or not room.live:
                    return _error(404, f"room {name!r} has no publisher")
                if len(room.viewers) >= self.limits.sessions_per_room:
                    return self._busy(
                        f"room {name!r} holds its limit of {self.limits.sessions_per_room} viewers"
                    )
                try:
                    peer, answer = await self._view(room, offer)
                except UnusableOffer as exc:
                    return _error(400, str(exc))
            else:
                # A room comes into being with its first accepted publisher, not before: a
                # refused offer leaves nothing behind.
                existing = self.rooms.get(name)
                if existing is None and len(self.rooms) >= self.limits.rooms:
                    return self._busy(f"the server holds its limit of {self.limits.rooms} rooms")
                room = existing or Room(name, self.knobs, self.limits)
                if room.live and room.cohost is not None:
                    return _error(409, f"room {name!r} already has a host and a co-host")
                peer, answer = await self._publish(room, offer, cohost=room.live)
                if answer is not None and existing is None:
                    self.rooms[name] = room
                elif existing is None:
                    await room.close()
        if answer is None:
            if role == "whep":
                return _error(400, f"the offer has no media this room can send ({SENDS})")
            return _error(400, "the offer has no media this room can receive (VP8/H.264 video, Opus audio)")
        location = f"/{role}/{name}/{peer.id}"
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={**CORS, "Location": location, "ETag": f'"{peer.id}"'},
        )

    async def _negotiate(self, pc: RTCPeerConnection, offer: str) -> str | None:
        """Apply ``offer`` and return the answer SDP, or None when nothing could be agreed."""
        try:
            with candidate_addresses(self._addresses):
                await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises many types for an offer it cannot use
            log.info("rejected offer: %s", exc)
            await _close_refused(pc)
            return None
        return str(pc.localDescription.sdp)

    async def _view(self, room: Room, offer: str) -> tuple[Peer, str | None]:
        """Subscribe a viewer; raises :class:`UnusableOffer` before any state is made."""
        codecs = video_codecs_for(offer)
        pc = RTCPeerConnection(rtc_configuration())
        if offer.count("m=video") >= 2:
            # Separate tracks: host first, co-host second. The built-in host's packets are held
            # as long as a co-host's relay holds its, so only the --cohost-offset knob differs.
            align = RELAY_LATENCY if room.builtin else 0.0
            pairs = [(room.fanout, align), (room.cohost_fanout, 0.0)]
        elif room.compositor is not None:
            pairs = [(room.mix_fanout, 0.0)]
        else:
            pairs = [(room.fanout, 0.0)]
        tracks: list[MediaStreamTrack] = []
        first = _first_kind(offer)
        ladder = room.source.ladder if isinstance(room.source, SignalSource) else ()
        for index, (fanout, delay) in enumerate(pairs):
            codec = codecs[index] if index < len(codecs) else "vp8"
            audio, video = fanout.subscribe(delay, codec)
            tracks += [audio, video]
            for track in sorted((video, audio), key=lambda t: t.kind != first):
                transceiver = pc.addTransceiver(track, direction="sendonly")
                rtcpatch.report_due_times(transceiver.sender, functools.partial(_due_of, track))
                rtcpatch.lean_history(transceiver.sender)  # one room, many viewers: GC passes short
                if track.kind == "video":
                    restrict_video(transceiver, codec)
                    rtcpatch.send_capture_time(transceiver.sender, functools.partial(_capture_of, track))
                else:
                    prefer_codecs(transceiver, "audio", ("opus",))
                # Forward the viewer's picture-loss reports to the one encoder of its codec
                # and rendition, as an SFU would.
                transceiver.sender._send_keyframe = functools.partial(  # type: ignore[method-assign]
                    _keyframe_for, fanout, track
                )
                if track is video and fanout is room.fanout and len(ladder) > 1:
                    # The built-in host's renditions: the viewer's REMB and loss pick its rung.
                    video.chooser = RungChooser([rung.bitrate for rung in ladder])
                    rtcpatch.on_feedback(transceiver.sender, video.estimate, video.lost)
        peer = Peer(pc, "whep", tracks=tracks)
        answer = await self._negotiate(pc, offer)
        if answer is None:
            for subscription in tracks:
                subscription.stop()
        else:
            room.viewers[peer.id] = peer
            self._on_end(pc, lambda: self._end_viewer(room, peer))
            self._expire_unless_connected(pc, lambda: self._end_viewer(room, peer))
        return peer, answer

    async def _publish(self, room: Room, offer: str, *, cohost: bool) -> tuple[Peer, str | None]:
        pc = RTCPeerConnection(rtc_configuration())
        if cohost:
            relay = RelaySource(room.cohost_fanout, delay=self.knobs.delay + self.knobs.cohost_offset)
            relay.tap = room.cohost_tap
            if CohostImpairment.wanted(self.knobs):
                relay.impairment = CohostImpairment(room.host_tap, self.knobs, self._rng)
        else:
            relay = RelaySource(room.fanout, delay=self.knobs.delay)
            relay.tap = room.host_tap
        observers: dict[str, RtpObserver] = {}
        kinds = (("video", ("VP8", "H264"), 90000), ("audio", ("opus",), 48000))
        first = _first_kind(offer)
        for kind, codecs, rate in sorted(kinds, key=lambda k: k[0] != first):
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            prefer_codecs(transceiver, kind, codecs)
            observers[kind] = RtpObserver(transceiver.receiver, rate)
        pc.on("track", lambda track: relay.attach(track, observers[track.kind]))
        peer = Peer(pc, "whip")
        answer = await self._negotiate(pc, offer)
        if answer is None:
            await relay.stop()
        elif cohost:
            room.cohost, room.cohost_source = peer, relay
            await room.start_mix()
            self._on_end(pc, lambda: self._end_publisher(room, peer))
            self._expire_unless_connected(pc, lambda: self._end_publisher(room, peer))
        else:
            room.publisher, room.source = peer, relay
            self._on_end(pc, lambda: self._end_publisher(room, peer))
            self._expire_unless_connected(pc, lambda: self._end_publisher(room, peer))
        return peer, answer

    def _on_end(self, pc: RTCPeerConnection, cleanup: Any) -> None:
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                task = asyncio.ensure_future(cleanup())
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)

        pc.on("connectionstatechange", on_state)

    async def _end_viewer(self, room: Room, peer: Peer) -> None:
        if room.viewers.pop(peer.id, None) is not None:
            room.remember_viewer(peer)
            await peer.pc.close()
            # A sender that never started does not stop its track; the fanout would keep it.
            for track in peer.tracks:
                track.stop()
            await room.stop_mix_if_unwatched()

    async def _end_publisher(self, room: Room, peer: Peer) -> None:
        if room.cohost is peer:
            # The mix goes on with the co-host's half dark; its separate tracks fall silent.
            room.cohost = None
            cohost_source, room.cohost_source = room.cohost_source, None
            await peer.pc.close()
            if cohost_source is not None:
                await cohost_source.stop()
            await room.stop_mix_if_unwatched()
        elif room.publisher is peer:
            room.publisher = None
            source, room.source = room.source, None
            await peer.pc.close()
            if source is not None:
                await source.stop()

    def _find(self, request: web.Request) -> tuple[Room, Peer] | None:
        room = self.rooms.get(request.match_info["room"])
        if room is None:
            return None
        sid = request.match_info["session"]
        if request.match_info["role"] == "whep":
            peer = room.viewers.get(sid)
        else:
            peer = next((p for p in (room.publisher, room.cohost) if p is not None and p.id == sid), None)
        return (room, peer) if peer is not None else None

    async def _delete(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if found is None:
            return _error(404, "no such session")
        room, peer = found
        if peer.role == "whep":
            await self._end_viewer(room, peer)
        else:
            await self._end_publisher(room, peer)
        return web.Response(status=200, text="session ended\n", headers=CORS)

    async def _patch(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if found is None:
            return _error(404, "no such session")
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/trickle-ice-sdpfrag":
            return _error(415, "expected Content-Type application/trickle-ice-sdpfrag")
        _, peer = found
        fragment = await _body(request)
        if isinstance(fragment, web.Response):
            return fragment
        remote = peer.pc.remoteDescription
        ufrag = re.search(r"^a=ice-ufrag:(\S+)", fragment, re.M)
        if ufrag and remote is not None and f"a=ice-ufrag:{ufrag.group(1)}" not in remote.sdp:
            return _error(422, "ICE restart is not supported by this room")
        mid = re.search(r"^a=mid:(\S+)", fragment, re.M)
        for line in re.findall(r"^a=candidate:(.+?)\s*$", fragment, re.M):
            try:
                candidate = candidate_from_sdp(line)
            except Exception:  # aiortc's parser asserts on a malformed line; a browser skips it
                log.info("skipped an unparsable trickled candidate: %.80r", line)
                continue
            candidate.sdpMid = mid.group(1) if mid else "0"
            with contextlib.suppress(ValueError):
                await peer.pc.addIceCandidate(candidate)
        return web.Response(status=204, headers=CORS)
