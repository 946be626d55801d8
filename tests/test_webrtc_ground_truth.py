"""The WHEP viewer against the embedded room's ground-truth knobs, end to end on loopback.

Tolerances and why:
- A/V offset within 10 ms of the knob (the promised accuracy), up to +-3 s; the signal
  itself is exact to 0.1 ms, the rest is RTCP sender-report timing on a shared two-core machine.
- Freeze count exact; freeze time within 15 %: a freeze of F seconds is seen as a render gap
  of F + one frame (33 ms) by the W3C rule, 7 % over F at 0.5 s.
- Glass-to-glass p50 rises by the --delay knob +- 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time

import pytest

from probes import ProbeSpec, run_probe
from probes.webrtc.whep import PHASES
from qoe.media import Knobs
from qoe.result import ProbeResult
from tests.conftest import ROOT, room_process

pytestmark = pytest.mark.slow


async def watch(url: str, duration: float, **options: object) -> ProbeResult:
    return await run_probe(ProbeSpec(url=url, kind="whep", duration=duration, **options))  # type: ignore[arg-type]


def assert_clean(result: ProbeResult) -> None:
    assert result.success, result.error
    assert result.video.freeze_count == 0
    assert result.video.pause_count == 0
    assert result.video.dropped_frames == 0
    assert result.video.decode_errors == 0
    assert result.video.fps == pytest.approx(30, abs=1)
    assert (result.video.width, result.video.height) == (640, 360)
    assert result.video.signal_frames == result.video.frames


async def test_clean_room_on_loopback(room) -> None:
    async with room() as live:
        result = await watch(f"{live.url}/whep/demo", 6)
    assert_clean(result)
    assert result.join.total_seconds is not None and result.join.total_seconds < 1.0
    assert list(result.join.phases) == list(PHASES)
    assert all(v >= 0 for v in result.join.phases.values())
    assert sum(result.join.phases.values()) == pytest.approx(result.join.total_seconds, abs=1e-9)
    g2g = result.latency.glass_to_glass_seconds
    assert g2g["p50"] is not None and 0 < g2g["p50"] < 0.150
    assert result.av_sync.samples is not None and result.av_sync.samples >= 4
    assert abs(result.av_sync.offset_seconds["median"]) < 0.010
    assert result.audio.tone_onsets == pytest.approx(6, abs=1)


OFFSETS = (0.08, -0.12, 0.6, -0.8, 2.0)


@pytest.mark.alone  # six rooms and six probes at once: a load of its own, and the rooms are the truth
def test_cli_probe_reports_the_injected_av_offset() -> None:
    """Offsets past half a second are paired by the markers' identities: +0.6 s is not read as
    -0.4 s. The watch is longer by the offset, as only seconds whose audio and video both
    arrive in it can be paired. Beyond +-3 s the offset is null with its reason. One room
    per offset, all watched at once by ``qoe probe`` as a user runs it (A/V comes from the
    streams' timestamps, so a busy machine does not move it)."""
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(room_process("--av-offset", str(o))) for o in (*OFFSETS, 3.5)]
        durations = [5 + math.ceil(abs(o)) for o in OFFSETS] + [8]
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "qoe", "probe", f"{url}/whep/demo", "--duration", str(d), "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
            )
            for url, d in zip(urls, durations, strict=True)
        ]
        outputs = [run.communicate(timeout=90) for run in runs]
    for offset, duration, run, (out, err) in zip((*OFFSETS, 3.5), durations, runs, outputs, strict=True):
        assert run.returncode == 0, (offset, err)
        result = json.loads(out)
        sync = result["av_sync"]
        assert result["success"] is True, offset
        assert sync["samples"] >= 3, (offset, sync)
        if offset == 3.5:
            assert sync["offset_seconds"] == {"median": None, "p95_abs": None}
            assert sync["reason"] == "offset beyond the +-3 s measurement range"
            continue
        assert sync["offset_seconds"]["median"] == pytest.approx(offset, abs=0.010), offset
        assert sync["reason"] is None
        assert result["audio"]["tone_onsets"] == pytest.approx(duration, abs=1)  # markers, not bursts


