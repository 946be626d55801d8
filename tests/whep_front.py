"""WHIP and WHEP servers that behave as a test needs, on loopback, for the probes' conformance.

- :class:`Front`: a front end to the embedded room that passes the offer on and the answer
  back, and can require a bearer token, announce STUN/TURN servers in ``Link`` headers, leave
  out the ETag, refuse PATCH, answer 503 with ``Retry-After`` first, or edit the answer.
  Sessions live at ``/ROLE/sessions/ID``, given as a relative ``Location``.
- :func:`redirects`: an endpoint that only redirects, by a table of paths.
- :class:`IceServer`: a STUN server that answers Binding requests, and a TURN server that
  challenges an Allocate and then refuses it (password ``p``), noting the user name it was
  sent: enough to see that a probe used what a ``Link`` header announced, without a real TURN
  server.
- :func:`peer_server`: a WHEP endpoint with its own aiortc peer sending a given video track,
  for streams the room never sends (no RTP at all, or RTP that cannot be decoded), and in
  server-offer mode, as Janus's WHEP front end speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urljoin

import aiohttp
from aiohttp import web
from aioice import stun, turn
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from probes.webrtc.peer import candidate_addresses, rtc_configuration
from qoe import rtcpatch
from tests.servers import aiohttp_app

__all__ = ["Front", "IceServer", "Seen", "front_end", "peer_server", "redirects"]


@dataclass
class Seen:
    """One request a test server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Front:
    """What the front end does (set before or during a test) and what it saw."""

    room: str
    """The room's base URL (``http://127.0.0.1:PORT``)."""
    token: str | None = None
    """The bearer token every request must carry (None: any request is taken)."""
    links: list[str] = field(default_factory=list)
    """``Link`` header values to add to each 201."""
    etag: bool = True
    patch_status: int | None = None
    """Answer PATCH with this status instead of passing it on (405, 501)."""
    busy: list[str] = field(default_factory=list)
    """``Retry-After`` values of the 503s to answer the first POSTs with, in order."""
    edit_answer: Callable[[str], str] | None = None
    seen: list[Seen] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)
    """Session id -> the room's own resource URL."""

    def requests(self, method: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method]


async def _seen(request: web.Request, into: list[Seen]) -> Seen:
    seen = Seen(request.method, request.path, dict(request.headers), await request.text())
    into.append(seen)
    return seen


@asynccontextmanager
async def front_end(front: Front) -> AsyncIterator[str]:
    """Serve ``front``; yield its base URL (POST to ``BASE/whep/ROOM`` or ``BASE/whip/ROOM``)."""
    ids = itertools.count(1)

    async with aiohttp.ClientSession() as http:

        def refused(seen: Seen) -> web.Response | None:
            if front.token is None or seen.headers.get("Authorization") == f"Bearer {front.token}":
                return None
            given = seen.headers.get("Authorization", "nothing")
            return web.Response(status=401, text=f"unauthorized: {given} is not the token\n")

        async def post(request: web.Request) -> web.Response:
            seen = await _seen(request, front.seen)
            if (refusal := refused(seen)) is not None:
                return refusal
            if front.busy:
                return web.Response(status=503, text="busy\n", headers={"Retry-After": front.busy.pop(0)})
            role, room = request.match_info["role"], request.match_info["room"]
            async with http.post(
                f"{front.room}/{role}/{room}", data=seen.body, headers={"Content-Type": "application/sdp"}
            ) as answered:
                body = await answered.text()
                if answered.status != 201:
                    return web.Response(status=answered.status, text=body)
                session = str(next(ids))
                front.sessions[session] = urljoin(str(answered.url), answered.headers["Location"])
                etag = answered.headers.get("ETag", '"1"')
            headers: Any = [("Location", f"sessions/{session}")]
            headers += [("Link", link) for link in front.links]
            if front.etag:
                headers.append(("ETag", etag))
            edited = front.edit_answer(body) if front.edit_answer else body
            return web.Response(status=201, text=edited, content_type="application/sdp", headers=headers)

        async def patch(request: web.Request) -> web.Response:
            seen = await _seen(request, front.seen)
            if (refusal := refused(seen)) is not None:
                return refusal
            if front.patch_status is not None:
                return web.Response(status=front.patch_status)
            target = front.sessions[request.match_info["session"]]
            content_type = seen.headers.get("Content-Type", "")
            async with http.patch(target, data=seen.body, headers={"Content-Type": content_type}) as done:
                return web.Response(status=done.status, text=await done.text())

        async def delete(request: web.Request) -> web.Response:
            seen = await _seen(request, front.seen)
            if (refusal := refused(seen)) is not None:
                return refusal
            target = front.sessions.pop(request.match_info["session"], None)
            if target is None:
                return web.Response(status=404)
            async with http.delete(target) as done:
                return web.Response(status=done.status)

        app = web.Application()
        app.router.add_post("/{role:whip|whep}/{room}", post)
        app.router.add_patch("/{role:whip|whep}/sessions/{session}", patch)
        app.router.add_delete("/{role:whip|whep}/sessions/{session}", delete)
        async with aiohttp_app(app) as base:
            yield base


