"""Coupon drops, pure: the tag layout, the room's drop and grab rules, and grab figures.

No event loop and no media: times are passed in, so every check is exact (``==``) except
the quantiles, which are linear interpolation of known values, checked to 1e-6 s: Unix
times near 1.7e9 keep about 0.2 µs in a float.
"""

from __future__ import annotations

import pytest

from qoe import eventlog, metrics
from qoe.errors import ConfigError
from qoe.signal import DROP_FLAG, DROP_SHOW_SECONDS, NONCE_MAX, drop_of, drop_tag, nonce_of
from qoe.signal.code import FrameCode, paint_code, read_code
from qoe.timeline import Grab, InteractionAsked, RunInfo, Timeline, VideoFrameEvent
from sim.room.drops import KEPT, CouponDrops, DropError, host_tag, parse_grab

T0 = 1_700_000_000.0


# -- the tag layout -----------------------------------------------------------------------


def test_drop_and_nonce_tags_never_overlap() -> None:
    assert DROP_FLAG == 0x8000 and NONCE_MAX == 0x7FFF
    assert drop_tag(1) == 0x8001 and drop_tag(32767) == 0xFFFF
    for tag in (1, 77, NONCE_MAX):
        assert nonce_of(tag) == tag and drop_of(tag) is None
    for drop in (1, 77, 32767):
        assert drop_of(drop_tag(drop)) == drop and nonce_of(drop_tag(drop)) is None
    assert drop_of(0) is None and nonce_of(0) is None and drop_of(None) is None
    assert drop_of(DROP_FLAG) is None  # the flag with id 0 announces nothing
    for bad in (0, 32768, -1):
        with pytest.raises(ValueError):
            drop_tag(bad)


def test_a_drop_tag_survives_the_frame_code() -> None:
    import numpy as np

    luma = np.full((180, 320), 100, dtype=np.uint8)
    paint_code(luma, FrameCode.at(5, T0, tag=drop_tag(1234)))
    code = read_code(luma)
    assert code is not None and drop_of(code.tag) == 1234


def test_interaction_latency_ignores_drop_tags() -> None:
    asked = [InteractionAsked(5, T0)]
    frames = [
        VideoFrameEvent(at=1.0, wall=T0 + 0.1, stream_time=0.0, width=2, height=2, tag=drop_tag(5)),
        VideoFrameEvent(at=1.1, wall=T0 + 0.2, stream_time=0.0, width=2, height=2, tag=5),
    ]
    assert metrics.interaction_latencies(asked, frames) == [pytest.approx(0.2)]


# -- the room's drops ---------------------------------------------------------------------


def test_first_n_distinct_clients_win_and_a_repeat_is_not_a_second_win() -> None:
    drops = CouponDrops(every=5.0, stock=2)
    assert drops.next_opening(T0 + 1.0) == T0 + 5.0  # T0 is a multiple of 5
    drop = drops.open(T0)
    assert drop.id == 1
    a = drops.grab(1, "a", T0 + 0.1)
    assert (a.outcome, a.remaining, a.sold_out_at) == ("won", 1, None)
    again = drops.grab(1, "a", T0 + 0.15)
    assert (again.outcome, again.remaining) == ("won", 1)  # not a second coupon
    b = drops.grab(1, "b", T0 + 0.2)
    assert (b.outcome, b.remaining, b.sold_out_at) == ("won", 0, T0 + 0.2)
    c = drops.grab(1, "c", T0 + 0.3)
    assert (c.outcome, c.sold_out_at, c.opened_at) == ("sold_out", T0 + 0.2, T0)
    assert drop.winners == ["a", "b"] and drop.grabs == 4
    assert drops.info()["drops"] == [
        {
            "id": 1,
            "opened_at": T0,
            "stock": 2,
            "won": 2,
            "sold_out_at": T0 + 0.2,
            "closed_at": None,
            "grabs": 4,
        }
    ]


def test_unknown_and_closed_drops_are_refused() -> None:
    drops = CouponDrops(every=3.0, stock=1)
    with pytest.raises(DropError) as unknown:
        drops.grab(1, "a", T0)
    assert unknown.value.status == 404
    drops.open(T0)
    drops.open(T0 + 3.0)
    with pytest.raises(DropError) as closed:
        drops.grab(1, "a", T0 + 3.1)
    assert closed.value.status == 410 and "closed" in str(closed.value)
    assert drops.grab(2, "a", T0 + 3.1).outcome == "won"


def test_a_drop_shows_for_its_time_then_the_nonce_returns() -> None:
    drops = CouponDrops(every=5.0, stock=1)
    assert drops.showing(T0) is None
    drops.open(T0)
    shown = drops.showing(T0)
    assert shown is not None and shown.id == 1
    assert drops.showing(T0 + DROP_SHOW_SECONDS - 0.001) is shown
    assert drops.showing(T0 + DROP_SHOW_SECONDS) is None


def test_a_chat_nonce_waits_while_a_drop_shows_then_returns() -> None:
    drops = CouponDrops(every=5.0, stock=1)
    assert host_tag(None, 42, T0) == 42 and host_tag(drops, 0, T0) == 0
    drops.open(T0)
    assert host_tag(drops, 42, T0 + 0.5) == drop_tag(1)  # the drop holds the field
    assert host_tag(drops, 43, T0 + DROP_SHOW_SECONDS) == 43  # then the latest nonce returns


