"""Fidelity of the per-packet effects: delay and jitter, loss, burst loss, duplication,
reordering, outages and schedules (sim.netem.link, driven through sim.netem.simulate).

Every test seeds its own generator. Statistical tolerances are the emulator's promises and sit
at 3 or more standard errors for the sample sizes used (the standard error is given next to
each); with a fixed seed the outcome is deterministic anyway.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.netem import DropReason, JitterDistribution, Link, LinkConfig, simulate


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _times(n: int, spacing: float) -> np.ndarray:
    return np.arange(n) * spacing


@pytest.mark.parametrize("distribution", ["normal", "uniform", "pareto"])
def test_mean_delay_with_jitter_within_1ms(distribution: JitterDistribution) -> None:
    # 20,000 packets, jitter 10 ms: standard error of the mean 0.07 ms, tolerance 1 ms.
    config = LinkConfig(delay=0.050, jitter=0.010, jitter_distribution=distribution, reorder=True)
    times = _times(20_000, 0.002)
    fates = simulate(config, times, 1200, np.random.default_rng(1))
    delays = fates.departures - times
    assert abs(delays.mean() - 0.050) < 0.001
    # The spread is what the docstring says the parameter means.
    expected_std = {"normal": 0.010, "uniform": 0.010 / np.sqrt(3), "pareto": 0.010}
    assert delays.std() == pytest.approx(expected_std[distribution], rel=0.1)


def test_mean_delay_without_reordering_when_packets_are_sparse() -> None:
    # reorder=False only holds packets back; with spacing (20 ms) well above the jitter
    # (5 ms) that rarely happens and the mean stays within 1 ms of the configured delay.
    times = _times(20_000, 0.020)
    fates = simulate(LinkConfig(delay=0.050, jitter=0.005), times, 1200, np.random.default_rng(2))
    assert abs(np.mean(fates.departures - times) - 0.050) < 0.001


def test_no_reordering_when_reorder_is_false() -> None:
    # Dense packets (1 ms apart) with 20 ms jitter would reorder heavily if allowed.
    times = _times(20_000, 0.001)
    config = LinkConfig(delay=0.030, jitter=0.020, duplicate=0.05, loss=0.02)
    fates = simulate(config, times, 1200, np.random.default_rng(3))
    delivered = fates.delivered
    assert np.all(np.diff(fates.departures[delivered]) >= 0)
    duplicated = ~np.isnan(fates.duplicates)
    assert np.all(fates.duplicates[duplicated] >= fates.departures[duplicated])
    # Each duplicate still leaves before the next packet's first copy.
    following = np.flatnonzero(duplicated)
    following = following[following + 1 < times.size]
    nxt = following + 1
    keep = delivered[nxt]
    assert np.all(fates.duplicates[following[keep]] <= fates.departures[nxt[keep]])


def test_reordering_happens_when_allowed() -> None:
    times = _times(5_000, 0.001)
    config = LinkConfig(delay=0.030, jitter=0.020, reorder=True)
    fates = simulate(config, times, 1200, np.random.default_rng(4))
    assert np.mean(np.diff(fates.departures) < 0) > 0.1


def test_propagation_delay_is_never_negative() -> None:
    times = _times(10_000, 0.01)
    config = LinkConfig(delay=0.001, jitter=0.010, reorder=True)
    fates = simulate(config, times, 1200, np.random.default_rng(5))
    assert np.min(fates.departures - times) >= 0


def test_random_loss_rate_within_half_a_point() -> None:
    # 20,000 packets at p = 5 %: standard error 0.15 pp, tolerance 0.5 pp.
    fates = simulate(LinkConfig(loss=0.05), _times(20_000, 0.001), 1200, np.random.default_rng(6))
    assert abs(fates.loss_ratio - 0.05) < 0.005
    assert set(np.unique(fates.reasons)) == {DropReason.DELIVERED, DropReason.LOSS}


def test_gilbert_elliott_burst_length_and_loss_rate() -> None:
    # 100,000 packets, p = 5 %, L = 4: about 1,250 bursts, standard error of the mean burst
    # length ~2.5 % (tolerance 10 %); the overall loss rate's standard error is ~0.2 pp once
    # burst correlation inflates it (tolerance 0.5 pp).
    config = LinkConfig(loss=0.05, burst_length=4.0)
    fates = simulate(config, _times(100_000, 0.001), 1200, np.random.default_rng(7))
    bursts = _runs(fates.reasons == DropReason.BURST)
    assert bursts.mean() == pytest.approx(4.0, rel=0.10)
    assert abs(fates.loss_ratio - 0.05) < 0.005
    # Bursty, not Bernoulli: Bernoulli loss at 5 % would give a mean run of 1.05.
    assert np.mean(bursts >= 4) > 0.3


def test_burst_length_one_is_still_a_valid_chain() -> None:
    config = LinkConfig(loss=0.2, burst_length=1.0)
    fates = simulate(config, _times(50_000, 0.001), 1200, np.random.default_rng(8))
    assert abs(fates.loss_ratio - 0.2) < 0.005
    assert _runs(fates.reasons == DropReason.BURST).max() == 1


def test_duplication_rate() -> None:
    # 50,000 packets at 2 %: standard error 0.06 pp, tolerance 0.5 pp.
    times = _times(50_000, 0.001)
    fates = simulate(LinkConfig(duplicate=0.02), times, 1200, np.random.default_rng(9))
    assert abs(np.mean(~np.isnan(fates.duplicates)) - 0.02) < 0.005
    assert fates.loss_ratio == 0


def test_outages_drop_exactly_the_packets_inside_them() -> None:
    times = _times(10_000, 0.001)  # 0 .. 10 s
    outages = [(2.0, 0.5), (7.25, 1.0), (6.9, 0.2)]  # unsorted on purpose
    fates = simulate(LinkConfig(outages=outages), times, 1200, np.random.default_rng(10))
    inside = np.zeros(times.size, dtype=bool)
    for start, duration in outages:
        inside |= (times >= start) & (times < start + duration)
    assert np.array_equal(fates.reasons == DropReason.OUTAGE, inside)
    assert np.all(fates.delivered == ~inside)


def test_outages_are_relative_to_the_link_start() -> None:
    link = Link(LinkConfig(outages=[(1.0, 1.0)]), np.random.default_rng(11), start=100.0)
    assert link.send(100.5, 1000) == [100.5]
    assert link.send(101.0, 1000) == []
    assert link.send(101.999, 1000) == []
    assert link.send(102.0, 1000) == [102.0]
    assert link.dropped[DropReason.OUTAGE] == 2


def test_schedule_steps_take_effect_at_their_times() -> None:
    times = _times(30_000, 0.001)  # 0 .. 30 s
    config = LinkConfig(
        delay=0.020,
        schedule=[(10.0, {"delay": 0.100, "loss": 0.2}), (20.0, {"loss": 0.0})],
    )
    fates = simulate(config, times, 1200, np.random.default_rng(12))
    delay = fates.departures - times
    first, second, third = times < 10, (times >= 10) & (times < 20), times >= 20
    assert np.allclose(delay[first], 0.020)
    assert np.allclose(delay[second & fates.delivered], 0.100)
    assert np.allclose(delay[third], 0.100)  # a step keeps what earlier steps set
    assert np.all(fates.delivered[first]) and np.all(fates.delivered[third])
    assert abs(np.mean(~fates.delivered[second]) - 0.2) < 0.015  # SE 0.4 pp on 10,000


def test_schedule_rate_step_changes_capacity() -> None:
    # Saturating 1200-byte packets at 4 Mbit/s offered; capacity 1 Mbit/s, then 3 Mbit/s.
    size = 1200
    times = _times(8_000, size * 8 / 4e6)  # 19.2 s
    config = LinkConfig(rate=1e6, queue_packets=50, schedule=[(10.0, {"rate": 3e6})])
    fates = simulate(config, times, size, np.random.default_rng(13))
    served = fates.served[fates.delivered]
    early = np.sum((served >= 2) & (served < 9)) * size * 8 / 7
    late = np.sum((served >= 12) & (served < 19)) * size * 8 / 7
    assert early == pytest.approx(1e6, rel=0.03)
    assert late == pytest.approx(3e6, rel=0.03)


def test_counters() -> None:
    link = Link(LinkConfig(loss=0.1, duplicate=0.1), np.random.default_rng(14))
    for i in range(10_000):
        link.send(i * 0.001, 500)
    assert link.sent == 10_000
    assert link.delivered + sum(link.dropped.values()) == link.sent
    assert link.dropped[DropReason.LOSS] > 0 and link.dropped[DropReason.QUEUE] == 0
    assert 0 < link.duplicated < link.delivered


def test_same_seed_same_fates() -> None:
    config = LinkConfig(delay=0.04, jitter=0.01, loss=0.05, burst_length=2, duplicate=0.01)
    times = _times(5_000, 0.001)
    one = simulate(config, times, 1000, np.random.default_rng(15))
    two = simulate(config, times, 1000, np.random.default_rng(15))
    assert np.array_equal(one.reasons, two.reasons)
    assert np.array_equal(one.departures, two.departures, equal_nan=True)


def test_arrivals_must_not_go_back_in_time() -> None:
    link = Link(LinkConfig(), np.random.default_rng(16))
    link.send(1.0, 100)
    with pytest.raises(ValueError, match="must not decrease"):
        link.send(0.5, 100)
