"""Estimators that degrade honestly: each contrast states its design and support, falls back to
the next design below a minimum, and no NaN reaches the JSON or the report.

The failing case is a simulated log in which 99.8 % of joined sessions stall (3 000 viewers, 20
days): a few dozen sessions without stall to pair with, so the matched-pair design is passed
over for the dose-response regression, whose 95 % interval must cover the true -5 % per point.
The placebo (chat echo time, which no simulated viewer reacts to) must come out null. Across
many seeds (the slow test; ``bench/impact_coverage.py`` runs 100) the intervals cover at close
to the nominal rate.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qoe.impact import Options, analyse, write_report
from qoe.impact.analysis import Impact
from qoe.impact.causal import make_cells, match_pairs, paired
from sim.audience import AudienceModel, simulate

ALL_STALL = (0.998, 0.998, 0.998, 0.998)


def stalling_model(**population: float) -> AudienceModel:
    m = AudienceModel()
    return dataclasses.replace(
        m,
        qoe=dataclasses.replace(m.qoe, stall_any=ALL_STALL),
        population=dataclasses.replace(m.population, **population),
    )


def run(tmp: Path, seed: int, model: AudienceModel, viewers: int = 3000, days: int = 20) -> Impact:
    sessions = tmp / f"s{seed}.parquet"
    truth = simulate(
        sessions, viewers=viewers, days=days, rooms=8, rng=np.random.default_rng(seed), model=model
    )
    return analyse(sessions, np.random.default_rng(seed), Options(threads=1), truth=truth)


@pytest.fixture(scope="module")
def stalling(tmp_path_factory: pytest.TempPathFactory) -> tuple[Impact, Path]:
    out = tmp_path_factory.mktemp("stalling")
    impact = run(out, 5, stalling_model())
    write_report(impact, out / "report")
    return impact, out / "report"


def test_few_controls_fall_back_to_the_dose_response_and_cover_the_truth(
    stalling: tuple[Impact, Path],
) -> None:
    impact, _ = stalling
    c = impact.contrast("watch_per_stall_percent")
    assert c is not None
    assert c.control < 0.01 * c.treated  # the user's log: almost nobody without a stall
    design, estimate, note = c.headline()
    assert design == "dose-response regression"
    assert "matched pairs" in note and "needs" in note
    assert estimate is not None
    _, low, high = c.shown(estimate)
    truth = impact.truth["watch_per_stall_percent"]  # type: ignore[index]
    assert low <= truth <= high, f"[{low:.4f}, {high:.4f}] misses {truth}"
    line = next(x for x in impact.lines if x["key"] == "watch_per_stall_percent")
    assert line["method"] == "dose-response regression"
    assert re.match(r"Each 1 % of stall ratio costs \d+\.\d % of watch time \(95 % CI \d", line["text"])
    # The recommendation reads the same estimate: a clear loss moves the threshold.
    assert "dose-response regression" in impact.thresholds.stall_basis
    assert "no significant" not in impact.thresholds.stall_basis


def test_no_nan_in_the_json_or_the_report(stalling: tuple[Impact, Path]) -> None:
    _, report = stalling
    text = (report / "impact.json").read_text()
    json.loads(text)  # strict JSON: write_report refuses NaN
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", (report / "report.html").read_text())
    for name, body in (("impact.json", text), ("report.html", html)):
        bad = re.findall(r".{0,60}\b(?:nan|NaN|inf)\b.{0,20}", body, flags=re.IGNORECASE)
        assert not bad, f"{name}: {bad[:3]}"
    assert "Dose-response" in html and "headline design" in html


def test_every_contrast_states_design_and_support(stalling: tuple[Impact, Path]) -> None:
    _, report = stalling
    doc = json.loads((report / "impact.json").read_text())
    for c in doc["contrasts"]:
        assert set(c["support"]) == {"pairs", "treated", "control", "regression_sessions"}
        h = c["headline"]
        assert h["design"] in (
            "matched pairs",
            "fixed-effects regression",
            "dose-response regression",
            "not estimable",
        )
        if h["design"] == "not estimable":
            assert h["reason"] and "value" not in h
        else:
            assert h["low"] <= h["value"] <= h["high"]
    assert {d["key"] for d in doc["dose_response"]} >= {
        "dose_watch_per_stall_percent",
        "dose_watch_per_join_second",
        "dose_watch_per_av_100ms",
        "dose_watch_per_100px",
        "dose_watch_per_chat_echo_second",
    }


def test_the_placebo_comes_out_null(stalling: tuple[Impact, Path]) -> None:
    impact, _ = stalling
    d = next(x for x in impact.doses if x.key == "dose_watch_per_chat_echo_second")
    _, low, high = d.shown()
    assert low <= 0.0 <= high
    assert impact.truth["dose_watch_per_chat_echo_second"] == 0.0  # type: ignore[index]


def test_one_pair_is_not_estimable_and_says_why() -> None:
    # One treated and one control viewer: a value, but no standard error.
    y = np.array([1.0, 2.0])
    ti, ci = match_pairs(
        np.zeros(2, int), np.array([1, 0], bool), np.array([0, 1], bool), np.random.default_rng(0)
    )
    p = paired(y, ti, ci, np.arange(2), treated=1)
    assert p.pairs == 1 and not p.effect.ok
    cells = make_cells([np.zeros(2, int)])
    assert cells.count == 1


def test_a_hidden_confounder_biases_the_estimate(tmp_path: Path) -> None:
    # What no design can fix: a cause of both stalls and short sessions that the log lacks.
    impact = run(tmp_path, 7, stalling_model(hidden_confounder=0.6))
    d = next(x for x in impact.doses if x.key == "dose_watch_per_stall_percent")
    value, _, high = d.shown()
    assert high < impact.truth["dose_watch_per_stall_percent"]  # type: ignore[index]
    assert value < 2 * impact.truth["dose_watch_per_stall_percent"]  # type: ignore[index]


def coverage(tmp: Path, seeds: range, viewers: int = 1500, days: int = 14) -> dict[str, Any]:
    """Per seed: does the placebo's interval cover 0, the stall dose-response's the truth."""
    placebo = stall = 0
    for seed in seeds:
        impact = run(tmp, seed, AudienceModel(), viewers=viewers, days=days)
        truth = impact.truth or {}
        by_key = {d.key: d for d in impact.doses}
        _, lo, hi = by_key["dose_watch_per_chat_echo_second"].shown()
        placebo += lo <= 0.0 <= hi
        _, lo, hi = by_key["dose_watch_per_stall_percent"].shown()
        stall += lo <= truth["dose_watch_per_stall_percent"] <= hi
        (tmp / f"s{seed}.parquet").unlink()
    return {"seeds": len(seeds), "placebo_null": placebo, "stall_covered": stall}


@pytest.mark.slow(seconds=35)
@pytest.mark.heavy  # a core for the whole run
def test_intervals_cover_at_the_nominal_rate(tmp_path: Path) -> None:
    # 100 seeds of 1 500 viewers x 14 days, about 0.3 s each. The placebo must be null in 93 or
    # more. The stall slope's truth: at a true 95 %, fewer than 89 covered happens with
    # probability under 1 % (binomial); when written, 91 of 100 (bench/impact_coverage.py).
    r = coverage(tmp_path, range(1000, 1100))
    assert r["placebo_null"] >= 93, r
    assert r["stall_covered"] >= 89, r
