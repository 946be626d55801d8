"""Bad input for the FFmpeg probes: each way a stream can be wrong ends as a result with its own
error kind, within the deadline, with the process and its threads intact.

Against real nginx-rtmp: a server that is down, an unknown application, a stream key nobody
publishes, a stream that ends mid-probe (nginx told to announce it, and not), a playlist that
404s. Against a local HTTP server: FLV byte streams truncated and with random bytes spliced
in, several seeds each (FFmpeg's FLV demuxer resynchronises past garbage, so what a damaged
stream ends as depends on where it is hit; the kinds allowed for it are listed with why).
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import av
import numpy as np
import pytest
from aiohttp import web

from probes import ProbeSpec, run_probe
from probes.ffmpeg import RtmpPublisher
from qoe.result import ProbeResult
from qoe.signal import SignalAudio, SignalVideo
from tests.servers import NginxRtmp, aiohttp_app, free_port, nginx_rtmp

pytestmark = pytest.mark.slow

DEADLINE = 6.0
"""Every probe here gets this hard limit; each case must end well within it."""


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmp]:
    with nginx_rtmp(tmp_path_factory.mktemp("nginx")) as server:
        yield server


async def probe(url: str, kind: str | None = None, **spec: float) -> tuple[ProbeResult, float]:
    options = {"duration": 4.0, "join_timeout": 2.0, "media_timeout": 2.0, "deadline_seconds": DEADLINE}
    options.update(spec)
    started = time.monotonic()
    result = await run_probe(ProbeSpec(url=url, kind=kind or _kind(url), **options))  # type: ignore[arg-type]
    return result, time.monotonic() - started


def _kind(url: str) -> str:
    from probes import guess_kind

    return guess_kind(url)


async def assert_no_reader_left() -> None:
    """The probe's reader thread has ended (it may take a moment past the result)."""
    deadline = time.monotonic() + 2.0
    while any(t.name.startswith("qoe-ffmpeg") for t in threading.enumerate()):
        assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
        await asyncio.sleep(0.02)


def assert_failed(result: ProbeResult, kind: str) -> None:
    assert not result.success
    assert result.error is not None
    assert result.error.kind == kind, result.error


@pytest.mark.parametrize(
    "url",
    [
        "rtmp://127.0.0.1:{port}/live/x",
        "http://127.0.0.1:{port}/x.flv",
        "http://127.0.0.1:{port}/x.m3u8",
        "rtsp://127.0.0.1:{port}/x",
    ],
)
async def test_server_down(url: str) -> None:
    result, took = await probe(url.format(port=free_port()))
    assert_failed(result, "connect")
    assert "refused" in result.error.message  # type: ignore[union-attr]
    assert took < 1.0
    assert list(result.join.phases) == []


async def test_unknown_application_is_rejected(nginx: NginxRtmp) -> None:
    result, took = await probe(nginx.rtmp_url("x", app="nope"))
    assert_failed(result, "rejected")
    assert took < 1.0
    assert "connect" in result.join.phases and "open" not in result.join.phases
    await assert_no_reader_left()


async def test_stream_key_nobody_publishes(nginx: NginxRtmp) -> None:
    result, took = await probe(nginx.rtmp_url("nobody-publishes-this"), join_timeout=1.5)
    assert_failed(result, "no_media")
    assert "stream key" in result.error.message  # type: ignore[union-attr]
    assert 1.4 < took < 3.0  # the join timeout, not the deadline
    assert result.video.frames == 0
    await assert_no_reader_left()


async def test_stream_that_ends_mid_probe(nginx: NginxRtmp) -> None:
    """nginx announces the end (play_restart on): the probe stops at once with stream_ended."""
    url = nginx.rtmp_url("ends")
    async with RtmpPublisher(url) as publisher:
        await asyncio.wait_for(publisher.publishing.wait(), 5)
        watching = asyncio.create_task(probe(url, duration=5.0))
        await asyncio.sleep(2.0)
    stopped = time.monotonic()
    result, _ = await watching
    assert_failed(result, "stream_ended")
    assert time.monotonic() - stopped < 1.0
    assert result.video.frames is not None and result.video.frames > 20  # figures up to the end stay
    assert result.join.total_seconds is not None
    await assert_no_reader_left()


