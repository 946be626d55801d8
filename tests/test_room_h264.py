"""H.264 from the room: to viewers whose offer has no VP8, encoded once per source, and only
while such a viewer watches.

Tolerances and why: the same as the VP8 viewer's in tests/test_webrtc_ground_truth.py
(glass-to-glass p50 under 150 ms, freeze count exact, A/V offset within 10 ms of the knob).
The two codecs' figures are compared within 20 ms: both encoders take the same picture with
the same timestamp and leave at the same instant, so what differs is decoding and jitter.
A readable code in at least 95 % of frames: the code is built to survive either codec, and
the margin is for frames decoded while a keyframe is still on its way.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from probes import ProbeSpec, run_probe
from probes.webrtc.peer import candidate_addresses, prefer_codecs, rtc_configuration
from qoe.result import ProbeResult
from sim.room.codecs import UnusableOffer, video_codecs_for
from sim.room.server import LiveRoom

SDP = {"Content-Type": "application/sdp"}

# The video m-line of an offer from Chromium after setCodecPreferences to its H.264 codecs.
CHROMIUM_H264_ONLY = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
m=video 9 UDP/TLS/RTP/SAVPF 102 103 104 105 106 107 108 109 127 125
a=rtpmap:102 H264/90000
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:105 rtx/90000
a=fmtp:105 apt=104
a=rtpmap:106 H264/90000
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=106
a=rtpmap:108 H264/90000
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
a=rtpmap:127 H264/90000
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
a=rtpmap:125 rtx/90000
a=fmtp:125 apt=127
""".replace("\n", "\r\n")


