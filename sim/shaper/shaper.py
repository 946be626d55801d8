"""A :class:`Shaper`: one profile applied to one peer's UDP traffic, with its counters.

The shaper owns two :class:`~sim.shaper.direction.Direction`: ``uplink`` (what the peer
sends: the profile's uplink, client to server) and ``downlink`` (what it receives: the
profile's downlink). Every socket created under the same :func:`~sim.shaper.shaping` context
shares these two, as one host's traffic shares its access link. It does no I/O itself; the
aioice hook (:mod:`sim.shaper.aioice_hook`) feeds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.netem import Link
from sim.profiles import Profile

from .direction import Direction, link_counts
from .timing import DEFAULT_BATCH, Scheduler

__all__ = ["Shaper"]


class Shaper:
    """Both directions of ``profile`` for one peer.

    ``rng`` is split into one independent stream per direction (``rng.spawn(2)``), so each
    direction's random fates do not depend on how the other's traffic interleaves. The
    links' time origin (outages, schedule steps, traces) is ``start``, by default the
    moment the shaper is built, i.e. when the :func:`~sim.shaper.shaping` context is entered.
    """

    def __init__(
        self,
        profile: Profile,
        rng: np.random.Generator,
        *,
        start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        batch: float = DEFAULT_BATCH,
    ) -> None:
        self.profile = profile
        self.start = clock() if start is None else start
        up_rng, down_rng = rng.spawn(2)
        self.uplink = Direction(
            Link(profile.uplink, up_rng, start=self.start),
            Scheduler(batch=batch, clock=clock),
            clock,
        )
        self.downlink = Direction(
            Link(profile.downlink, down_rng, start=self.start),
            Scheduler(batch=batch, clock=clock),
            clock,
        )
        self.sockets = 0
        """Sockets this shaper was applied to."""

    def stats(self) -> dict[str, Any]:
        """Counters per direction (``sent``, ``passed``, ``duplicated``, ``dropped`` by
        reason, ``delivered`` copies, ``discarded`` after close, ``pending``) and each
        direction's ``scheduling_error`` summary in seconds."""
        return {
            "profile": self.profile.name,
            "sockets": self.sockets,
            "uplink": direction_stats(self.uplink),
            "downlink": direction_stats(self.downlink),
        }

    def close(self) -> None:
        """Drop deliveries still pending and release the timers (the sockets are gone)."""
        for direction in (self.uplink, self.downlink):
            direction.discarded += direction.scheduler.close()


def direction_stats(direction: Direction) -> dict[str, Any]:
    """Counters of one direction (see :meth:`Shaper.stats`)."""
    scheduler = direction.scheduler
    return {
        **link_counts([direction.link]),
        "delivered": direction.delivered,
        "discarded": direction.discarded,
        "pending": scheduler.pending,
        "scheduling_error": scheduler.lateness.summary(),
    }
