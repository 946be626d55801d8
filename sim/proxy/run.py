"""What ``qoe netem proxy`` runs: parse the addresses, load the profile, relay until cancelled."""

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

__all__ = ["parse_address", "run_proxy"]


def parse_address(text: str, what: str = "address") -> tuple[str, int]:
    """``"H:P"`` (``"[v6]:P"`` for IPv6) as ``(host, port)``; ConfigError naming ``what``."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{what}: put an IPv6 host in brackets, as [::1]:PORT, got {text!r}")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{what}: expected HOST:PORT with a port 0-65535, got {text!r}")
    return host, int(port_text)


async def run_proxy(
    listen: str,
    to: str,
    profile_name: str,
    udp: bool,
    seed: int | None,
    on_ready: Callable[[UdpProxy | TcpProxy], None] | None = None,
) -> None:
    """Relay ``listen`` -> ``to`` through profile ``profile_name`` until cancelled.

    ``udp`` picks :class:`~sim.proxy.udp.UdpProxy` (else :class:`~sim.proxy.tcp.TcpProxy`);
    ``seed`` seeds the links (None: fresh entropy). ``on_ready`` is called with the started
    proxy (its ``address`` is the bound one, its ``stats()`` the counters). Bad addresses,
    an unknown profile, or an address that cannot be bound or resolved raise
    :class:`~qoe.errors.ConfigError` with a one-line message.
    """
    listen_addr = parse_address(listen, "--listen")
    upstream = parse_address(to, "--to")
    if upstream[1] == 0:
        raise ConfigError(f"--to: port must be 1-65535, got {to!r}")
    profile = load_profile(profile_name)
    loop = asyncio.get_running_loop()
    for flag, (host, port) in (("--listen", listen_addr), ("--to", upstream)):
        try:
            await loop.getaddrinfo(host, port)
        except socket.gaierror as exc:
            raise ConfigError(f"{flag}: cannot resolve {host!r}: {exc.strerror}") from None
    rng = np.random.default_rng(seed)
    proxy: UdpProxy | TcpProxy
    if udp:
        proxy = UdpProxy(listen_addr, upstream, profile, rng)
    else:
        proxy = TcpProxy(listen_addr, upstream, profile, rng)
    try:
        await proxy.start()
    except OSError as exc:
        await proxy.stop()
        raise ConfigError(_start_error(exc, listen)) from None
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
