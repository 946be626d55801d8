"""Headless Chromium as the reference player: it and the probe watch the same room at once.

Chromium's figures are its own ``getStats()`` (libwebrtc's), read through the DevTools
protocol (:mod:`tests.browser`) at the start and end of the probe's watch and subtracted, so
both count over the same window; the room's JSON lists the freezes its host injected.

Tolerances and why:
- Freeze counts exact, with no impairment: the host stops its video for 0.5 s, which both
  libwebrtc's rule and the probe's (the same rule, :mod:`qoe.freeze`) count as one freeze.
- Frozen seconds within 10 % of each other: both take a freeze's whole render gap, 0.5 s plus
  a frame; the rest is when each one's frames happened to be rendered.
- Under lossy-wifi's burst loss each path loses its own packets (independent draws), and a
  burst that retransmission does not repair in time can freeze one player and not the other:
  each may count one freeze more than the room injected in 12 s, no fewer.
- A WHIP publisher's frames: the probe receives what Chromium sent within 5 % (the window's
  edges cut a frame or two; the room relays every frame it receives).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.browser import (
    Beside,
    Chromium,
    Page,
    joined,
    only_candidate,
    stats,
    strip_candidates,
    watch_beside,
)

slow = pytest.mark.slow
pytestmark = pytest.mark.heavy  # a browser beside our room and probe (its slow tests)
RoomProcess = Callable[..., AbstractContextManager[str]]

FREEZES = ("--freeze-every", "3", "--freeze-for", "0.5")
EVERY, LENGTH = 3.0, 0.5
PHASE = (EVERY, 0.5)
"""Launch the probe as a freeze ends: it starts watching 0.5-1.5 s later, mid-period."""
WATCH = 12.0
"""Seconds the probe watches: four freeze periods."""


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    async with Chromium(tmp_path) as chromium:
        yield chromium


async def playing(page: Page, frames: int = 10) -> None:
    """Wait until Chromium has decoded ``frames`` frames of the stream it watches."""
    await page.wait_for(f"qoe.stats().then((s) => s.inbound && s.inbound.framesDecoded >= {frames})")


def video_codecs(sdp: str) -> set[str]:
    """The codec names of the video section of an SDP, retransmission left out."""
    section = sdp.split("m=video", 1)[1].split("\nm=", 1)[0]
    return {name for name in re.findall(r"a=rtpmap:\d+ ([^/]+)/", section) if name.lower() != "rtx"}


def assert_same_window(seen: Beside) -> None:
    """Chromium's readings bracket the probe's window by at most a reading interval or two."""
    start, end = seen.window
    assert start - 0.5 < seen.before.at <= start, (seen.before.at, start)
    assert end <= seen.after.at < end + 0.5, (seen.after.at, end)


@pytest.mark.slow(seconds=23)
async def test_clean_room_neither_freezes(room_proc: RoomProcess, browser: Chromium) -> None:
    with room_proc() as url:
        page = await browser.new_page(f"{url}/healthz")
        async with joined(page, f"{url}/whep/demo") as session:
            assert (session.status, session.state) == (201, "connected"), session.answer
            await playing(page)
            seen = await watch_beside(page, url, WATCH)
    assert_same_window(seen)
    video = seen.probe["video"]
    assert seen.probe["success"], seen.probe["error"]
    if not seen.probe["probe_host"]["overloaded"]:  # both players share the probe's host
        assert video["freeze_count"] == 0 and seen.chromium("freezeCount") == 0
        assert video["pause_count"] == 0 and seen.chromium("pauseCount") == 0
    assert video["fps"] == pytest.approx(30, abs=1.5)
    assert seen.chromium("framesDecoded") == pytest.approx(video["frames"], rel=0.05)
    assert seen.chromium("framesDropped") == 0


@slow
@pytest.mark.alone  # exact counts from both players: neither may freeze for want of CPU
async def test_injected_freezes_counted_alike(room_proc: RoomProcess, browser: Chromium) -> None:
    with room_proc(*FREEZES) as url:
        page = await browser.new_page(f"{url}/healthz")
        async with joined(page, f"{url}/whep/demo") as session:
            assert session.state == "connected", session.answer
            await playing(page)
            seen = await watch_beside(page, url, WATCH, phase=PHASE)
    assert_same_window(seen)
    assert not seen.straddling
    truth = len(seen.injected)
    assert truth == 4
    video = seen.probe["video"]
    print(f"freezes: room {truth}, chromium {seen.chromium('freezeCount'):g}, probe {video['freeze_count']}")
    assert seen.probe["success"], seen.probe["error"]
    assert seen.chromium("freezeCount") == video["freeze_count"] == truth
    chromium_seconds = seen.chromium("totalFreezesDuration")
    print(f"frozen seconds: chromium {chromium_seconds:.3f}, probe {video['freeze_seconds']:.3f}")
    assert video["freeze_seconds"] == pytest.approx(chromium_seconds, rel=0.10)
    for frozen in (chromium_seconds, video["freeze_seconds"]):
        assert truth * LENGTH <= frozen <= truth * (LENGTH + 0.1)
    assert seen.chromium("pauseCount") == video["pause_count"] == 0


@pytest.mark.slow(seconds=22)
async def test_burst_loss_on_both_paths(room_proc: RoomProcess, browser: Chromium) -> None:
    profile = "lossy-wifi"
    with room_proc(*FREEZES) as url:
        page = await browser.new_page(f"{url}/healthz")
        async with joined(page, f"{url}/whep/demo", profile=profile, seed=1) as session:
            assert session.state == "connected", session.answer
            assert session.proxy is not None
            await playing(page)
            seen = await watch_beside(page, url, WATCH, profile=profile, seed=2, phase=PHASE)
            relayed = session.proxy.stats()
    assert_same_window(seen)
    truth = len(seen.injected)
    assert truth == 4 and not seen.straddling
    video = seen.probe["video"]
    chromium = seen.chromium("freezeCount")
    print(f"freezes: room {truth}, chromium {chromium:g}, probe {video['freeze_count']}")
    # Both paths lost packets in bursts, and Chromium asked for them again.
    assert relayed["downlink"]["dropped"]["burst"] > 0
    assert seen.probe["network"]["downlink"]["dropped"]["burst"] > 0
    assert seen.chromium("packetsLost") > 0 and seen.chromium("nackCount") > 0
    assert seen.probe["success"], seen.probe["error"]
    assert truth <= chromium <= truth + 1
    assert truth <= video["freeze_count"] <= truth + 1
    assert (
        video["fps"] > 20 and seen.after.inbound is not None and seen.chromium("framesDecoded") > 20 * WATCH
    )


@pytest.mark.slow(seconds=13)
async def test_chromium_publishes_and_the_probe_watches(room_proc: RoomProcess, browser: Chromium) -> None:
    with room_proc() as url:
        page = await browser.new_page(f"{url}/healthz")
        async with joined(page, f"{url}/whip/cam", "whip") as session:
            assert (session.status, session.state) == (201, "connected"), session.answer
            # The room places a publisher's frames by its RTCP sender reports; wait for one.
            await page.wait_for("qoe.stats().then((s) => s.outbound && s.outbound.framesSent >= 60)")
            seen = await watch_beside(page, url, 8, room="cam")
    assert seen.before.outbound is not None and seen.after.outbound is not None
    span = seen.after.at - seen.before.at
    sent = seen.after.outbound["framesSent"] - seen.before.outbound["framesSent"]
    sent_fps = sent / span
    result, video = seen.probe, seen.probe["video"]
    print(
        f"Chromium sent {sent} frames ({sent_fps:.1f}/s); "
        f"the probe saw {video['frames']} ({video['fps']:.1f}/s)"
    )
    assert result["success"], result["error"]
    assert (video["width"], video["height"]) == (640, 360)
    assert video["fps"] == pytest.approx(sent_fps, rel=0.10)
    assert video["frames"] == pytest.approx(sent * (seen.window[1] - seen.window[0]) / span, rel=0.05)
    assert seen.after.outbound["qualityLimitationReason"] == "none"
    if not result["probe_host"]["overloaded"]:  # smoothness is a calm host's to keep
        assert video["freeze_count"] == 0 and video["pause_count"] == 0
    # Chromium's camera carries no test signal: every figure that needs it is unknown.
    assert result["latency"]["glass_to_glass_seconds"] == {"p50": None, "p95": None, "max": None}
    assert result["av_sync"]["offset_seconds"] == {"median": None, "p95_abs": None}
    assert video["dropped_frames"] is None
    assert video["signal_frames"] == 0


@slow
async def test_room_page_plays_in_chromium(room_proc: RoomProcess, browser: Chromium, tmp_path: Path) -> None:
    # One rendition: the picture's size is exact, whatever Chromium's estimate does on a busy host.
    with room_proc("--renditions", "1") as url:
        page = await browser.new_page(f"{url}/")
        await page.evaluate("document.getElementById('play').click(), true")
        await page.wait_for(
            "(() => { const v = document.getElementById('video');"
            " return v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames >= 30; })()"
        )
        size = await page.evaluate("((v) => [v.videoWidth, v.videoHeight])(document.getElementById('video'))")
        # The test signal's code is black and white blocks: the picture has both.
        shades = await page.evaluate(
            "(() => { const c = document.createElement('canvas'); c.width = 640; c.height = 360;"
            " const g = c.getContext('2d'); g.drawImage(document.getElementById('video'), 0, 0);"
            " const d = g.getImageData(0, 0, 640, 360).data; let dark = 0, light = 0;"
            " for (let i = 0; i < d.length; i += 4) { if (d[i] < 40) dark++; else if (d[i] > 200) light++; }"
            " return [dark, light]; })()"
        )
        state = await page.evaluate("pc.connectionState")
        shot = await page.screenshot(tmp_path / "room-page.png")
    print(f"screenshot: {shot}")
    assert state == "connected"
    assert size == [640, 360]
    assert min(shades) > 640 * 360 // 100, shades
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


@slow
async def test_h264_only_offer_gets_a_working_answer(room_proc: RoomProcess, browser: Chromium) -> None:
    # One rendition: on a busy host Chromium's delay-based estimate can fall below the top
    # rung's rate and move it down, which is the ladder working, not this test's subject.
    with room_proc("--renditions", "1") as url:
        page = await browser.new_page(f"{url}/healthz")
        async with joined(page, f"{url}/whep/demo", codecs=["video/H264"]) as session:
            assert session.status == 201, session.answer
            assert video_codecs(session.answer) == {"H264"}
            assert session.state == "connected"
            await playing(page, 60)
            first = await stats(page)
            await asyncio.sleep(3)
            seen = await stats(page)
    assert seen.codec == "video/H264"
    assert first.inbound is not None and seen.inbound is not None
    assert (seen.inbound["frameWidth"], seen.inbound["frameHeight"]) == (640, 360)
    # Smoothness is not this test's to judge (Chromium's own freezes on a shared host are
    # counted where the room injects them, alone), nor is the instant framesPerSecond, which
    # jumps as a busy player catches up: over 3 s the stream decodes at its 30 frames a second.
    rate = seen.inbound_delta(first, "framesDecoded") / (seen.at - first.at)
    assert rate == pytest.approx(30, rel=0.2)


@slow
async def test_audio_first_offer_connects(room_proc: RoomProcess, browser: Chromium) -> None:
    """Players that add audio before video offer it first; the room answers in that order."""
    with room_proc() as url:
        page = await browser.new_page(f"{url}/healthz")
        async with joined(page, f"{url}/whep/demo", audio_first=True) as session:
            assert session.status == 201, session.answer
            assert re.findall(r"^m=(\w+)", session.answer, re.M) == ["audio", "video"]
            assert "a=candidate:" in session.answer
            assert session.state == "connected"
            await playing(page, 30)


def test_sdp_rewrites_send_the_media_through_one_address() -> None:
    answer = (
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=candidate:a 1 udp 2130706431 127.0.0.1 40001 typ host\r\n"
        "a=candidate:b 1 udp 2130706431 ::1 40002 typ host\r\na=end-of-candidates\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:a 1 udp 2130706431 127.0.0.1 40001 typ host\r\n"
    )
    moved, original = only_candidate(answer, "127.0.0.1", 50000)
    assert original == ("127.0.0.1", 40001)
    assert (
        re.findall(r"a=candidate:.*", moved)
        == ["a=candidate:a 1 udp 2130706431 127.0.0.1 50000 typ host\r"] * 2
    )
    assert "a=end-of-candidates" in moved
    stripped = strip_candidates(answer)
    assert "a=candidate" not in stripped and "end-of-candidates" not in stripped
    assert stripped.count("\r\n") == 3
    with pytest.raises(ValueError, match="no UDP candidate"):
        only_candidate(stripped, "127.0.0.1", 1)
