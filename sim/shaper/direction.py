"""One direction of a shaped path: a :class:`~sim.netem.Link` deciding, a scheduler delivering.

:meth:`Direction.offer` is the whole per-packet path of both the in-process shaper and the
UDP proxy: stamp the arrival, ask the link for the departures (none if dropped, two if
duplicated) and hand each one to the :class:`~sim.shaper.timing.Scheduler`, which calls the
real send (or receive) at that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from sim.netem import DropReason, Link

from .timing import Scheduler

__all__ = ["Direction", "link_counts"]


class Direction:
    """A :class:`~sim.netem.Link` plus the :class:`~.timing.Scheduler` that applies its answers.

    The scheduler may be shared by several directions (the proxy shares one per direction
    across its flows). ``clock`` must be the scheduler's clock. The delivering callbacks
    count what they handed on in :attr:`delivered` (duplicate copies included) and what they
    could not, because the socket had closed meanwhile, in :attr:`discarded`.
    """

    __slots__ = ("_clock", "_send", "delivered", "discarded", "link", "scheduler")

    def __init__(self, link: Link, scheduler: Scheduler, clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.scheduler = scheduler
        self._clock = clock
        self._send = link.send
        self.delivered = 0
        self.discarded = 0

    def offer(self, size: int, callback: Callable[..., Any], *args: Any) -> None:
        """A datagram of ``size`` bytes arrives now: run ``callback(*args)`` at each departure."""
        departures = self._send(self._clock(), size)
        if departures:
            at = self.scheduler.at
            for when in departures:
                at(when, callback, *args)


def link_counts(links: Iterable[Link]) -> dict[str, Any]:
    """Summed counters of ``links``: ``sent``, ``passed``, ``duplicated``, ``dropped`` by reason.

    ``passed`` is what the links let through (each packet once); what actually reached the
    socket is the direction's ``delivered`` count, which includes duplicate copies.
    """
    sent = passed = duplicated = 0
    dropped = {reason.name.lower(): 0 for reason in DropReason if reason}
    for link in links:
        sent += link.sent
        passed += link.delivered
        duplicated += link.duplicated
        for reason, count in link.dropped.items():
            dropped[reason.name.lower()] += count
    return {"sent": sent, "passed": passed, "duplicated": duplicated, "dropped": dropped}
