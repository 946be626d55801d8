"""The embedded room as HTTP-FLV and HLS: FFmpeg-family probes of it with ground truth.

The room's A/V offset knob is the truth: the FLV and HLS a room muxes must carry it to within
10 ms (the audio is transcoded from Opus to AAC on the way), with no freeze the room did not
inject, for the built-in host and for a WHIP publisher's room alike.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from probes import probe_spec, run_probe
from qoe.media import Knobs
from qoe.result import ProbeResult
from sim.room.containers import _FlvTags


def assert_watched(result: ProbeResult, av_offset: float) -> None:
    """Smooth at 30 fps unless the machine (room and probe share it) says it was overloaded;
    the A/V offset, read from the container's timestamps, holds either way."""
    assert result.success, result.error
    video = result.video
    if not result.probe_host.overloaded:
        assert video.freeze_count == 0 and video.pause_count == 0, video
        assert video.fps == pytest.approx(30, abs=1.5)
    assert video.signal_frames == video.frames and video.dropped_frames == 0
    quality = video.quality  # the room's one H.264 rendition, remuxed
    assert quality is not None and quality["scored_frames"] >= 4 and quality["ssim"]["p50"] >= 0.95, quality
    assert result.av_sync.samples is not None and result.av_sync.samples >= 2
    assert result.av_sync.offset_seconds["median"] == pytest.approx(av_offset, abs=0.010)


@pytest.mark.slow
async def test_flv_and_hls_of_the_built_in_host_carry_its_av_offset(room) -> None:  # type: ignore[no-untyped-def]
    offset = 0.08
    async with room(av_offset=offset) as live:
        # One after the other: an HLS player's join decodes a few seconds of segments at once,
        # and in one process that burst would be the FLV viewer's stutter, not the room's.
        flv = await run_probe(probe_spec(f"{live.url}/flv/demo.flv", duration=4))
        hls = await run_probe(probe_spec(f"{live.url}/hls/demo/index.m3u8", duration=5))
        async with aiohttp.ClientSession() as http, http.get(f"{live.url}/rooms/demo") as r:
            containers = (await r.json())["containers"]
    assert_watched(flv, offset)
    assert flv.kind == "flv" and hls.kind == "hls"
    flv_g2g = flv.latency.glass_to_glass_seconds["p50"]
    assert flv_g2g is not None and flv_g2g < 0.5  # no GOP cache: live from the first frame
    assert flv.join.total_seconds is not None and flv.join.total_seconds < 1.5  # a keyframe a second
    assert_watched(hls, offset)
    hls_g2g = hls.latency.glass_to_glass_seconds["p50"]
    assert hls_g2g is not None and 1.0 < hls_g2g < 6.0  # 1 s segments, a few behind the edge
    assert containers["error"] is None and containers["frames"] > 200


@pytest.mark.slow
async def test_a_whip_publishers_room_is_served_as_flv_too(room) -> None:  # type: ignore[no-untyped-def]
    offset = -0.05
    async with room() as live:
        publisher = asyncio.create_task(
            run_probe(
                probe_spec(f"{live.url}/whip/shop", duration=9, options={"knobs": Knobs(av_offset=offset)})
            )
        )
        await asyncio.sleep(2.5)  # the relay places frames once the first sender reports came
        flv = await run_probe(probe_spec(f"{live.url}/flv/shop.flv", duration=4))
        assert (await publisher).success
    assert_watched(flv, offset)


async def test_no_room_no_stream(room) -> None:  # type: ignore[no-untyped-def]
    async with room() as live, aiohttp.ClientSession() as http:
        for path in ("/flv/nobody.flv", "/hls/nobody/index.m3u8"):
            async with http.get(f"{live.url}{path}") as r:
                assert r.status == 404
                assert "has no publisher" in await r.text()
        async with http.get(f"{live.url}/hls/demo/../../etc/passwd") as r:
            assert r.status == 404


def test_a_joining_flv_client_gets_the_header_and_decoder_setup_first() -> None:
    """The tag splitter keeps what a decoder needs and marks keyframes, however bytes arrive."""
    tags: list[tuple[bytes, bool]] = []
    splitter = _FlvTags(lambda tag, key: tags.append((tag, key)))

    def tag(kind: int, body: bytes) -> bytes:
        size = len(body).to_bytes(3, "big")
        return bytes([kind]) + size + bytes(7) + body + (11 + len(body)).to_bytes(4, "big")

    header = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    script = tag(18, b"\x02\x00\x0aonMetaData")
    avc_setup, aac_setup = tag(9, b"\x17\x00\x00\x00\x00"), tag(8, b"\xaf\x00\x12\x10")
    key, inter, audio = (
        tag(9, b"\x17\x01\x00\x00\x00ab"),
        tag(9, b"\x27\x01\x00\x00\x00c"),
        tag(8, b"\xaf\x01d"),
    )
    stream = header + script + avc_setup + aac_setup + key + audio + inter
    for i in range(0, len(stream), 5):  # in pieces that split tags anywhere
        splitter.write(stream[i : i + 5])
    assert splitter.preamble() == header + script + avc_setup + aac_setup
    assert tags == [(key, True), (audio, False), (inter, False)]
