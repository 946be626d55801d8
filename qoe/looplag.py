"""How late the event loop runs: the probe host's own share of what a probe measures.

A probe stamps frame arrivals, join milestones and chat echoes when its event loop gets to
them. A loop held up by other work (more probes than the cores can carry, a slow callback)
stamps them late, and a hold-up of 150 ms between two frames at 30 fps is a W3C freeze by
itself (gap >= avg + 150 ms). So each probe run also reports how late its loop ran while it
watched: a ticker wakes every :data:`TICK_SECONDS` and records how late it woke, and every
run open on that loop collects the lateness over its own window. A hold-up of H reads as
between H - TICK_SECONDS (it began just before a tick was due) and H.

A loop can also keep its timers while the machine falls behind: with every core busy, each
process waits its turn for one, packets queue in the kernel, and glass-to-glass grows with no
single long hold-up. So a window also reads how busy the machine's CPUs were (``/proc/stat``,
once a second): 50 viewers beside the room on 2 cores held at 72 % busy, and froze at 87 %
and 92 %.

One ticker runs per event loop, while at least one window is open on it. A long-lived server
(the embedded room) opens a window that keeps no samples, only its stalls: the ticks that
came more than :data:`OVERLOAD_SECONDS` late.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from qoe import clock, metrics
from qoe.metrics import CPU_BUSY_OVERLOAD, OVERLOAD_SECONDS, overloaded
from qoe.timeline import CpuReading, LoopTick

__all__ = [
    "CPU_BUSY_OVERLOAD",
    "OVERLOAD_SECONDS",
    "TICK_SECONDS",
    "LagWindow",
    "cpu_times",
    "keep_heap_settled",
    "open_window",
    "overloaded",
    "settle_heap",
]

TICK_SECONDS = 0.05
"""How often the ticker wakes: 20 readings a second, each a cheap timer."""

CPU_READ_TICKS = 20
"""Ticks between readings of the machine's CPU times (one a second)."""


def cpu_times() -> tuple[int, int, int] | None:
    """(busy, total, stolen) CPU time of the whole machine in clock ticks; None off Linux.

    Busy is everything but idle and I/O wait; time stolen by a hypervisor counts as busy,
    since it was not ours to use, and is also given on its own: a virtual machine whose
    host runs other guests loses its CPUs for milliseconds at a time while it looks idle
    inside. In a container, ``/proc/stat`` is the node's: the ratio then says how busy the
    node was, not how close the container is to its CPU limit.
    """
    try:
        with open("/proc/stat", "rb") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    total = sum(fields)
    stolen = fields[7] if len(fields) > 7 else 0
    return total - fields[3] - fields[4], total, stolen


class LagWindow:
    """The loop's lateness over one probe run, from :func:`open_window` to :meth:`close`."""

    def __init__(
        self,
        ticker: _Ticker,
        *,
        keep_samples: bool = True,
        on_stall: Callable[[float, float], None] | None = None,
    ) -> None:
        self._ticker = ticker
        self._keep_samples = keep_samples
        self._on_stall = on_stall
        self.samples: list[tuple[float, float]] = []
        """(:func:`qoe.clock.monotonic` time, lateness in seconds) of every tick (none without
        ``keep_samples``)."""
        self.stalls: deque[tuple[float, float]] = deque(maxlen=1000)
        """(Unix time, lateness) of the ticks more than OVERLOAD_SECONDS late, the latest 1000."""
        first = cpu_times()
        self.cpu: list[tuple[float, int, int, int, float]] = (
            [] if first is None else [(clock.monotonic(), *first, time.thread_time())]
        )
        """(clock.monotonic() time, busy, total, stolen, loop): the machine's CPU times and the
        CPU seconds of the loop's own thread, read once a second (on the loop's thread)."""
        self._open = True

    def add(self, now: float, lag: float) -> None:
        if self._keep_samples:
            self.samples.append((now, lag))
        if lag > OVERLOAD_SECONDS:
            at = time.time()
            self.stalls.append((at, lag))
            if self._on_stall is not None:
                self._on_stall(at, lag)

    def close(self, until: float | None = None) -> dict[str, float | None]:
        """Stop collecting; return p50, p95 and max lateness in seconds (None: no reading).

        ``until`` (:func:`qoe.clock.monotonic` time) leaves out the ticks after it: a probe's
        teardown, which measures nothing.
        """
        if self._open:
            self._open = False
            self._ticker.remove(self)
            if (last := cpu_times()) is not None:
                self.cpu.append((clock.monotonic(), *last, time.thread_time()))
        q = metrics.quantiles([lag for at, lag in self.samples if until is None or at <= until])
        return {"p50": q.p50, "p95": q.p95, "max": q.max} if q else {"p50": None, "p95": None, "max": None}

    def cpu_busy(self, until: float | None = None) -> float | None:
        """Share of the machine's CPU time that was busy from the window's start to ``until``
        (the last reading before it); None without two readings a tick apart."""
        return metrics.cpu_busy(self.cpu_readings(), until)

    def cpu_stolen(self, until: float | None = None) -> float | None:
        """Share of the machine's CPU time a hypervisor took for other guests, as :meth:`cpu_busy`."""
        return metrics.cpu_stolen(self.cpu_readings(), until)

    def loop_ticks(self) -> list[LoopTick]:
        """The ticks as events of a run's log."""
        return [LoopTick(at, late) for at, late in self.samples]

    def cpu_readings(self) -> list[CpuReading]:
        """The CPU readings as events of a run's log."""
        return [CpuReading(at, busy, total, stolen, loop) for at, busy, total, stolen, loop in self.cpu]


