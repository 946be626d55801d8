"""One WebRTC session against a WHIP or WHEP endpoint, with its join milestones.

Both probes go through the same steps (offer, POST, answer, ICE, DTLS) and fail in the same
ways; this class does them once and records each milestone on the probe's timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription

from probes.webrtc.peer import addresses_for_host, candidate_addresses, rtc_configuration
from probes.webrtc.signaling import delete_session, post_offer
from qoe import clock, rtcpatch
from qoe.errors import DisconnectedError, DtlsError, IceError, SdpError
from qoe.timeline import Timeline
from sim.shaper import shaping

__all__ = ["DELETE_BUDGET_SECONDS", "Session"]

DELETE_BUDGET_SECONDS = 4.0
"""Seconds closing a session may take, the WHIP/WHEP DELETE included: a slow server is waited
for (its time is the run's teardown, never a figure), within the runner's teardown budget."""


class Session:
    """A peer connection plus its WHIP/WHEP resource; ``async with`` closes both."""

    def __init__(
        self,
        url: str,
        timeline: Timeline,
        *,
        stun: list[str] | None = None,
        network: Any = None,
        seed: int | None = None,
    ) -> None:
        self.url = url
        self.network = network
        """A ``sim.profiles.Profile`` to emulate on this peer's sockets, or None."""
        self.shaper: Any = None
        self.network_stats: dict[str, Any] = {}
        """The emulation's counters per direction, once the session is closed."""
        self._seed = seed
        self.timeline = timeline
        rtcpatch.install()  # before the first peer connection: checks aiortc, then patches it
        self.pc = RTCPeerConnection(rtc_configuration(stun))
        self.location: str | None = None
        self._http = aiohttp.ClientSession()
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

    async def negotiate(self, *, timeout: float) -> None:
        """Offer, POST, apply the answer; milestones ``signaling`` onwards are recorded."""
        with candidate_addresses(self._addresses), self._shaping() as shaper:
            await self.pc.setLocalDescription(await self.pc.createOffer())
        self.shaper = shaper
        answer = await post_offer(self._http, self.url, self.pc.localDescription.sdp, timeout=timeout)
        self.location = answer.location
        self.timeline.mark("signaling")
        for transceiver in self.pc.getTransceivers():
            transport = transceiver.receiver.transport
            transport.on("statechange", self._dtls_watcher(transport))
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        except (ValueError, KeyError, IndexError, TypeError, AssertionError) as exc:
            raise SdpError(f"cannot apply the answer from {self.url}: {exc or type(exc).__name__}") from exc

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
        await self.pc.close()
        if self.shaper is not None:
            self.network_stats = self.shaper.stats()
            self.shaper.close()
        if self.location is not None:
            remaining = max(0.5, DELETE_BUDGET_SECONDS - (clock.monotonic() - started))
            await delete_session(self._http, self.location, timeout=remaining)
        await self._http.close()
