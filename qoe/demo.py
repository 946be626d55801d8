"""``qoe demo``: the embedded room with its host, and N viewer probes against it, in one process."""

from __future__ import annotations

import asyncio

from probes import ProbeSpec, run_probe
from qoe.media import Knobs
from qoe.result import ProbeResult
from sim.room.server import LiveRoom

__all__ = ["run_demo"]


async def run_demo(
    *,
    duration: float = 10.0,
    viewers: int = 3,
    profiles: tuple[str, ...] = ("none",),
    knobs: Knobs | None = None,
) -> list[ProbeResult]:
    """Start a room on a free loopback port and watch it with ``viewers`` probes per profile."""
    async with LiveRoom("127.0.0.1", 0, knobs=knobs) as room:
        specs = [
            ProbeSpec(
                url=f"{room.url}/whep/demo",
                kind="whep",
                duration=duration,
                name=f"viewer-{i + 1}",
                profile=profile,
            )
            for profile in profiles
            for i in range(viewers)
        ]
        return list(await asyncio.gather(*(run_probe(spec) for spec in specs)))
