"""TCP impairment relay: the link model applied to chunks of each byte stream.

Each accepted connection gets its own upstream connection and a pair of
:class:`~sim.netem.Link` (time origin: the accept). Each direction is pumped in chunks of at
most :data:`CHUNK_BYTES` (one MTU-sized segment): a chunk is offered to the link when read,
and written on at its departure time, never before the chunk ahead of it (a byte stream
cannot reorder; a duplicated chunk is written once, as TCP discards the copy).

Loss never corrupts the stream. A chunk the link drops (random or burst loss, an outage,
a full queue) is held back, together with everything after it, for one retransmission
timeout, then offered to the link again, as a TCP sender's retransmission would be; if that
copy is lost too the timeout doubles (exponential backoff, RFC 6298 section 5.5), up to
:data:`MAX_RTO`. Loss therefore shows as the stalls it causes. The timeout is
``max(MIN_RTO, 2 x base RTT)`` with the base RTT the sum of both directions' ``delay``:
Linux's minimum RTO is 200 ms (``TCP_RTO_MIN``), and RFC 6298's SRTT + 4 RTTVAR settles
near 2 x RTT on a path whose RTT varies little.

Flow control: the pump reads a chunk only while the bytes already waiting at the emulated
bottleneck would take less than :data:`QUEUE_WINDOW` to serve (or half the link's
``queue_seconds``, if smaller), like a sender whose window is the path's capacity plus a
short queue. Reading everything the far side offers at once would build a queue so deep
that a stall behind it went unseen, and would overflow any queue bound the profile sets.
While the pump waits (for room, or a retransmission timeout) it reads nothing, so the real
sender is held back by TCP's own flow control.

Simplifications, on purpose: the relay terminates TCP on both sides, so the real
connections never see loss or the emulated RTT in their own congestion control; the model
has no slow start, no fast retransmit (every loss costs a full timeout, as a tail loss or a
lost retransmission does on a real path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import time
from types import TracebackType
from typing import Any

import numpy as np

from sim.netem import Link
from sim.profiles import Profile
from sim.shaper import DEFAULT_BATCH, Scheduler

__all__ = [
    "CHUNK_BYTES",
    "MAX_RTO",
    "MIN_RTO",
    "QUEUE_WINDOW",
    "TcpProxy",
    "retransmission_timeout",
]

log = logging.getLogger(__name__)

CHUNK_BYTES = 1500
"""Largest chunk offered to the link at once, bytes (one Ethernet-MTU packet, the unit of
the Mahimahi traces the capacity model replays)."""
MIN_RTO = 0.2
"""Lower bound of the retransmission timeout, seconds (Linux ``TCP_RTO_MIN``)."""
MAX_RTO = 60.0
"""Upper bound of the backed-off retransmission timeout, seconds (RFC 6298 section 2.5)."""
QUEUE_WINDOW = 0.05
"""Longest the pump lets chunks queue at the emulated bottleneck before it stops reading,
seconds (see the module docstring, "Flow control")."""
WRITE_BUFFER = 1024 * 1024
"""Bytes buffered towards a slow far side before the pump stops reading."""


def retransmission_timeout(profile: Profile) -> float:
    """The first retransmission timeout for ``profile``: max(MIN_RTO, 2 x base RTT), seconds."""
    return max(MIN_RTO, 2.0 * (profile.uplink.delay + profile.downlink.delay))


class _Pump:
    """One direction of one connection: read chunks, run them through the link, write them
    on time; stalls on loss. ``stalls`` counts retransmission timeouts, ``stalled`` their
    total seconds."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: Link,
        scheduler: Scheduler,
        rto: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.link = link
        self.scheduler = scheduler
        self.rto = rto
        config = link.config
        self._delay = config.delay
        window = QUEUE_WINDOW
        if config.queue_seconds is not None:
            window = min(window, config.queue_seconds / 2)
        self._window = window
        self.bytes = 0
        self.chunks = 0
        self.stalls = 0
        self.stalled = 0.0
        self._last_departure = -math.inf
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        """Relay until EOF (then half-close the far side once everything is written)."""
        reader, writer, link = self.reader, self.writer, self.link
        while True:
            # Flow control: only as much queued at the bottleneck as the window allows.
            queued = self._last_departure - self._delay - time.monotonic()
            if queued > self._window:
                await asyncio.sleep(queued - self._window)
            if writer.transport.get_write_buffer_size() > WRITE_BUFFER:
                await writer.drain()
            try:
                data = await reader.read(CHUNK_BYTES)
            except OSError:
                # The near side reset: the bytes already on the emulated link still
                # arrive, then the far side is reset too, as the RST would follow them.
                self.scheduler.at(max(self._last_departure, time.monotonic()), self._reset)
                await self._done
                raise
            if not data:
                break
            rto = self.rto
            departures = link.send(time.monotonic(), len(data))
            while not departures:
                self.stalls += 1
                started = time.monotonic()
                await asyncio.sleep(rto)
                self.stalled += time.monotonic() - started
                rto = min(2.0 * rto, MAX_RTO)
                departures = link.send(time.monotonic(), len(data))
            departure = max(departures[0], self._last_departure)
            self._last_departure = departure
            self.chunks += 1
            self.scheduler.at(departure, self._write, data)
        self.scheduler.at(max(self._last_departure, time.monotonic()), self._finish)
        await self._done

    def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(data)
        self.bytes += len(data)

    def _finish(self) -> None:
        if not self.writer.is_closing() and self.writer.can_write_eof():
            with contextlib.suppress(OSError):
                self.writer.write_eof()
        if not self._done.done():
            self._done.set_result(None)

    def _reset(self) -> None:
        _reset(self.writer)
        if not self._done.done():
            self._done.set_result(None)

    def abort(self) -> None:
        if not self._done.done():
            self._done.set_result(None)


