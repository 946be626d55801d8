"""The UDP and TCP impairment relays (sim.proxy) on loopback: relaying, peers that vanish,
TCP loss as stalls, and the ``run_proxy`` entry point's bad input (a bad ``HOST:PORT`` is
the command line's to refuse: tests/test_cli.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

from qoe.errors import ConfigError
from sim.netem import LinkConfig
from sim.profiles import Profile, load_profile
from sim.proxy import QUEUE_WINDOW, TcpProxy, UdpProxy, hostport, run_proxy

LOCAL = ("127.0.0.1", 0)


def _profile(down: LinkConfig | None = None, up: LinkConfig | None = None) -> Profile:
    return Profile("test", "", "", down or LinkConfig(), up or LinkConfig())


class _Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.seen = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen += 1
        self.transport.sendto(data, addr)


@asynccontextmanager
async def udp_echo(port: int = 0) -> AsyncIterator[tuple[tuple[str, int], _Echo]]:
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", port))
    try:
        yield transport.get_extra_info("sockname")[:2], echo
    finally:
        transport.close()


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait(data)

    async def exchange(self, data: bytes, timeout: float = 1.0) -> bytes | None:
        self.transport.sendto(data)
        try:
            async with asyncio.timeout(timeout):
                return await self.replies.get()
        except TimeoutError:
            return None


async def udp_client(address: tuple[str, int]) -> _Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(_Client, remote_addr=address)
    return client


# -- UDP ---------------------------------------------------------------------------------


async def test_udp_relays_both_ways_through_the_links() -> None:
    profile = _profile(LinkConfig(delay=0.02), LinkConfig(delay=0.03))
    async with (
        udp_echo() as (upstream, _),
        UdpProxy(LOCAL, upstream, profile, np.random.default_rng(1)) as proxy,
    ):
        assert proxy.address[1] != 0
        client = await udp_client(proxy.address)
        started = time.monotonic()
        assert await client.exchange(b"one") == b"one"
        assert time.monotonic() - started >= 0.0495
        for i in range(20):
            assert await client.exchange(b"%d" % i) == b"%d" % i
        stats = proxy.stats()
        client.transport.close()
    assert stats["flows"] == 1
    for direction in ("uplink", "downlink"):
        assert stats[direction]["sent"] == stats[direction]["delivered"] == 21
        assert stats[direction]["scheduling_error"]["count"] == 21


async def test_udp_survives_upstream_down_and_serves_it_again() -> None:
    async with udp_echo() as (upstream, _):
        pass  # the port is free again: nothing listens there now
    async with UdpProxy(LOCAL, upstream, _profile(), np.random.default_rng(1)) as proxy:
        client = await udp_client(proxy.address)
        for _ in range(5):  # ICMP port unreachable comes back as ECONNREFUSED on the flow
            assert await client.exchange(b"anyone?", timeout=0.05) is None
        assert proxy.stats()["uplink"]["send_errors"] >= 1
        async with udp_echo(upstream[1]) as (_, echo):
            assert await client.exchange(b"back") == b"back"
            assert echo.seen == 1
        client.transport.close()


async def test_udp_client_vanishing_leaves_other_flows_alone() -> None:
    async with (
        udp_echo() as (upstream, _),
        UdpProxy(
            LOCAL,
            upstream,
            _profile(LinkConfig(delay=0.005)),
            np.random.default_rng(1),
            idle_timeout=0.2,
        ) as proxy,
    ):
        stays = await udp_client(proxy.address)
        leaves = await udp_client(proxy.address)
        assert await leaves.exchange(b"bye") == b"bye"
        # Replies in flight to a socket that is gone, then the flow goes idle.
        leaves.transport.sendto(b"x" * 100)
        leaves.transport.sendto(b"x" * 100)
        leaves.transport.close()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert await stays.exchange(b"still here") == b"still here"
            await asyncio.sleep(0.02)
        stats = proxy.stats()
        stays.transport.close()
    assert stats["flows_started"] == 2
    assert stats["flows"] == 1  # the vanished client's flow expired


# -- TCP ---------------------------------------------------------------------------------


@asynccontextmanager
async def tcp_source(payload: bytes) -> AsyncIterator[tuple[str, int]]:
    """A server that sends ``payload`` to each client and closes."""

    async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()


async def fetch(address: tuple[str, int]) -> tuple[bytes, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(*address)
    data = await reader.read()
    elapsed = time.monotonic() - started
    writer.close()
    return data, elapsed


@pytest.mark.alone  # the clean transfer is timed against the emulated rate
async def test_tcp_loss_shows_as_stalls_never_as_corruption() -> None:
    payload = os.urandom(1_000_000)  # 0.4 s at 20 Mbit/s
    clean = _profile(LinkConfig(delay=0.01, rate=20e6), LinkConfig(delay=0.01))
    lossy = _profile(LinkConfig(delay=0.01, rate=20e6, loss=0.01), LinkConfig(delay=0.01))
    async with tcp_source(payload) as upstream:
        async with TcpProxy(LOCAL, upstream, clean, np.random.default_rng(5)) as proxy:
            data, base = await fetch(proxy.address)
        assert data == payload
        assert 0.4 <= base < 0.6
        async with TcpProxy(LOCAL, upstream, lossy, np.random.default_rng(5)) as proxy:
            data, slow = await fetch(proxy.address)
            await asyncio.sleep(0.05)
            stats = proxy.stats()
    assert data == payload  # intact and in order
    down = stats["downlink"]
    assert down["stalls"] >= 2
    assert stats["rto_seconds"] == pytest.approx(0.2)
    # Each stall holds the stream for one RTO, less what was already queued (at most the
    # pump's queue window) when the chunk was lost.
    extra = slow - base
    low = down["stalled_seconds"] - down["stalls"] * QUEUE_WINDOW - 0.1
    assert low <= extra <= down["stalled_seconds"] + 0.1, (extra, down)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Vanish with a TCP RST, as a crashed peer's kernel sends."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_tcp_peer_reset_mid_stream_spares_other_connections() -> None:
    payload = os.urandom(300_000)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        if request == b"reset\n":
            writer.write(payload[:50_000])
            await writer.drain()
            _reset(writer)  # the server crashes mid-stream
            return
        writer.write(payload)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    profile = _profile(LinkConfig(delay=0.01, rate=10e6), LinkConfig(delay=0.01))
    try:
        async with TcpProxy(
            LOCAL, server.sockets[0].getsockname()[:2], profile, np.random.default_rng(2)
        ) as proxy:

            async def client(request: bytes) -> tuple[bytes, bool]:
                reader, writer = await asyncio.open_connection(*proxy.address)
                writer.write(request)
                data = b""
                try:
                    while chunk := await reader.read(65536):
                        data += chunk
                except ConnectionResetError:
                    return data, True
                finally:
                    writer.close()
                return data, False

            async def vanishing_client() -> None:
                reader, writer = await asyncio.open_connection(*proxy.address)
                writer.write(b"whole\n")
                await reader.readexactly(10_000)
                _reset(writer)  # the client disappears mid-stream

            good, reset, _ = await asyncio.gather(client(b"whole\n"), client(b"reset\n"), vanishing_client())
            after = await client(b"whole\n")  # still serving
            await asyncio.sleep(0.2)
            stats = proxy.stats()
    finally:
        server.close()
    assert good == (payload, False) and after == (payload, False)
    # What the server sent before it crashed still arrives, then the reset.
    assert reset == (payload[:50_000], True)
    assert stats["resets"] == 2
    assert stats["open"] == 0


async def test_tcp_upstream_down_refuses_the_client_and_keeps_listening() -> None:
    async with tcp_source(b"") as upstream:
        pass
    async with TcpProxy(LOCAL, upstream, _profile(), np.random.default_rng(1)) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""
        writer.close()
        async with tcp_source(b"hello") as fresh:
            proxy.upstream = fresh
            data, _ = await fetch(proxy.address)
        stats = proxy.stats()
    assert data == b"hello"
    assert stats["failed_connects"] == 1


# -- run_proxy: what the CLI calls --------------------------------------------------------


async def test_run_proxy_refuses_unknown_profile() -> None:
    with pytest.raises(ConfigError, match="unknown profile 'moon'"):
        await run_proxy(LOCAL, ("127.0.0.1", 9), "moon", udp=False, seed=1, on_ready=None)


@pytest.mark.parametrize("udp", [True, False])
async def test_run_proxy_refuses_a_port_in_use(udp: bool) -> None:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if not udp:
            taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--listen: 127.0.0.1:{port} is already in use"):
            await run_proxy(("127.0.0.1", port), ("127.0.0.1", 9), "none", udp, 1, None)


async def test_run_proxy_serves_until_cancelled() -> None:
    ready: asyncio.Queue[Any] = asyncio.Queue()
    async with udp_echo() as (upstream, _):
        task = asyncio.create_task(run_proxy(LOCAL, upstream, "wifi", True, 3, ready.put_nowait))
        async with asyncio.timeout(5):
            proxy = await ready.get()
        client = await udp_client(proxy.address)
        assert await client.exchange(b"ping") == b"ping"
        client.transport.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert proxy.profile == load_profile("wifi")


def test_hostport_brackets_ipv6_hosts() -> None:
    assert hostport(("127.0.0.1", 8000)) == "127.0.0.1:8000"
    assert hostport(("::1", 5000)) == "[::1]:5000"
