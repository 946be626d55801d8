"""Network profiles as the WHEP viewer feels them, against the embedded room.

Bounds and why: a profile's one-way delay adds once to glass-to-glass latency, and at least
four times to the join phases that cross the link (ICE's check and answer, DTLS's two round
trips, then the first media packet; signaling is not shaped): 4g (22 ms one-way) must add at
least 10 ms to glass-to-glass and 88 ms to those phases, 3g (75 ms) at least 30 ms and
4 x 53 = 212 ms more than 4g. Measured here: 30, 190 and 640 ms in those phases for none, 4g
and 3g. The total join also waits for the first keyframe and its decoding, which on a busy
runner cost the clean link 175 ms once, so the total is held only to the coarse 3g bound.

Under heavy bursty loss (6 %, mean burst 6) aiortc's receiver stalls on packets whose
retransmission was lost too; every probe saw freezes in trials, so three probes must see at
least two freezes between them, and the clean link none.
"""

from __future__ import annotations

import asyncio

import pytest

from probes import ProbeSpec, run_probe
from qoe.result import ProbeResult

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # rooms and viewers through the emulator in one process

LINK_PHASES = ("ice_connected", "dtls_connected", "first_rtp_packet")
"""The join phases that wait on packets crossing the emulated link."""

BURSTY = """\
description = "Heavy bursty loss on the downlink (test profile)."
source = "tests/test_netem_probes.py"
[downlink]
delay = 0.015
loss = 0.06
burst_length = 6
"""


async def watch(url: str, profile: str, seed: int, duration: float = 8, after: float = 0.0) -> ProbeResult:
    """One probe, started ``after`` seconds from now."""
    await asyncio.sleep(after)
    spec = ProbeSpec(url=url, kind="whep", duration=duration, profile=profile, seed=seed)
    return await run_probe(spec)


async def test_join_and_latency_grow_with_the_profile_delay(room) -> None:
    async with room() as live:
        url = f"{live.url}/whep/demo"
        # Joins a second apart, the first a second after the room started (its first keyframe
        # has just gone, and keyframes are rate-limited): four handshakes at once on two cores,
        # or a room warming up, would be measured instead of the link. Watching overlaps.
        profiles = ("none", "4g", "3g", "lossy-wifi")
        none, g4, g3, wifi = await asyncio.gather(
            *(watch(url, p, seed=7, after=1 + i) for i, p in enumerate(profiles))
        )
    for r in (none, g4, g3, wifi):
        assert r.success, (r.profile, r.error)
    assert (none.profile, g4.profile, g3.profile) == ("none", "4g", "3g")
    g2g = {r.profile: r.latency.glass_to_glass_seconds["p50"] for r in (none, g4, g3)}
    link = {r.profile: sum(r.join.phases[p] for p in LINK_PHASES) for r in (none, g4, g3)}
    # A host too busy to keep the room's frames on time says so, and its latencies are its own.
    if not any(r.probe_host.overloaded for r in (none, g4, g3)):
        assert g2g["4g"] > g2g["none"] + 0.010 and g2g["3g"] > g2g["4g"] + 0.030, g2g
    assert link["4g"] > link["none"] + 0.088 and link["3g"] > link["4g"] + 0.212, link
    assert g3.join.total_seconds > none.join.total_seconds + 0.212, (none.join, g3.join)
    assert none.network == {}
    assert g3.network["profile"] == "3g" and g3.network["downlink"]["delivered"] > 300
    dropped = wifi.network["downlink"]["dropped"]
    assert dropped["burst"] > 0 and dropped["loss"] == 0  # lossy-wifi's loss comes in bursts


@pytest.mark.slow(seconds=12)
async def test_bursty_loss_freezes_what_a_clean_link_does_not(room, tmp_path) -> None:
    profile = tmp_path / "bursty.toml"
    profile.write_text(BURSTY)
    async with room() as live:
        url = f"{live.url}/whep/demo"
        results = await asyncio.gather(
            watch(url, "none", seed=1, duration=12),
            *(watch(url, str(profile), seed=s, duration=12) for s in (1, 2, 3)),
        )
    clean, *bursty = results
    assert clean.success and clean.video.freeze_count == 0
    assert all(r.success for r in bursty), [r.error for r in bursty]
    assert sum(r.video.freeze_count or 0 for r in bursty) >= 2
    assert all(r.network["downlink"]["dropped"]["burst"] > 10 for r in bursty)


@pytest.mark.slow(seconds=11)
def test_demo_shows_profiles_side_by_side(cli) -> None:
    done = cli("demo", "--duration", "4", "--viewers", "1", "--profile", "3g", "--profile", "4g")
    assert done.returncode == 0, done.stderr
    # A busy host adds a note under the table; it is not a row.
    rows = [line.split() for line in done.stdout.splitlines()[2:] if line and not line.startswith("note:")]
    assert [(row[0], row[1]) for row in rows] == [("viewer-1", "3g"), ("viewer-1", "4g")]
    unknown = cli("demo", "--profile", "5g")
    assert unknown.returncode == 2 and "unknown profile '5g'" in unknown.stderr