@pytest.mark.slow(seconds=15)
async def test_injected_freezes_are_counted_exactly(room) -> None:
    every, length = 3.0, 0.5
    async with room(freeze_every=every, freeze_for=length) as live:
        # Start 1 s into a freeze period so that no freeze straddles the probe's edges.
        await asyncio.sleep((1.0 - time.time() % every) % every)
        started = time.time()
        result = await watch(f"{live.url}/whep/demo", 12)
        ended = time.time()
        injected = live.rooms["demo"].source.injected_freezes  # type: ignore[union-attr]
    watched = [(a, b) for a, b in injected if a > started and b < ended]
    assert len(watched) == 4  # at +2, +5, +8, +11 s into the probe
    straddling = [(a, b) for a, b in injected if a < started < b or a < ended < b]
    assert not straddling
    assert result.success, result.error
    assert result.video.dropped_frames == 0  # the host stops capturing; nothing is lost
    if result.probe_host.overloaded:  # a busy host may add freezes of its own, never hide one
        assert (result.video.freeze_count or 0) >= len(watched)
        return
    assert result.video.freeze_count == len(watched)
    assert result.video.freeze_seconds == pytest.approx(len(watched) * length, rel=0.15)


async def test_delay_knob_raises_glass_to_glass_by_its_value(room) -> None:
    async with room() as plain, room(delay=0.2) as delayed:
        base, late = await asyncio.gather(
            watch(f"{plain.url}/whep/demo", 5), watch(f"{delayed.url}/whep/demo", 5)
        )
    assert base.success and late.success
    rise = late.latency.glass_to_glass_seconds["p50"] - base.latency.glass_to_glass_seconds["p50"]
    assert rise == pytest.approx(0.200, abs=0.020)
    assert late.video.freeze_count == 0


async def test_whip_publisher_gives_the_same_figures_as_the_builtin_host(room) -> None:
    """Our publisher -> room -> our viewer, beside the built-in host with the same knob."""
    offset = 0.05
    async with room(av_offset=offset) as live:
        publisher = asyncio.create_task(
            run_probe(
                ProbeSpec(
                    url=f"{live.url}/whip/shop",
                    kind="whip",
                    duration=9,
                    options={"knobs": Knobs(av_offset=offset)},
                )
            )
        )
        # The room places a publisher's frames by its sender reports, the first of which
        # comes within 1.5 s; watch after that.
        await asyncio.sleep(2.0)
        via_whip, via_host = await asyncio.gather(
            watch(f"{live.url}/whep/shop", 6), watch(f"{live.url}/whep/demo", 6)
        )
        published = await publisher
    assert published.success, published.error
    assert published.publish.frames_sent is not None and published.publish.frames_sent > 200
    assert list(published.join.phases) == ["signaling", "ice_connected", "dtls_connected"]
    for result in (via_whip, via_host):
        if not result.probe_host.overloaded:  # smoothness and join time are a calm host's to keep
            assert_clean(result)
            assert result.join.total_seconds is not None and result.join.total_seconds < 1.0
        median = result.av_sync.offset_seconds["median"]
        if median is None:  # no pair of markers read in time: unknown, never a wrong figure
            assert result.probe_host.overloaded, result.av_sync
            continue
        assert median == pytest.approx(offset, abs=0.010)
    whip_median, host_median = (r.av_sync.offset_seconds["median"] for r in (via_whip, via_host))
    if whip_median is not None and host_median is not None:
        assert whip_median == pytest.approx(host_median, abs=0.010)
    # The WHIP path has one more hop: the publisher's own pipeline and the room's relay.
    extra = via_whip.latency.glass_to_glass_seconds["p50"] - via_host.latency.glass_to_glass_seconds["p50"]
    assert 0.1 < extra < 0.3


async def test_join_delay_knob_lands_in_the_signaling_phase(room) -> None:
    async with room(join_delay=0.6) as live:
        result = await watch(f"{live.url}/whep/demo", 4)
    assert result.success, result.error
    assert result.join.phases["signaling"] == pytest.approx(0.6, abs=0.1)
    assert result.join.total_seconds is not None and 0.6 < result.join.total_seconds < 1.6
