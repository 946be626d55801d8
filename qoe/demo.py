"""``qoe demo``: the embedded room with its host, and N viewer probes against it, in one process."""

from __future__ import annotations

import asyncio

from probes import probe_spec, run_probe
from qoe.media import Knobs
from qoe.result import ProbeResult
from qoe.signal import COHOST_TONE_HZ
from sim.room.server import LiveRoom

__all__ = ["run_demo"]


COHOST_WARMUP = 2.5
"""Seconds a co-host publishes before viewers join: the room places a WHIP publisher's media
by its RTCP sender reports, the first of which comes within 1.5 s."""


async def run_demo(
    *,
    duration: float = 10.0,
    viewers: int = 3,
    profiles: tuple[str, ...] = ("none",),
    knobs: Knobs | None = None,
    cohost: bool = False,
) -> list[ProbeResult]:
    """Start a room on a free loopback port and watch it with ``viewers`` probes per profile.

    With ``cohost``, a WHIP publisher of ours joins the demo room as its co-host first; the
    viewers watch the room's mix, and the last of them (of two or more) takes the
    participants' tracks separately. The co-host's own result comes last.
    """
    async with LiveRoom("127.0.0.1", 0, knobs=knobs) as room:
        publisher = None
        if cohost:
            spec = probe_spec(
                f"{room.url}/whip/demo",
                kind="whip",
                duration=duration + COHOST_WARMUP + 1,
                name="cohost-publisher",
                options={"slot": 1, "tone_hz": COHOST_TONE_HZ},
            )
            publisher = asyncio.create_task(run_probe(spec))
            await asyncio.sleep(COHOST_WARMUP)

        def watches(i: int) -> str | None:
            """What viewer ``i`` takes with a co-host on: the room's mix, or the last of two
            or more the participants' separate tracks."""
            if not cohost:
                return None
            return "separate" if viewers > 1 and i == viewers - 1 else "mixed"

        def name(i: int) -> str:
            label = {"mixed": "-mix", "separate": "-tracks", None: ""}[watches(i)]
            return f"viewer-{i + 1}{label}"

        specs = [
            probe_spec(
                f"{room.url}/whep/demo",
                kind="whep",
                duration=duration,
                name=name(i),
                profile=profile,
                options={"cohost": mode} if (mode := watches(i)) else {},
            )
            for profile in profiles
            for i in range(viewers)
        ]
        results = list(await asyncio.gather(*(run_probe(spec) for spec in specs)))
        if publisher is not None:
            results.append(await publisher)
        return results
