"""Bad input: every way a probe can fail ends as a result with a specific error kind.

Each case is checked twice: through ``qoe probe`` as a user runs it (exit 1, one line on
stderr, no traceback, JSON with success false) and in this process (no tasks, threads or
sockets left behind once the result is back).

A WHEP join that connects but shows no video says why, each cause its own kind: an answer
with no video the probe can decode (``no_common_codec``), no video RTP (``no_rtp``), and RTP
none of whose frames decode (``undecodable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiortc.rtcrtpsender
import pytest
from aiohttp import web
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamTrack
from av import VideoFrame

from probes import ProbeSpec, run_probe
from probes.webrtc.session import Session
from probes.webrtc.whep import PHASES
from qoe import clock
from qoe.result import ProbeResult
from qoe.timeline import Timeline
from tests.conftest import ROOT
from tests.servers import aiohttp_app
from tests.whep_front import Front, front_end, peer_server

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def bad_sdp_server() -> AsyncIterator[str]:
    """A WHEP endpoint that answers 201 with something that is not SDP."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            status=201,
            text="v=0\r\nthis is not an answer\r\n",
            content_type="application/sdp",
            headers={"Location": "/whep/x/1"},
        )

    async def delete(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/whep/{room}", answer)
    app.router.add_delete("/whep/{room}/{id}", delete)
    async with aiohttp_app(app) as base:
        yield f"{base}/whep/demo"


async def cli_probe(url: str, *extra: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qoe",
        "probe",
        url,
        "--json",
        *extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def assert_failed_cleanly(code: int, out: str, err: str, kind: str) -> dict:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert f"probe failed: {kind}:" in lines[0]
    result = json.loads(out)
    assert result["success"] is False
    assert result["error"]["kind"] == kind
    return result


def open_sockets() -> int:
    fds = os.listdir("/proc/self/fd")
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):  # closed between listdir and readlink
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def settled(baseline: tuple[int, int, int]) -> tuple[int, int, int]:
    """Tasks, threads and sockets, once they have had up to 3 s to reach ``baseline``."""
    now = (0, 0, 0)
    for _ in range(30):
        now = (len(asyncio.all_tasks()), threading.active_count(), open_sockets())
        if now <= baseline:
            break
        await asyncio.sleep(0.1)
    return now


async def probe_in_process(url: str, **options: float) -> ProbeResult:
    return await run_probe(ProbeSpec(url=url, kind="whep", **options))  # type: ignore[arg-type]


@pytest.fixture
async def warmed(room) -> tuple[int, int, int]:
    """A baseline taken after one successful probe has created the lazily started pools."""
    async with room() as live:
        await probe_in_process(f"{live.url}/whep/demo", duration=1.5)
    await asyncio.sleep(0.5)
    return (len(asyncio.all_tasks()), threading.active_count(), open_sockets())


async def test_closed_port(warmed) -> None:
    url = f"http://127.0.0.1:{free_port()}/whep/demo"
    result = assert_failed_cleanly(*await cli_probe(url, "--duration", "3"), kind="connect")
    assert "cannot connect" in result["error"]["message"]
    in_process = await probe_in_process(url, duration=3)
    assert in_process.error is not None and in_process.error.kind == "connect"
    assert await settled(warmed) <= warmed


async def test_room_that_does_not_exist(room, warmed) -> None:
    async with room() as live:
        url = f"{live.url}/whep/no-such-room"
        result = assert_failed_cleanly(*await cli_probe(url, "--duration", "3"), kind="not_found")
        assert "404" in result["error"]["message"]
        in_process = await probe_in_process(url, duration=3)
    assert in_process.error is not None and in_process.error.kind == "not_found"
    assert await settled(warmed) <= warmed


async def test_server_answering_invalid_sdp(warmed) -> None:
    async with bad_sdp_server() as url:
        assert_failed_cleanly(*await cli_probe(url, "--duration", "3"), kind="invalid_sdp")
        in_process = await probe_in_process(url, duration=3)
    assert in_process.error is not None and in_process.error.kind == "invalid_sdp"
    assert in_process.join.phases.get("signaling") is not None  # the POST itself succeeded
    assert await settled(warmed) <= warmed


async def start_room_process() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qoe",
        "room",
        "--port",
        "0",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    url = line.split("serving ")[1].split()[0]
    return proc, url


@pytest.mark.slow(seconds=19)
async def test_server_dies_mid_probe(warmed) -> None:
    for in_process in (False, True):
        proc, url = await start_room_process()
        try:
            if in_process:
                task = asyncio.create_task(probe_in_process(f"{url}/whep/demo", duration=10, media_timeout=2))
            else:
                task = asyncio.create_task(
                    cli_probe(f"{url}/whep/demo", "--duration", "10", "--media-timeout", "2")
                )
            await asyncio.sleep(3)
            os.kill(proc.pid, signal.SIGKILL)  # no goodbye: the host is simply gone
            outcome = await task
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        if in_process:
            assert isinstance(outcome, ProbeResult)
            assert outcome.error is not None and outcome.error.kind == "disconnected"
            assert outcome.video.frames is not None and outcome.video.frames > 30  # kept
            assert outcome.duration_seconds < 7
        else:
            assert isinstance(outcome, tuple)
            result = assert_failed_cleanly(*outcome, kind="disconnected")
            assert result["join"]["total_seconds"] is not None
    assert await settled(warmed) <= warmed


# -- connected, but no video -------------------------------------------------------------

ANSWER_EDITS = {
    "rejected": (
        lambda sdp: re.sub(r"^m=video \d+", "m=video 0", sdp, flags=re.M),
        "the answer rejected the video (m=video with port 0); answer: video rejected, audio opus",
    ),
    "high profile": (
        lambda sdp: re.sub(
            r"^a=rtpmap:(\d+) VP8/90000\r\n",
            r"a=rtpmap:\1 H264/90000\r\na=fmtp:\1 packetization-mode=1;profile-level-id=640c1f\r\n",
            sdp,
            flags=re.M,
        ),
        "the answer's video has no codec the probe offered (VP8, H264 (42001f, packetization-mode=1), "
        "H264 (42e01f, packetization-mode=1)); answer: video H264 (640c1f, packetization-mode=1), audio opus",
    ),
}


@pytest.mark.parametrize("edit", ANSWER_EDITS)
async def test_an_answer_with_no_video_the_probe_decodes(room, warmed, edit) -> None:
    rewrite, says = ANSWER_EDITS[edit]
    async with room() as live, front_end(Front(live.url, edit_answer=rewrite)) as base:
        url = f"{base}/whep/demo"
        result = assert_failed_cleanly(*await cli_probe(url, "--duration", "5"), kind="no_common_codec")
        in_process = await probe_in_process(url, duration=5)
    assert result["error"]["message"] == f"no video the probe can decode: {says}"
    assert in_process.error is not None and in_process.error.kind == "no_common_codec"
    assert list(in_process.join.phases) == ["signaling"]  # refused at once, not at the join timeout
    assert in_process.duration_seconds < 1.0
    assert await settled(warmed) <= warmed


class Silent(MediaStreamTrack):
    """A video track that never has a frame: its sender never sends RTP."""

    kind = "video"

    async def recv(self) -> VideoFrame:
        return await asyncio.get_running_loop().create_future()


BAD_KEYFRAME = bytes([0xF0, 0xFF, 0xFF, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0x68, 0x01]) + bytes(range(200))
"""A VP8 keyframe header (RFC 6386 section 9.1) whose first partition is longer than the frame."""


class BadVp8Encoder:
    """Takes the place of aiortc's VP8 encoder: every frame is :data:`BAD_KEYFRAME`, in one
    packet behind a payload descriptor that starts a frame (RFC 7741 section 4.2)."""

    def encode(self, frame: VideoFrame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        return [b"\x10" + BAD_KEYFRAME], int(frame.pts or 0)


async def test_connected_but_no_rtp(warmed) -> None:
    async with peer_server(Silent) as url:
        args = ("--duration", "4", "--join-timeout", "2")
        result = assert_failed_cleanly(*await cli_probe(url, *args), kind="no_rtp")
        in_process = await probe_in_process(url, duration=4, join_timeout=2)
    assert result["error"]["message"] == (
        "connected, but no video RTP arrived within 2 s (0 audio packets; negotiated video VP8, audio opus)"
    )
    assert in_process.error is not None and in_process.error.kind == "no_rtp"
    assert "dtls_connected" in in_process.join.phases
    assert await settled(warmed) <= warmed


async def test_rtp_none_of_which_decodes(warmed, monkeypatch) -> None:
    monkeypatch.setattr(aiortc.rtcrtpsender, "get_encoder", lambda codec: BadVp8Encoder())
    async with peer_server(VideoStreamTrack) as url:
        args = ("--duration", "4", "--join-timeout", "2")
        result = assert_failed_cleanly(*await cli_probe(url, *args), kind="undecodable")
        in_process = await probe_in_process(url, duration=4, join_timeout=2)
    message = result["error"]["message"]
    assert message.startswith("video RTP arrived but no frame could be shown within 2 s: ")
    assert message.endswith("decode errors (negotiated video VP8, audio opus)")
    packets, frames, keyframes, errors = map(
        int, re.findall(r"(\d+) (?:packets|frames|keyframes|decode)", message)
    )
    assert packets >= frames >= keyframes > 0 and errors == keyframes
    assert in_process.error is not None and in_process.error.kind == "undecodable"
    assert in_process.video.decode_errors and in_process.video.decode_errors > 0


class OneFrameThenSilent(VideoStreamTrack):
    """One frame, then nothing: a sender gone while a viewer joins. The frame's packets
    arrive, but a receiver completes a frame only when the next one starts, so none shows."""

    sent = False

    async def recv(self) -> VideoFrame:
        if self.sent:
            return await asyncio.get_running_loop().create_future()
        self.sent = True
        return await super().recv()


async def test_a_sender_gone_while_the_viewer_joins_is_a_disconnect(warmed) -> None:
    """It once waited out the join timeout and called the stream ``undecodable``, which blames
    the codec for a sender that had simply stopped."""
    async with peer_server(OneFrameThenSilent) as url:
        result = await probe_in_process(url, duration=4, join_timeout=3, media_timeout=1)
    assert result.error is not None and result.error.kind == "disconnected", result.error
    assert result.error.message.startswith("no media for 1 s after ")
    assert "video packets, before a frame could be shown; the sender is gone" in result.error.message
    tasks, _, sockets = await settled(warmed)  # threads aside: the sender's encoder pool is ours
    assert tasks <= warmed[0] and sockets <= warmed[2]


async def test_a_delete_cut_short_still_releases_the_http_client(monkeypatch) -> None:
    """The runner's teardown budget cuts a DELETE to a hung server short; the session's HTTP
    client was then left to the garbage collector ("Unclosed client session"), once per
    scrape of a hung target in a long-running exporter."""
    timeline = Timeline(PHASES, start=clock.monotonic(), started_at=clock.wall())
    session = Session("http://127.0.0.1:9/whep/demo", timeline)
    session.location = "http://127.0.0.1:9/whep/demo/1"

    async def hung(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(session.endpoint, "delete", hung)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await session.close()
    assert session._http.closed
