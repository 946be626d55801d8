"""The room's bounds: what a client, or a flood of them, can make it hold (sim.room.limits).

Each test is one way an attacker on loopback made the room grow or stall before it had
bounds: rooms made by refused offers and never reaped, sessions that never connect, a chat
reader that never reads, a chat flood, bodies that are not text, names that are not names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import pytest

from probes import probe_spec, run_probe
from sim.room.limits import RoomLimits
from sim.room.server import LiveRoom
from tests.test_room_http import SDP, recvonly_offer

BAD_SDP = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


async def rooms(http: aiohttp.ClientSession, url: str) -> dict[str, dict]:
    async with http.get(f"{url}/rooms") as r:
        return {room["name"]: room for room in await r.json()}


async def test_refused_offers_and_idle_chat_rooms_leave_nothing_behind() -> None:
    limits = RoomLimits(idle_room_seconds=0.3)
    async with LiveRoom("127.0.0.1", 0, limits=limits) as live, aiohttp.ClientSession() as http:
        for i in range(50):
            async with http.post(f"{live.url}/whip/flood-{i}", data=BAD_SDP, headers=SDP) as r:
                assert r.status == 400
        assert list(await rooms(http, live.url)) == ["demo"]
        async with http.ws_connect(f"{live.url}/chat/lobby") as ws:
            await ws.send_json({"text": "hi"})
            assert (await ws.receive_json())["text"] == "hi"
            assert "lobby" in await rooms(http, live.url)
        await asyncio.sleep(1.5)  # empty for longer than the idle limit: reaped
        assert list(await rooms(http, live.url)) == ["demo"]


async def test_over_a_bound_the_answer_is_503_with_retry_after() -> None:
    limits = RoomLimits(rooms=2, sessions_per_room=1, retry_after=7)
    async with (
        LiveRoom("127.0.0.1", 0, limits=limits) as live,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{live.url}/chat/second"),
    ):
        async with http.get(f"{live.url}/chat/third") as r:
            assert r.status == 503 and r.headers["Retry-After"] == "7"
            assert "limit of 2 rooms" in await r.text()
        pcs = []
        try:
            statuses = []
            for _ in range(2):
                pc, offer = await recvonly_offer()
                pcs.append(pc)
                async with http.post(f"{live.url}/whep/demo", data=offer, headers=SDP) as r:
                    statuses.append((r.status, r.headers.get("Retry-After")))
            assert statuses == [(201, None), (503, "7")]
        finally:
            for pc in pcs:
                await pc.close()


async def test_a_session_that_never_connects_expires() -> None:
    async with (
        LiveRoom("127.0.0.1", 0, limits=RoomLimits(connect_seconds=0.5)) as live,
        aiohttp.ClientSession() as http,
    ):
        pc, offer = await recvonly_offer()
        try:
            async with http.post(f"{live.url}/whep/demo", data=offer, headers=SDP) as r:
                assert r.status == 201
            assert (await rooms(http, live.url))["demo"]["viewers"] == 1
            await asyncio.sleep(1.5)  # the offerer never answers ICE
            assert (await rooms(http, live.url))["demo"]["viewers"] == 0
        finally:
            await pc.close()
        # A viewer that does connect is not expired.
        result = await run_probe(probe_spec(f"{live.url}/whep/demo", duration=2))
        assert result.success and (result.video.frames or 0) > 40


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "reason"),
    [
        ("/whip/x", SDP, "v=0\r\nm=" + "a" * 70_000, 413, ""),
        ("/whip/x", SDP, b"v=0\r\nm=\xff\xfe", 400, "the body is not UTF-8 text"),
        ("/whip/...", SDP, "v=0\r\nm=video", 400, "invalid room name"),
        ("/whep/-", SDP, "v=0\r\nm=video", 400, "invalid room name"),
    ],
)
async def test_bodies_and_names_that_are_not_what_they_claim(
    path: str, headers: dict[str, str], body: str | bytes, status: int, reason: str
) -> None:
    async with LiveRoom("127.0.0.1", 0) as live, aiohttp.ClientSession() as http:
        async with http.post(f"{live.url}{path}", data=body, headers=headers) as r:
            assert r.status == status
            assert reason in await r.text()
        assert list(await rooms(http, live.url)) == ["demo"]


async def test_a_patch_with_garbage_candidates_is_no_server_error() -> None:
    async with LiveRoom("127.0.0.1", 0) as live, aiohttp.ClientSession() as http:
        pc, offer = await recvonly_offer()
        try:
            async with http.post(f"{live.url}/whep/demo", data=offer, headers=SDP) as r:
                location = r.headers["Location"]
            trickle = {"Content-Type": "application/trickle-ice-sdpfrag"}
            for fragment in (b"a=candidate:garbage\r\n", b"a=candidate:1 1\r\n", b"a=candidate:\xff\r\n"):
                async with http.patch(f"{live.url}{location}", data=fragment, headers=trickle) as r:
                    assert r.status in (204, 400), (fragment, r.status, await r.text())
        finally:
            await pc.close()


async def test_one_chat_client_that_never_reads_holds_nobody_up() -> None:
    async with (
        LiveRoom("127.0.0.1", 0, limits=RoomLimits(chat_rate=1e6)) as live,
        aiohttp.ClientSession() as http,
    ):
        url = f"{live.url.replace('http', 'ws')}/chat/demo"
        async with http.ws_connect(url), http.ws_connect(url) as sender, http.ws_connect(url) as reader:
            count = 3000  # 10 KB each, 30 MB: far more than the silent client's socket buffers hold

            async def read_all() -> int:
                got = 0
                while got < count:
                    got += "i" in await reader.receive_json()
                return got

            reading = asyncio.create_task(read_all())
            for i in range(count):
                await sender.send_str(json.dumps({"i": i, "pad": "x" * 10_000}))
                if i % 50 == 0:
                    await asyncio.sleep(0.005)
            async with asyncio.timeout(20):
                assert await reading == count  # every message, the first client's silence aside
            info = (await rooms(http, live.url))["demo"]["chat"]
        assert info["received"] == count
        assert info["slow_drops"] > 0  # the silent client's, counted


async def test_a_chat_flood_is_dropped_and_counted_and_bad_json_answered() -> None:
    async with (
        LiveRoom("127.0.0.1", 0, limits=RoomLimits(chat_rate=10)) as live,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{live.url.replace('http', 'ws')}/chat/demo") as ws,
    ):
        for i in range(100):
            await ws.send_json({"i": i})
        await asyncio.sleep(0.3)
        info = (await rooms(http, live.url))["demo"]["chat"]
        assert info["flood_drops"] >= 80 and info["received"] + info["flood_drops"] == 100
        await asyncio.sleep(1.0)  # the allowance refills
        for text in ("[" * 8000 + "]" * 8000, '{"n": ' + "9" * 5000 + "}", "not json"):
            await ws.send_str(text)
            while (reply := await ws.receive_json()).get("i") is not None:
                pass  # broadcasts of the flood's accepted messages
            assert reply == {"error": "messages must be JSON objects"}


async def half_sent_connections_close(url: str, path: str, bound: float, count: int = 300) -> list[float]:
    """Open ``count`` connections to ``url`` that never finish a request head (most stop in
    the request line; every sixth sends a line and trickles one header byte after another,
    as slowloris does), check a whole request to ``path`` is answered meanwhile, and return
    how many seconds after opening the server closed each of them."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    opened: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(count):
        # Timed from before the connect: the server's clock for it starts later than that,
        # never earlier, however late this loop gets back to it on a busy host.
        start = time.monotonic()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode() if i % 6 == 0 else b"GET /heal")
        opened.append((start, reader, writer))

    async def trickle(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while not writer.is_closing():
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.2)

    trickling = [asyncio.create_task(trickle(w)) for i, (_, _, w) in enumerate(opened) if i % 6 == 0]

    async def closed_after(start: float, reader: asyncio.StreamReader) -> float:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the server closes (after an answer of 4xx, if any)
        return time.monotonic() - start

    try:
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.get(f"{url}{path}") as r:
                assert r.status == 200
            assert time.monotonic() - started < 1.0  # answered while the 300 hang on
        return list(
            await asyncio.wait_for(
                asyncio.gather(*(closed_after(t, r) for t, r, _ in opened)), timeout=bound + 10
            )
        )
    finally:
        for task in trickling:
            task.cancel()
        for _, _, writer in opened:
            writer.close()


async def test_connections_that_never_finish_their_request_are_closed() -> None:
    limits = RoomLimits(idle_connection_seconds=1.5)
    async with LiveRoom("127.0.0.1", 0, limits=limits) as live:
        closed = await half_sent_connections_close(live.url, "/healthz", limits.idle_connection_seconds)
        assert live._runner is not None and live._runner.server is not None
        assert live._runner.server.connections == []  # nothing of theirs held
    assert len(closed) == 300
    # Closed by the bound itself: not before it (nothing else ends them), and soon after.
    assert min(closed) >= 1.4 and max(closed) <= 1.5 + 1.5, (min(closed), max(closed))