async def test_stream_that_goes_silent(tmp_path: Path) -> None:
    """nginx-rtmp's default (play_restart off) says nothing when the publisher leaves: the
    media stops, and the probe gives up after its media timeout."""
    with nginx_rtmp(tmp_path, play_restart=False) as server:
        url = server.rtmp_url("silent")
        async with RtmpPublisher(url) as publisher:
            await asyncio.wait_for(publisher.publishing.wait(), 5)
            watching = asyncio.create_task(probe(url, duration=5.0, media_timeout=1.5))
            # Long enough for the probe to have started its media on a busy host (else it
            # rightly reports no_media), short enough that the silence falls in its 5 s.
            await asyncio.sleep(2.5)
        stopped = time.monotonic()
        result, _ = await watching
    assert_failed(result, "disconnected")
    assert "1.5 s" in result.error.message  # type: ignore[union-attr]
    assert 1.3 < time.monotonic() - stopped < 3.5
    await assert_no_reader_left()


async def test_playlist_404(nginx: NginxRtmp) -> None:
    result, took = await probe(nginx.hls_url("no-such-stream"))
    assert_failed(result, "not_found")
    assert took < 1.0
    assert list(result.join.phases) == ["connect"]


# -- FLV byte streams over HTTP ------------------------------------------------------------


def make_flv(seconds: float = 2.0) -> bytes:
    """A short FLV with the test signal: H.264 320x180 at 30 fps (GOP 15) and AAC."""
    out_buffer = io.BytesIO()
    with av.open(out_buffer, "w", format="flv") as out:
        video = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "tune": "zerolatency"})
        video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
        video.codec_context.gop_size = 15
        audio = out.add_stream("aac", rate=48000)
        render, tone = SignalVideo(320, 180), SignalAudio()
        start = 1_700_000_000
        for k in range(round(seconds * 30)):
            frame = av.VideoFrame.from_ndarray(render.render(start + k / 30, k), format="yuv420p")
            frame.pts = k
            out.mux(video.encode(frame))
        for j in range(round(seconds * 48000 / 1024)):
            pcm = tone.render(start * 48000 + j * 1024, 1024)
            block = av.AudioFrame.from_ndarray(np.tile(pcm, (2, 1)), format="fltp", layout="stereo")
            block.sample_rate, block.pts = 48000, j * 1024
            out.mux(audio.encode(block))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return out_buffer.getvalue()


@pytest.fixture(scope="module")
def flv() -> bytes:
    return make_flv()


