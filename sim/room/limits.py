"""The room server's bounds: what one client, or many, may make it hold.

The embedded room is the default target of every demo, test and fleet, so it must behave like
the servers it stands in for: bounded, clear when it refuses, and never taken down by a
client. Every bound below is settable (``LiveRoom(limits=...)``, ``qoe room --max-...``);
beyond one the room answers ``503 Service Unavailable`` with ``Retry-After`` (or ``413`` for
a body too large) and logs a line, never grows without bound.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RoomLimits"]


@dataclass(frozen=True)
class RoomLimits:
    rooms: int = 100
    """Rooms at once. A room comes into being with its first accepted WHIP publisher (or chat
    client); a request that is refused creates none."""
    sessions: int = 1000
    """WHIP and WHEP sessions at once, over all rooms."""
    sessions_per_room: int = 250
    """WHEP viewers of one room at once."""
    body_bytes: int = 64 * 1024
    """Largest request body (an SDP offer or a PATCH); a real offer is a few KiB."""
    connect_seconds: float = 15.0
    """A session whose ICE and DTLS have not connected by then is ended: a client that posts
    offers and never connects holds nothing for long."""
    idle_room_seconds: float = 60.0
    """A room with no publisher, no viewer and no chat client for this long is removed (the
    built-in ``demo`` room never is)."""
    chat_queue: int = 256
    """Chat messages queued for one client that does not read; beyond that its oldest are
    dropped, and counted, so one slow reader never holds the others' chat up."""
    chat_rate: float = 50.0
    """Chat messages a second one client may send (a burst of as many is allowed); a flood
    beyond that is dropped and counted, not queued."""
    retry_after: int = 5
    """Seconds a refused client is told to wait (``Retry-After``)."""
    idle_connection_seconds: float = 20.0
    """A connection that has not sent a whole request head this long after it opened, or after
    its previous answer, is closed: hundreds of sockets that never finish their headers
    (slowloris) hold nothing for long. aiohttp's keep-alive timeout, which runs from a
    connection's start since aiohttp 3.14.4; longer than aiohttp clients keep an idle
    connection for reuse (15 s), so a probe never sends on one the room is closing."""
