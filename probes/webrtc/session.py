"""One WebRTC session against a WHIP or WHEP endpoint, with its join milestones.

Both probes go through the same steps (offer, POST, answer, ICE, DTLS) and fail in the same
ways; this class does them once and records each milestone on the probe's timeline, and the
candidate pair ICE selected.

STUN and TURN servers. RFC 9725 (section 4.6) has an endpoint name them in ``Link`` headers
of its 201, the answer to an offer whose candidates were gathered already. aiortc and aioice
gather once, in ``setLocalDescription``, from the servers the peer connection was made with,
and cannot take more afterwards. Three ways around that, and why this one:

- an OPTIONS request before the offer, in case its answer carries the ``Link`` headers: RFC
  9725 advises against it, endpoints need not answer it so, and it costs every join a round
  trip;
- a second offer, from a new peer connection, once the 201 has named the servers: it doubles
  the signaling, and has the server set up a session for nothing;
- what is done here. The offer carries the host candidates, gathered at once with no server,
  as it always has, so an endpoint that takes no trickled candidates gets all it can use. The
  servers the 201 names are then asked for their candidates (server-reflexive from STUN,
  relayed from TURN: :func:`qoe.rtcpatch.gather_more`) before the answer is applied, so ICE
  pairs them from its first check. When the 201 gave an ETag they are trickled to the session
  by PATCH (RFC 9725 section 4.3.2); a server that answers it 405 or 501, or gave no ETag,
  still learns them from the probe's checks, as peer-reflexive candidates. The offer carries
  no end-of-candidates, since more may follow the 201 (RFC 8838).

``relay`` (the ``ice_transport`` option) gathers no host candidates at all: the media goes
through the TURN server the endpoint announces, and without one the join fails at once,
saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from aioice import Candidate
from aiortc import RTCIceServer, RTCPeerConnection, RTCSessionDescription

from probes.webrtc.peer import addresses_for_host, candidate_addresses, rtc_configuration, selected_pair
from probes.webrtc.signaling import Answer, Contact, Endpoint, trickle_fragment
from qoe import clock, rtcpatch
from qoe.errors import DisconnectedError, DtlsError, IceError, SdpError
from qoe.redact import redact_url
from qoe.timeline import IcePair, Timeline
from sim.shaper import shaping

__all__ = ["DELETE_BUDGET_SECONDS", "GATHER_SECONDS", "Session"]

DELETE_BUDGET_SECONDS = 4.0
"""Seconds closing a session may take, the WHIP/WHEP DELETE included: a slow server is waited
for (its time is the run's teardown, never a figure), within the runner's teardown budget."""
GATHER_SECONDS = 5.0
"""Seconds the announced STUN and TURN servers get to give their candidates (aioice's own)."""
END_OF_CANDIDATES = re.compile(r"^a=end-of-candidates\r?\n", re.M)


class Session:
    """A peer connection plus its WHIP/WHEP resource; ``async with`` closes both."""

    def __init__(
        self,
        url: str,
        timeline: Timeline,
        *,
        token: str | None = None,
        relay: bool = False,
        network: Any = None,
        seed: int | None = None,
        server_offer: bool = False,
        may_contact: Contact | None = None,
    ) -> None:
        self.url = url
        self.relay = relay
        self.server_offer = server_offer
        """The server makes the offer: see :meth:`negotiate`."""
        """Media through TURN only (the ``relay`` ICE transport policy)."""
        self.network = network
        """A ``sim.profiles.Profile`` to emulate on this peer's sockets, or None."""
        self.shaper: Any = None
        self.network_stats: dict[str, Any] = {}
        """The emulation's counters per direction, once the session is closed."""
        self._seed = seed
        self.timeline = timeline
        rtcpatch.install()  # before the first peer connection: checks aiortc, then patches it
        self.pc = RTCPeerConnection(rtc_configuration(relay=relay))
        self.location: str | None = None
        self.answer: Answer | None = None
        """The endpoint's 201, once it came."""
        self.agreed: str | None = None
        """The SDP that says what was agreed: the server's answer, or in server-offer mode
        the probe's own answer."""
        self._http = aiohttp.ClientSession()
        self.endpoint = Endpoint(self._http, url, token, record=timeline.http.append, may_contact=may_contact)
        self._addresses = addresses_for_host(urlsplit(url).hostname or "")
        loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[None] = loop.create_future()
        """Fails with a ProbeError when the connection breaks; never resolves otherwise."""
        self.connected = asyncio.Event()
        self._closing = False
        self.pc.on("iceconnectionstatechange", self._on_ice_state)
        self.pc.on("connectionstatechange", self._on_connection_state)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def negotiate(
        self, *, timeout: float, check_answer: Callable[[str, str], None] | None = None
    ) -> None:
        """Offer, POST, apply the answer; milestones ``signaling`` onwards are recorded.

        ``check_answer(offer, answer)`` may refuse the answer (raise) before it is applied:
        ``offer`` is always the viewer's side (the probe's offer, or its answer to a server's
        offer), ``answer`` the server's.
        """
        if self.server_offer:
            await self._answer_server(timeout=timeout, check_answer=check_answer)
            return
        deadline = clock.monotonic() + timeout
        with candidate_addresses(self._addresses), self._shaping() as shaper:
            self.shaper = shaper
            await self.pc.setLocalDescription(await self.pc.createOffer())
            offer = END_OF_CANDIDATES.sub("", self.pc.localDescription.sdp)
            answer = await self.endpoint.post(offer, deadline=deadline)
            self.answer, self.location, self.agreed = answer, answer.location, answer.sdp
            self.timeline.mark("signaling")
            if check_answer is not None:
                check_answer(offer, answer.sdp)
            announced = await self._gather(answer.ice_servers, deadline)
        for transceiver in self.pc.getTransceivers():
            transport = transceiver.receiver.transport
            transport.on("statechange", self._dtls_watcher(transport))
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        except (ValueError, KeyError, IndexError, TypeError, AssertionError) as exc:
            reason = str(exc) or type(exc).__name__
            raise SdpError(f"cannot apply the answer from {redact_url(self.url)}: {reason}") from exc
        if announced and answer.etag is not None:
            fragment = trickle_fragment(offer, [c.to_sdp() for c in announced])
            left = max(0.5, deadline - clock.monotonic())
            await self.endpoint.trickle(answer.location, fragment, etag=answer.etag, timeout=left)

    async def _answer_server(
        self, *, timeout: float, check_answer: Callable[[str, str], None] | None = None
    ) -> None:
        """Server-offer mode, as Janus's WHEP front end (``janus-whep-server``) speaks it for
        the subscriptions Janus makes the offer for: the POST carries the probe's offer, which
        the server does not take; its own offer comes back in a 406 (or a 201) with the
        session's ``Location``, and the probe PATCHes its answer (``application/sdp``) there.
        ``signaling`` ends when the PATCH is taken: only then can media flow. The servers the
        server named are asked for candidates before the answer is sent, so the answer
        carries them and nothing needs trickling."""
        deadline = clock.monotonic() + timeout
        with candidate_addresses(self._addresses), self._shaping() as shaper:
            self.shaper = shaper
            # The offer is made but not applied: the peer takes the server's offer instead.
            unapplied = (await self.pc.createOffer()).sdp
            created = await self.endpoint.post(unapplied, deadline=deadline, server_offer=True)
            self.location = created.location
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(created.sdp, "offer"))
            except (ValueError, KeyError, IndexError, TypeError, AssertionError) as exc:
                reason = str(exc) or type(exc).__name__
                raise SdpError(f"cannot apply the offer from {redact_url(self.url)}: {reason}") from exc
            rtcpatch.leave_unoffered(self.pc)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            answer = self.pc.localDescription.sdp
            if check_answer is not None:
                check_answer(answer, created.sdp)
            announced = await self._gather(created.ice_servers, deadline)
        answer = with_candidates(answer, [c.to_sdp() for c in announced])
        for transceiver in self.pc.getTransceivers():
            transport = transceiver.receiver.transport
            transport.on("statechange", self._dtls_watcher(transport))
        left = max(0.5, deadline - clock.monotonic())
        await self.endpoint.answer(created.location, answer, etag=created.etag, timeout=left)
        self.answer, self.agreed = created, answer
        self.timeline.mark("signaling")

    async def _gather(self, servers: Sequence[RTCIceServer], deadline: float) -> list[Candidate]:
        """Candidates from the STUN and TURN servers the endpoint announced (see the module)."""
        turn = next((url for s in servers for url in _urls(s) if url.startswith("turn")), None)
        if self.relay and turn is None:
            raise IceError(
                "ice_transport relay needs a TURN server, and the endpoint announced none "
                '(no Link rel="ice-server" header with a turn: URL)'
            )
        if not servers:
            return []
        gatherer = self.pc.getTransceivers()[0].receiver.transport.transport.iceGatherer
        left = min(GATHER_SECONDS, max(0.5, deadline - clock.monotonic()))
        found = await rtcpatch.gather_more(gatherer, list(servers), timeout=left)
        if self.relay and not any(c.type == "relay" for c in found):
            raise IceError(
                f"ice_transport relay: {turn} gave no relayed candidate (the TURN allocation failed)"
            )
        return found

    def _shaping(self) -> contextlib.AbstractContextManager[Any]:
        """Emulate ``self.network`` on the sockets gathered inside (they stay shaped)."""
        if self.network is None:
            return contextlib.nullcontext()
        return shaping(self.network, np.random.default_rng(self._seed))

    def _dtls_watcher(self, transport: object) -> Callable[[], None]:
        def on_state() -> None:
            state = getattr(transport, "state", "")
            if state == "connected":
                self.timeline.mark("dtls_connected")
                self.connected.set()
            elif state == "failed":
                if self.connected.is_set():
                    self._fail(DisconnectedError("DTLS connection failed after it was established"))
                else:
                    self._fail(DtlsError("DTLS handshake failed"))
            elif state == "closed" and not self._closing:
                self._fail(DisconnectedError("the server closed the connection"))

        return on_state

    def _on_ice_state(self) -> None:
        state = self.pc.iceConnectionState
        if state in ("completed", "connected"):
            self.timeline.mark("ice_connected")
            pair = selected_pair(self.pc)
            if pair is not None:
                self.timeline.ice_pairs.append(IcePair(clock.monotonic(), *pair))
        elif state == "failed":
            self._fail(IceError("ICE failed: no candidate pair works"))

    def _on_connection_state(self) -> None:
        if self.pc.connectionState == "failed" and self.connected.is_set():
            self._fail(DisconnectedError("connection failed after it was established"))

    def _fail(self, error: Exception) -> None:
        if not self.failed.done():
            self.failed.set_exception(error)

    async def wait(self, awaitable: Awaitable[object] | asyncio.Event, timeout: float) -> bool:
        """Wait for ``awaitable`` (or an event) up to ``timeout``; True if it finished.

        Raises the connection's failure at once if the connection breaks meanwhile.
        """
        waiter: asyncio.Future[Any] = asyncio.ensure_future(
            awaitable.wait() if isinstance(awaitable, asyncio.Event) else awaitable
        )
        try:
            done, _ = await asyncio.wait(
                {waiter, self.failed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        if self.failed in done:
            self.failed.result()
        return waiter in done

    def network_snapshot(self) -> dict[str, Any]:
        """What the network emulation has done to this peer's packets so far (empty: none)."""
        if self.shaper is None:
            return dict(self.network_stats)
        stats: dict[str, Any] = self.shaper.stats()
        return stats

    async def close(self) -> None:
        """Close the peer, end the session on the server, release the HTTP client."""
        self._closing = True
        if not self.failed.done():
            self.failed.cancel()
        elif not self.failed.cancelled():
            self.failed.exception()  # it was raised to the probe already, or is moot now
        started = clock.monotonic()
        try:
            await self.pc.close()
            if self.shaper is not None:
                self.network_stats = self.shaper.stats()
                self.shaper.close()
            if self.location is not None:
                remaining = max(0.5, DELETE_BUDGET_SECONDS - (clock.monotonic() - started))
                await self.endpoint.delete(self.location, timeout=remaining)
        finally:
            # Also when the runner's teardown budget cut a DELETE to a hung server short:
            # the client and its connections are released now, not by the garbage collector.
            await self._http.close()


def with_candidates(sdp: str, candidates: Sequence[str]) -> str:
    """``sdp`` with ``candidates`` (values of ``a=candidate:`` lines) added to every media
    section, before its end-of-candidates."""
    if not candidates:
        return sdp
    lines = "".join(f"a=candidate:{c}\r\n" for c in candidates)
    return END_OF_CANDIDATES.sub(lambda m: lines + m.group(0), sdp)


def _urls(server: RTCIceServer) -> list[str]:
    return [server.urls] if isinstance(server.urls, str) else list(server.urls)
