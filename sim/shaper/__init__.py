"""In-process shaping of an aiortc peer's own UDP traffic, both directions, no root needed.

Inside ``with shaping(profile, rng) as shaper:`` every UDP socket aioice creates while
gathering candidates sends through ``profile.uplink`` and receives through
``profile.downlink`` (:class:`~sim.netem.Link` each), STUN/ICE included. ``shaper.stats()``
reports what each direction sent, dropped (by reason), delivered, and how far the timers
missed the planned departures. How aioice is hooked, and what that depends on, is in
:mod:`sim.shaper.aioice_hook`.

The pieces are reused by :mod:`sim.proxy`: :class:`Direction` (link + scheduler, the whole
per-packet path) and :class:`Scheduler` (batched, timer-driven delivery with its
:class:`Lateness` record).
"""

from __future__ import annotations

from .aioice_hook import current_shaper, shaping
from .direction import Direction, link_counts
from .shaper import Shaper, direction_stats
from .timing import DEFAULT_BATCH, LOOP_TIMER_EARLY, Lateness, Scheduler

__all__ = [
    "DEFAULT_BATCH",
    "LOOP_TIMER_EARLY",
    "Direction",
    "Lateness",
    "Scheduler",
    "Shaper",
    "current_shaper",
    "direction_stats",
    "link_counts",
    "shaping",
]
