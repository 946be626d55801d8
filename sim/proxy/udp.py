"""UDP impairment relay: clients on one side, one upstream server on the other, a link between.

Each client address gets a *flow*: its own upstream socket (so the server sees one peer per
client, and its replies come back to the right client) and its own pair of
:class:`~sim.netem.Link` (``uplink``: client to upstream, ``downlink``: upstream to client),
created at the flow's first packet, which is their time origin. A flow with no traffic
either way for ``idle_timeout`` seconds is closed; a later packet from the same address
starts a fresh one.

The sockets are plain non-blocking sockets watched with ``loop.add_reader``, and each
wake-up drains up to :data:`READ_BURST` datagrams: asyncio's datagram transports read one
datagram per wake-up, which costs more than the whole link model does. Sends never block
and never buffer in user space: a full socket buffer drops the datagram, as a full NIC
queue would, and counts it in ``send_errors``.

Robustness: an upstream that is down answers with ICMP port unreachable, which Linux reports
on the flow's connected socket as ``ECONNREFUSED``; a client that vanished simply stops
sending. Neither ends the proxy or disturbs other flows: errors are counted per direction
and the flow lives on until idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from types import TracebackType
from typing import Any

import numpy as np

from sim.netem import Link
from sim.profiles import Profile
from sim.shaper import DEFAULT_BATCH, Direction, Lateness, Scheduler, link_counts

__all__ = ["READ_BURST", "UdpProxy"]

log = logging.getLogger(__name__)

READ_BURST = 64
"""Datagrams read per wake-up of a socket before other sockets get their turn."""
SOCKET_BUFFER = 2 * 1024 * 1024
"""Requested kernel buffer per socket, bytes (the kernel caps it at net.core.[rw]mem_max):
at 20 Mbit/s, 2 MB rides out an 800 ms stall of the event loop without loss."""
MAX_DATAGRAM = 65535


class _Flow:
    __slots__ = ("client", "closed", "down", "last_seen", "sock", "up")

    def __init__(self, client: Any, sock: socket.socket, up: Direction, down: Direction) -> None:
        self.client = client
        self.sock = sock
        self.up = up
        self.down = down
        self.last_seen = time.monotonic()
        self.closed = False


class UdpProxy:
    """Relay UDP between clients of ``listen`` and ``upstream`` through ``profile``'s links.

    ``listen`` and ``upstream`` are ``(host, port)``; port 0 binds a free port, and
    :attr:`address` is the bound one. ``rng`` seeds every flow's links (two independent
    streams per flow, spawned in the order flows start). Use ``async with`` or
    :meth:`start` / :meth:`stop`; :meth:`stats` reports per-direction counters and the
    scheduling error.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        profile: Profile,
        rng: np.random.Generator,
        *,
        idle_timeout: float = 30.0,
        max_flows: int = 1024,
        batch: float = DEFAULT_BATCH,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0, got {idle_timeout}")
        self.listen = listen
        self.upstream = upstream
        self.profile = profile
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        self._rng = rng
        self._up = Scheduler(batch=batch)
        self._down = Scheduler(batch=batch)
        self._flows: dict[Any, _Flow] = {}
        self._retired: dict[str, dict[str, Any]] = {"uplink": _zero(), "downlink": _zero()}
        self._sock: socket.socket | None = None
        self._upstream_addr: Any = None
        self._upstream_family = socket.AF_INET
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.flows_started = 0
        self.flows_refused = 0
        """Packets from new clients turned away because ``max_flows`` flows were open."""
        self._errors = {"uplink": 0, "downlink": 0}

    @property
    def address(self) -> tuple[str, int]:
        """The bound listening address ``(host, port)``."""
        if self._sock is None:
            raise RuntimeError("proxy not started")
        host, port = self._sock.getsockname()[:2]
        return host, port

    async def __aenter__(self) -> UdpProxy:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the listening socket and resolve the upstream; raises ``OSError`` on failure."""
        loop = self._loop = asyncio.get_running_loop()
        up = await loop.getaddrinfo(*self.upstream, type=socket.SOCK_DGRAM)
        self._upstream_family, _, _, _, self._upstream_addr = up[0]
        family, _, _, _, addr = (
            await loop.getaddrinfo(*self.listen, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        )[0]
        sock = _udp_socket(family)
        try:
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        loop.add_reader(sock.fileno(), self._read_clients)
        self._expiry = loop.call_later(self._expiry_period(), self._expire)

    async def stop(self) -> None:
        """Close every flow and the listening socket; pending deliveries are dropped."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for flow in list(self._flows.values()):
            self._close_flow(flow)
        for direction, scheduler in (("uplink", self._up), ("downlink", self._down)):
            self._retired[direction]["discarded"] += scheduler.close()
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def pending(self, direction: str) -> int:
        """Datagrams of ``"uplink"`` or ``"downlink"`` waiting for their departure time."""
        return {"uplink": self._up, "downlink": self._down}[direction].pending

    def lateness(self, direction: str) -> Lateness:
        """The scheduling errors of ``"uplink"`` or ``"downlink"`` deliveries (all flows)."""
        return {"uplink": self._up, "downlink": self._down}[direction].lateness

    def stats(self) -> dict[str, Any]:
        """``flows`` open and ``flows_started``; per direction: ``sent``, ``passed``,
        ``duplicated``, ``dropped`` by reason, ``delivered`` (copies handed to a socket),
        ``discarded`` (flow closed first), ``send_errors`` (socket refused or full),
        ``pending`` and ``scheduling_error`` (seconds)."""
        result: dict[str, Any] = {
            "profile": self.profile.name,
            "flows": len(self._flows),
            "flows_started": self.flows_started,
            "flows_refused": self.flows_refused,
        }
        for name, scheduler in (("uplink", self._up), ("downlink", self._down)):
            directions = [flow.up if name == "uplink" else flow.down for flow in self._flows.values()]
            counts = _merge(self._retired[name], _direction_counts(directions))
            counts["send_errors"] = self._errors[name]
            counts["pending"] = scheduler.pending
            counts["scheduling_error"] = scheduler.lateness.summary()
            result[name] = counts
        return result

    # -- clients -> upstream ---------------------------------------------------------------

    def _read_clients(self) -> None:
        sock = self._sock
        if sock is None:
            return
        flows = self._flows
        for _ in range(READ_BURST):
            try:
                data, client = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._errors["downlink"] += 1
                log.debug("listening socket: %s", exc)
                continue
            flow = flows.get(client)
            if flow is None:
                flow = self._open_flow(client)
                if flow is None:
                    continue
            flow.last_seen = time.monotonic()
            flow.up.offer(len(data), self._to_upstream, flow, data)

    def _to_upstream(self, flow: _Flow, data: bytes) -> None:
        if flow.closed:
            flow.up.discarded += 1
            return
        try:
            flow.sock.send(data)
        except OSError as exc:  # full buffer, or ECONNREFUSED from an earlier ICMP error
            self._errors["uplink"] += 1
            log.debug("flow %s: upstream send: %s", flow.client, exc)
            return
        flow.up.delivered += 1

    # -- upstream -> clients ---------------------------------------------------------------

    def _read_upstream(self, flow: _Flow) -> None:
        for _ in range(READ_BURST):
            try:
                data = flow.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ECONNREFUSED: the upstream is not listening (now)
                self._errors["uplink"] += 1
                log.debug("flow %s: upstream: %s", flow.client, exc)
                continue
            flow.last_seen = time.monotonic()
            flow.down.offer(len(data), self._to_client, flow, data)

    def _to_client(self, flow: _Flow, data: bytes) -> None:
        if flow.closed or self._sock is None:
            flow.down.discarded += 1
            return
        try:
            self._sock.sendto(data, flow.client)
        except OSError as exc:
            self._errors["downlink"] += 1
            log.debug("flow %s: client send: %s", flow.client, exc)
            return
        flow.down.delivered += 1

    # -- flows -----------------------------------------------------------------------------

    def _open_flow(self, client: Any) -> _Flow | None:
        if len(self._flows) >= self.max_flows:
            self.flows_refused += 1
            return None
        sock = _udp_socket(self._upstream_family)
        try:
            sock.connect(self._upstream_addr)
        except OSError as exc:
            sock.close()
            self._errors["uplink"] += 1
            log.warning("cannot open a flow to %s: %s", self._upstream_addr, exc)
            return None
        now = time.monotonic()
        up_rng, down_rng = self._rng.spawn(2)
        flow = _Flow(
            client,
            sock,
            Direction(Link(self.profile.uplink, up_rng, start=now), self._up),
            Direction(Link(self.profile.downlink, down_rng, start=now), self._down),
        )
        self._flows[client] = flow
        self.flows_started += 1
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._read_upstream, flow)
        return flow

    def _close_flow(self, flow: _Flow) -> None:
        flow.closed = True
        self._flows.pop(flow.client, None)
        for name, direction in (("uplink", flow.up), ("downlink", flow.down)):
            self._retired[name] = _merge(self._retired[name], _direction_counts([direction]))
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(flow.sock.fileno())
        flow.sock.close()

    def _expire(self) -> None:
        deadline = time.monotonic() - self.idle_timeout
        for flow in [f for f in self._flows.values() if f.last_seen < deadline]:
            log.debug("flow %s idle for %g s: closed", flow.client, self.idle_timeout)
            self._close_flow(flow)
        assert self._loop is not None
        self._expiry = self._loop.call_later(self._expiry_period(), self._expire)

    def _expiry_period(self) -> float:
        return min(max(self.idle_timeout / 4, 0.05), 5.0)


def _udp_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    return sock


def _zero() -> dict[str, Any]:
    return {**link_counts([]), "delivered": 0, "discarded": 0}


def _direction_counts(directions: list[Direction]) -> dict[str, Any]:
    counts = link_counts(d.link for d in directions)
    counts["delivered"] = sum(d.delivered for d in directions)
    counts["discarded"] = sum(d.discarded for d in directions)
    return counts


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key, value in a.items():
        merged[key] = _merge(value, b[key]) if isinstance(value, dict) else value + b[key]
    return merged
