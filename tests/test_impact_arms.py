"""A/B arms: per-arm QoE and outcomes, differences with intervals, the sample-ratio check, CUPED.

The simulated test (8 000 viewers, 21 days, the test from day 7, viewers split 50/50) gives
arm B 0.5 s more join time. Viewers here lose 3 points of 7-day return per second of join time
of a visit's last session (``behaviour.return_drop_per_join_second``; 0 by default), and B fails
a few more visits (2.3 points each), so B should return about 1.5 points less within 7 days:
the simulator's truth, measured against the same visits without the added join, must lie in the
difference's interval, and the interval must exclude zero. Over seeds 21 to 27 the interval
covered the truth (-1.4 points) in 6 of 7, with a mean estimate of -2.0 points: the per-visit
difference also carries the arms' different visit mixes, which the truth leaves out.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from qoe.errors import ConfigError
from qoe.impact import Options, analyse, write_report
from qoe.impact.analysis import Impact
from qoe.impact.arms import cuped, parse_split, srm
from sim.audience import AudienceModel, simulate

JOIN_COST = 0.03
"""7-day return probability a viewer loses per second of join time of a visit's last session."""


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Impact, dict, Path]:  # type: ignore[type-arg]
    out = tmp_path_factory.mktemp("arms")
    m = AudienceModel()
    m = dataclasses.replace(
        m,
        qoe=dataclasses.replace(m.qoe, ab_share_b=0.5, ab_join_seconds=0.5, ab_start_day=7),
        behaviour=dataclasses.replace(m.behaviour, return_drop_per_join_second=JOIN_COST),
    )
    sessions = out / "s.parquet"
    truth = simulate(sessions, viewers=8000, days=21, rooms=8, rng=np.random.default_rng(22), model=m)
    imp = analyse(sessions, np.random.default_rng(1), Options(threads=1), truth=truth)
    write_report(imp, out / "report")
    return imp, truth, out


def test_the_slower_arm_loses_what_the_truth_says(ab: tuple[Impact, dict, Path]) -> None:  # type: ignore[type-arg]
    imp, truth, _ = ab
    assert imp.ab is not None and imp.ab["arms"] == ["A", "B"]
    d = imp.ab["differences"][0]
    assert d["join_seconds"]["low"] <= 0.5 <= d["join_seconds"]["high"]
    assert d["no_first_frame"]["low"] > 0  # B fails more visits
    loss = truth["effects"]["arm_b_return7"]
    assert loss == pytest.approx(-0.5 * JOIN_COST, rel=0.2)
    assert d["return7"]["low"] <= loss <= d["return7"]["high"], (d["return7"], loss)
    assert d["return7"]["high"] < 0, d["return7"]
    assert not imp.ab["srm"]["mismatch"] and "warning" not in imp.ab


def test_cuped_states_its_variance_reduction(ab: tuple[Impact, dict, Path]) -> None:  # type: ignore[type-arg]
    imp, _, _ = ab
    assert imp.ab is not None
    c = imp.ab["differences"][0]["cuped"]["watch"]
    assert c["viewers_with_pre_period"] > 0
    assert c["variance_reduction"] > 0.05  # a viewer's watch time before the test predicts it
    assert c["headline"] == "cuped"
    assert c["cuped"]["high"] - c["cuped"]["low"] < c["plain"]["high"] - c["plain"]["low"]


def test_cuped_removes_the_covariate_s_share_of_the_variance() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 4000)
    arm = np.repeat([0, 1], 2000)
    y = 0.1 * arm + 0.8 * x + rng.normal(0, 0.6, 4000)
    r = cuped(y, x, arm, 0, 1)
    assert r["variance_reduction"] == pytest.approx(0.64, abs=0.03)  # corr(x, y)^2
    assert r["cuped"].covers(0.1) and r["cuped"].se < r["plain"].se


def test_a_48_52_split_intended_as_50_50_is_a_mismatch() -> None:
    r = srm(np.array([96_000, 104_000]), np.array([0.5, 0.5]))
    assert r["mismatch"] and r["p_value"] < 1e-50
    assert not srm(np.array([100_100, 99_900]), np.array([0.5, 0.5]))["mismatch"]
    assert parse_split("48/52") == pytest.approx((0.48, 0.52))
    with pytest.raises(ConfigError, match="arm split must be numbers"):
        parse_split("half")
    with pytest.raises(ConfigError, match="two or more positive"):
        parse_split("100")


def test_a_wrong_intended_split_warns_in_the_report(ab: tuple[Impact, dict, Path]) -> None:  # type: ignore[type-arg]
    _, _, out = ab
    skewed = analyse(out / "s.parquet", np.random.default_rng(1), Options(threads=1, arm_split=(0.4, 0.6)))
    assert skewed.ab is not None and skewed.ab["srm"]["mismatch"]
    assert any("sample ratio mismatch" in n for n in skewed.notes)
    with pytest.raises(ConfigError, match="--arm-from planet"):
        Options(arm_from="planet").check()


def test_the_report_shows_the_arms(ab: tuple[Impact, dict, Path]) -> None:  # type: ignore[type-arg]
    _, _, out = ab
    html = (out / "report" / "report.html").read_text()
    assert "<table class=arms>" in html and "<table class=cuped>" in html and 'title="arms.png"' in html
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r"\b(?:nan|inf)\b", text, flags=re.IGNORECASE)