@asynccontextmanager
async def serve_bytes(body: bytes) -> AsyncIterator[str]:
    """An HTTP server that answers ``/live.flv`` with ``body``, then closes."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/x-flv"})
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/live.flv", handler)
    async with aiohttp_app(app) as base:
        yield f"{base}/live.flv"


async def test_clean_flv_file_plays_then_ends(flv: bytes) -> None:
    """The undamaged stream, for reference: frames, the signal read, then stream_ended."""
    async with serve_bytes(flv) as url:
        result, took = await probe(url)
    assert_failed(result, "stream_ended")
    assert result.video.frames == 60
    assert result.video.signal_frames == 60
    assert result.video.dropped_frames == 0
    assert result.video.decode_errors == 0
    assert took < 3.5  # 2 s of media, shown at its pace, then the end
    await assert_no_reader_left()


def break_video_frames(flv: bytes, picks: set[int]) -> bytes:
    """``flv`` with the H.264 frames numbered in ``picks`` made undecodable, the FLV intact.

    Each picked frame's first NAL unit claims 2 GB: FFmpeg's H.264 decoder rejects the
    packet, where flipped bits inside a slice it would conceal without a word.
    """
    data, at, frame = bytearray(flv), 13, 0  # 9 bytes of header, 4 of PreviousTagSize0
    while at + 11 <= len(data):
        kind, size, body = data[at], int.from_bytes(data[at + 1 : at + 4], "big"), at + 11
        if kind == 9 and data[body + 1] == 1:  # a video tag carrying AVC NAL units
            if frame in picks:
                data[body + 5 : body + 9] = (0x7FFFFFF0).to_bytes(4, "big")
            frame += 1
        at = body + size + 4
    return bytes(data)


async def test_frames_the_decoder_rejects_are_counted(flv: bytes) -> None:
    async with serve_bytes(break_video_frames(flv, {10, 20, 40})) as url:
        result, _ = await probe(url)
    assert_failed(result, "corrupt_stream")  # the end, with damage seen on the way
    assert result.video.decode_errors == 3
    assert result.video.frames == 57
    # The frames after each rejected one decode from a broken reference until the next
    # keyframe: shown, with codes that may not read; only the 3 rejected ones are dropped.
    assert result.video.dropped_frames == 3


# A damaged FLV ends one of these ways, depending on where it is hit: FFmpeg rejects it while
# probing (corrupt_stream), decodes some packets wrongly and reaches the end (corrupt_stream),
# skips the garbage cleanly and reaches the end (stream_ended), or loses the video stream's
# header and finds audio only (no_media). Never internal, timeout or a hang.
DAMAGED_KINDS = {"corrupt_stream", "stream_ended", "no_media"}


@pytest.mark.parametrize("seed", range(6))
async def test_truncated_flv(flv: bytes, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cut = int(rng.integers(0, len(flv)))
    async with serve_bytes(flv[:cut]) as url:
        result, took = await probe(url)
    assert not result.success
    assert result.error is not None and result.error.kind in DAMAGED_KINDS, (cut, result.error)
    assert took < DEADLINE - 1
    await assert_no_reader_left()


@pytest.mark.parametrize("seed", range(6))
async def test_flv_with_random_bytes_spliced_in(flv: bytes, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    damaged = bytearray(flv)
    for _ in range(int(rng.integers(1, 6))):
        at = int(rng.integers(0, len(damaged)))
        damaged[at:at] = rng.bytes(int(rng.integers(1, 4096)))
    async with serve_bytes(bytes(damaged)) as url:
        result, took = await probe(url)
    assert not result.success
    assert result.error is not None and result.error.kind in DAMAGED_KINDS, result.error
    assert took < DEADLINE - 1
    await assert_no_reader_left()


async def test_not_flv_at_all() -> None:
    async with serve_bytes(np.random.default_rng(7).bytes(200_000)) as url:
        result, took = await probe(url)
    assert_failed(result, "corrupt_stream")
    assert took < DEADLINE - 1


async def test_publishing_to_an_unknown_application(nginx: NginxRtmp) -> None:
    result = await run_probe(ProbeSpec(url=nginx.rtmp_url("x", app="nope"), kind="rtmp-publish", duration=3))
    assert_failed(result, "rejected")
    assert list(result.join.phases) == ["connect"]


async def test_publishing_a_stream_someone_else_publishes(nginx: NginxRtmp) -> None:
    """nginx-rtmp refuses a second publisher of a name with an error status, which FFmpeg reads
    while opening: ``rejected``. With the machine shared, the status was once read only after
    the first packets went out, and FFmpeg failed a write with EINVAL, a ``protocol`` error:
    FFmpeg does not say why, so the probe cannot tell that refusal from a broken muxer."""
    url = nginx.rtmp_url("taken")
    async with RtmpPublisher(url) as first:
        await asyncio.wait_for(first.publishing.wait(), 5)
        result = await run_probe(ProbeSpec(url=url, kind="rtmp-publish", duration=3))
    assert_failed(result, "rejected")


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that takes connections and never says a word (a hung RTMP server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_hung_server_ends_within_the_deadline() -> None:
    """The probe's deadline (2 s, a scrape's) is shorter than its join timeout (10 s): FFmpeg's
    handshake read is given up before the deadline, and the reader thread with it."""
    async with silent_server() as port:
        result, took = await probe(
            f"rtmp://127.0.0.1:{port}/live/x", duration=5.0, join_timeout=10.0, deadline_seconds=2.0
        )
        assert not result.success
        assert result.error is not None and result.error.kind in ("no_media", "timeout"), result.error
        assert took < 2.3
        await assert_no_reader_left()


async def test_deadline_cuts_a_healthy_probe_short(nginx: NginxRtmp) -> None:
    url = nginx.rtmp_url("deadline")
    async with RtmpPublisher(url) as publisher:
        await asyncio.wait_for(publisher.publishing.wait(), 5)
        result, took = await probe(url, duration=5.0, deadline_seconds=2.0)
        assert_failed(result, "timeout")
        assert took < 2.3
        assert result.video.frames is not None and result.video.frames > 10  # measured so far
        await assert_no_reader_left()