class TcpProxy:
    """Relay TCP connections to ``listen`` to ``upstream`` through ``profile``'s links.

    Every connection gets its own upstream connection and links (seeded from ``rng`` in
    accept order). ``rto`` overrides :func:`retransmission_timeout`. A connection ends when
    both directions reached EOF (each half-closed in turn), or when either side resets: the
    bytes already on the emulated link are delivered, then the other side is reset too. An
    upstream that refuses the connection resets the client. Other connections are never
    affected. Use ``async with`` or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        profile: Profile,
        rng: np.random.Generator,
        *,
        rto: float | None = None,
        connect_timeout: float = 10.0,
        batch: float = DEFAULT_BATCH,
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        self.profile = profile
        self.rto = retransmission_timeout(profile) if rto is None else rto
        self.connect_timeout = connect_timeout
        self._rng = rng
        self._up = Scheduler(batch=batch)
        self._down = Scheduler(batch=batch)
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._totals = {
            "uplink": {"bytes": 0, "chunks": 0, "stalls": 0, "stalled_seconds": 0.0},
            "downlink": {"bytes": 0, "chunks": 0, "stalls": 0, "stalled_seconds": 0.0},
        }
        self._live: set[tuple[_Pump, _Pump]] = set()
        self.connections = 0
        self.failed_connects = 0
        self.resets = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound listening address ``(host, port)``."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("proxy not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen; raises ``OSError`` if the address cannot be bound."""
        host, port = self.listen
        self._server = await asyncio.start_server(self._serve, host, port)

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._up.close()
        self._down.close()

    def stats(self) -> dict[str, Any]:
        """Connections opened, failed upstream connects, resets; per direction ``bytes``
        and ``chunks`` relayed, ``stalls`` (retransmission timeouts) and ``stalled_seconds``,
        ``scheduling_error`` (seconds)."""
        result: dict[str, Any] = {
            "profile": self.profile.name,
            "connections": self.connections,
            "open": len(self._live),
            "failed_connects": self.failed_connects,
            "resets": self.resets,
            "rto_seconds": self.rto,
        }
        for index, (name, scheduler) in enumerate((("uplink", self._up), ("downlink", self._down))):
            counts: dict[str, Any] = dict(self._totals[name])
            for pumps in self._live:
                _add(counts, pumps[index])
            counts["scheduling_error"] = scheduler.lateness.summary()
            result[name] = counts
        return result

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            # stop() cancels the handlers it owns; asyncio's server logs an error for a
            # handler task that ends cancelled, so end it normally instead.
            if not self._stopping:
                raise
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except (OSError, TimeoutError) as exc:
            self.failed_connects += 1
            log.info("upstream %s:%s: %s", *self.upstream, exc)
            _reset(writer)
            return
        now = time.monotonic()
        up_rng, down_rng = self._rng.spawn(2)
        up = _Pump(reader, up_writer, Link(self.profile.uplink, up_rng, now), self._up, self.rto)
        down = _Pump(up_reader, writer, Link(self.profile.downlink, down_rng, now), self._down, self.rto)
        pumps = (up, down)
        self._live.add(pumps)
        tasks = [asyncio.create_task(p.run()) for p in pumps]
        clean = False
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t.exception() for t in done if not t.cancelled() and t.exception()]
            if failed:
                self.resets += 1
                log.info("connection ended by %r", failed[0])
            else:
                clean = True
        finally:
            for pump, task in zip(pumps, tasks, strict=True):
                pump.abort()
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (writer, up_writer):
                if clean:
                    w.close()  # flushes what is still buffered, then closes
                else:
                    _reset(w)
            if clean:
                await asyncio.wait(
                    [asyncio.create_task(_closed(w)) for w in (writer, up_writer)],
                    timeout=self.connect_timeout,
                )
            self._live.discard(pumps)
            for name, pump in zip(("uplink", "downlink"), pumps, strict=True):
                _add(self._totals[name], pump)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as the peer that vanished did."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _closed(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _add(counts: dict[str, Any], pump: _Pump) -> None:
    counts["bytes"] += pump.bytes
    counts["chunks"] += pump.chunks
    counts["stalls"] += pump.stalls
    counts["stalled_seconds"] += pump.stalled