def video_offer(*m_lines: tuple[list[str], list[str]]) -> str:
    """An offer with a video m-line per (rtpmap names, fmtp strings) pair ("" for no fmtp)."""
    lines = ["v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    for rtpmaps, fmtps in m_lines:
        pts = [str(96 + i) for i in range(len(rtpmaps))]
        lines.append(f"m=video 9 UDP/TLS/RTP/SAVPF {' '.join(pts)}")
        for pt, name, fmtp in zip(pts, rtpmaps, fmtps or [""] * len(rtpmaps), strict=True):
            lines.append(f"a=rtpmap:{pt} {name}/90000")
            if fmtp:
                lines.append(f"a=fmtp:{pt} {fmtp}")
    return "\r\n".join(lines) + "\r\n"


def test_vp8_when_offered_h264_only_without_it() -> None:
    both = (["VP8", "H264"], ["", "packetization-mode=1"])
    h264 = (["H264"], ["packetization-mode=1"])  # no profile-level-id: constrained baseline
    assert video_codecs_for(video_offer(both)) == ["vp8"]
    assert video_codecs_for(CHROMIUM_H264_ONLY) == ["h264"]
    assert video_codecs_for(video_offer(h264)) == ["h264"]
    assert video_codecs_for(video_offer(both, h264)) == ["vp8", "h264"]  # per m-line


@pytest.mark.parametrize(
    ("rtpmaps", "fmtps", "named"),
    [
        (["VP9", "AV1", "rtx"], ["", "", "apt=96"], "its video offers VP9, AV1;"),
        (["H264"], ["packetization-mode=0;profile-level-id=42e01f"], "H264 (42e01f, packetization-mode=0)"),
        (["H264"], ["packetization-mode=1;profile-level-id=640c1f"], "H264 (640c1f, packetization-mode=1)"),
    ],
)
def test_video_in_neither_codec_is_refused_with_what_was_offered(
    rtpmaps: list[str], fmtps: list[str], named: str
) -> None:
    with pytest.raises(UnusableOffer) as refused:
        video_codecs_for(video_offer((rtpmaps, fmtps)))
    message = str(refused.value)
    assert named in message
    assert "the room sends VP8 or H.264 (profile-level-id 42e01f, packetization-mode=1) video" in message
    assert "\n" not in message


def test_a_video_m_line_without_codecs_is_refused_as_offering_none() -> None:
    with pytest.raises(UnusableOffer, match="its video offers no codec;"):
        video_codecs_for("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")


async def aiortc_offer(video_codecs: tuple[str, ...]) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(rtc_configuration())
    prefer_codecs(pc.addTransceiver("video", direction="recvonly"), "video", video_codecs)
    prefer_codecs(pc.addTransceiver("audio", direction="recvonly"), "audio", ("opus",))
    with candidate_addresses(("127.0.0.1",)):
        await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def video_codecs_in(sdp: str) -> set[str]:
    """The codec names of an SDP's video m-lines (RTX left out)."""
    names = set()
    for section in sdp.split("m=")[1:]:
        if section.startswith("video"):
            names |= set(re.findall(r"^a=rtpmap:\d+ ([\w-]+)/", section, re.M)) - {"rtx"}
    return names


async def test_an_offer_with_neither_codec_gets_a_one_line_400(room) -> None:
    pc, offer = await aiortc_offer(("VP8",))
    await pc.close()
    offer = offer.replace(" VP8/90000", " VP9/90000")
    async with (
        room() as live,
        aiohttp.ClientSession() as http,
        http.post(f"{live.url}/whep/demo", data=offer, headers=SDP) as r,
    ):
        assert r.status == 400
        text = await r.text()
        assert live.rooms["demo"].viewers == {}
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "its video offers VP9;" in text
    assert "the room sends VP8 or H.264" in text


async def test_an_h264_only_offer_is_answered_in_h264_42e01f_mode_1(room) -> None:
    pc, offer = await aiortc_offer(("H264",))
    try:
        async with room() as live, aiohttp.ClientSession() as http:
            async with http.post(f"{live.url}/whep/demo", data=offer, headers=SDP) as r:
                assert r.status == 201
                answer = await r.text()
            await http.delete(f"{live.url}{r.headers['Location']}")
    finally:
        await pc.close()
    assert video_codecs_in(answer) == {"H264"}
    assert re.search(r"^a=fmtp:\d+ .*packetization-mode=1", answer, re.M)
    assert re.search(r"^a=fmtp:\d+ .*profile-level-id=42e01f", answer, re.M)


async def watch(url: str, duration: float, codecs: str) -> ProbeResult:
    return await run_probe(ProbeSpec(url=url, kind="whep", duration=duration, options={"codecs": codecs}))


def assert_clean(result: ProbeResult) -> None:
    assert result.success, result.error
    assert result.video.freeze_count == 0
    assert result.video.decode_errors == 0
    assert result.video.fps == pytest.approx(30, abs=1)
    assert (result.video.width, result.video.height) == (640, 360)
    assert result.video.frames is not None and result.video.signal_frames is not None
    assert result.video.signal_frames >= 0.95 * result.video.frames
    g2g = result.latency.glass_to_glass_seconds
    assert g2g["p50"] is not None and 0 < g2g["p50"] < 0.150


@pytest.mark.slow
async def test_an_h264_viewer_reads_the_signal_from_a_clean_room(room) -> None:
    async with room() as live:
        result = await watch(f"{live.url}/whep/demo", 6, "H264")
    assert_clean(result)
    assert result.join.total_seconds is not None and result.join.total_seconds < 1.0
    assert abs(result.av_sync.offset_seconds["median"]) < 0.010


async def answers_while_watched(live: LiveRoom, viewers: int) -> tuple[list[str], list[str]]:
    """Every viewer's answer SDP once ``viewers`` watch, and the host's codecs a second later."""
    room = live.rooms["demo"]
    while len(room.viewers) < viewers:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    return [p.pc.localDescription.sdp for p in room.viewers.values()], room.info()["video_codecs"]


@pytest.mark.slow(seconds=12)
async def test_vp8_and_h264_viewers_at_once_get_their_codecs_and_the_same_figures(room) -> None:
    every, length, offset = 3.0, 0.5, 0.08
    async with room(freeze_every=every, freeze_for=length, av_offset=offset) as live:
        assert live.rooms["demo"].info()["video_codecs"] == ["vp8"]
        # Start 1 s into a freeze period so that no freeze straddles the probes' edges.
        await asyncio.sleep((1.0 - time.time() % every) % every)
        started = time.time()
        vp8, h264, (answers, codecs) = await asyncio.gather(
            watch(f"{live.url}/whep/demo", 9, "VP8"),
            watch(f"{live.url}/whep/demo", 9, "H264"),
            answers_while_watched(live, 2),
        )
        ended = time.time()
        await asyncio.sleep(0.5)
        after = live.rooms["demo"].info()
        injected = live.rooms["demo"].source.injected_freezes  # type: ignore[union-attr]
    assert sorted(video_codecs_in(a).pop() for a in answers) == ["H264", "VP8"]
    assert all(len(video_codecs_in(a)) == 1 for a in answers)
    assert codecs == ["vp8", "h264"]  # one H.264 encoder for the source, beside its VP8 one
    assert after["viewers"] == 0 and after["video_codecs"] == ["vp8"]  # gone with its viewer
    watched = [(a, b) for a, b in injected if a > started and b < ended]
    assert len(watched) == 3  # at +2, +5, +8 s into the probes
    for result in (vp8, h264):
        assert result.success, result.error
        assert result.video.freeze_count == len(watched)
        assert result.video.freeze_seconds == pytest.approx(len(watched) * length, rel=0.15)
        assert result.video.decode_errors == 0
        assert result.av_sync.offset_seconds["median"] == pytest.approx(offset, abs=0.010)
    g2g = [r.latency.glass_to_glass_seconds["p50"] for r in (vp8, h264)]
    assert all(g is not None and 0 < g < 0.150 for g in g2g), g2g
    assert abs(g2g[0] - g2g[1]) < 0.020, g2g
