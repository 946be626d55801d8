"""Fidelity of the capacity stage: serialisation at a rate, drop-tail queue bounds, and
trace-driven delivery opportunities (sim.netem.link, driven through sim.netem.simulate).

Capacity is measured as bytes leaving the bottleneck inside a window that starts after the
queue has filled, so the input saturates the link throughout; the promised tolerance is 3 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.netem import OPPORTUNITY_BYTES, DropReason, Link, LinkConfig, Trace, simulate

TRACES = Path(__file__).resolve().parent.parent / "sim" / "profiles" / "traces"


def _saturating(rate: float, size: int, seconds: float, factor: float = 1.5) -> np.ndarray:
    """Arrival times of ``size``-byte packets offered at ``factor`` x ``rate`` (bits/s)."""
    per_second = factor * rate / 8 / size
    return np.arange(int(per_second * seconds)) / per_second


def _throughput(served: np.ndarray, size: int, start: float, end: float) -> float:
    """Bits per second leaving the bottleneck in ``[start, end)``."""
    inside = (served >= start) & (served < end)
    return float(np.sum(inside) * size * 8 / (end - start))


@pytest.mark.parametrize("rate", [2e6, 20e6])
def test_rate_within_3_percent_under_saturation(rate: float) -> None:
    size = 1200
    times = _saturating(rate, size, seconds=6.0)
    config = LinkConfig(rate=rate, queue_packets=100)
    fates = simulate(config, times, size, np.random.default_rng(20))
    # The 100-packet queue fills within 1 s at 2 Mbit/s (0.1 s at 20): measure after that.
    assert _throughput(fates.served, size, 1.5, 6.0) == pytest.approx(rate, rel=0.03)
    # Over capacity by half: once the queue is full, a third of the packets are dropped.
    full = times >= 1.5
    assert np.mean(fates.reasons[full] == DropReason.QUEUE) == pytest.approx(1 / 3, abs=0.02)


def test_serialisation_time_is_exact() -> None:
    link = Link(LinkConfig(rate=1e6), np.random.default_rng(21))
    assert link.send(0.0, 1250) == [pytest.approx(0.010)]  # 10,000 bits at 1 Mbit/s
    assert link.send(0.0, 1250) == [pytest.approx(0.020)]  # waits behind the first
    assert link.send(1.0, 125) == [pytest.approx(1.001)]  # idle link: no backlog


def test_queue_packets_bound() -> None:
    size, rate, limit = 1000, 1e6, 20
    times = _saturating(rate, size, seconds=3.0, factor=2.0)
    config = LinkConfig(rate=rate, queue_packets=limit)
    fates = simulate(config, times, size, np.random.default_rng(22))
    assert np.any(fates.reasons == DropReason.QUEUE)
    kept = np.flatnonzero(fates.delivered)
    served = fates.served[kept]
    # At each admitted packet's arrival, fewer than `limit` earlier packets were still held.
    held = np.array([np.sum(served[:i] > times[j]) for i, j in enumerate(kept)])
    assert held.max() == limit - 1
    # Hence no packet stays longer than `limit` serialisation times.
    assert np.max(served - times[kept]) <= limit * size * 8 / rate + 1e-9


def test_queue_seconds_bound() -> None:
    size, rate, bound = 1000, 2e6, 0.050
    times = _saturating(rate, size, seconds=3.0, factor=2.0)
    config = LinkConfig(rate=rate, queue_seconds=bound, delay=0.01)
    fates = simulate(config, times, size, np.random.default_rng(23))
    assert np.any(fates.reasons == DropReason.QUEUE)
    sojourn = fates.served - times
    assert np.nanmax(sojourn) <= bound + 1e-9
    assert np.nanmax(sojourn) > bound - size * 8 / rate  # the bound is reached, not undercut
    assert np.allclose((fates.departures - fates.served)[fates.delivered], 0.01)


def test_unbounded_queue_never_drops() -> None:
    times = _saturating(1e6, 1000, seconds=2.0)
    fates = simulate(LinkConfig(rate=1e6), times, 1000, np.random.default_rng(24))
    assert fates.loss_ratio == 0


@pytest.mark.parametrize("size", [1500, 1000])
def test_trace_replay_60s_within_3_percent(size: int) -> None:
    # Verizon LTE downlink peaks near 21 Mbit/s over 100 ms; offer 40 Mbit/s so the
    # 1000-packet queue never runs dry. Sizes other than 1500 exercise byte carrying.
    trace = Trace.from_file(TRACES / "Verizon-LTE-short.down")
    per_second = 40e6 / 8 / size
    times = np.arange(int(per_second * 61)) / per_second
    config = LinkConfig(trace=trace, queue_packets=1000)
    fates = simulate(config, times, size, np.random.default_rng(25))
    delivered = np.sum(fates.served < 60.0) * size
    assert delivered == pytest.approx(trace.bytes_between(0.0, 60.0), rel=0.03)


def test_trace_loops_with_period_of_last_timestamp() -> None:
    # 10 opportunities per 250 ms loop = 40 per second = 480 kbit/s; replay for 60 s.
    trace = Trace("synthetic", np.array([0, 0, 20, 50, 50, 50, 120, 200, 240, 250]))
    assert trace.mean_rate == pytest.approx(480_000)
    times = _saturating(trace.mean_rate, OPPORTUNITY_BYTES, seconds=61.0, factor=3.0)
    config = LinkConfig(trace=trace, queue_packets=50)
    fates = simulate(config, times, OPPORTUNITY_BYTES, np.random.default_rng(26))
    delivered = np.sum(fates.served < 60.0) * OPPORTUNITY_BYTES
    assert delivered / 60.0 == pytest.approx(trace.mean_rate / 8, rel=0.03)


def test_trace_opportunities_are_not_banked_while_idle() -> None:
    trace = Trace("synthetic", np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]))
    link = Link(LinkConfig(trace=trace), np.random.default_rng(27))
    # Idle until 55 ms: the next opportunity is at 60 ms, and only one per 10 ms after it.
    assert link.send(0.055, 1500) == [pytest.approx(0.060)]
    assert link.send(0.055, 1500) == [pytest.approx(0.070)]
    # A 3000-byte packet needs two opportunities (80 and 90 ms) and leaves with the second.
    assert link.send(0.055, 3000) == [pytest.approx(0.090)]


def test_trace_carries_bytes_across_opportunities() -> None:
    trace = Trace("synthetic", np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]))
    link = Link(LinkConfig(trace=trace), np.random.default_rng(28))
    # Two 1000-byte packets share 2000 bytes: the first fits opportunity 0 ms, the second
    # takes the rest of it plus 500 bytes of the 10 ms one, where a third (500 B) also fits.
    assert link.send(0.0, 1000) == [pytest.approx(0.0)]
    assert link.send(0.0, 1000) == [pytest.approx(0.010)]
    assert link.send(0.0, 1000) == [pytest.approx(0.010)]
    assert link.send(0.0, 1) == [pytest.approx(0.020)]


def test_trace_is_relative_to_the_link_start() -> None:
    trace = Trace("synthetic", np.array([100, 200]))
    link = Link(LinkConfig(trace=trace), np.random.default_rng(29), start=50.0)
    assert link.send(50.0, 100) == [pytest.approx(50.1)]


def test_trace_queue_seconds_bound() -> None:
    trace = Trace.from_file(TRACES / "TMobile-UMTS-driving.down")
    times = _saturating(trace.mean_rate, 1500, seconds=30.0, factor=2.0)
    config = LinkConfig(trace=trace, queue_seconds=0.5)
    fates = simulate(config, times, 1500, np.random.default_rng(30))
    assert np.any(fates.reasons == DropReason.QUEUE)
    assert np.nanmax(fates.served - times) <= 0.5 + 1e-9
