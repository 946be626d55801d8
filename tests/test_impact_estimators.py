"""qoe.impact estimators on small hand-made arrays: known answers, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from qoe.impact.causal import fe_regression, make_cells, match_pairs, naive, paired
from qoe.impact.dropoff import abandonment
from qoe.impact.survival import binned_counts, hinge_fit, km_from_counts, restricted_mean, standardised


def test_kaplan_meier_matches_a_hand_computation() -> None:
    # times 1, 2(censored), 3, 3, 5(censored): S after bin [1,2) = 4/5; [3,4) = 4/5 * (1 - 2/3)
    edges = np.arange(0.0, 7.0)
    d, c = binned_counts(np.array([1, 2, 3, 3, 5.0]), np.array([1, 0, 1, 1, 0], bool), edges)
    s, at_risk = km_from_counts(d, c)
    assert s[0] == pytest.approx([1, 0.8, 0.8, 0.8 / 3, 0.8 / 3, 0.8 / 3])
    assert at_risk[0] == pytest.approx([5, 5, 4, 3, 1, 1])


def test_censored_sessions_are_not_exits() -> None:
    # Half the sessions are censored at 10 s: survival past 10 s stays 1 (no event happened).
    edges = np.arange(0.0, 21.0)
    d, c = binned_counts(np.full(10, 10.0), np.zeros(10, bool), edges)
    s, _ = km_from_counts(d, c)
    assert s[0].min() == 1.0
    assert restricted_mean(s[0], edges) == pytest.approx(20.0)


def test_standardised_weights_strata_by_their_size() -> None:
    d = np.array([[1, 0, 0], [0, 0, 0]], float)
    c = np.array([[1, 0, 0], [0, 2, 0]], float)
    s, _ = standardised(d, c)  # stratum 0: S = 0.5 after bin 0; stratum 1: 1.0; equal sizes
    assert s == pytest.approx([0.75, 0.75])


def test_binned_counts_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="1-D"):
        binned_counts(np.zeros((2, 2)), np.zeros(4, bool), np.arange(3.0))
    with pytest.raises(ValueError, match="expected 3"):
        binned_counts(np.zeros(3), np.zeros(4, bool), np.arange(3.0))
    with pytest.raises(ValueError, match="increasing"):
        binned_counts(np.zeros(3), np.zeros(3, bool), np.array([0.0, 0.0]))


def test_hinge_fit_finds_a_known_knee() -> None:
    x = np.linspace(0, 10, 201)
    y = 0.01 + 0.058 * np.maximum(x - 2.0, 0)
    h = hinge_fit(x, y, knees=np.arange(0.5, 8, 0.01))
    assert h.knee == pytest.approx(2.0, abs=0.01)
    assert h.slope == pytest.approx(0.058, rel=1e-3)
    assert h.level == pytest.approx(0.01, abs=1e-6)


def test_match_pairs_stays_within_cells_without_replacement() -> None:
    rng = np.random.default_rng(1)
    cell = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    treated = np.array([1, 1, 0, 1, 0, 0, 0, 1], bool)
    control = ~treated
    ti, ci = match_pairs(cell, treated, control, rng)
    assert np.all(cell[ti] == cell[ci])
    assert len(set(ti)) == ti.size and len(set(ci)) == ci.size
    assert ti.size == 2  # cell 0: 2 treated, 1 control -> 1 pair; cell 1: 1 pair; cell 2: none
    with pytest.raises(ValueError, match="same shape"):
        match_pairs(cell, treated[:3], control, rng)


def test_paired_net_outcome_and_sign_test() -> None:
    # Outcome "came back": 6 pairs where only the control came back, 2 the reverse, 2 ties.
    y = np.array([0] * 6 + [1] * 2 + [1] * 2 + [1] * 6 + [0] * 2 + [1] * 2, float)
    ti, ci = np.arange(10), np.arange(10, 20)
    p = paired(y, ti, ci, np.arange(20), treated=10)
    assert p.worse == 6 and p.better == 2 and p.ties == 2
    assert p.net_outcome == pytest.approx(0.4)
    assert p.effect.value == pytest.approx(-0.4)  # mean paired difference of a 0/1 outcome
    assert p.sign_p == pytest.approx(0.2890625)  # two-sided binomial, 6 of 8


def test_naive_difference_and_its_standard_error() -> None:
    rng = np.random.default_rng(2)
    y = np.concatenate([rng.normal(1.0, 1, 4000), rng.normal(0.0, 2, 4000)])
    t = np.arange(8000) < 4000
    e = naive(y, t, ~t, np.arange(8000))  # one session per viewer: the textbook two-sample case
    assert e.value == pytest.approx(y[t].mean() - y[~t].mean())
    textbook = np.sqrt(y[t].var() / 4000 + y[~t].var() / 4000)
    assert e.se == pytest.approx(textbook, rel=1e-3)  # G/(G-1) with G = 8000
    assert e.high - e.value == pytest.approx(1.959964 * e.se)


def test_fixed_effects_remove_a_confounder_that_naive_keeps() -> None:
    rng = np.random.default_rng(3)
    n = 40000
    group = rng.integers(0, 4, n)  # a "network": weak ones get more treatment and lower baselines
    treated = rng.random(n) < 0.1 + 0.2 * group
    y = 1.0 - 0.5 * group - 0.3 * treated + rng.normal(0, 1, n)
    cells = make_cells([group, rng.integers(0, 3, n)])
    viewer = np.arange(n)
    reg = fe_regression(y, treated.astype(float), np.ones(n, bool), cells, viewer)
    raw = naive(y, treated, ~treated, viewer)
    assert reg.covers(-0.3)
    assert not raw.covers(-0.3)
    assert raw.value < -0.5


def test_clustered_errors_widen_with_repeated_viewers() -> None:
    rng = np.random.default_rng(4)
    viewers = np.repeat(np.arange(500), 20)
    effect = rng.normal(0, 1, 500)[viewers]  # a viewer's sessions move together
    t = np.tile(np.arange(20) < 10, 500)
    y = effect + 0.1 * t + rng.normal(0, 0.1, viewers.size)
    by_viewer = naive(y, t, ~t, viewers)
    by_session = naive(y, t, ~t, np.arange(viewers.size))
    assert by_viewer.se < by_session.se  # within-viewer contrast: clustering uses the pairing


def test_abandonment_recovers_knee_and_slope_of_a_known_curve() -> None:
    rng = np.random.default_rng(5)
    n = 60000
    network = rng.integers(0, 2, n)
    join = np.exp(rng.normal(np.log(np.where(network == 1, 4.0, 1.0)), 0.5))
    patience = 2.0 + rng.random(n) / (0.058 * np.where(network == 1, 0.7, 1.3))  # weak network: patient
    left = patience < join
    wait = np.minimum(join, patience)
    groups = rng.integers(0, 10, n)
    res = abandonment(
        wait, left, {"network": network, "device": np.zeros(n, int)}, ["network", "device"], groups, 10
    )
    truth = 0.058 * (0.7 * (network == 1).mean() + 1.3 * (network == 0).mean())
    for method in ("stratified", "regression"):
        assert res[method].knee.value == pytest.approx(2.0, abs=0.5)
        assert res[method].slope.covers(truth), (method, res[method].slope, truth)
    assert not res["naive"].slope.covers(truth)  # weak-network viewers fill the late risk set
