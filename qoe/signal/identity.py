"""Which whole second each audio marker belongs to, read from tone onset times alone.

:class:`~qoe.signal.audio.SignalAudio` follows the marker of second ``S`` with an identity
burst :func:`~qoe.signal.audio.identity_delay` (S) later: 0.2 s plus 16 ms per unit of
``S mod 16``. :func:`identify_markers` turns the onsets a
:class:`~qoe.signal.detect.ToneOnsetDetector` found (one frequency, one stream timeline) back
into markers with their identity. Nothing is guessed: an identity is given only when

- exactly one other onset follows the marker within the identity window (0.2..0.44 s, plus
  the tolerance), so a stray onset in the window makes the marker unidentified instead of
  misread;
- the gap lies within the tolerance of a step of the grid (off-grid gaps give no identity);
- another marker whole seconds away (up to :data:`CONFIRM_SECONDS`) carries the identity that
  distance predicts. A stray onset 0.2..0.44 s before a real marker reads like a marker
  itself; this cross-check is what tells them apart, as strays do not keep the 1 s rhythm;
- no other identified marker is within half a second of it (a stray right beside a marker
  could pass the other checks; which of the two is the marker is then unknown).

The windows cannot be confused: after an identity burst the next onset (the next marker) is
at least 0.56 s away, beyond the identity window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from qoe.signal.audio import IDENTITY_BASE_SECONDS, IDENTITY_MODULUS, IDENTITY_STEP_SECONDS

__all__ = ["CONFIRM_SECONDS", "IDENTITY_TOLERANCE_SECONDS", "AudioMarker", "identify_markers"]

IDENTITY_TOLERANCE_SECONDS = 0.003
"""How far a gap may be from its grid step (steps are 16 ms apart), and how far two markers
may be from a whole number of seconds apart. Onsets through Opus are good to ~0.01 ms, through
FLV's millisecond timestamps to 0.5 ms; 3 ms leaves room for both and stays far from the
8 ms where a gap would be nearer the next step."""
CONFIRM_SECONDS = 3
"""Markers at most this many whole seconds apart confirm each other's identities; nearer ones
only, so a slow drift of the stream's media clock cannot build up."""


@dataclass(frozen=True, slots=True)
class AudioMarker:
    """A marker onset with the identity of its second."""

    at: float
    """Onset, seconds on the stream's timeline (as given)."""
    identity: int | None
    """The second's ``S mod IDENTITY_MODULUS``; None when it could not be read for sure."""


def identify_markers(
    onsets: Sequence[float] | np.ndarray, tolerance: float = IDENTITY_TOLERANCE_SECONDS
) -> list[AudioMarker]:
    """Markers among ``onsets`` (seconds, one frequency, one timeline), in time order.

    Identity bursts are left out. A marker whose identity cannot be read for sure (its burst
    lost, its gap off the grid, a stray onset beside it) is kept with ``identity`` None if it
    keeps the 1 s rhythm of the identified markers. An onset that neither is identified nor
    keeps that rhythm (an identity burst whose marker was lost, a stray) is left out. When no
    marker can be identified at all, every onset that does not follow another as an identity
    burst would is taken for an unidentified marker, so a signal without identity bursts still
    counts its markers.
    """
    t = np.asarray(onsets, dtype=float)
    if t.ndim != 1:
        raise ValueError(f"onsets must be 1-D, got shape {t.shape}")
    t = np.sort(t)
    if not np.all(np.isfinite(t)):
        raise ValueError("onsets must be finite")
    if not 0 < tolerance < IDENTITY_STEP_SECONDS / 2:
        raise ValueError(f"tolerance must be in (0, {IDENTITY_STEP_SECONDS / 2}), got {tolerance}")
    lo = IDENTITY_BASE_SECONDS - tolerance
    hi = IDENTITY_BASE_SECONDS + (IDENTITY_MODULUS - 1) * IDENTITY_STEP_SECONDS + tolerance
    first = np.searchsorted(t, t + lo, side="left")
    last = np.searchsorted(t, t + hi, side="right")  # exclusive
    # candidate[i] = (index of its burst, identity) when exactly one onset is in the window
    # and its gap is on the grid.
    candidate: dict[int, tuple[int, int]] = {}
    follows = np.zeros(t.size, dtype=bool)  # the onset is in some onset's identity window
    for i in range(t.size):
        if last[i] - first[i] >= 1:
            follows[first[i] : last[i]] = True
        if last[i] - first[i] != 1:
            continue
        j = int(first[i])
        steps = (t[j] - t[i] - IDENTITY_BASE_SECONDS) / IDENTITY_STEP_SECONDS
        k = round(steps)
        if 0 <= k < IDENTITY_MODULUS and abs(steps - k) * IDENTITY_STEP_SECONDS <= tolerance:
            candidate[i] = (j, k)
    confirmed = _confirmed(t, candidate, tolerance)
    # Markers are 1 s apart: two confirmed ones closer than half that (a stray beside a
    # marker, or one that is another's burst) cannot both be, and which one is is unknown.
    clash = [(i, j) for i, j in pairwise(sorted(confirmed)) if t[j] - t[i] < 0.5]
    for i in {i for pair in clash for i in pair}:
        del confirmed[i]
    bursts = {candidate[i][0] for i in confirmed}
    anchors = np.sort(t[list(confirmed)])
    markers = []
    for i in range(t.size):
        if i in confirmed:
            markers.append(AudioMarker(float(t[i]), confirmed[i]))
        elif i in bursts:
            continue
        elif anchors.size:
            at = int(np.searchsorted(anchors, t[i]))
            nearest = min(anchors[max(0, at - 1) : at + 1], key=lambda a: abs(a - t[i]))
            distance = float(t[i] - nearest)
            if abs(distance - round(distance)) <= tolerance:
                markers.append(AudioMarker(float(t[i]), None))
        elif not follows[i]:
            markers.append(AudioMarker(float(t[i]), None))
    return markers


def _confirmed(t: np.ndarray, candidate: dict[int, tuple[int, int]], tolerance: float) -> dict[int, int]:
    """The candidates (onset index -> identity) that another candidate 1..CONFIRM_SECONDS
    whole seconds away agrees with: its identity differs by that many seconds."""
    index = np.array(sorted(candidate), dtype=int)
    times = t[index]
    reach = CONFIRM_SECONDS + tolerance
    confirmed: dict[int, int] = {}
    for n, i in enumerate(index):
        k = candidate[int(i)][1]
        lo = int(np.searchsorted(times, times[n] - reach, side="left"))
        hi = int(np.searchsorted(times, times[n] + reach, side="right"))
        for m in range(lo, hi):
            distance = float(times[m] - times[n])
            seconds = round(distance)
            other = candidate[int(index[m])][1]
            if (
                1 <= abs(seconds) <= CONFIRM_SECONDS
                and abs(distance - seconds) <= tolerance
                and (other - k) % IDENTITY_MODULUS == seconds % IDENTITY_MODULUS
            ):
                confirmed[int(i)] = k
                break
    return confirmed
