"""When a player shows each decoded frame: the render clock the freeze rule is applied to.

FFmpeg hands frames over as fast as their bytes arrive: an HLS segment (or a burst after a
network stall) comes out of the decoder all at once, dozens of frames within a millisecond,
and then nothing until the next segment. A player does not show them like that; it shows
each frame at its presentation time on a clock started by the first frame, and when a frame
is not there in time it waits for it (a stall) and carries on from there:

    render[0] = arrival[0]
    render[i] = max(arrival[i], render[i-1] + (pts[i] - pts[i-1]))

W3C webrtc-stats counts freezes between *rendered* frames, so these render times are what
:func:`qoe.metrics.freezes` is fed. For a stream that arrives on time (RTMP on a clean link)
render time is arrival time; a frame that arrives early waits for its turn; a late one is a
freeze. A timestamp step backwards, or forwards by more than :data:`MAX_STEP_SECONDS`, is a
discontinuity (a publisher that reconnected): the clock restarts at that frame's arrival.
The player never skips ahead to catch up, so after a stall it stays that much further behind
live, as HLS players and most RTMP players without latency control do.
"""

from __future__ import annotations

__all__ = ["MAX_STEP_SECONDS", "Playout"]

MAX_STEP_SECONDS = 5.0
"""Largest presentation-time step between consecutive frames taken at face value: the W3C
pause threshold; a longer step is a discontinuity, not a pause to wait out."""


class Playout:
    """Render times from arrival times and presentation timestamps (both seconds)."""

    def __init__(self) -> None:
        self._last_render: float | None = None
        self._last_pts: float | None = None

    def render(self, arrival: float, pts: float | None) -> float:
        """The render time of a frame that arrived at ``arrival`` with timestamp ``pts``
        (None: unknown, shown on arrival)."""
        last_render, last_pts = self._last_render, self._last_pts
        if last_render is None or last_pts is None or pts is None:
            at = arrival
        else:
            step = pts - last_pts
            at = arrival if not 0 <= step <= MAX_STEP_SECONDS else max(arrival, last_render + step)
        self._last_render, self._last_pts = at, pts
        return at
