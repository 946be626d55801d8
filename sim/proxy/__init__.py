"""Impairment relays for clients that cannot be shaped in-process (FFmpeg, browsers, tools).

:class:`UdpProxy` relays datagrams per client flow through a profile's uplink and downlink
:class:`~sim.netem.Link`; :class:`TcpProxy` relays byte streams, turning loss into the
stalls a retransmission causes. :func:`run_proxy` is what ``qoe netem proxy`` runs.

:mod:`sim.proxy.check` (``qoe netem check``) measures a profile through a :class:`UdpProxy` on
loopback against what the link model predicts; it sits here, at the top of the emulation,
because it drives the proxy and the shaper's scheduler.
"""

from __future__ import annotations

from .run import hostport, run_proxy
from .tcp import CHUNK_BYTES, MIN_RTO, QUEUE_WINDOW, TcpProxy, retransmission_timeout
from .udp import READ_BURST, UdpProxy

__all__ = [
    "CHUNK_BYTES",
    "MIN_RTO",
    "QUEUE_WINDOW",
    "READ_BURST",
    "TcpProxy",
    "UdpProxy",
    "hostport",
    "retransmission_timeout",
    "run_proxy",
]
