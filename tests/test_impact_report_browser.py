"""The impact report as a viewer sees it: opened in headless Chromium (:mod:`tests.browser`),
its segment, attribution and A/B tables hold a row per segment, level and arm, its segment and
A/B plots are decoded images laid out at a size, and the page logs no error.

A small simulated A/B test (arm B joins 0.5 s slower), segmented by region.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qoe.impact import Options, analyse, write_report
from qoe.impact.analysis import Impact
from sim.audience import AudienceModel, simulate
from tests.browser import Chromium

CATCH_ERRORS = """
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(
  e.message || ("failed to load " + ((e.target && (e.target.src || e.target.href)) || "?"))), true);
window.addEventListener("unhandledrejection", (e) => window.__errors.push(String(e.reason)));
const __error = console.error.bind(console);
console.error = (...args) => { window.__errors.push(args.map(String).join(" ")); __error(...args); };
"""
"""Installed before the report's own document runs: page errors, resources that failed to load
(an error event in the capture phase) and ``console.error`` calls."""

LAYOUT = """
(() => {
  const rows = (sel) => [...document.querySelectorAll(sel)].map((t) => t.rows.length - 1);
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const img = (name) => {
    const el = document.querySelector(`img[title="${name}"]`);
    return el && { complete: el.complete, natural: [el.naturalWidth, el.naturalHeight], box: box(el) };
  };
  return {
    segments: rows("table.segments"), attribution: rows("table.attribution"),
    arms: rows("table.arms"), cuped: rows("table.cuped"),
    tables: [...document.querySelectorAll("table.segments, table.attribution, table.arms")].map(box),
    segments_png: img("segments.png"), arms_png: img("arms.png"),
    errors: window.__errors,
  };
})()
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Impact, Path]:
    out = tmp_path_factory.mktemp("browser")
    m = AudienceModel()
    m = dataclasses.replace(
        m, qoe=dataclasses.replace(m.qoe, ab_share_b=0.5, ab_join_seconds=0.5, ab_start_day=4)
    )
    simulate(out / "s.parquet", viewers=3000, days=12, rooms=6, rng=np.random.default_rng(8), model=m)
    imp = analyse(out / "s.parquet", np.random.default_rng(1), Options(threads=1, segment_by=("region",)))
    write_report(imp, out / "report")
    return imp, out / "report" / "report.html"


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    async with Chromium(tmp_path) as chromium:
        yield chromium


async def test_segments_and_arms_render_as_tables_and_plots(
    browser: Chromium, report: tuple[Impact, Path]
) -> None:
    imp, html = report
    page = await browser.new_page()
    await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_ERRORS})
    await page.goto(html.as_uri())
    seen: dict[str, Any] = await page.evaluate(LAYOUT)
    assert imp.ab is not None
    assert seen["segments"] == [len(imp.segments)] and len(imp.segments) == 4 + 5  # tiers, regions
    assert seen["attribution"] == [sum(len(a["levels"]) for a in imp.attribution)] == [5]
    assert seen["arms"] == [len(imp.ab["arms"]), len(imp.ab["differences"])] == [2, 1]
    assert seen["cuped"] == [2]  # watch time and 7-day return
    assert all(w > 300 and h > 50 for w, h in seen["tables"]), seen["tables"]
    for name in ("segments_png", "arms_png"):
        png = seen[name]
        assert png is not None and png["complete"], (name, png)
        assert min(png["natural"]) > 100 and min(png["box"]) > 100, (name, png)
    assert seen["errors"] == [], json.dumps(seen["errors"])
