"""The way to the server: direct, or through the TCP impairment proxy for ``--profile``.

FFmpeg opens its own sockets, so a network profile cannot be applied to them in-process as
it is to aiortc's. Instead a :class:`~sim.proxy.TcpProxy` is started on a free loopback port
for the probe's run, relaying to the server through the profile's links, and FFmpeg is
pointed at the proxy: the URL's host and port are rewritten, and an HTTP request keeps the
server's name in its ``Host`` header. Every connection the probe opens (an RTMP session, each
HLS playlist and segment request) goes through the proxy. HLS segments named by absolute URL
on another host would bypass it.

The proxy terminates TCP, so the connect and the TCP handshake itself are not delayed by the
profile; everything after them is (see :mod:`sim.proxy.tcp`).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

import numpy as np

from probes.base import ProbeSpec
from probes.ffmpeg.failures import connect_error
from probes.ffmpeg.target import endpoint, with_endpoint
from sim.proxy import TcpProxy

__all__ = ["Route", "tcp_connect"]


class Route:
    """``async with Route(spec) as route:`` then open ``route.url``; ``route.stats`` after."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.spec = spec
        self.url = spec.url
        self.host_header: str | None = None
        """The Host an HTTP request through the proxy must name (None when direct)."""
        self.stats: dict[str, Any] = {}
        """The proxy's counters once closed (empty when direct)."""
        self._proxy: Any = None

    async def __aenter__(self) -> Route:
        profile = self.spec.network()
        if profile is None:
            return self
        host, port = endpoint(self.spec.url)
        proxy = TcpProxy(("127.0.0.1", 0), (host, port), profile, np.random.default_rng(self.spec.seed))
        await proxy.start()
        self._proxy = proxy
        self.url = with_endpoint(self.spec.url, *proxy.address)
        self.host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the proxy (cutting its connections, which also ends any read blocked on them)."""
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            self.stats = proxy.stats()
            await proxy.stop()


async def tcp_connect(host: str, port: int, timeout: float) -> None:
    """A TCP connect of our own, closed at once: the ``connect`` phase, and a server that is
    down or unreachable reported as such before FFmpeg starts."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        raise connect_error(exc, host, port) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
