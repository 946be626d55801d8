"""The runner owns the watch window: teardown is timed on its own, never inside a figure.

Tolerances: the fake probes below sleep on the event loop, so their instants are exact to a
few milliseconds on a quiet machine; bounds allow 50 ms for a busy one. The end-to-end case
puts a relay in front of the room whose DELETE answers 2 s late, and compares it with the
same room answered at once: freeze count and stall ratio are equal (both 0 on a clean
room; a teardown counted as watching would be a trailing freeze of 2 s), duration within
50 ms, and the slow DELETE shows as at least 2 s of teardown.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from probes import ProbeSpec, run_probe
from probes.base import Watch, run
from qoe import clock
from qoe.errors import DisconnectedError
from qoe.result import ProbeResult
from qoe.timeline import VideoFrameEvent


def frames_until_stopped(teardown: float, fail_at: float | None = None):  # type: ignore[no-untyped-def]
    """A probe that renders 30 fps until the window's end (or fails) and tears down slowly."""

    async def probe(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
        timeline = watch.open_log(("first",), "viewer")
        watch.defer(lambda: asyncio.sleep(teardown))
        while watch.left() > 0:
            now = clock.monotonic()
            if fail_at is not None and now - watch.start >= fail_at:
                raise DisconnectedError("the sender is gone")
            timeline.video.append(VideoFrameEvent(now, clock.wall(), now, 64, 36))
            timeline.mark("first")
            await asyncio.sleep(1 / 30)

    return probe


async def test_a_slow_teardown_is_not_watched_time() -> None:
    spec = ProbeSpec(url="http://127.0.0.1:9/", kind="test", duration=1.0)
    quick = await run(spec, frames_until_stopped(0.0))
    slow = await run(spec, frames_until_stopped(2.0))
    for result in (quick, slow):
        assert result.success, result.error
        assert result.duration_seconds == pytest.approx(1.0, abs=0.001)
        assert result.video.freeze_count == 0
        assert result.video.stall_ratio == 0
    assert quick.teardown_seconds is not None and quick.teardown_seconds < 0.05
    assert slow.teardown_seconds is not None and 2.0 <= slow.teardown_seconds < 2.1


async def test_a_failed_run_stops_watching_when_it_fails() -> None:
    spec = ProbeSpec(url="http://127.0.0.1:9/", kind="test", duration=3.0)
    result = await run(spec, frames_until_stopped(1.0, fail_at=0.5))
    assert not result.success and result.error is not None and result.error.kind == "disconnected"
    assert result.duration_seconds == pytest.approx(0.5, abs=0.05)
    # The teardown's second is no trailing stall (a freeze never is: no frame closes it).
    assert result.video.freeze_count == 0 and result.video.trailing_seconds == 0
    assert result.teardown_seconds is not None and 1.0 <= result.teardown_seconds < 1.1


async def test_a_teardown_past_its_budget_is_cut_and_said(monkeypatch) -> None:
    monkeypatch.setattr("probes.base.TEARDOWN_SECONDS", 0.3)
    spec = ProbeSpec(url="http://127.0.0.1:9/", kind="test", duration=0.5, deadline_seconds=0.8)
    result = await run(spec, frames_until_stopped(30.0))
    assert result.success
    assert result.duration_seconds == pytest.approx(0.5, abs=0.001)
    # The budget is what is left of the deadline, but never under the floor of 1 s.
    assert result.teardown_seconds is not None and 1.0 <= result.teardown_seconds < 1.1


class SlowDeleteRelay:
    """An HTTP relay in front of a room that answers DELETE ``delay`` seconds late."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream, self.delay = upstream, delay
        self.deletes = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> SlowDeleteRelay:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _relay(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.deletes += 1
            await asyncio.sleep(self.delay)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "if-match")}
        async with self._http.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            data = await answer.read()
            keep = ("Content-Type", "Location", "ETag")
            return web.Response(
                status=answer.status,
                body=data,
                headers={k: answer.headers[k] for k in keep if k in answer.headers},
            )


@pytest.mark.slow(seconds=10)
async def test_a_server_whose_delete_takes_2_s(room) -> None:
    async with room() as live, SlowDeleteRelay(live.url, 2.0) as relay:
        direct = await run_probe(ProbeSpec(url=f"{live.url}/whep/demo", kind="whep", duration=4))
        slow = await run_probe(ProbeSpec(url=f"{relay.url}/whep/demo", kind="whep", duration=4))
    assert relay.deletes == 1
    for result in (direct, slow):
        assert result.success, result.error
        assert result.duration_seconds == pytest.approx(4.0, abs=0.05)
    assert slow.video.freeze_count == direct.video.freeze_count == 0
    assert slow.video.stall_ratio == direct.video.stall_ratio == 0
    assert direct.teardown_seconds is not None and direct.teardown_seconds < 1.0
    assert slow.teardown_seconds is not None and 2.0 <= slow.teardown_seconds < 3.0
