"""Co-host audio quality from the test signal: echo, dropouts, noise floor and SNR.

Pure numpy functions over what a viewer records of each participant's audio (tone onsets
with their plateau levels, and each decoded block's start, length and power); no I/O, no
event loop. Times are seconds, powers mean squares of samples at full scale 1.0 (a
full-scale sine is 0.5), levels the tone detector's plateau envelope (half a tone's
amplitude). :mod:`qoe.metrics` applies them to a run's event log; docs/METRICS.md defines
each figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qoe.signal.audio import TONE_SECONDS

__all__ = [
    "DROPOUT_MIN_SECONDS",
    "ECHO_MAX_DELAY_SECONDS",
    "ECHO_MAX_RETURN_LOSS_DB",
    "ECHO_MIN_MATCHES",
    "ECHO_TOLERANCE_SECONDS",
    "FULL_SCALE_SINE_POWER",
    "MARKER_SILENCE_MIN_SNR_DB",
    "NOISE_FLOOR_MIN_DBFS",
    "Dropouts",
    "Echo",
    "dbfs",
    "dropouts",
    "echo",
    "missing_markers",
    "noise_power",
    "snr_db",
]

ECHO_MAX_DELAY_SECONDS = 1.0
"""An echo is looked for up to this long after the far end's tone."""
ECHO_TOLERANCE_SECONDS = 0.005
"""Returned tones agree on one delay when within this of it: far beyond the onsets' error
(0.01 ms through Opus) and the sender clocks' mapping (about a millisecond)."""
ECHO_MIN_MATCHES = 3
"""Returned tones needed to call an echo: one stray onset cannot make one."""
ECHO_MAX_RETURN_LOSS_DB = 40.0
"""An echo quieter than this below the far end is not reported (a project choice: at 40 dB
below a talker an echo is masked by the co-host's own room noise)."""
DROPOUT_MIN_SECONDS = 0.010
"""A gap between decoded blocks shorter than this is timestamp rounding, not missing audio."""
FULL_SCALE_SINE_POWER = 0.5
"""Mean square of a full-scale sine: 0 dBFS, as AES17 defines the decibel full scale."""
NOISE_FLOOR_MIN_DBFS = -120.0
"""Noise floors are reported down to this; digital silence reads as it."""
MARKER_SILENCE_MIN_SNR_DB = 15.0
"""Missing markers are counted only at this SNR or more. The onset detector wants the
envelope under a tenth of the tone's for 50 ms before an onset: at 15 dB the noise's envelope
reaches that about once in 1e10 samples, at 10 dB often enough that about one onset in 15
is missed (measured through Opus), which would read as a silenced marker."""
MARKER_TOLERANCE_SECONDS = 0.020
"""A marker found within this of where the one-second grid puts it is present."""
_BEFORE_TONE = 0.010  # a block this close before an onset may hold the codec's pre-echo
_AFTER_TONE = 0.020  # ... and this long after a tone's end its ringing


