"""The per-packet link model: one direction of an emulated link, pure and seeded.

A :class:`Link` is a plain object with no I/O and no clock of its own: the caller says when
a packet arrives and gets back when it leaves. The same object drives the in-process shaper,
the UDP/TCP proxy and the fidelity tests (through :func:`sim.netem.batch.simulate`).

Order of effects, and why:

1. **Outage** - a dead link takes nothing, whatever its other state; checked first so an
   outage does not advance the burst-loss chain or occupy the queue.
2. **Loss** (random, or Gilbert-Elliott bursts) - before the bottleneck, so a lost packet
   takes no capacity and queue state cannot change the loss pattern: the configured loss
   rate is the measured one. It models loss on the access hop (radio, Wi-Fi) ahead of the
   bottleneck queue, as a packet erased there never reaches it.
3. **Capacity queue** - serialisation at ``rate``, or service at the trace's delivery
   opportunities; drop-tail when a queue bound would be exceeded. Congestion delay and
   congestion loss come from here.
4. **Propagation** - ``delay`` plus a jitter sample, per packet, after the queue (as
   netem's rate and delay compose), clamped so a packet never leaves before it was served
   and, unless ``reorder``, never before the packet ahead of it.
5. **Duplication** - last, so a copy takes no capacity and is never counted as lost; the
   copy gets its own jitter sample (with ``reorder`` it may arrive first).

Trace-driven capacity carries bytes across delivery opportunities as Mahimahi does: each
opportunity delivers up to 1500 bytes, a larger packet spans several, and what a packet
leaves unused in its last opportunity serves the next packet if that one is already queued.
Opportunities that pass while the queue is empty are lost (a link cannot bank capacity).

Simplifications, on purpose: an outage acts at the link's input (packets already queued
still leave on time); a schedule step applies to packets arriving from then on (packets
already queued keep the times computed when they arrived); with ``reorder=False`` the
no-overtaking clamp holds packets back, so the mean delay exceeds ``delay`` once packets are
spaced closer than the jitter (libwebrtc's SimulatedNetwork clamps the same way).

Performance: ``send`` runs per packet in the proxy (~20k packets/s) and costs 0.6-1.4 us
(measured on the development machine, CPython 3.11). It allocates only its return list;
random numbers come from blocks drawn from the generator 1024 at a time and kept as Python
floats; schedule steps and outages are found by cursors that only move forward (arrival
times never decrease), and a trace position by bisection only after the queue ran empty.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from enum import IntEnum

import numpy as np

from .config import LinkConfig
from .segments import Segment, merged_outages, segments
from .trace import OPPORTUNITY_BYTES

__all__ = ["DropReason", "Link"]

_BLOCK = 1024
_INF = math.inf
# Lomax (numpy's "pareto") with shape 3 has mean 1/2 and variance 3/4; standardising gives a
# zero-mean, unit-variance, right-skewed jitter variate.
_PARETO_SHAPE = 3.0
_PARETO_MEAN = 0.5
_PARETO_STD = math.sqrt(0.75)


class DropReason(IntEnum):
    """What happened to a packet (the ``reasons`` codes in :class:`~sim.netem.batch.Fates`)."""

    DELIVERED = 0
    OUTAGE = 1
    LOSS = 2
    BURST = 3
    QUEUE = 4


class Link:
    """One direction of an emulated link (see the module docstring for the model).

    ``start`` is the time origin, in the caller's clock, of ``outages``, ``schedule`` and the
    trace. Counters: ``sent`` (packets offered), ``delivered``, ``duplicated`` and
    ``dropped`` (by :class:`DropReason`).
    """

    __slots__ = (
        "_busy",
        "_config",
        "_counts",
        "_cursor",
        "_fate_reason",
        "_fate_served",
        "_ge_bad",
        "_jitter_kind",
        "_last_arrival",
        "_last_departure",
        "_next_change",
        "_opp",
        "_opp_used",
        "_out_end",
        "_out_index",
        "_out_start",
        "_outages",
        "_queue",
        "_queue_limit",
        "_queue_seconds",
        "_rng",
        "_seg",
        "_segments",
        "_start",
        "_trace_n",
        "_trace_period",
        "_trace_s",
        "_u",
        "_u_index",
        "_z",
        "_z_index",
        "duplicated",
        "sent",
    )

    def __init__(self, config: LinkConfig, rng: np.random.Generator, start: float = 0.0) -> None:
        self._config = config
        self._rng = rng
        self._start = float(start)
        self.sent = 0
        self.duplicated = 0
        self._counts = [0] * len(DropReason)
        self._last_arrival = -_INF
        self._last_departure = -_INF
        self._fate_reason = DropReason.DELIVERED
        self._fate_served = math.nan
        self._ge_bad = False
        self._u: list[float] = []
        self._u_index = 0
        self._z: list[float] = []
        self._z_index = 0
        self._jitter_kind = config.jitter_distribution

        self._segments = segments(config)
        self._cursor = 0
        self._seg = self._segments[0]
        self._next_change = self._segments[1].at if len(self._segments) > 1 else _INF

        self._outages = merged_outages(config)
        self._out_index = 0
        self._out_start, self._out_end = self._outages[0] if self._outages else (_INF, _INF)

        # Capacity: a trace, or a rate (possibly only from a schedule step), or neither.
        self._busy = -_INF
        self._trace_s: list[float] = []
        self._trace_n = 0
        self._trace_period = 0.0
        self._opp = 0
        self._opp_used = 0
        if config.trace is not None:
            self._trace_s = (config.trace.times_ms / 1000.0).tolist()
            self._trace_n = len(self._trace_s)
            self._trace_period = config.trace.period
        self._queue_limit = config.queue_packets or 0
        self._queue_seconds = config.queue_seconds if config.queue_seconds is not None else _INF
        self._queue: deque[float] = deque()

    @property
    def config(self) -> LinkConfig:
        """The configuration this link was built from."""
        return self._config

    @property
    def delivered(self) -> int:
        """Packets delivered at least once."""
        return self._counts[DropReason.DELIVERED]

    @property
    def dropped(self) -> dict[DropReason, int]:
        """Dropped packets by reason (every reason present, zero included)."""
        return {reason: self._counts[reason] for reason in DropReason if reason}

    def send(self, t: float, size: int) -> list[float]:
        """Offer a packet of ``size`` bytes arriving at ``t`` seconds; return its departures.

        ``t`` must not decrease from call to call. The result is empty for a dropped packet,
        one time for a delivered one, two (in departure order) for a duplicated one.
        """
        if t < self._last_arrival:
            raise ValueError(f"arrival times must not decrease: {t} after {self._last_arrival}")
        self._last_arrival = t
        self.sent += 1
        rel = t - self._start
        if rel >= self._next_change:
            self._advance_schedule(rel)
        seg = self._seg

        if rel >= self._out_end:
            self._advance_outages(rel)
        if rel >= self._out_start:
            return self._drop(DropReason.OUTAGE)

        if seg.loss_mode:
            u = self._uniform()
            if seg.loss_mode == 1:
                if u < seg.loss:
                    return self._drop(DropReason.LOSS)
            else:
                self._ge_bad = u < (seg.ge_stay if self._ge_bad else seg.ge_start)
                if self._ge_bad:
                    return self._drop(DropReason.BURST)

        served = self._serve(t, rel, size)
        if served < 0.0:
            return self._drop(DropReason.QUEUE)
        self._fate_reason = DropReason.DELIVERED
        self._fate_served = served
        self._counts[0] += 1

        departure = self._propagate(served, seg)
        if seg.dup and self._uniform() < seg.dup:
            self.duplicated += 1
            copy = self._propagate(served, seg)
            return [departure, copy] if departure <= copy else [copy, departure]
        return [departure]

    def _drop(self, reason: DropReason) -> list[float]:
        self._fate_reason = reason
        self._fate_served = math.nan
        self._counts[reason] += 1
        return []

    def _serve(self, t: float, rel: float, size: int) -> float:
        """Time the packet leaves the bottleneck, or -1.0 if drop-tail rejects it."""
        if self._trace_n:
            return self._serve_trace(t, rel, size)
        byte_time = self._seg.byte_time
        if self._busy == -_INF and not byte_time:
            return t  # no capacity limit has ever applied: skip the queue entirely
        queue = self._queue
        if self._queue_limit:
            while queue and queue[0] <= t:
                queue.popleft()
            if len(queue) >= self._queue_limit:
                return -1.0
        served = (self._busy if self._busy > t else t) + size * byte_time
        if served - t > self._queue_seconds:
            return -1.0
        self._busy = served
        if self._queue_limit:
            queue.append(served)
        return served

    def _serve_trace(self, t: float, rel: float, size: int) -> float:
        queue = self._queue
        if self._queue_limit:
            while queue and queue[0] <= t:
                queue.popleft()
            if len(queue) >= self._queue_limit:
                return -1.0
        n = self._trace_n
        period = self._trace_period
        k = self._opp
        used = self._opp_used
        loops, i = divmod(k, n)
        if loops * period + self._trace_s[i] < rel:
            # The queue ran empty: opportunities before this arrival went unused.
            loops = int(rel // period)
            i = bisect_left(self._trace_s, rel - loops * period)
            if i == n:
                loops, i = loops + 1, 0
            k = loops * n + i
            used = 0
        free = OPPORTUNITY_BYTES - used
        if size <= free:
            used += size
        else:
            rest = size - free
            spans = -(-rest // OPPORTUNITY_BYTES)
            k += spans
            used = rest - (spans - 1) * OPPORTUNITY_BYTES
        loops, i = divmod(k, n)
        served = self._start + loops * period + self._trace_s[i]
        if served < t:
            served = t  # float rounding of the loop offset; never leave before arrival
        if served - t > self._queue_seconds:
            return -1.0
        if used >= OPPORTUNITY_BYTES:
            k, used = k + 1, 0
        self._opp = k
        self._opp_used = used
        if self._queue_limit:
            queue.append(served)
        return served

    def _propagate(self, served: float, seg: Segment) -> float:
        departure = served + seg.delay
        if seg.jitter:
            departure += seg.jitter * self._standard_jitter()
            if departure < served:
                departure = served  # a propagation delay cannot be negative
        if not self._config.reorder:
            if departure < self._last_departure:
                departure = self._last_departure
            self._last_departure = departure
        return departure

    def _uniform(self) -> float:
        index = self._u_index
        if index >= len(self._u):
            self._u = self._rng.random(_BLOCK).tolist()
            index = 0
        self._u_index = index + 1
        return self._u[index]

    def _standard_jitter(self) -> float:
        """A zero-mean, unit-scale variate of the configured jitter distribution."""
        index = self._z_index
        if index >= len(self._z):
            self._z = self._draw_jitter_block().tolist()
            index = 0
        self._z_index = index + 1
        return self._z[index]

    def _draw_jitter_block(self) -> np.ndarray:
        if self._jitter_kind == "uniform":
            return self._rng.uniform(-1.0, 1.0, _BLOCK)
        if self._jitter_kind == "pareto":
            return (self._rng.pareto(_PARETO_SHAPE, _BLOCK) - _PARETO_MEAN) / _PARETO_STD
        return self._rng.standard_normal(_BLOCK)

    def _advance_schedule(self, rel: float) -> None:
        segments = self._segments
        cursor = self._cursor
        while cursor + 1 < len(segments) and segments[cursor + 1].at <= rel:
            cursor += 1
        self._cursor = cursor
        self._seg = segments[cursor]
        self._next_change = segments[cursor + 1].at if cursor + 1 < len(segments) else _INF

    def _advance_outages(self, rel: float) -> None:
        outages = self._outages
        index = self._out_index
        while index < len(outages) and outages[index][1] <= rel:
            index += 1
        self._out_index = index
        self._out_start, self._out_end = outages[index] if index < len(outages) else (_INF, _INF)
