"""Pion as a second, independent WebRTC stack: the probes' figures through Go's pion/webrtc.

``tests/pion/forwarder.go`` is a WHIP-in, WHEP-out forwarder on pion/webrtc v3, built by
``scripts/build-pion.sh`` from Debian's packages; under CI a missing Go toolchain or pion
fails these tests, elsewhere it skips them (:func:`tests.servers.unavailable`). It forwards
RTP as it comes, decoding and re-encoding nothing, so what a viewer measures through it is
what the publisher sent: the publisher's knobs are the ground truth, as the built-in host's
are through our room.

Join, fps and freezes are held only when the probe's host kept up (``probe_host.overloaded``),
as in the other slow tests: a busy machine makes freezes of its own. The rest is held always.

Tolerances and why:
- Join under 1 s, fps 30 +- 1.5, A/V offset within 10 ms of the knob: as
  tests/test_webrtc_ground_truth.py holds our room to, for either path. Pion makes its
  sender reports as aiortc does, from when it sent each stream's latest packet, so the
  publisher's lip sync reaches the viewer unchanged.
- Freeze count exact through pion, and freeze time within 15 % (a 0.5 s pause is a render
  gap of 0.5 s and a frame). Through our room, at least one freeze per pause: the room's
  WHIP ingest gets the frame before a pause only when the publisher resumes (aiortc's jitter
  buffer releases a frame when the next one starts), and sends it then, so a pause is seen as
  a 0.4 s gap and one of about 0.18 s, which the W3C rule (150 ms past the mean frame
  interval) counts or not by a few milliseconds.
- Glass-to-glass p50 through pion at most the room's plus 20 ms of scheduling noise: the
  room decodes a WHIP publisher's frames and encodes them again, pion only forwards them.
  At least the publisher's own capture-to-send latency either way.
- Chromium's frames: the probe decodes them at Chromium's send rate within 10 %, as through
  the room (tests/test_chromium.py), in the size Chromium last sent (it starts small while its
  bandwidth estimate ramps up), without a stall, and none fails to decode. The viewer joins
  as soon as Chromium is connected, while it probes the bandwidth with padding-only packets
  (no RTX is negotiated), which a forwarder must pass on intact. Chromium sends a keyframe
  only when asked, so the viewer joins between keyframes: it decodes nothing before the first
  one and asks for it, and pion passes that request on (Chromium's PLI count grows).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import pytest

from probes import probe_spec, run_probe
from qoe.media import Knobs
from qoe.media.source import PIPELINE_LATENCY
from qoe.result import ProbeResult
from sim.room.server import LiveRoom
from tests.browser import Chromium, joined, stats
from tests.conftest import freezes_within
from tests.servers import _process, build, free_port

ROOT = Path(__file__).resolve().parent.parent
slow = pytest.mark.slow
pytestmark = pytest.mark.heavy  # our publisher and viewer in one process (its slow tests)
Room = Callable[..., AbstractAsyncContextManager[LiveRoom]]

WATCH = 6.0
"""Seconds a viewer watches in the side-by-side run."""
SETTLE = 2.0
"""Seconds between a publisher's start and its viewers': the room places a WHIP publisher's
frames by its RTCP sender reports, the first of which comes within 1.5 s."""
EVERY, LENGTH = 3.0, 0.5
FREEZE_WATCH = 12.0
"""Seconds a viewer watches for freezes: four freeze periods."""


@pytest.fixture(scope="module")
def forwarder() -> Path:
    """The forwarder's binary, built once for the module."""
    return Path(build("build-pion.sh"))


