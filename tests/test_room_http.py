"""The room's HTTP semantics (RFC 9725 for WHIP; WHEP follows the same rules)."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from probes.webrtc.peer import candidate_addresses, rtc_configuration

SDP = {"Content-Type": "application/sdp"}


async def recvonly_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(rtc_configuration())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    with candidate_addresses(("127.0.0.1",)):
        await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_whep_session_lifecycle(room) -> None:
    async with room() as live, aiohttp.ClientSession() as http:
        pc, offer = await recvonly_offer()
        try:
            async with http.post(f"{live.url}/whep/demo", data=offer, headers=SDP) as r:
                assert r.status == 201
                assert r.content_type == "application/sdp"
                assert "a=setup:" in await r.text()
                location = r.headers["Location"]
                assert location.startswith("/whep/demo/")
                assert r.headers["ETag"]
                assert r.headers["Access-Control-Allow-Origin"] == "*"
            async with http.get(f"{live.url}/rooms/demo") as r:
                info = await r.json()
                assert info["viewers"] == 1 and info["source"] == "host"
            fragment = "a=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n"
            async with http.patch(
                f"{live.url}{location}",
                data=fragment,
                headers={"Content-Type": "application/trickle-ice-sdpfrag"},
            ) as r:
                assert r.status == 204
            restart = "a=ice-ufrag:brandnew\r\na=ice-pwd:0123456789012345678901\r\n"
            async with http.patch(
                f"{live.url}{location}",
                data=restart,
                headers={"Content-Type": "application/trickle-ice-sdpfrag"},
            ) as r:
                assert r.status == 422
            async with http.delete(f"{live.url}{location}") as r:
                assert r.status == 200
            async with http.delete(f"{live.url}{location}") as r:
                assert r.status == 404
            async with http.get(f"{live.url}/rooms/demo") as r:
                assert (await r.json())["viewers"] == 0
        finally:
            await pc.close()


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "reason"),
    [
        ("/whep/demo", {"Content-Type": "text/plain"}, "v=0", 415, "application/sdp"),
        ("/whep/demo", SDP, "hello", 400, "not an SDP offer"),
        (
            "/whep/nobody-here",
            SDP,
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
            404,
            "has no publisher",
        ),
        (
            "/whep/bad%20name",
            SDP,
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
            400,
            "invalid room name",
        ),
        (
            "/whep/demo",
            SDP,
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nthis is broken\r\n",
            400,
            "no media",
        ),
    ],
)
async def test_clear_4xx_errors(room, path: str, headers: dict, body: str, status: int, reason: str) -> None:
    async with (
        room() as live,
        aiohttp.ClientSession() as http,
        http.post(f"{live.url}{path}", data=body, headers=headers) as r,
    ):
        assert r.status == status
        text = await r.text()
        assert reason in text
        assert len(text.strip().splitlines()) == 1


async def test_cors_preflight_and_player_page(room) -> None:
    async with room() as live, aiohttp.ClientSession() as http:
        async with http.options(f"{live.url}/whep/demo") as r:
            assert r.status == 204
            assert r.headers["Accept-Post"] == "application/sdp"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
        async with http.get(f"{live.url}/") as r:
            assert r.status == 200 and "/whep/" in await r.text()
        async with http.get(f"{live.url}/healthz") as r:
            assert r.status == 200


async def test_a_room_that_falls_behind_says_so(room, caplog) -> None:
    """A room held up for 200 ms reads as 145-250 ms late (see tests/test_looplag.py)."""
    async with room() as live, aiohttp.ClientSession() as http:
        await asyncio.sleep(0.2)
        time.sleep(0.2)  # the machine too busy for the room, for a moment
        await asyncio.sleep(0.1)
        async with http.get(f"{live.url}/rooms/demo") as r:
            stalls = (await r.json())["loop_stalls"]
    assert len(stalls) == 1, stalls
    assert 0.145 <= stalls[0]["late_seconds"] < 0.25
    assert abs(stalls[0]["at"] - time.time()) < 5
    warnings = [r.getMessage() for r in caplog.records if r.name == "sim.room.server"]
    assert len(warnings) == 1 and "the room's event loop ran" in warnings[0], warnings


async def test_an_offer_missing_a_kind_is_a_400_that_leaves_no_socket_open(room) -> None:
    """An offer without its video m-line once left the room's video transceiver without a
    transport: closing the refused peer raised there (a 500), before the audio transport's
    socket was closed."""
    pc, offer = await recvonly_offer()
    await pc.close()
    audio_only = "\r\n".join(line for line in offer.split("\r\n") if not line.startswith("m=video"))
    async with room() as live, aiohttp.ClientSession() as http:
        async with http.post(f"{live.url}/whep/demo", data=audio_only, headers=SDP) as r:
            assert r.status == 400 and "no media this room can send" in await r.text()
        await asyncio.sleep(0.2)
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            async with http.post(f"{live.url}/whep/demo", data=audio_only, headers=SDP) as r:
                assert r.status == 400
        await asyncio.sleep(0.2)
        assert len(os.listdir("/proc/self/fd")) - fds <= 2  # 20 leaked sockets before the fix


async def test_stats_count_the_servers_rooms_sessions_and_tasks(room) -> None:
    async with room() as live, aiohttp.ClientSession() as http:
        async with http.get(f"{live.url}/stats") as r:
            idle = await r.json()
        assert idle["rooms"] == 1 and idle["sessions"] == 0
        assert idle["tasks"] >= 3  # at least the host's video and audio, and the idle-room reaper
        pc, offer = await recvonly_offer()
        try:
            async with http.post(f"{live.url}/whep/demo", data=offer, headers=SDP) as r:
                location = r.headers["Location"]
            async with http.get(f"{live.url}/stats") as r:
                assert (await r.json())["sessions"] == 1
            async with http.delete(f"{live.url}{location}"):
                pass
            async with http.get(f"{live.url}/stats") as r:
                assert (await r.json())["sessions"] == 0
        finally:
            await pc.close()


async def test_an_ended_session_leaves_no_timer_behind(room) -> None:
    """Each session's connect timer held its peer for the whole connect limit (15 s), even
    after a DELETE: posting and deleting in a loop kept every ended peer alive."""
    async with room() as live, aiohttp.ClientSession() as http:
        pc, offer = await recvonly_offer()
        try:
            async with http.get(f"{live.url}/stats") as r:
                before = (await r.json())["tasks"]
            for _ in range(10):
                async with http.post(f"{live.url}/whep/demo", data=offer, headers=SDP) as r:
                    location = r.headers["Location"]
                async with http.delete(f"{live.url}{location}") as r:
                    assert r.status == 200
            await asyncio.sleep(0.3)
            async with http.get(f"{live.url}/stats") as r:
                assert (await r.json())["tasks"] <= before  # 10 more before the fix
        finally:
            await pc.close()
