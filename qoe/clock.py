"""The one place time comes from.

Probes stamp events with :func:`monotonic` (for intervals: join phases, freezes) and
:func:`wall` (Unix seconds, for glass-to-glass latency against the sender's capture time in the
test signal). Tests that need exact ground truth replace the functions through
:func:`use_clock` instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["monotonic", "use_clock", "wall"]

_monotonic: Callable[[], float] = time.perf_counter
_wall: Callable[[], float] = time.time


def monotonic() -> float:
    """Seconds on a clock that never jumps; only differences mean anything."""
    return _monotonic()


def wall() -> float:
    """Wall-clock time in Unix seconds."""
    return _wall()


@contextmanager
def use_clock(monotonic: Callable[[], float], wall: Callable[[], float]) -> Iterator[None]:
    """Replace both clocks for the duration of a ``with`` block (tests only)."""
    global _monotonic, _wall
    saved = _monotonic, _wall
    _monotonic, _wall = monotonic, wall
    try:
        yield
    finally:
        _monotonic, _wall = saved
