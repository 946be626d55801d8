"""Deliver datagrams at their planned departure times on an asyncio loop, and measure how late.

:class:`Scheduler` keeps one heap of pending deliveries and one kernel timer armed for the
earliest. When it fires it runs everything due within ``batch`` seconds, so a burst of
packets costs one wake-up, not one per packet. :class:`Lateness` records each delivery's
scheduling error (actual delivery time minus planned departure, seconds) for reports.

The timer is a Linux timerfd (:mod:`.timerfd`) watched by the loop like a socket: it wakes
the loop within tens of microseconds of the planned time. asyncio's own timers cannot: they
end in ``epoll_wait`` with a millisecond timeout that asyncio rounds *up*, so they fire
0-1 ms late plus the wake-up latency. Where no timerfd is available (not Linux, or a clock
other than :func:`time.monotonic`), the scheduler falls back to ``loop.call_later`` armed
``early`` seconds ahead (default :data:`LOOP_TIMER_EARLY`), which centres that 0-1 ms error
near zero instead of near +0.5 ms and so keeps the mean delay unbiased.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from .timerfd import TimerFd, open_timerfd

__all__ = ["DEFAULT_BATCH", "LOOP_TIMER_EARLY", "Lateness", "Scheduler"]

log = logging.getLogger(__name__)

DEFAULT_BATCH = 0.0002
"""Seconds after a wake-up within which pending departures are delivered in the same call:
they would otherwise need a wake-up of their own, which takes about as long."""
LOOP_TIMER_EARLY = 0.0005
"""Without a timerfd: seconds before the earliest departure that the loop timer is armed."""


class Lateness:
    """Scheduling errors, seconds (positive = late), of the most recent ``keep`` deliveries.

    A plain estimator: :meth:`add` a sample, read :meth:`quantile`, :meth:`summary` and
    :attr:`count` (every sample ever added, not only the kept ones). The samples live in a
    preallocated ring of ``keep`` float64 (512 kB by default), so a long-lived shaper's
    memory stays bounded.
    """

    __slots__ = ("_buf", "_next", "count")

    def __init__(self, keep: int = 65_536) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self._buf = np.empty(keep, dtype=np.float64)
        self._next = 0
        self.count = 0

    def add(self, error: float) -> None:
        """Record one delivery's error in seconds (actual minus planned)."""
        self._buf[self._next] = error
        self._next += 1
        if self._next == self._buf.size:
            self._next = 0
        self.count += 1

    def samples(self) -> np.ndarray:
        """The kept samples (seconds), oldest first."""
        if self.count <= self._buf.size:
            return self._buf[: self.count].copy()
        return np.concatenate((self._buf[self._next :], self._buf[: self._next]))

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the kept samples, seconds; NaN when empty."""
        if not self.count:
            return math.nan
        return float(np.quantile(self.samples(), q))

    def summary(self) -> dict[str, float | int | None]:
        """``count`` and ``mean``/``p50``/``p99``/``max`` in seconds (None when empty)."""
        if not self.count:
            return {"count": 0, "mean": None, "p50": None, "p99": None, "max": None}
        arr = self.samples()
        p50, p99 = np.quantile(arr, [0.5, 0.99])
        return {
            "count": self.count,
            "mean": float(arr.mean()),
            "p50": float(p50),
            "p99": float(p99),
            "max": float(arr.max()),
        }


class Scheduler:
    """Runs ``callback(*args)`` at planned times on the running loop, batched, in time order.

    Times are seconds on ``clock``, by default :func:`time.monotonic` (the clock the kernel
    timer runs on; :func:`qoe.clock.monotonic` reads the same clock on Linux). Entries with
    equal times run in the order they were added. A callback that raises is logged and
    counted in :attr:`failures`; the others still run. :attr:`ran` counts callbacks run,
    :attr:`lateness` records their scheduling errors. One scheduler serves one event loop;
    :meth:`close` releases its timer (garbage collection does too).
    """

    def __init__(
        self,
        *,
        batch: float = DEFAULT_BATCH,
        early: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        lateness: Lateness | None = None,
        timerfd: bool = True,
    ) -> None:
        if batch < 0 or (early is not None and early < 0):
            raise ValueError("early and batch must be >= 0")
        self._tfd: TimerFd | None = open_timerfd() if timerfd and clock is time.monotonic else None
        if self._tfd is not None:
            weakref.finalize(self, self._tfd.close)
        self._early = early if early is not None else (0.0 if self._tfd else LOOP_TIMER_EARLY)
        self._batch = batch
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0
        self._handle: asyncio.TimerHandle | None = None
        self._watching = False
        self._closed = False
        self._running = False
        self._armed_for = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lateness = lateness if lateness is not None else Lateness()
        self.ran = 0
        self.failures = 0

    @property
    def precise(self) -> bool:
        """True when a timerfd drives the wake-ups (else loop timers)."""
        return self._tfd is not None

    @property
    def pending(self) -> int:
        """Deliveries not yet run."""
        return len(self._heap)

    def at(self, when: float, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` at ``when`` (on the scheduler's clock); needs a running loop.

        A delivery already due with nothing pending before it runs at once, inside this call:
        an unimpaired link (profile ``none``) then costs no timer and no wake-up. Not from
        inside a callback, though: a callback that plans the next one (a paced sender) would
        then recurse once per delivery due, and a loop held for a few hundred milliseconds
        leaves more due than Python's stack holds; it goes in the queue, and runs in turn.
        """
        if self._closed:
            return
        if not self._heap and not self._running and when <= self._clock():
            self.lateness.add(self._clock() - when)
            self.ran += 1
            self._running = True
            try:
                callback(*args)
            finally:
                self._running = False
            return
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, callback, args))
        if when < self._armed_for:
            self._arm(when)

    def clear(self) -> int:
        """Forget every pending delivery; return how many there were."""
        dropped = len(self._heap)
        self._heap.clear()
        self._disarm()
        return dropped

    def close(self) -> int:
        """:meth:`clear`, and release the timer; later deliveries are dropped unrun."""
        self._closed = True
        dropped = self.clear()
        if self._tfd is not None:
            self._tfd.close()
        return dropped

    def _arm(self, when: float) -> None:
        self._armed_for = when
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        tfd = self._tfd
        if tfd is not None:
            if not self._watching:
                loop.add_reader(tfd.fd, self._on_timerfd)
                self._watching = True
            tfd.arm(when - self._early)
            return
        if self._handle is not None:
            self._handle.cancel()
        delay = when - self._early - self._clock()
        self._handle = loop.call_later(delay if delay > 0.0 else 0.0, self._fire)

    def _disarm(self) -> None:
        """Stop the timer; with a timerfd, also stop watching it so the loop holds no
        reference to an idle scheduler."""
        self._armed_for = math.inf
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._watching and self._loop is not None and self._tfd is not None:
            self._tfd.disarm()
            if not self._loop.is_closed():
                self._loop.remove_reader(self._tfd.fd)
            self._watching = False

    def _on_timerfd(self) -> None:
        assert self._tfd is not None
        if self._tfd.clear():
            self._fire()

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = math.inf
        heap = self._heap
        clock = self._clock
        record = self.lateness.add
        horizon = clock() + self._batch
        self._running = True
        try:
            while heap and heap[0][0] <= horizon:
                when, _, callback, args = heapq.heappop(heap)
                record(clock() - when)
                self.ran += 1
                try:
                    callback(*args)
                except Exception:
                    self.failures += 1
                    log.exception("delivery callback %r failed", callback)
        finally:
            self._running = False
        if not heap:
            self._disarm()
        elif heap[0][0] < self._armed_for:
            self._arm(heap[0][0])
