"""Pure, seeded link model: delay, jitter, loss, burst loss, capacity, queues, traces, outages.

No sockets, no asyncio, no clock: a :class:`Link` answers "a packet of this size arrives
now; when does it leave?" from its :class:`LinkConfig` and a ``numpy.random.Generator``
the caller passes in. The in-process shaper and the proxy apply the answers; the
fidelity tests check them with :func:`simulate`.

Example::

    link = Link(LinkConfig(delay=0.05, loss=0.01, rate=2_000_000), np.random.default_rng(7))
    departures = link.send(t=0.0, size=1200)   # [] if dropped
"""

from __future__ import annotations

from .batch import Fates, simulate
from .config import JITTER_DISTRIBUTIONS, SCHEDULABLE, JitterDistribution, LinkConfig
from .link import DropReason, Link
from .trace import OPPORTUNITY_BYTES, Trace, load_trace, parse_trace

__all__ = [
    "JITTER_DISTRIBUTIONS",
    "OPPORTUNITY_BYTES",
    "SCHEDULABLE",
    "DropReason",
    "Fates",
    "JitterDistribution",
    "Link",
    "LinkConfig",
    "Trace",
    "load_trace",
    "parse_trace",
    "simulate",
]