def test_ids_wrap_and_only_the_latest_drops_are_kept() -> None:
    drops = CouponDrops(every=3.0, stock=1)
    for i in range(KEPT + 5):
        drops.open(T0 + 3.0 * i)
    assert len(drops.drops) == KEPT and next(iter(drops.drops)) == 6
    drops._next_id = 32767
    assert drops.open(T0 + 1e6).id == 32767 and drops.open(T0 + 2e6).id == 1


@pytest.mark.parametrize(
    ("every", "stock", "message"),
    [
        (2.0, 5, "--coupon-every must be longer than the 2 s a drop shows, got 2.0"),
        (5.0, 0, "--coupon-stock must be from 1 to 100000, got 0"),
    ],
)
def test_bad_drop_settings(every: float, stock: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CouponDrops(every, stock)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([1], 'expected a JSON object {"drop": ID, "client": "..."}'),
        ({"drop": 0, "client": "a"}, "'drop' must be a drop id from 1 to 32767"),
        ({"drop": True, "client": "a"}, "'drop' must be a drop id from 1 to 32767"),
        ({"drop": 3, "client": ""}, "'client' must be a client id of 1 to 64 printable characters"),
        ({"drop": 3, "client": "x" * 65}, "'client' must be a client id of 1 to 64 printable characters"),
        ({"drop": 3}, "'client' must be a client id of 1 to 64 printable characters"),
    ],
)
def test_bad_grab_bodies(body: object, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_grab(body)
    assert str(caught.value) == problem


def test_a_grab_body_may_name_the_drop_as_text() -> None:
    assert parse_grab({"drop": "12", "client": "c"}) == (12, "c")


# -- grab figures from an event log -------------------------------------------------------


def grab_log() -> Timeline:
    log = Timeline((), start=100.0, started_at=T0, role="grab", run=RunInfo(probe="g", kind="grab"))
    log.grabs = [
        # seen 0.10 s after it opened, answered in 20 ms: won
        Grab("1", T0 + 5.10, T0 + 5.0, 105.1, 105.12, "won", None, 200),
        # seen 0.30 s after, answered in 40 ms: sold out at +5.2
        Grab("2", T0 + 10.30, T0 + 10.0, 110.3, 110.34, "sold_out", T0 + 10.2, 200),
        # seen with no opening time given, grab sent, never answered
        Grab("3", T0 + 15.2, None, 115.2, None, None, None, None),
    ]
    log.end = 116.0
    return log


def test_grab_figures_from_a_hand_built_log() -> None:
    section = metrics.grabs(grab_log().grabs, 116.0)
    assert (section.seen, section.won, section.sold_out, section.unanswered) == (3, 1, 1, 1)
    # seen-after over the two known openings: 0.10 and 0.30
    assert section.seen_after_seconds["p50"] == pytest.approx(0.20, abs=1e-6)
    assert section.seen_after_seconds["p95"] == pytest.approx(0.29, abs=1e-6)
    assert section.seen_after_seconds["max"] == pytest.approx(0.30, abs=1e-6)
    assert section.answer_seconds["p50"] == pytest.approx(0.03, abs=1e-6)
    assert section.answer_seconds["max"] == pytest.approx(0.04, abs=1e-6)
    assert section.drops is not None
    assert [d["won"] for d in section.drops] == [True, False, None]
    assert section.drops[1]["sold_out_at"] == T0 + 10.2
    assert section.drops[2]["seen_after_seconds"] is None


def test_an_answer_after_the_window_closed_is_not_counted() -> None:
    section = metrics.grabs(grab_log().grabs, end=110.33)  # drop 2's answer came at 110.34
    assert (section.won, section.sold_out, section.unanswered) == (1, 0, 2)  # 2 and 3 unanswered


def test_a_grab_run_replays_to_the_same_figures() -> None:
    log = grab_log()
    first = metrics.result_of(log)
    again = metrics.result_of(eventlog.loads(eventlog.dumps(log)))
    assert first.to_dict() == again.to_dict()
    assert first.grab.won == 1 and first.grab.sold_out == 1


def test_a_grab_run_that_saw_nothing_reports_zero_drops_seen() -> None:
    log = Timeline((), start=0.0, started_at=T0, role="grab", run=RunInfo(kind="grab"))
    log.end = 5.0
    section = metrics.result_of(log).grab
    assert (section.seen, section.won, section.sold_out) == (0, 0, 0)
    assert section.seen_after_seconds["p50"] is None


def test_the_results_table_shows_grab_columns() -> None:
    from qoe.report import results_table

    table = results_table([metrics.result_of(grab_log())])
    header, _, row = table.splitlines()
    assert "seen after p50 ms" in header and "sold out" in header
    assert row.split()[-5:] == ["3", "200", "39", "1", "1"]  # seen, p50, answer p95 (ms), won, sold out


def test_a_drop_opened_before_the_viewer_watched_has_no_seen_after() -> None:
    # The viewer's first frame was captured at T0 + 10.1: drop 1 (opened at T0 + 5) was
    # announced before it watched, so its seen-after would time the join. Drop 2 opened
    # at T0 + 10.0, also before; only a drop opened after T0 + 10.1 would count.
    section = metrics.grabs(grab_log().grabs, 116.0, watching_from=T0 + 10.1)
    assert section.drops is not None
    assert [d["seen_after_seconds"] for d in section.drops] == [None, None, None]
    assert (section.seen, section.won, section.sold_out) == (3, 1, 1)  # still seen, won, sold out
    kept = metrics.grabs(grab_log().grabs, 116.0, watching_from=T0 + 7.0)
    assert kept.seen_after_seconds["p50"] == pytest.approx(0.30, abs=1e-6)
