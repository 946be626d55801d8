"""Janus as a real SFU: our publisher into its VideoRoom, our viewer out of it (through
Meetecho's own WHEP server, janus-whep-server) and out of a Streaming mountpoint, with the
figures held to the publishers' knobs (tests/janus.py has the harness: Janus in a network
namespace, Meetecho's WHEP server, and a WHIP/WHEP front end of our own for what that one
does not serve: WHIP, a mountpoint fed over RTP, two feeds in one subscription).

Janus forwards RTP as it comes, decoding and re-encoding nothing, so what the viewer
measures is what our publisher sent: the publisher's knobs are the ground truth, as through
pion (tests/test_pion.py).

Tolerances and why:
- Join under 1 s, fps 30 +- 1.5, freeze count exact, A/V offset within 10 ms of the knob:
  what tests/test_webrtc_ground_truth.py holds our room to. Janus makes its own RTCP sender
  reports for what it relays, from the publisher's reports, so lip sync survives it.
- Freeze time within 15 %: a freeze of F seconds is a render gap of F + one frame.
- Glass-to-glass p50 at least the publisher's own capture-to-send latency, and at most our
  room's for the same publisher plus 20 ms: the room decodes and encodes again, Janus only
  forwards. Through the mountpoint the media takes one more hop inside Janus (the
  VideoRoom's RTP forward to the Streaming plugin), on the same machine: +20 ms allowed.
- Co-host offset within 15 ms of the co-host's delay knob, measured across the two tracks a
  viewer gets, as tests/test_interactive.py measures the room's separate tracks.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from probes import probe_spec, run_probe
from qoe.media import Knobs
from qoe.media.source import PIPELINE_LATENCY
from qoe.result import ProbeResult
from sim.room.server import LiveRoom
from tests.conftest import freezes_within
from tests.janus import (
    Front,
    Janus,
    MeetechoWhep,
    forward_into_mountpoint,
    front_end,
    janus,
    meetecho_whep,
    room_number,
)

Room = Callable[..., AbstractAsyncContextManager[LiveRoom]]

SETTLE = 2.0
"""Seconds between a publisher's start and its viewers': a viewer's lip sync needs the
publisher's first RTCP sender reports, which come within 1.5 s."""
WATCH = 6.0
EVERY, LENGTH = 3.0, 0.5
FREEZE_WATCH = 12.0
"""Seconds a viewer watches for freezes: four freeze periods."""
MOUNTPOINT = 7


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Janus]:
    with janus(tmp_path) as running:
        yield running


@pytest.fixture
def meetecho(server: Janus, tmp_path: Path) -> Iterator[MeetechoWhep]:
    """Meetecho's own WHEP server in front of Janus (janus-whep-server, from npm)."""
    with meetecho_whep(server, tmp_path) as running:
        yield running


@pytest.fixture
async def front(server: Janus) -> AsyncIterator[tuple[str, Front]]:
    """The WHIP/WHEP front end; its WHEP endpoints make the offer (see tests/janus.py)."""
    async with front_end(server) as (base, state):
        yield base, state


async def publish(url: str, duration: float, **options: object) -> ProbeResult:
    return await run_probe(probe_spec(url, kind="whip", duration=duration, options=options))


async def watch(url: str, duration: float, **options: object) -> ProbeResult:
    return await run_probe(probe_spec(url, kind="whep", duration=duration, options=options))


async def watch_janus(url: str, duration: float, **options: object) -> ProbeResult:
    """A WHEP viewer of Janus, which makes the offer."""
    return await watch(url, duration, offer="server", **options)


