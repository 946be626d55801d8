"""The grab probe's generic mode against small scripted servers on loopback: a platform's own
drop signal (a polled URL, a WebSocket) and its own grab endpoint.

Runs are 1.5 to 2 s; what is checked is outcomes and error kinds, and that a run ends within
its duration plus a second of teardown, not timing figures.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from probes import probe_spec, run_probe
from qoe.result import ProbeResult
from tests.servers import aiohttp_app

pytestmark = pytest.mark.slow  # real probe runs of 1 to 2 s each

OPENED = 1_700_000_000.0


@asynccontextmanager
async def platform(signal_text: str, grab_status: int = 200, grab_text: str = "") -> AsyncIterator[str]:
    """A platform: ``GET /drop`` answers ``signal_text``, ``/ws`` sends it once a client
    connects, ``POST /grab`` answers ``grab_status`` with ``grab_text``."""
    grabs: list[str] = []

    async def drop(request: web.Request) -> web.Response:
        return web.Response(text=signal_text, content_type="application/json")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str('{"type": "chat", "text": "hello"}')
        await socket.send_str(signal_text)
        async for _ in socket:
            pass
        return socket

    async def grab(request: web.Request) -> web.Response:
        grabs.append(await request.text())
        return web.Response(status=grab_status, text=grab_text)

    app = web.Application()
    app.router.add_get("/drop", drop)
    app.router.add_get("/ws", ws)
    app.router.add_post("/grab", grab)
    async with aiohttp_app(app) as base:
        yield base


async def grab(url: str, duration: float = 2.0, **options: object) -> tuple[ProbeResult, float]:
    began = time.monotonic()
    result = await run_probe(probe_spec(url, kind="grab", duration=duration, options=options))
    return result, time.monotonic() - began


async def test_a_template_that_never_matches_is_no_signal_within_the_deadline() -> None:
    async with platform('{"coupon": {"id": 7}}') as base:
        polled, took = await grab(
            f"{base}/drop", signal="poll", drop_path="coupon.code", grab_url=f"{base}/grab", poll_every=0.1
        )
        heard, took_ws = await grab(
            base.replace("http", "ws") + "/ws",
            signal="websocket",
            drop_regex=r"coupon (\d+)",
            grab_url=f"{base}/grab",
        )
    for result, seconds in ((polled, took), (heard, took_ws)):
        assert not result.success
        assert result.error is not None and result.error.kind == "no_signal", result.error
        assert seconds < 2.0 + 1.0
        assert result.grab.seen == 0 and result.grab.won == 0
    assert polled.error is not None and "'coupon.code'" in polled.error.message


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        (500, "Internal Server Error", "grab_failed"),
        (200, "<html>busy, try later</html>", "grab_garbled"),
        (200, '{"outcome": "maybe"}', "grab_garbled"),
    ],
)
async def test_a_broken_grab_endpoint_has_its_own_error_kind(status: int, text: str, kind: str) -> None:
    async with platform('{"drop": 9}', status, text) as base:
        result, took = await grab(f"{base}/drop", signal="poll", grab_url=f"{base}/grab")
    assert not result.success
    assert result.error is not None and result.error.kind == kind, result.error
    assert took < 2.0  # the failure ends the run at once, not at its planned end
    assert result.grab.seen == 1 and result.grab.won == 0 and result.grab.sold_out == 0


async def test_sold_out_is_an_outcome_not_an_error() -> None:
    opened = time.time()  # the platform opens the drop now; the probe's first poll sees it
    answer = f'{{"result": {{"state": "gone"}}, "sold_out_at": {OPENED + 0.5}}}'
    signal = f'{{"event": "coupon", "data": {{"id": "A7", "start": {opened}}}}}'
    async with platform(signal, 200, answer) as base:
        result, _ = await grab(
            f"{base}/drop",
            duration=1.5,
            signal="poll",
            drop_path="data.id",
            opened_at_path="data.start",
            grab_url=f"{base}/grab",
            grab_template='{"coupon": "{drop}", "user": "{client}"}',
            outcome_path="result.state",
            won_value="mine",
            sold_out_value="gone",
            client="viewer-1",
        )
    assert result.success, result.error
    g = result.grab
    assert (g.seen, g.won, g.sold_out, g.unanswered) == (1, 0, 1, 0)
    assert g.drops is not None and g.drops[0]["drop"] == "A7" and g.drops[0]["won"] is False
    assert g.drops[0]["sold_out_at"] == OPENED + 0.5
    # Seen at the first poll, well within the half second a loaded loopback could take.
    assert g.seen_after_seconds["p50"] is not None and 0 <= g.seen_after_seconds["p50"] < 0.5
    assert g.answer_seconds["p50"] is not None and 0 < g.answer_seconds["p50"] < 0.5


async def test_a_regex_without_a_group_is_a_config_error() -> None:
    result, _ = await grab("http://127.0.0.1:9/drop", duration=1.0, signal="poll", drop_regex="coupon")
    assert not result.success and result.error is not None and result.error.kind == "config"
