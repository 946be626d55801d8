"""Light WHEP viewers (decode none and sample) against full ones, on the room's ground truth.

Tolerances and why:
- Freeze count exact, as for a full viewer: both play the same frames through the same model.
- Glass-to-glass p50 within 5 ms of a full viewer's watching the same room at the same time:
  the abs-capture-time a light viewer reads is the very capture time the code carries (to its
  0.1 ms tick), and both stamp frames at the model's render times; the rest is two viewers
  taking turns on one event loop.
- A/V offset within 10 ms of the knob (the promise), from the seconds decoded in windows.
- A fixed bandwidth estimate (``remb``) exact: it is sent as given, once a second.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import sim.room.server
from probes import probe_spec, run_probe
from qoe.media import Knobs, PacketTrack
from qoe.result import ProbeResult
from sim.room.server import LiveRoom
from tests.conftest import freezes_within

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # a room and three viewers in one process

MODES = ("full", "sample", "none")
SAMPLING: dict[str, dict[str, object]] = {"full": {}, "sample": {"sample_every": 10}, "none": {}}
"""A window every 10 s, so a 10 s watch decodes one."""


async def watch_all(url: str, duration: float) -> dict[str, ProbeResult]:
    specs = [
        probe_spec(
            url, duration=duration, name=mode, options={"decode": mode, "quality": "off", **SAMPLING[mode]}
        )
        for mode in MODES
    ]
    results = await asyncio.gather(*(run_probe(spec) for spec in specs))
    return {r.probe: r for r in results}


async def test_light_viewers_count_the_injected_freezes_exactly(room) -> None:
    every, length = 3.0, 0.5
    async with room(freeze_every=every, freeze_for=length) as live:
        # The watch starts 1 s into a freeze period and lasts 7 s, so that its edges are a
        # second from any freeze: viewers that join tens of milliseconds apart on a busy host
        # would otherwise disagree on a freeze at an edge (one sees it end, one does not).
        await asyncio.sleep((1.0 - time.time() % every) % every)
        started = time.time()
        results = await watch_all(f"{live.url}/whep/demo", 7)
        ended = time.time()
    for mode, result in results.items():
        assert result.success, (mode, result.error)
    injected, straddling = freezes_within(Knobs(freeze_every=every, freeze_for=length), started, ended)
    assert (injected, straddling) == (2, 0)
    # Counts are held on a host that kept up; one that did not says so in every result.
    kept_up = not any(result.probe_host.overloaded for result in results.values())
    full = results["full"]
    if kept_up:
        assert full.video.freeze_count == injected
    for mode in ("sample", "none"):
        light = results[mode]
        if kept_up:
            assert light.video.freeze_count == full.video.freeze_count, mode
            assert light.video.freeze_seconds == pytest.approx(full.video.freeze_seconds, abs=0.035), mode
            assert light.video.dropped_frames == 0 and light.video.frames_dropped_undecodable == 0
        assert light.decode.mode == mode
        assert light.decode.sources["freezes"] == "rtp_frames"
        assert light.decode.sources["dropped_frames"] == "rtp_sequence"
    assert full.decode.sources["freezes"] == "decoded_frames"


async def test_light_glass_to_glass_follows_the_delay_knob_as_a_full_viewers_does(room) -> None:
    """10 s: a sampling viewer's one window starts at a random point of its first 7 s."""
    async with room(delay=0.2, av_offset=0.08) as live:
        results = await watch_all(f"{live.url}/whep/demo", 10)
    full = results["full"]
    assert full.success, full.error
    for mode in ("sample", "none"):
        light = results[mode]
        assert light.success, (mode, light.error)
        g2g = light.latency.glass_to_glass_seconds["p50"]
        reference = full.latency.glass_to_glass_seconds["p50"]
        assert g2g is not None and reference is not None
        assert g2g == pytest.approx(reference, abs=0.005), mode
        assert light.decode.sources["glass_to_glass"] == "abs_capture_time"
        # A window decoded: its seconds give the A/V offset and verify the code.
        assert light.av_sync.offset_seconds["median"] == pytest.approx(0.08, abs=0.010), mode
        assert light.decode.sources["av_sync"] == "sampled_frames"
        assert light.decode.sampled_frames and light.video.signal_frames == light.decode.sampled_frames
        assert light.decode.sampled_seconds == pytest.approx(4.0, abs=0.1)


async def test_a_light_viewer_that_never_decodes_still_times_the_stream(room) -> None:
    async with room() as live:
        spec = probe_spec(
            f"{live.url}/whep/demo", duration=4, options={"decode": "none", "verify": "off", "quality": "off"}
        )
        result = await run_probe(spec)
    assert result.success, result.error
    assert result.video.freeze_count == 0 and result.video.fps == pytest.approx(30, abs=1)
    assert (result.video.width, result.video.height) == (640, 360)  # from the VP8 keyframe header
    assert result.latency.glass_to_glass_seconds["p50"] is not None
    assert result.video.signal_frames == 0 and result.decode.sampled_seconds == 0
    assert result.av_sync.offset_seconds["median"] is None and result.decode.sources["av_sync"] is None


async def test_without_abs_capture_time_glass_to_glass_comes_from_decoded_windows(room, monkeypatch) -> None:
    """A server that strips the extension (here: a room that never stamps it)."""
    monkeypatch.setattr(sim.room.server.rtcpatch, "send_capture_time", lambda sender, capture: None)
    async with room() as live:
        results = await watch_all(f"{live.url}/whep/demo", 10)
    full, light = results["full"], results["sample"]
    assert light.success, light.error
    assert light.decode.sources["glass_to_glass"] == "sampled_picture_code"
    g2g = light.latency.glass_to_glass_seconds["p50"]
    reference = full.latency.glass_to_glass_seconds["p50"]
    assert g2g is not None and reference is not None and g2g == pytest.approx(reference, abs=0.005)


async def test_a_fixed_bandwidth_estimate_reaches_the_room_in_place_of_the_delay_based_one(
    monkeypatch,
) -> None:
    """``remb``: the room (two renditions, so it listens) hears the given bitrate about once a
    second, and nothing else."""
    heard: list[float] = []
    estimate = PacketTrack.estimate

    def record(track: PacketTrack, bitrate: float) -> None:
        heard.append(bitrate)
        estimate(track, bitrate)

    monkeypatch.setattr(PacketTrack, "estimate", record)
    async with LiveRoom("127.0.0.1", 0, host_options={"renditions": 2}) as live:
        spec = probe_spec(
            f"{live.url}/whep/demo", duration=5, options={"decode": "none", "quality": "off", "remb": 2.5e6}
        )
        result = await run_probe(spec)
    assert result.success, result.error
    assert result.video.fps == pytest.approx(30, abs=1)
    # One a second from the first video packet on: 5 or 6 in a 5 s watch after the join.
    assert 4 <= len(heard) <= 7 and set(heard) == {2_500_000}
