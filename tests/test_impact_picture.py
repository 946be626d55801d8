"""``qoe impact`` on picture quality: SD vs HD sessions of a simulated audience with a known SD
effect, read from ``video_height``, from ``bitrate_kbps`` alone, and shown in the report.

One seeded simulation (8 000 viewers, 40 days, as in test_impact.py) with the SD effect set
here, analysed once per module. The tolerances come from a study across 30 seeds of this size
and model (run when the picture contrasts were written): the matched-pair and regression
estimates were on the harmful side of zero, with intervals clear of it, in all 30, and within
TOLERANCE of the truth in all 30 (worst: 21 % off for watch time, 38 % for returns). The
matched-pair 95 % intervals covered the truth in 29-30 of 30; the regression's in 26-28, so only
its sign and size are asserted. The naive difference, confounded by weak networks (more SD, and
viewers who watch less and come back less anyway), missed the truth and sat below the matched
interval in all 30.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from qoe.impact import Options, analyse, write_report
from qoe.impact.analysis import Impact
from sim.audience import AudienceModel, simulate
from sim.audience.model import Behaviour

SD_WATCH_LOSS = 0.12
"""The simulated SD sessions watch 12 % less than the same session in HD."""
SD_RETURN_DROP = 0.03
"""... and a visit ending in SD is 3 points less likely to return within 7 days."""
TOLERANCE = {"watch_sd": 0.35, "return7_sd": 0.5}
"""How far an estimate may stray from the truth, as a share of the truth."""
SEED = 20260302


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("picture")
    sessions = out / "sessions.parquet"
    model = AudienceModel(behaviour=Behaviour(watch_loss_sd=SD_WATCH_LOSS, return_drop_sd=SD_RETURN_DROP))
    truth = simulate(sessions, viewers=8000, days=40, rooms=8, rng=np.random.default_rng(SEED), model=model)
    return {"dir": out, "sessions": sessions, "truth": truth}


@pytest.fixture(scope="module")
def impact(simulated: dict[str, Any]) -> Impact:
    return analyse(
        simulated["sessions"], np.random.default_rng(1), Options(threads=1), truth=simulated["truth"]
    )


def without(source: Path, columns: list[str], out: Path) -> Path:
    """The log with ``columns`` left out (its log_end metadata kept, so follow-up is the same)."""
    table = pq.read_table(source)
    pq.write_table(table.drop_columns(columns), out)
    return out


@pytest.mark.parametrize("key", ["watch_sd", "return7_sd"])
def test_the_sd_effect_is_recovered_with_the_confounder_controls(impact: Impact, key: str) -> None:
    c = impact.contrast(key)
    assert c is not None
    truth = impact.truth[key]  # type: ignore[index]
    assert truth == pytest.approx(-SD_WATCH_LOSS if key == "watch_sd" else -SD_RETURN_DROP)
    assert c.matched.pairs > 1000
    for name, estimate in (("matched pairs", c.matched.effect), ("regression", c.regression)):
        value, low, high = c.shown(estimate)
        assert high < 0, f"{key}: {name} [{low:.4f}, {high:.4f}] does not show SD costs"
        assert abs(value - truth) <= TOLERANCE[key] * abs(truth), f"{key}: {name} {value:.4f} vs {truth}"
    _, low, high = c.shown(c.matched.effect)
    assert low <= truth <= high, f"{key}: matched pairs [{low:.4f}, {high:.4f}] miss the truth {truth:.4f}"


@pytest.mark.parametrize("key", ["watch_sd", "return7_sd"])
def test_the_naive_sd_difference_is_confounded(impact: Impact, key: str) -> None:
    c = impact.contrast(key)
    assert c is not None
    truth = impact.truth[key]  # type: ignore[index]
    naive, n_low, n_high = c.shown(c.naive)
    assert naive < truth and not n_low <= truth <= n_high  # weak networks: more SD, less watching anyway
    _, low, _ = c.shown(c.matched.effect)
    assert naive < low


def test_the_impact_table_and_the_band_table_read_sd_against_hd(impact: Impact) -> None:
    texts = {line["key"]: line["text"] for line in impact.lines}
    assert texts["watch_sd"].startswith("An SD picture (below 720p) costs ")
    assert texts["return7_sd"].startswith("Visits ending on an SD picture (below 720p) return ")
    [band] = [b for b in impact.bands if b.name == "picture height"]
    assert band.labels == ["SD < 480p", "SD 480-719p", "HD 720-1079p", "HD >= 1080p"]
    assert all(n > 1000 for n in band.sessions)  # the ladder's 360, 540, 720 and 1080, one a band
    assert band.sessions.sum() == impact.counts["joined"]  # every joined session has a height
    median = band.watch_median
    assert median[0] is not None and median[3] is not None and median[0] < median[3]
    assert not any("picture" in note for note in impact.notes)


def test_the_report_shows_the_picture_like_the_other_figures(
    impact: Impact, simulated: dict[str, Any]
) -> None:
    out = simulated["dir"] / "report"
    write_report(impact, out)
    html = (out / "report.html").read_text()
    assert "<h3>By picture height</h3>" in html and "SD &lt; 480p" in html
    assert "watch_sd" in html and "return7_sd" in html and "An SD picture (below 720p)" in html
    assert (out / "watch_picture.png").read_bytes().startswith(b"\x89PNG")
    assert 'title="watch_picture.png"' in html
    doc = json.loads((out / "impact.json").read_text())
    assert {c["key"] for c in doc["contrasts"]} >= {"watch_sd", "return7_sd", "repurchase7_sd"}
    assert "picture height" in [b["name"] for b in doc["bands"]]
    assert doc["truth"]["watch_sd"] == pytest.approx(-SD_WATCH_LOSS)


def test_bitrate_alone_draws_the_same_line(impact: Impact, simulated: dict[str, Any]) -> None:
    # The simulator's SD renditions stay below 1500 kbit/s and its HD ones above: read from the
    # bitrate, the same sessions are SD, so every estimate is the height run's to the digit.
    path = without(simulated["sessions"], ["video_height"], simulated["dir"] / "bitrate.parquet")
    imp = analyse(path, np.random.default_rng(1), Options(threads=1))
    assert "no video_height column: SD vs HD read from bitrate_kbps (SD = below 1500 kbit/s)" in imp.notes
    assert [b.name for b in imp.bands if b.name.startswith("picture")] == ["picture bitrate"]
    for key in ("watch_sd", "return7_sd"):
        by_height, by_bitrate = impact.contrast(key), imp.contrast(key)
        assert by_height is not None and by_bitrate is not None
        assert "below 1500 kbit/s" in by_bitrate.title
        assert (by_bitrate.treated, by_bitrate.control) == (by_height.treated, by_height.control)
        assert by_bitrate.matched.effect.value == pytest.approx(by_height.matched.effect.value, rel=1e-9)
        assert by_bitrate.regression.value == pytest.approx(by_height.regression.value, rel=1e-9)