@asynccontextmanager
async def redirects(table: dict[str, tuple[int, str]]) -> AsyncIterator[tuple[str, list[Seen]]]:
    """An endpoint answering a POST to each path of ``table`` with its (status, Location);
    yields its base URL and the requests it saw."""
    seen: list[Seen] = []

    async def post(request: web.Request) -> web.Response:
        await _seen(request, seen)
        status, location = table[request.path]
        return web.Response(status=status, headers={"Location": location})

    app = web.Application()
    for path in table:
        app.router.add_post(path, post)
    async with aiohttp_app(app) as base:
        yield base, seen


class IceServer(asyncio.DatagramProtocol):
    """A STUN server that answers Binding requests, and a TURN server that refuses every
    allocation once the client has authenticated (so it never relays anything)."""

    REALM = "qoe-test"
    PASSWORD = "p"
    """Every user's password: a response to an authenticated request must carry its integrity."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.bindings: list[tuple[str, int]] = []
        """Who asked for its reflexive address."""
        self.allocations: list[str] = []
        """The user names authenticated Allocate requests came with."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_class != stun.Class.REQUEST:
            return
        if request.message_method == stun.Method.BINDING:
            self.bindings.append(addr)
            reply = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id)
            reply.attributes["XOR-MAPPED-ADDRESS"] = addr
        elif request.message_method == stun.Method.ALLOCATE:
            reply = stun.Message(stun.Method.ALLOCATE, stun.Class.ERROR, request.transaction_id)
            if "USERNAME" in request.attributes:
                user = str(request.attributes["USERNAME"])
                self.allocations.append(user)
                reply.attributes["ERROR-CODE"] = (403, "Forbidden")
                reply.add_message_integrity(turn.make_integrity_key(user, self.REALM, self.PASSWORD))
            else:
                reply.attributes["ERROR-CODE"] = (401, "Unauthorized")
                reply.attributes["REALM"] = self.REALM
                reply.attributes["NONCE"] = b"qoe-test-nonce"
        else:
            return
        self.transport.sendto(bytes(reply), addr)

    @classmethod
    @asynccontextmanager
    async def serve(cls) -> AsyncIterator[tuple[IceServer, int]]:
        """Serve on a free loopback UDP port; yield the server and its port."""
        transport, server = await asyncio.get_running_loop().create_datagram_endpoint(
            cls, local_addr=("127.0.0.1", 0)
        )
        try:
            yield server, transport.get_extra_info("sockname")[1]
        finally:
            transport.close()


@asynccontextmanager
async def peer_server(
    video: Callable[[], MediaStreamTrack],
    *,
    server_offer: bool = False,
    links: tuple[str, ...] = (),
    seen: list[Seen] | None = None,
) -> AsyncIterator[str]:
    """A WHEP endpoint whose own peer sends ``video()`` to each viewer, and no audio; yields
    its URL (``BASE/whep/demo``). Its peers gather on loopback only, as the room's do.

    ``server_offer``: the endpoint makes the offer, as Janus's WHEP front end does for the
    subscriptions Janus offers to: the POST's offer is not taken, a 406 carries the
    endpoint's own offer, and the viewer's answer comes by PATCH (``application/sdp``).
    ``links`` go on each answer to a POST as ``Link`` headers; every request is noted in
    ``seen``."""
    rtcpatch.install()
    peers: dict[str, RTCPeerConnection] = {}
    ids = itertools.count(1)
    noted: list[Seen] = seen if seen is not None else []

    async def post(request: web.Request) -> web.Response:
        body = (await _seen(request, noted)).body
        if "v=0" not in body:
            return web.Response(status=415, text="Missing SDP offer\n")
        pc = RTCPeerConnection(rtc_configuration())
        pc.addTransceiver(video(), direction="sendonly")
        with candidate_addresses(("127.0.0.1",)):
            if server_offer:
                await pc.setLocalDescription(await pc.createOffer())
            else:
                await pc.setRemoteDescription(RTCSessionDescription(body, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
        session = str(next(ids))
        peers[session] = pc
        headers: Any = [("Location", f"/whep/demo/{session}"), ("ETag", f'"{session}"')]
        headers += [("Link", link) for link in links]
        return web.Response(
            status=406 if server_offer else 201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers=headers,
        )

    async def patch(request: web.Request) -> web.Response:
        seen_now = await _seen(request, noted)
        pc = peers.get(request.match_info["session"])
        if pc is None:
            return web.Response(status=404)
        if not server_offer or seen_now.headers.get("Content-Type") != "application/sdp":
            return web.Response(status=405)
        await pc.setRemoteDescription(RTCSessionDescription(seen_now.body, "answer"))
        return web.Response(status=204)

    async def delete(request: web.Request) -> web.Response:
        await _seen(request, noted)
        pc = peers.pop(request.match_info["session"], None)
        if pc is not None:
            await pc.close()
        return web.Response(status=200 if pc is not None else 404)

    app = web.Application()
    app.router.add_post("/whep/demo", post)
    app.router.add_patch("/whep/demo/{session}", patch)
    app.router.add_delete("/whep/demo/{session}", delete)
    try:
        async with aiohttp_app(app) as base:
            yield f"{base}/whep/demo"
    finally:
        for pc in peers.values():
            with contextlib.suppress(Exception):
                await pc.close()