def summary(name: str, result: ProbeResult) -> str:
    """One line of the figures compared, for the log of a run."""

    def ms(value: float | None) -> str:
        return f"{value * 1000:+.0f}" if value is not None else "-"

    video = result.video
    phases = ", ".join(f"{k} {v * 1000:.0f}" for k, v in result.join.phases.items())
    return (
        f"{name}: join {ms(result.join.total_seconds)} ms ({phases}), fps {video.fps or 0:.1f}, "
        f"freezes {video.freeze_count} ({video.freeze_seconds or 0:.2f} s), "
        f"g2g p50 {ms(result.latency.glass_to_glass_seconds['p50'])} ms, "
        f"A/V {ms(result.av_sync.offset_seconds['median'])} ms, "
        f"co-host {ms(result.cohost.offset_seconds['median'])} ms "
        f"(A/V {ms(result.cohost.av_offset_seconds['median'])} ms)"
    )


def assert_sound(result: ProbeResult, av_offset: float) -> None:
    assert result.success, result.error
    assert result.join.total_seconds is not None and result.join.total_seconds < 1.0
    assert result.video.decode_errors == 0
    assert result.video.signal_frames == result.video.frames
    assert result.av_sync.offset_seconds["median"] == pytest.approx(av_offset, abs=0.010)


def test_janus_runs_with_only_the_plugins_and_transport_asked_for(server: Janus) -> None:
    with urllib.request.urlopen(f"{server.url}/info", timeout=5) as response:
        info = json.load(response)
    assert info["name"] == "Janus WebRTC Server" and info["version_string"].startswith("1.")
    assert sorted(info["plugins"]) == [f"janus.plugin.{p}" for p in ("streaming", "textroom", "videoroom")]
    assert sorted(info["transports"]) == ["janus.transport.http", "janus.transport.websockets"]


@pytest.mark.slow(seconds=10)
@pytest.mark.heavy  # our publisher and viewers in one process
async def test_our_publisher_through_the_videoroom_gives_the_rooms_figures(
    room: Room, front: tuple[str, Front], meetecho: MeetechoWhep
) -> None:
    """Our publisher -> Janus's VideoRoom -> Meetecho's WHEP server -> our viewer, beside the
    same through our room."""
    base, state = front
    offset = 0.05
    knobs = Knobs(av_offset=offset)
    async with room() as live:
        publishers = asyncio.gather(
            publish(f"{live.url}/whip/shop", SETTLE + WATCH + 1, knobs=knobs),
            publish(f"{base}/whip/shop", SETTLE + WATCH + 1, knobs=knobs),
        )
        while not state.publishers.get("shop"):
            await asyncio.sleep(0.05)
        feed = state.publishers["shop"][0]
        url = await asyncio.to_thread(meetecho.videoroom, "shop", room_number("shop"), feed)
        await asyncio.sleep(SETTLE)
        via_room, via_janus = await asyncio.gather(
            watch(f"{live.url}/whep/shop", WATCH), watch_janus(url, WATCH)
        )
        published = await publishers
    print(summary("room", via_room))
    print(summary("janus", via_janus))
    for name, result in zip(("room", "janus"), published, strict=True):
        joined = (result.join.total_seconds or 0) * 1000
        print(f"publisher into {name}: join {joined:.0f} ms {result.join.phases}")
    for result in published:
        assert result.success, result.error
        assert list(result.join.phases) == ["signaling", "ice_connected", "dtls_connected"]
        assert result.join.total_seconds is not None and result.join.total_seconds < 1.0
    for result in (via_room, via_janus):
        assert_sound(result, offset)
        assert result.video.fps == pytest.approx(30, abs=1.5)
        assert result.video.freeze_count == 0
    room_g2g = via_room.latency.glass_to_glass_seconds["p50"]
    janus_g2g = via_janus.latency.glass_to_glass_seconds["p50"]
    assert room_g2g is not None and janus_g2g is not None
    assert PIPELINE_LATENCY <= janus_g2g <= room_g2g + 0.020


