"""A rendition ladder, and how one viewer climbs it: the simulcast of an SFU, in the room.

The room's built-in host encodes its picture once per rung it has watchers on (each rung
rendered natively at its size, so a viewer's quality score measures coding loss alone), and
each WHEP viewer takes one rung at a time. Which one follows the viewer's own feedback: the
REMB bandwidth estimate (draft-alvestrand-rmcat-remb) its receiver sends, capped, while the
receiver reports more than :data:`LOSS_HIGH` of the packets lost, at what is sent times
(1 - loss / 2) as webrtc's loss-based controller caps it (a delay-based estimate alone misses
a drop-tail queue that stays full):

- **down**, to the highest rung whose bitrate fits under the estimate, when the estimate has
  stayed below :data:`DOWN_BELOW` of what the current rung really sends for
  :data:`DOWN_AFTER` seconds (two reports). Webrtc-style estimators start at what they
  receive and drop to 0.85 of it when the delay grows, so 0.9 is a clear sign of congestion,
  not the estimate's wobble. What a rung sends is measured, not its target: an encoder may
  need less than its target for a simple picture, and an estimate that merely follows what
  arrives must not read as congestion;
- **up** one rung when the estimate has held at or above the next rung's bitrate for
  :data:`UP_AFTER` seconds. The room sends no padding to probe, and such estimators cap
  themselves at 1.5 times what they receive, so a viewer moved down climbs back only as far
  as its estimate grows: as a simulcast SFU without probing would.

Every switch waits for a keyframe of the new rung (:class:`qoe.media.fanout.PacketTrack`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "DOWN_AFTER",
    "DOWN_BELOW",
    "LOSS_HIGH",
    "UP_AFTER",
    "Rung",
    "RungChooser",
    "fitting",
    "make_ladder",
]

DOWN_BELOW = 0.9
DOWN_AFTER = 1.0
UP_AFTER = 4.0
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
LOSS_MEMORY = 3.0
SIZE_STEPS = (1.0, 0.75, 0.5, 0.375, 0.25)
"""Each rung's width and height as a share of the top rung's (640x360, 480x270, 320x180...)."""
BITRATE_STEPS = (1.0, 0.6, 0.3, 0.2, 0.1)
"""Each rung's bitrate as a share of the top rung's."""
MIN_SIZE = (320, 180)
"""The test signal's smallest size."""


@dataclass(frozen=True, slots=True)
class Rung:
    width: int
    height: int
    bitrate: int
    """Bits per second."""


def fitting(width: int, height: int, wanted: int = 3) -> int:
    """How many of ``wanted`` rungs fit above the signal's smallest size from ``width`` x
    ``height`` (at least 1)."""
    return max(1, min(wanted, len(_all_rungs(width, height, 1))))


def _all_rungs(width: int, height: int, bitrate: int) -> list[Rung]:
    """Every rung of the steps that fits above the signal's smallest size, best first."""
    rungs = []
    for size, rate in zip(SIZE_STEPS, BITRATE_STEPS, strict=True):
        w, h = 2 * round(width * size / 2), 2 * round(height * size / 2)
        if w < MIN_SIZE[0] or h < MIN_SIZE[1]:
            break
        rungs.append(Rung(w, h, round(bitrate * rate)))
    return rungs


def make_ladder(width: int, height: int, bitrate: int, count: int) -> tuple[Rung, ...]:
    """``count`` rungs from ``width`` x ``height`` at ``bitrate`` down, best first.

    Raises ValueError when ``count`` rungs do not fit above the signal's smallest size
    (320x180), naming how many do.
    """
    if count < 1:
        raise ValueError(f"renditions must be 1 or more, got {count}")
    rungs = _all_rungs(width, height, bitrate)
    if count > len(rungs):
        raise ValueError(
            f"{count} renditions of {width}x{height} do not fit above {MIN_SIZE[0]}x{MIN_SIZE[1]}: "
            f"at most {len(rungs)} do ({', '.join(f'{r.width}x{r.height}' for r in rungs)})"
        )
    return tuple(rungs[:count])


class RungChooser:
    """One viewer's rung, from its bandwidth estimates and losses (see the module docstring).

    :param bitrates: each rung's target bitrate, best first. An encoder often sends less than
        its target (a simple picture needs fewer bits), so congestion is judged against what
        the current rung really sends; a rung to move to is judged by its target.
    """

    def __init__(self, bitrates: list[int] | tuple[int, ...]) -> None:
        self.bitrates = tuple(bitrates)
        self.rung = 0
        self._remb: float | None = None
        self._loss_limit: float | None = None
        self._loss_at = -math.inf
        self._fits_above_since: float | None = None
        self._below_since: float | None = None

    def lost(self, fraction: float, now: float, sending: float | None = None) -> int | None:
        """Take a receiver report's fraction lost at ``now``: above :data:`LOSS_HIGH` it caps
        the estimate at ``sending * (1 - fraction / 2)``, as webrtc's loss-based controller
        does, for :data:`LOSS_MEMORY` seconds; the rung to move to, or None."""
        if fraction > LOSS_HIGH:
            self._loss_limit = (sending or self.bitrates[self.rung]) * (1 - fraction / 2)
            self._loss_at = now
        elif fraction < LOSS_LOW:
            self._loss_limit = None
        return self._decide(now, sending)

    def update(self, estimate: float, now: float, sending: float | None = None) -> int | None:
        """Take a REMB bandwidth estimate (bit/s) at monotonic ``now``, with what the current
        rung sends (bit/s, None: unknown, taken as its target); the rung to move to, or None."""
        self._remb = estimate
        return self._decide(now, sending)

    def _decide(self, now: float, sending: float | None) -> int | None:
        limits = [self._remb]
        if self._loss_limit is not None and now - self._loss_at <= LOSS_MEMORY:
            limits.append(self._loss_limit)
        known = [limit for limit in limits if limit is not None]
        if not known:
            return None
        estimate = min(known)
        current = self.rung
        now_sending = sending or self.bitrates[current]
        if estimate < DOWN_BELOW * now_sending and current + 1 < len(self.bitrates):
            self._fits_above_since = None
            if self._below_since is None:
                self._below_since = now
            if now - self._below_since < DOWN_AFTER:
                return None
            self._below_since = None
            lower = [i for i in range(current + 1, len(self.bitrates)) if self.bitrates[i] <= estimate]
            self.rung = lower[0] if lower else len(self.bitrates) - 1
            self._loss_limit = None  # measured on the old rung
            return self.rung
        self._below_since = None
        if current == 0 or estimate < self.bitrates[current - 1]:
            self._fits_above_since = None
            return None
        if self._fits_above_since is None:
            self._fits_above_since = now
        if now - self._fits_above_since < UP_AFTER:
            return None
        self.rung = current - 1
        self._fits_above_since = None
        return self.rung