def _floats(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


@dataclass(frozen=True, slots=True)
class Echo:
    """An echo of the far end's tones found in a participant's audio."""

    delay_seconds: float
    """Median of echo onset minus far-end onset over the matched tones."""
    return_loss_db: float
    """Median of 20 log10(far-end level / echo level): the echo return loss (ITU-T G.168
    ERL; W3C webrtc-stats ``echoReturnLoss``)."""
    matches: int
    """Far-end tones found returning at that delay."""


def echo(
    far_times: npt.ArrayLike,
    far_levels: npt.ArrayLike,
    echo_times: npt.ArrayLike,
    echo_levels: npt.ArrayLike,
    *,
    max_delay: float = ECHO_MAX_DELAY_SECONDS,
    tolerance: float = ECHO_TOLERANCE_SECONDS,
) -> Echo | None:
    """The delay and return loss of the far end's tones returning in a near end's audio.

    ``far_times``/``far_levels``: onsets of the far end's tone (the host's 1000 Hz) in its own
    stream, on its sender's clock; ``echo_times``/``echo_levels``: onsets of the same
    frequency in the near end's (the co-host's) own stream, on the near end's sender clock.
    Every echo onset proposes the delays to the far-end onsets up to ``max_delay`` before it;
    the delay proposed by the most echo onsets (within ``tolerance``) wins. The identity
    bursts' varying spacing makes that delay unique. An echo needs
    :data:`ECHO_MIN_MATCHES` onsets agreeing and a return loss up to
    :data:`ECHO_MAX_RETURN_LOSS_DB`; otherwise None (no echo).
    """
    far_t, far_l = _floats(far_times, "far_times"), _floats(far_levels, "far_levels")
    echo_t, echo_l = _floats(echo_times, "echo_times"), _floats(echo_levels, "echo_levels")
    if far_t.shape != far_l.shape or echo_t.shape != echo_l.shape:
        raise ValueError("times and levels must have the same length")
    if far_t.size == 0 or echo_t.size == 0:
        return None
    delays = echo_t[:, None] - far_t[None, :]  # [echo, far]
    usable = (delays >= 0) & (delays <= max_delay)
    if not usable.any():
        return None
    # Vote: each echo onset once per bin of `tolerance` its delays fall in; the best pair of
    # neighbouring bins holds the delay, refined to the median of the delays in it.
    votes: dict[int, int] = {}
    for i in range(delays.shape[0]):
        for b in np.unique(np.floor(delays[i][usable[i]] / tolerance).astype(np.int64)):
            votes[int(b)] = votes.get(int(b), 0) + 1
    top = max(votes, key=lambda b: (votes[b] + votes.get(b + 1, 0), -b))
    window = usable & (delays >= top * tolerance) & (delays < (top + 2) * tolerance)
    best = float(np.median(delays[window]))
    near = usable & (np.abs(delays - best) <= tolerance)
    matched_delays, losses = [], []
    for row in np.flatnonzero(near.any(axis=1)):
        j = int(np.argmin(np.where(near[row], np.abs(delays[row] - best), np.inf)))
        matched_delays.append(float(delays[row, j]))
        if far_l[j] > 0 and echo_l[row] > 0:
            losses.append(20 * math.log10(far_l[j] / echo_l[row]))
    if len(matched_delays) < ECHO_MIN_MATCHES or not losses:
        return None
    loss = float(np.median(losses))
    if loss > ECHO_MAX_RETURN_LOSS_DB:
        return None
    return Echo(float(np.median(matched_delays)), loss, len(matched_delays))


@dataclass(frozen=True, slots=True)
class Dropouts:
    count: int
    seconds: float
    gaps: tuple[tuple[float, float], ...]
    """(start, end) of each, in stream seconds."""


def dropouts(starts: npt.ArrayLike, lengths: npt.ArrayLike, min_gap: float = DROPOUT_MIN_SECONDS) -> Dropouts:
    """Gaps in a stream's decoded audio: spans of its media timeline no block covers.

    ``starts`` and ``lengths`` are the decoded blocks' first sample times and durations
    (seconds, any order). A gap is counted once a block after it has come (as a freeze is
    once a frame closes it); gaps under ``min_gap`` are timestamp rounding.
    """
    t, n = _floats(starts, "starts"), _floats(lengths, "lengths")
    if t.shape != n.shape:
        raise ValueError(f"starts and lengths must have the same shape, got {t.shape} and {n.shape}")
    order = np.argsort(t, kind="stable")
    t, n = t[order], n[order]
    covered = np.maximum.accumulate(t + n) if t.size else t
    gaps = [
        (float(covered[i]), float(t[i + 1])) for i in range(t.size - 1) if t[i + 1] - covered[i] >= min_gap
    ]
    return Dropouts(len(gaps), float(sum(b - a for a, b in gaps)), tuple(gaps))


def missing_markers(
    marker_times: npt.ArrayLike,
    onset_times: npt.ArrayLike,
    gaps: tuple[tuple[float, float], ...] = (),
    *,
    tolerance: float = MARKER_TOLERANCE_SECONDS,
) -> int:
    """Markers that should have sounded, in audio that did arrive, but were not found.

    A participant's markers come once a second: the grid is fitted to ``marker_times`` (the
    markers found, stream seconds) and every whole second between the first and the last
    found is due. One is missing when no onset of its tone (``onset_times``) lies within
    ``tolerance`` of it and no gap in the audio (``gaps``, from :func:`dropouts`) reaches
    into its tone: then the stream carried silence where the signal should sound.
    """
    markers = np.sort(_floats(marker_times, "marker_times"))
    onsets = _floats(onset_times, "onset_times")
    if markers.size < 2:
        return 0
    first = markers[0]
    steps = np.round(markers - first)
    phase = float(np.median(markers - first - steps))
    missing = 0
    for k in range(int(steps[-1]) + 1):
        due = first + phase + k
        if onsets.size and np.min(np.abs(onsets - due)) <= tolerance:
            continue
        if any(a < due + TONE_SECONDS + tolerance and b > due - tolerance for a, b in gaps):
            continue
        missing += 1
    return missing


def noise_power(
    starts: npt.ArrayLike,
    lengths: npt.ArrayLike,
    powers: npt.ArrayLike,
    onset_times: npt.ArrayLike,
    tone_seconds: float = TONE_SECONDS,
) -> float | None:
    """The noise floor's power: the median power of the blocks that hold no tone.

    A block holds a tone when it overlaps ``[onset - 10 ms, onset + tone_seconds + 20 ms]``
    of any onset in ``onset_times`` (every test-signal burst lasts at most ``tone_seconds``;
    the margins take the codec's pre-echo and ringing). The median, not the mean, so a tone
    the detector missed does not lift the floor. None without a quiet block.
    """
    t, n, p = _floats(starts, "starts"), _floats(lengths, "lengths"), _floats(powers, "powers")
    onsets = np.sort(_floats(onset_times, "onset_times"))
    if not t.shape == n.shape == p.shape:
        raise ValueError("starts, lengths and powers must have the same shape")
    if t.size == 0:
        return None
    quiet = np.ones(t.size, dtype=bool)
    if onsets.size:
        # The latest onset at or before each block's end, and whether its tone reaches it.
        ends = t + n
        i = np.searchsorted(onsets, ends + _BEFORE_TONE, side="right") - 1
        has = i >= 0
        reach = onsets[np.clip(i, 0, None)] + tone_seconds + _AFTER_TONE
        quiet &= ~(has & (reach > t))
    if not quiet.any():
        return None
    return float(np.median(p[quiet]))


def dbfs(power: float) -> float:
    """A mean-square power in dB relative to a full-scale sine (AES17), floored at
    :data:`NOISE_FLOOR_MIN_DBFS`."""
    floor = FULL_SCALE_SINE_POWER * 10 ** (NOISE_FLOOR_MIN_DBFS / 10)
    return 10 * math.log10(max(power, floor) / FULL_SCALE_SINE_POWER)


def snr_db(tone_level: float, noise: float) -> float:
    """A tone's power over the noise's, in dB: the tone's power is 2 x its plateau level
    squared (a sine of amplitude A has power A^2 / 2 and plateau A / 2); a noise below the
    :data:`NOISE_FLOOR_MIN_DBFS` floor is taken at the floor."""
    floor = FULL_SCALE_SINE_POWER * 10 ** (NOISE_FLOOR_MIN_DBFS / 10)
    return 10 * math.log10(2 * tone_level**2 / max(noise, floor))