@pytest.mark.slow(seconds=18)
async def test_freezes_through_a_streaming_mountpoint_are_counted_exactly(front: tuple[str, Front]) -> None:
    """Our publisher -> VideoRoom -> RTP forward -> Streaming mountpoint -> our viewer.

    The mountpoint cannot ask the publisher for a keyframe (plain RTP has no way back), so a
    viewer joining between keyframes decodes nothing before the next one: its join is
    longer than through the VideoRoom, and still under 1 s."""
    base, state = front
    offset = -0.04
    knobs = Knobs(av_offset=offset, freeze_every=EVERY, freeze_for=LENGTH)
    # The viewer starts 1 s into a freeze period, so that no freeze straddles its edges.
    await asyncio.sleep((1.0 - SETTLE - time.time() % EVERY) % EVERY)
    publisher = asyncio.create_task(publish(f"{base}/whip/shop", SETTLE + FREEZE_WATCH + 1, knobs=knobs))
    ready = time.monotonic() + SETTLE
    while not state.publishers.get("shop"):
        await asyncio.sleep(0.05)
    await forward_into_mountpoint(state, "shop", MOUNTPOINT)
    await asyncio.sleep(ready - time.monotonic())
    started = time.time()
    # A light viewer beside the decoding one: frames from RTP alone through a real SFU.
    viewer, light = await asyncio.gather(
        watch_janus(f"{base}/whep/stream/{MOUNTPOINT}", FREEZE_WATCH),
        watch_janus(f"{base}/whep/stream/{MOUNTPOINT}", FREEZE_WATCH, decode="none"),
    )
    ended = time.time()
    published = await publisher
    print(summary("janus mountpoint", viewer))
    print(summary("janus mountpoint, light", light), light.decode.sources)
    injected, straddling = freezes_within(knobs, started, ended)
    assert (injected, straddling) == (4, 0)  # at +2, +5, +8, +11 s into the watch
    assert published.success, published.error
    assert_sound(viewer, offset)
    g2g = viewer.latency.glass_to_glass_seconds["p50"]
    assert g2g is not None and g2g >= PIPELINE_LATENCY
    for result in (viewer, light):
        assert result.success, result.error
        assert result.video.freeze_count == injected
        assert result.video.freeze_seconds == pytest.approx(injected * LENGTH, rel=0.15)
    # Glass-to-glass from the capture time Janus forwards in abs-capture-time, or where it
    # does not, from the frames the rotation decoded: within 5 ms of the decoding viewer's.
    assert light.decode.mode == "none"
    light_g2g = light.latency.glass_to_glass_seconds["p50"]
    assert light_g2g is not None and light_g2g == pytest.approx(g2g, abs=0.005)


@pytest.mark.slow
async def test_videoroom_as_a_cohost_room(front: tuple[str, Front]) -> None:
    """Host and co-host publish into one VideoRoom; a viewer subscribes to both tracks and
    measures the co-host behind the host by the co-host's own delay knob."""
    base, state = front
    delay = 0.15
    host = asyncio.create_task(publish(f"{base}/whip/live", SETTLE + WATCH + 3))
    while not state.publishers.get("live"):
        await asyncio.sleep(0.05)
    cohost = asyncio.create_task(
        publish(
            f"{base}/whip/live",
            SETTLE + WATCH + 1,
            slot=1,
            tone_hz=1500.0,
            knobs=Knobs(av_offset=0.06, delay=delay),
        )
    )
    while len(state.publishers["live"]) < 2:
        await asyncio.sleep(0.05)
    await asyncio.sleep(SETTLE)
    viewer = await watch_janus(f"{base}/whep/live", WATCH, cohost="separate")
    published = await asyncio.gather(host, cohost)
    print(summary("janus co-host", viewer))
    for result in published:
        assert result.success, result.error
    assert_sound(viewer, 0.0)
    assert viewer.video.fps == pytest.approx(30, abs=1.5)
    assert viewer.video.freeze_count == 0
    assert viewer.cohost.samples is not None and viewer.cohost.samples >= 4
    assert viewer.cohost.left is False
    assert viewer.cohost.offset_seconds["median"] == pytest.approx(delay, abs=0.015)
    assert viewer.cohost.av_offset_seconds["median"] == pytest.approx(0.06, abs=0.010)
