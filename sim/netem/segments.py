"""The time-varying parts of a :class:`~sim.netem.LinkConfig`, precomputed for ``Link.send``.

A schedule becomes a list of :class:`Segment` (the parameters in force from a given time on,
with the Gilbert-Elliott transition probabilities and the per-byte serialisation time
already worked out), and outages become sorted, merged intervals, so the per-packet path
only compares a time against the next boundary.
"""

from __future__ import annotations

from .config import LinkConfig

__all__ = ["Segment", "merged_outages", "segments"]


class Segment:
    """The schedulable parameters in force from ``at`` seconds on, precomputed for send."""

    __slots__ = (
        "at",
        "byte_time",
        "delay",
        "dup",
        "ge_start",
        "ge_stay",
        "jitter",
        "loss",
        "loss_mode",
    )

    def __init__(self, at: float, values: dict[str, float | None]) -> None:
        self.at = at
        self.delay = float(values["delay"] or 0.0)
        self.jitter = float(values["jitter"] or 0.0)
        self.dup = float(values["duplicate"] or 0.0)
        self.loss = float(values["loss"] or 0.0)
        rate = values["rate"]
        # Seconds per byte; 0 serialises instantly (infinite rate) but still honours backlog.
        self.byte_time = 8.0 / rate if rate else 0.0
        burst = values["burst_length"]
        self.ge_stay = self.ge_start = 0.0
        if self.loss <= 0.0:
            self.loss_mode = 0
        elif burst is None:
            self.loss_mode = 1
        else:
            # libwebrtc SimulatedNetwork's Gilbert-Elliott parameters (docs/SOURCES.md).
            self.loss_mode = 2
            self.ge_stay = 1.0 - 1.0 / burst
            self.ge_start = self.loss / (1.0 - self.loss) / burst


def segments(config: LinkConfig) -> list[Segment]:
    """The config's parameters as segments in time order; the first starts at 0."""
    state: dict[str, float | None] = {
        "delay": config.delay,
        "jitter": config.jitter,
        "loss": config.loss,
        "burst_length": config.burst_length,
        "rate": config.rate,
        "duplicate": config.duplicate,
    }
    result = [Segment(0.0, state)]
    for at, changes in config.schedule:
        state = {**state, **changes}
        if at == 0.0:
            result[0] = Segment(0.0, state)  # a step at 0 replaces the base parameters
        else:
            result.append(Segment(at, state))
    return result


def merged_outages(config: LinkConfig) -> list[tuple[float, float]]:
    """Outages as sorted, non-overlapping ``(start, end)`` intervals."""
    merged: list[tuple[float, float]] = []
    for start, duration in sorted(config.outages):
        end = start + duration
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
