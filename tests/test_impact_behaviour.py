"""Behaviour columns by QoE: reported when present, skipped when absent, bad values counted.

The simulator writes no behaviour; the test adds two columns to a simulated log: chat messages
drawn Poisson at one per two minutes watched, so a stall's cost in watch time is a cost in chat
too (stalled sessions must chat less with the controls on), and coupon grabs that ignore QoE
(must come out null). One row gets a malformed count and must be excluded as ``wrong_type``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qoe.impact import Options, analyse, write_report
from qoe.impact.analysis import Impact
from sim.audience import simulate


@pytest.fixture(scope="module")
def with_behaviour(tmp_path_factory: pytest.TempPathFactory) -> tuple[Impact, Path]:
    out = tmp_path_factory.mktemp("behaviour")
    plain = out / "plain.parquet"
    simulate(plain, viewers=4000, days=20, rooms=8, rng=np.random.default_rng(11))
    table = pq.read_table(plain)
    rng = np.random.default_rng(12)
    start = table["session_start"].to_numpy().astype("datetime64[ms]").astype(float) / 1000
    end = table["session_end"].to_numpy(zero_copy_only=False).astype("datetime64[ms]").astype(float) / 1000
    join = table["join_seconds"].to_numpy(zero_copy_only=False)
    watch = np.nan_to_num(end - start - join, nan=0.0).clip(0)
    chat = rng.poisson(watch / 120.0).astype(object)
    chat[np.isnan(join)] = None
    chat[5] = "lots"  # malformed: counted, not analysed
    grabs = rng.poisson(0.3, table.num_rows)
    table = table.append_column("chat_messages", pa.array([None if v is None else str(v) for v in chat]))
    table = table.append_column("coupon_grabs", pa.array(grabs))
    sessions = out / "sessions.parquet"
    pq.write_table(table, sessions)  # keeps the log_end metadata
    imp = analyse(sessions, np.random.default_rng(1), Options(threads=1))
    write_report(imp, out / "report")
    return imp, out / "report"


def test_stalled_sessions_chat_less_and_coupons_ignore_qoe(with_behaviour: tuple[Impact, Path]) -> None:
    imp, _ = with_behaviour
    by = {b.column: b for b in imp.behaviour}
    assert set(by) == {"chat_messages", "coupon_grabs"}  # absent columns are not reported
    chat = {c.key: c for c in by["chat_messages"].contrasts}["chat_messages_stall"]
    design, e, _ = chat.headline()
    assert e is not None and e.high < 0, (design, e)
    grabs = {c.key: c for c in by["coupon_grabs"].contrasts}["coupon_grabs_stall"]
    _, e, _ = grabs.headline()
    assert e is not None and e.low <= 0 <= e.high
    bands = by["chat_messages"].bands["stall ratio"]
    assert bands["mean"][0] > bands["mean"][-1]  # no stall vs > 5 %


def test_a_malformed_count_is_a_bad_row(with_behaviour: tuple[Impact, Path]) -> None:
    imp, report = with_behaviour
    wrong = {p.reason: p for p in imp.validation.problems}["wrong_type"]
    assert wrong.count == 1 and wrong.examples[0]["column"] == "chat_messages"
    html = (report / "report.html").read_text()
    assert "Behaviour by QoE" in html and "<table class=behaviour>" in html
