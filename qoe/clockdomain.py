"""Which clocks a glass-to-glass figure subtracts, and whether the difference is sound.

Glass-to-glass latency is the viewer's wall clock at render minus the publisher's wall clock at
capture (the time in the test signal's code). Both clocks are one when publisher and viewer run
on the same host; on two hosts the figure carries their clock offset, which NTP keeps within a
few milliseconds on a LAN and tens of milliseconds over the Internet, and an unsynchronised
host can be off by seconds. So every result says which case it is (``latency.clock_domain``):

- ``same_host``: the target is on this machine (a loopback or local address), so its publisher
  is taken to be too, as with the embedded room's built-in host. A remote publisher feeding a
  local server is the one case this cannot see: pass its offset.
- ``synchronised``: the user gave the publisher's clock offset (publisher minus this host, in
  seconds, as ``chronyc tracking`` or ``ntpq -p`` on both hosts gives it, or PTP), and the
  figure is corrected by it.
- ``unknown``: a remote target with no offset given; the figure is reported as measured and
  includes whatever the two clocks differ by.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import cache
from urllib.parse import urlsplit

__all__ = ["SAME_HOST", "SYNCHRONISED", "UNKNOWN", "clock_domain", "is_local_host"]

SAME_HOST, SYNCHRONISED, UNKNOWN = "same_host", "synchronised", "unknown"


@cache
def _local_addresses() -> frozenset[str]:
    addresses = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(info[4][0]))
    except OSError:
        pass
    return frozenset(addresses)


def is_local_host(host: str) -> bool:
    """Whether ``host`` (a name or address) is this machine."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host in (socket.gethostname(), socket.getfqdn())
    return address.is_loopback or str(address) in _local_addresses()


def clock_domain(url: str, clock_offset: float | None) -> str:
    """The clock domain of a probe of ``url`` given the publisher's offset (None: not given)."""
    if clock_offset is not None:
        return SYNCHRONISED
    return SAME_HOST if is_local_host(urlsplit(url).hostname or "") else UNKNOWN