class _Ticker:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._windows: list[LagWindow] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, window: LagWindow) -> None:
        self._windows.append(window)
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name="qoe-loop-lag")

    def remove(self, window: LagWindow) -> None:
        with contextlib.suppress(ValueError):
            self._windows.remove(window)
        if not self._windows and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        loop = self._loop
        due = loop.time() + TICK_SECONDS
        ticks = 0
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            lag = max(0.0, now - due)
            stamp = clock.monotonic()
            ticks += 1
            reading = cpu_times() if ticks % CPU_READ_TICKS == 0 else None
            loop_cpu = time.thread_time() if reading is not None else 0.0
            for window in list(self._windows):
                window.add(stamp, lag)
                if reading is not None:
                    window.cpu.append((stamp, *reading, loop_cpu))
            due = now + TICK_SECONDS


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticker] = weakref.WeakKeyDictionary()


def open_window(
    *, keep_samples: bool = True, on_stall: Callable[[float, float], None] | None = None
) -> LagWindow:
    """Start collecting the running loop's lateness (for one probe run, or a server's life).

    ``on_stall(unix_time, lateness)`` is called for each tick more than OVERLOAD_SECONDS late.
    """
    loop = asyncio.get_running_loop()
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = _Ticker(loop)
    window = LagWindow(ticker, keep_samples=keep_samples, on_stall=on_stall)
    ticker.add(window)
    return window


_settled = False


def settle_heap() -> None:
    """Leave the objects made so far out of the garbage collector's full passes (once).

    A full pass of CPython's collector scans every tracked object and holds the event loop
    while it does: with 25 viewers in a process its passes took up to 40 ms, and in the test
    suite's process, crowded by earlier tests, up to 198 ms, a freeze in itself. Modules,
    codec tables and configuration made before the first probe or room starts live as long as
    the process, so they are frozen out of the scans (``gc.freeze``); with 25 viewers the
    worst pass fell to 18 ms and the worst loop lag from 57 to 33 ms. A program calls it once,
    after loading what it runs and before timing media (the ``qoe`` commands that run
    probes or rooms, the benchmarks); the library never does it behind a caller's back.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()


REFREEZE_SECONDS = 2.0
"""How often :func:`keep_heap_settled` freezes what the collector's passes would scan."""


def keep_heap_settled(every: float = REFREEZE_SECONDS) -> None:
    """Freeze the heap out of the collector's full passes again every ``every`` seconds, for
    the life of the process (from a daemon thread; once per process).

    A fleet worker's viewers add objects as they watch (the records of every frame, their
    peers' state) and keep them to the end of the run, so its full passes scan a heap that
    only grows: with 200 light viewers in a process one took 284 ms, a freeze for every viewer
    at once. Frozen every few seconds, a pass scans only what was made since. The price: a
    reference cycle that becomes garbage after it was frozen is not collected while the
    process lives. A process that runs one fleet's share of probes and exits pays little of
    it; a long-lived server (the room) should not use this."""
    global _refreezing
    if _refreezing:
        return
    _refreezing = True

    def run() -> None:
        while True:
            time.sleep(every)
            gc.freeze()

    threading.Thread(target=run, name="heap-refreeze", daemon=True).start()


_refreezing = False
