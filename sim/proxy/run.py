"""What ``qoe netem proxy`` runs: load the profile, resolve the addresses, relay until cancelled.

The command line parses and range-checks ``HOST:PORT`` (``qoe.cli.common.address``), so a bad
address is a usage error before anything is loaded; what is left here can only be found by
trying: a name that does not resolve, an address that cannot be bound.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

import numpy as np

from qoe.errors import ConfigError
from sim.profiles import load_profile

from .tcp import TcpProxy
from .udp import UdpProxy

__all__ = ["hostport", "run_proxy"]

Address = tuple[str, int]


def hostport(address: Address) -> str:
    """``(host, port)`` as ``host:port``, ``[v6]:port`` for an IPv6 host."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run_proxy(
    listen: Address,
    to: Address,
    profile_name: str,
    udp: bool,
    seed: int | None,
    on_ready: Callable[[UdpProxy | TcpProxy], None] | None = None,
) -> None:
    """Relay ``listen`` -> ``to`` (``(host, port)``; port 0 in ``listen`` takes any free
    one) through profile ``profile_name`` until cancelled.

    ``udp`` picks :class:`~sim.proxy.udp.UdpProxy` (else :class:`~sim.proxy.tcp.TcpProxy`);
    ``seed`` seeds the links (None: fresh entropy). ``on_ready`` is called with the started
    proxy (its ``address`` is the bound one, its ``stats()`` the counters). An unknown
    profile, or an address that cannot be bound or resolved, raises
    :class:`~qoe.errors.ConfigError` with a one-line message.
    """
    profile = load_profile(profile_name)
    loop = asyncio.get_running_loop()
    for flag, (host, port) in (("--listen", listen), ("--to", to)):
        try:
            await loop.getaddrinfo(host, port)
        except socket.gaierror as exc:
            raise ConfigError(f"{flag}: cannot resolve {host!r}: {exc.strerror}") from None
    rng = np.random.default_rng(seed)
    proxy = UdpProxy(listen, to, profile, rng) if udp else TcpProxy(listen, to, profile, rng)
    try:
        await proxy.start()
    except OSError as exc:
        await proxy.stop()
        raise ConfigError(_start_error(exc, hostport(listen))) from None
    try:
        if on_ready is not None:
            on_ready(proxy)
        await asyncio.Event().wait()
    finally:
        await proxy.stop()


def _start_error(exc: OSError, listen: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"--listen: {listen} is already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--listen: {listen} is not an address of this machine"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"--listen: not allowed to bind {listen}"
    return f"cannot start the proxy on {listen}: {exc.strerror or exc}"
