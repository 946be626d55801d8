"""The impact estimators at scale: sums added block by block are the same as over the whole
log, cells looked up per block are make_cells' cells, and arrays parked in files come back
whole. At 100 M sessions these are what keeps one run under 8 GiB; here they are checked on
small logs cut into small blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qoe.impact import causal
from qoe.impact.causal import cell_table, make_cells, match_pairs
from qoe.impact.dropoff import abandonment
from qoe.impact.link import Sessions


def _log(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    network = rng.integers(0, 3, n).astype(np.int8)
    device = rng.integers(0, 4, n).astype(np.int8)
    room = rng.integers(0, 40, n).astype(np.int16)
    join = np.exp(rng.normal(np.log(np.where(network == 1, 3.0, 1.2)), 0.6)).astype(np.float32)
    patience = (1.5 + rng.exponential(6.0, n)).astype(np.float32)
    return {
        "network": network,
        "device": device,
        "room": room,
        "wait": np.minimum(join, patience),
        "left": patience < join,
        "group": rng.integers(0, 8, n).astype(np.int8),
    }


def _curves(log: dict[str, np.ndarray]) -> dict[str, object]:
    res = abandonment(
        log["wait"],
        log["left"],
        {"network": log["network"], "device": log["device"], "room_id": log["room"]},
        ["network", "device", "room_id"],
        log["group"],
        8,
    )
    return {m: (c.share.tolist(), c.knee.to_dict(), c.slope.to_dict()) for m, c in res.items()}


def test_abandonment_is_the_same_whatever_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(40_000)
    whole = _curves(log)
    monkeypatch.setattr(causal, "CHUNK", 997)  # 41 blocks, the last one short
    assert _curves(log) == whole  # digit for digit: the counts are added in the sessions' order


def test_cells_looked_up_per_block_are_make_cells_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(20_000)
    monkeypatch.setattr(causal, "CHUNK", 1000)
    factors = [log["network"], log["device"], log["room"]]
    cells = make_cells(factors)
    table = cell_table(factors)
    assert table is not None and table.count == cells.count
    assert np.array_equal(
        np.concatenate([table.codes(slice(a, a + 1000)) for a in range(0, 20_000, 1000)]), cells.cell
    )
    picked = np.array([5, 17, 19_999, 0])
    assert np.array_equal(table.codes(picked), cells.cell[picked])
    for mine, theirs in zip(table.levels, cells.levels, strict=True):
        assert np.array_equal(mine, theirs)
    # A factor read through a table first: the network's levels 1 and 2 pooled into one.
    pooled = np.array([0, 1, 1], np.int8)
    through = cell_table([log["network"], log["device"]], [pooled, None])
    assert through is not None
    assert np.array_equal(
        through.codes(slice(None)), make_cells([pooled[log["network"]], log["device"]]).cell
    )
    monkeypatch.setattr(causal, "TABLE_CELLS", 8)
    assert cell_table(factors) is None  # too many combinations for a table: make_cells sorts
    assert np.array_equal(make_cells(factors).cell, cells.cell)


def test_matched_pairs_do_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(30_000)
    cell = make_cells([log["network"], log["device"]]).cell
    treated = log["left"]
    control = ~treated & (log["wait"] < 2.0)
    whole = match_pairs(cell, treated, control, np.random.default_rng(9))
    monkeypatch.setattr(causal, "CHUNK", 613)
    blocks = match_pairs(cell, treated, control, np.random.default_rng(9))
    assert all(np.array_equal(a, b) for a, b in zip(whole, blocks, strict=True))
    ti, ci = whole
    per_cell = np.minimum(
        np.bincount(cell[treated], minlength=cell.max() + 1),
        np.bincount(cell[control], minlength=cell.max() + 1),
    )
    assert ti.size == per_cell.sum()  # every cell pairs as many as its smaller side holds
    assert np.array_equal(cell[ti], cell[ci]) and treated[ti].all() and control[ci].all()
    assert np.unique(ti).size == ti.size and np.unique(ci).size == ci.size  # no unit used twice


def _sessions(n: int) -> Sessions:
    rng = np.random.default_rng(1)
    f = rng.random(n).astype(np.float32)
    flag = rng.integers(-1, 2, n).astype(np.int8)
    return Sessions(
        n=n,
        viewer=np.arange(n, dtype=np.int32),
        codes={},
        levels={},
        start=np.arange(n, dtype=float) * 60.0,
        is_open=np.zeros(n, bool),
        joined=np.ones(n, np.int8),
        wait=f,
        join=f,
        watch=f,
        stall_ratio=f,
        av=f,
        chat=f * 2,
        height=f,
        bitrate=f,
        any_orders=True,
        visit_end=np.ones(n, bool),
        customer=np.zeros(n, bool),
        returned={1: flag.copy(), 7: flag.copy(), 30: flag.copy()},
        rebought={1: flag.copy(), 7: flag.copy(), 30: flag.copy()},
        behaviour={"shares": f * 3},
    )


def test_parked_arrays_fail_loudly_and_come_back_whole(tmp_path: Path) -> None:
    s = _sessions(1000)
    start, returned30, shares = s.start.copy(), s.returned[30].copy(), s.behaviour["shares"].copy()
    s.park(tmp_path, ["start", "returned[30]", "behaviour[shares]", "behaviour[chat_messages]"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "behaviour[shares].npy",
        "returned[30].npy",
        "start.npy",
    ]
    with pytest.raises(RuntimeError, match=r"Sessions\.start is parked"):
        _ = s.start
    assert 30 not in s.returned and "shares" not in s.behaviour
    assert s.returned[7] is not None  # what is not parked stays
    s.unpark(["start", "returned[30]", "behaviour[shares]"])
    assert np.array_equal(s.start, start) and np.array_equal(s.returned[30], returned30)
    assert np.array_equal(s.behaviour["shares"], shares)
    assert not s.parked and not any(tmp_path.iterdir())  # the files go as the arrays come back
    with pytest.raises(ValueError, match="not an array"):
        s.park(tmp_path, ["any_orders"])
