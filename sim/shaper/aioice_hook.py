"""Shape an aiortc peer's UDP traffic in-process.

Every datagram an aiortc peer sends or receives (STUN connectivity checks, DTLS, SRTP,
SCTP) passes through an ``aioice.ice.StunProtocol`` and its datagram transport, one per host
candidate. :mod:`qoe.rtcpatch` (the one module that patches aioice) hands each protocol
created inside a :func:`shaping` context to this module, which then:

- wraps its transport: ``sendto`` offers the datagram to the shaper's uplink and the real
  ``sendto`` runs at each departure (none if dropped, two if duplicated);
- routes its ``datagram_received`` through the downlink: the real ``datagram_received`` runs
  at each departure.

Outside a context nothing is added: no wrapper, no extra call per datagram. Sockets stay
shaped for their whole life, after the block too.

What would break if aioice changed: the hook relies on (1) ``aioice.ice.StunProtocol``
being the class its candidate gathering instantiates through a module-level name lookup
(:func:`qoe.rtcpatch.check` checks the name exists), (2) the protocol sending only through
``self.transport.sendto`` and receiving only through ``datagram_received``, and (3)
``connection_made`` receiving the transport. If aioice created sockets another way,
gathering would silently produce unshaped sockets: :attr:`Shaper.sockets` then stays 0,
which the tests check. With TURN, the relayed datagrams are shaped (they pass through the
StunProtocol); TURN's own allocation and refresh messages to the server are not.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from qoe import rtcpatch
from sim.profiles import Profile

from .direction import Direction
from .shaper import Shaper

__all__ = ["current_shaper", "shaping"]

_active: contextvars.ContextVar[Shaper | None] = contextvars.ContextVar("qoe_shaper", default=None)


def current_shaper() -> Shaper | None:
    """The shaper of the innermost active :func:`shaping` context, if any."""
    return _active.get()


@contextmanager
def shaping(profile: Profile, rng: np.random.Generator, **options: Any) -> Iterator[Shaper]:
    """Shape the UDP sockets aiortc peers create (gather candidates) inside this block.

    Yields the :class:`~sim.shaper.shaper.Shaper` whose counters report what happened. The
    sockets stay shaped for their whole life, after the block too; leaving the block only
    stops new sockets from being shaped. Call it where the peer gathers its candidates, i.e.
    around ``setLocalDescription``::

        with candidate_addresses(("127.0.0.1",)), shaping(load_profile("3g"), rng) as shaper:
            await pc.setLocalDescription(await pc.createOffer())

    ``options`` go to :class:`~sim.shaper.shaper.Shaper` (``start``, ``batch``, ``clock``).
    """
    rtcpatch.install()
    shaper = Shaper(profile, rng, **options)
    token = _active.set(shaper)
    hook = rtcpatch.DATAGRAM_HOOK.set(lambda protocol: _ShapedEndpoint(protocol, shaper))
    try:
        yield shaper
    finally:
        rtcpatch.DATAGRAM_HOOK.reset(hook)
        _active.reset(token)


class _ShapedEndpoint:
    """Wires one protocol instance through a shaper by overriding two of its attributes.

    Instance attributes shadow the class's methods, so asyncio's transport (which calls
    ``protocol.datagram_received``) and aioice (which calls ``self.transport.sendto``) go
    through the shaper while the protocol's own code is untouched.
    """

    __slots__ = ("_closed", "_made", "_protocol", "_received", "_shaper")

    def __init__(self, protocol: Any, shaper: Shaper) -> None:
        self._protocol = protocol
        self._shaper = shaper
        self._closed = False
        self._made = protocol.connection_made
        self._received = protocol.datagram_received
        lost = protocol.connection_lost
        shaper.sockets += 1

        def connection_made(transport: Any) -> None:
            self._made(_ShapedTransport(transport, shaper.uplink))

        def datagram_received(data: bytes, addr: Any) -> None:
            shaper.downlink.offer(len(data), self._deliver, data, addr)

        def connection_lost(exc: Exception | None) -> None:
            self._closed = True
            lost(exc)

        protocol.connection_made = connection_made
        protocol.datagram_received = datagram_received
        protocol.connection_lost = connection_lost

    def _deliver(self, data: bytes, addr: Any) -> None:
        downlink: Direction = self._shaper.downlink
        if self._closed:
            downlink.discarded += 1
            return
        downlink.delivered += 1
        self._received(data, addr)


class _ShapedTransport:
    """A datagram transport whose ``sendto`` goes through the uplink; the rest is delegated."""

    __slots__ = ("_closed", "_direction", "_transport")

    def __init__(self, transport: Any, direction: Direction) -> None:
        self._transport = transport
        self._direction = direction
        self._closed = False

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._direction.offer(len(data), self._deliver, data, addr)

    def close(self) -> None:
        self._closed = True
        self._transport.close()

    def _deliver(self, data: bytes, addr: Any) -> None:
        if self._closed:
            self._direction.discarded += 1
            return
        self._direction.delivered += 1
        self._transport.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def __repr__(self) -> str:
        return f"<shaped {self._transport!r}>"