@pytest.fixture
def pion(forwarder: Path, tmp_path: Path) -> Iterator[str]:
    """The forwarder on a free loopback port, until the test ends; its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _process([str(forwarder), "-listen", f"127.0.0.1:{port}"], f"{url}/healthz", tmp_path / "pion.log"):
        yield url


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    async with Chromium(tmp_path) as chromium:
        yield chromium


async def publish(url: str, knobs: Knobs, duration: float) -> ProbeResult:
    """Our WHIP publisher: the test signal, with ``knobs``, for ``duration`` seconds."""
    return await run_probe(probe_spec(url, kind="whip", duration=duration, options={"knobs": knobs}))


async def watch(url: str, duration: float) -> ProbeResult:
    return await run_probe(probe_spec(url, kind="whep", duration=duration))


def summary(name: str, result: ProbeResult) -> str:
    """One line of the figures compared, for the log of a run."""
    g2g, av = result.latency.glass_to_glass_seconds["p50"], result.av_sync.offset_seconds["median"]
    join, video = result.join.total_seconds, result.video
    return (
        f"{name}: join {join * 1000 if join is not None else float('nan'):.0f} ms, "
        f"fps {video.fps or 0:.1f}, freezes {video.freeze_count} ({video.freeze_seconds or 0:.2f} s), "
        f"g2g p50 {g2g * 1000 if g2g is not None else float('nan'):.0f} ms, "
        f"A/V {av * 1000 if av is not None else float('nan'):+.0f} ms, "
        f"decode errors {video.decode_errors}, undecodable {video.frames_dropped_undecodable}"
    )


async def test_a_room_without_a_publisher_is_not_found(pion: str) -> None:
    result = await watch(f"{pion}/whep/nobody", 2)
    assert not result.success
    assert result.error is not None and result.error.kind == "not_found", result.error


@slow
async def test_our_publisher_through_pion_gives_the_rooms_figures(room: Room, pion: str) -> None:
    """Our publisher -> pion -> our viewer, beside our publisher -> our room -> our viewer."""
    offset = 0.05
    knobs = Knobs(av_offset=offset)
    async with room() as live:
        publishers = asyncio.gather(
            publish(f"{live.url}/whip/shop", knobs, SETTLE + WATCH + 1),
            publish(f"{pion}/whip/shop", knobs, SETTLE + WATCH + 1),
        )
        await asyncio.sleep(SETTLE)
        via_room, via_pion = await asyncio.gather(
            watch(f"{live.url}/whep/shop", WATCH), watch(f"{pion}/whep/shop", WATCH)
        )
        published = await publishers
    print(summary("room", via_room))
    print(summary("pion", via_pion))
    for result in published:
        assert result.success, result.error
    for result in (via_room, via_pion):
        assert result.success, result.error
        assert result.video.decode_errors == 0
        assert result.video.signal_frames == result.video.frames
        assert result.av_sync.offset_seconds["median"] == pytest.approx(offset, abs=0.010), (
            result.av_sync.reason
        )
        if not result.probe_host.overloaded:
            assert result.join.total_seconds is not None and result.join.total_seconds < 1.0
            assert result.video.fps == pytest.approx(30, abs=1.5)
            assert result.video.freeze_count == 0
    room_g2g = via_room.latency.glass_to_glass_seconds["p50"]
    pion_g2g = via_pion.latency.glass_to_glass_seconds["p50"]
    assert room_g2g is not None and pion_g2g is not None
    assert PIPELINE_LATENCY <= pion_g2g <= room_g2g + 0.020
    # The publisher's DELETE ended its session, and with it the room.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{pion}/whep/shop", data="v=0\r\n", headers={"Content-Type": "application/sdp"}
        ) as response,
    ):
        assert response.status == 404, await response.text()


@pytest.mark.slow(seconds=18)
async def test_injected_freezes_are_counted_exactly_through_pion(room: Room, pion: str) -> None:
    knobs = Knobs(freeze_every=EVERY, freeze_for=LENGTH)
    async with room() as live:
        # The viewers start 1 s into a freeze period, so that no freeze straddles their edges.
        await asyncio.sleep((1.0 - SETTLE - time.time() % EVERY) % EVERY)
        publishers = asyncio.gather(
            publish(f"{live.url}/whip/shop", knobs, SETTLE + FREEZE_WATCH + 1),
            publish(f"{pion}/whip/shop", knobs, SETTLE + FREEZE_WATCH + 1),
        )
        await asyncio.sleep(SETTLE)
        started = time.time()
        via_room, via_pion = await asyncio.gather(
            watch(f"{live.url}/whep/shop", FREEZE_WATCH), watch(f"{pion}/whep/shop", FREEZE_WATCH)
        )
        ended = time.time()
        published = await publishers
    print(summary("room", via_room))
    print(summary("pion", via_pion))
    injected, straddling = freezes_within(knobs, started, ended)
    assert (injected, straddling) == (4, 0)  # at +2, +5, +8, +11 s into the watch
    for result in published:
        assert result.success, result.error
    for result in (via_room, via_pion):
        assert result.success, result.error
        assert result.video.decode_errors == 0
    if not via_pion.probe_host.overloaded:
        assert via_pion.video.freeze_count == injected
        assert via_pion.video.freeze_seconds == pytest.approx(injected * LENGTH, rel=0.15)
    if not via_room.probe_host.overloaded:
        assert (via_room.video.freeze_count or 0) >= injected


@slow
@pytest.mark.parametrize("codec", ["video/VP8", "video/H264"], ids=["vp8", "h264"])
async def test_chromium_publishes_through_pion_and_every_frame_decodes(
    pion: str, browser: Chromium, codec: str
) -> None:
    page = await browser.new_page(f"{pion}/healthz")
    async with joined(page, f"{pion}/whip/cam", "whip", codecs=[codec]) as session:
        assert (session.status, session.state) == (201, "connected"), session.answer
        before = await stats(page)
        result = await watch(f"{pion}/whep/cam", 5)
        after = await stats(page)
    assert before.outbound is not None and after.outbound is not None
    sent_fps = (after.outbound["framesSent"] - before.outbound["framesSent"]) / (after.at - before.at)
    video = result.video
    print(
        f"{codec}: Chromium sent {sent_fps:.1f} frames/s; the probe decoded {video.frames} "
        f"({video.fps or 0:.1f}/s), {video.decode_errors} decode errors, "
        f"{video.frames_dropped_undecodable} frames before the first keyframe; Chromium's "
        f"limit: {after.outbound['qualityLimitationReason']}"
    )
    assert after.codec == codec
    assert result.success, result.error
    assert video.frames
    assert (video.width, video.height) == (after.outbound["frameWidth"], after.outbound["frameHeight"])
    assert video.decode_errors == 0
    assert after.outbound["pliCount"] > before.outbound["pliCount"]
    if not result.probe_host.overloaded:
        assert video.fps == pytest.approx(sent_fps, rel=0.10)
        assert video.stall_ratio == 0
