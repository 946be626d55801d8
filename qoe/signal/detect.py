"""Streaming detectors for the test signal: marker flashes in video, tone onsets in audio.

Both are plain objects fed with ``add(...)``; they hold a little state, do no I/O and return
what they found in that call, so a probe can feed them from any decode loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from qoe.signal.audio import RAMP_SECONDS, SAMPLE_RATE

__all__ = ["FlashDetector", "ToneOnsetDetector", "null_window"]


class FlashDetector:
    """Finds the dark-to-bright transitions of a flash marker (see :func:`flash_level`).

    Hysteresis: a level above ``high`` counts as an onset only after the level has been below
    ``low`` since the previous onset, so a marker that hovers around one threshold (encoder
    noise, a partial fade) cannot produce a burst of onsets. Levels are luma 0..255.
    """

    def __init__(self, high: float = 160.0, low: float = 96.0) -> None:
        if not low < high:
            raise ValueError(f"low ({low}) must be below high ({high})")
        self.high = high
        self.low = low
        self._armed = False

    def add(self, t: float, level: float) -> float | None:
        """Feed the marker ``level`` of the frame at time ``t``; return ``t`` at an onset."""
        if level < self.low:
            self._armed = True
        elif level > self.high and self._armed:
            self._armed = False
            return t
        return None


_MIN_WINDOW_SECONDS = 0.002
_MAX_WINDOW_SECONDS = 0.020
_QUIET_SECONDS = 0.050  # envelope below _QUIET_RATIO of the plateau this long before an onset
_QUIET_RATIO = 0.1
_PLATEAU_SECONDS = (0.010, 0.030)  # after the crossing; the plateau level is the median here
_HOLD_RATIO = 0.75  # the envelope stays above this share of the plateau until 30 ms after
_SMEAR_SECONDS = 0.002  # codec pre-echo and ringing around an onset, kept out of the checks
_BLOCK_SECONDS = 0.001  # coarse grid on which candidates are searched


def null_window(tone_hz: float, other_hz: Sequence[float], sample_rate: int, min_seconds: float) -> int:
    """Shortest boxcar length (samples, >= ``min_seconds``) that nulls the unwanted products.

    After demodulation at ``tone_hz`` a real tone leaves an image at 2 x tone_hz and each other
    tone lands at |other - tone| and other + tone. A boxcar of L samples has zeros at every
    multiple of sample_rate / L, so L must make L x f / sample_rate an integer for each f.
    """
    products = [2 * tone_hz]
    for other in other_hz:
        if other == tone_hz:
            raise ValueError(f"other tone {other} Hz equals the tone itself")
        products += [abs(other - tone_hz), other + tone_hz]
    length = 1
    for f in products:
        length = math.lcm(length, (Fraction(f) / sample_rate).denominator)
    length *= max(1, math.ceil(min_seconds * sample_rate / length))
    if length > _MAX_WINDOW_SECONDS * sample_rate:
        raise ValueError(
            f"no boxcar up to {_MAX_WINDOW_SECONDS * 1e3:.0f} ms nulls {tone_hz} Hz against"
            f" {list(other_hz)} Hz at {sample_rate} Hz; pass window_seconds explicitly"
        )
    return length


class ToneOnsetDetector:
    """Finds the onsets of tone bursts of one frequency in a stream of mono PCM.

    Against :class:`FlashDetector` onsets they give the A/V offset (positive = audio ahead,
    ITU-R BT.1359 sign); between host and co-host tones, the co-host audio offset.

    Method: complex demodulation at ``tone_hz``, two cascaded boxcars of the length from
    :func:`null_window` (2 ms for 1000 Hz against 1500 Hz at 48 kHz), magnitude. Two boxcars
    give a double zero at each nulled frequency, so an image or another tone is cancelled even
    while its amplitude ramps; a single boxcar leaves that as a bias depending on the tone's
    phase, measured up to 0.046 ms for 1000 Hz against 1500 Hz. The onset is where the
    envelope rises through half of the plateau level (median envelope 10..30 ms after the
    crossing, so any gain works), linearly interpolated and corrected for the filter delay.
    As the smoothing kernel and the tone's ramp are both symmetric, that half-level point is
    the nominal onset of :class:`SignalAudio`.

    An onset counts only if the envelope was below 10% of the plateau for the 50 ms before the
    ramp and stays above 75% of it until 30 ms after, so each burst gives one onset. An onset
    is therefore reported once ~35 ms of audio after it have arrived; the detector keeps the
    ~100 ms of samples it still needs between calls. Each call re-filters that carry-over
    (~0.3 ms of CPU), so feed codec-sized blocks (e.g. 20 ms), not single samples.

    Positions are float64 sample indices: at Unix-time indices (~8e13) their resolution is
    1/64 sample (0.3 µs), far below the method's precision.

    :param tone_hz: frequency to detect.
    :param sample_rate: samples per second.
    :param other_hz: other tones that may be mixed in and must not disturb this one.
    :param window_seconds: boxcar length, overriding :func:`null_window`.
    :param min_level: smallest plateau (envelope of a full-scale tone is 0.5) taken for a tone.
    """

    def __init__(
        self,
        tone_hz: float,
        sample_rate: int = SAMPLE_RATE,
        other_hz: Sequence[float] = (),
        *,
        window_seconds: float | None = None,
        min_level: float = 1e-4,
    ) -> None:
        if not 0 < tone_hz < sample_rate / 2:
            raise ValueError(f"tone_hz must be in (0, {sample_rate / 2}), got {tone_hz}")
        self.tone_hz = tone_hz
        self.sample_rate = sample_rate
        self.min_level = min_level
        if window_seconds is None:
            window = null_window(tone_hz, other_hz, sample_rate, _MIN_WINDOW_SECONDS)
        else:
            window = max(1, round(window_seconds * sample_rate))
        self.window_samples = window
        """Length of each of the two boxcars, in samples."""
        self._delay = window - 1  # of the cascade: its kernel spans 2 * window - 1 samples
        rate = sample_rate
        self._block = max(1, round(_BLOCK_SECONDS * rate))
        self._quiet = round(_QUIET_SECONDS * rate)
        self._plateau = (round(_PLATEAU_SECONDS[0] * rate), round(_PLATEAU_SECONDS[1] * rate))
        # From the half-level crossing back to where the envelope starts to rise: half the
        # kernel, half the tone's ramp, and the codec's smear.
        self._guard = window + math.ceil((RAMP_SECONDS / 2 + _SMEAR_SECONDS) * rate)
        self._rise = 2 * self._guard  # longest distance searched for a crossing
        self._lookahead = self._plateau[1] + 4 * self._block
        self._buffer = np.zeros(0)
        self._phasor = np.zeros(0, dtype=np.complex128)
        self._start = 0  # absolute index of _buffer[0]
        self._decided = -math.inf  # onsets before this absolute position are settled
        self._last_onset = -math.inf

    def reset(self) -> None:
        """Forget everything (the next ``add`` starts a new stream)."""
        self._buffer = np.zeros(0)
        self._decided = -math.inf
        self._last_onset = -math.inf

    def add(self, samples: npt.ArrayLike, first_index: int) -> list[float]:
        """Feed mono PCM; return the onsets settled by it, as fractional absolute sample indices.

        ``samples`` is float (full scale 1.0) or int16; ``first_index`` is the absolute index
        of ``samples[0]``. Samples already seen are skipped; a gap resets the detector, as
        the envelope across it would be meaningless.
        """
        return [position for position, _ in self.add_with_levels(samples, first_index)]

    def add_with_levels(self, samples: npt.ArrayLike, first_index: int) -> list[tuple[float, float]]:
        """As :meth:`add`, with each onset's plateau level: the envelope's median 10..30 ms
        after the onset, half the tone's amplitude (0.25 for the test signal's 0.5)."""
        chunk = np.asarray(samples)
        if chunk.ndim != 1:
            raise ValueError(f"samples must be 1-D mono, got shape {chunk.shape}")
        x = chunk / 32768.0 if chunk.dtype == np.int16 else chunk.astype(np.float64)
        end = self._start + len(self._buffer)
        if len(self._buffer) == 0 or first_index > end:
            self._buffer = np.zeros(0)
            self._start = first_index
        elif first_index < end:
            x = x[end - first_index :]
        self._buffer = np.concatenate([self._buffer, x])
        if len(self._buffer) and float(np.max(np.abs(self._buffer))) < 2 * self.min_level:
            # Too quiet to hold an onset: a tone's envelope is half its amplitude, so its
            # plateau would be under min_level. Settle what a scan would have settled, unfiltered.
            self._settle_quiet()
            onsets: list[tuple[float, float]] = []
        else:
            onsets = self._scan()
        self._trim()
        return onsets

    def _settle_quiet(self) -> None:
        envelope_length = len(self._buffer) - 2 * self.window_samples + 2
        settle = envelope_length - self._lookahead
        if settle > 0:
            self._decided = max(self._decided, self._start + self._delay + settle)

    def _envelope(self) -> npt.NDArray[np.float64]:
        """Envelope; index i covers buffer samples i .. i + 2 * window - 2 (centre i + delay)."""
        n = len(self._buffer)
        if len(self._phasor) < n:
            # Only the envelope's magnitude is used, and a constant phase factor does not
            # change it, so one table serves every call whatever its absolute start index.
            step = -2j * np.pi * self.tone_hz / self.sample_rate
            self._phasor = np.exp(step * np.arange(max(n, 2 * len(self._phasor), 8192)))
        z = self._buffer * self._phasor[:n]
        for _ in range(2):
            acc = np.concatenate([[0], np.cumsum(z)])
            z = (acc[self.window_samples :] - acc[: -self.window_samples]) / self.window_samples
        envelope: npt.NDArray[np.float64] = np.abs(z)
        return envelope

    def _scan(self) -> list[tuple[float, float]]:
        e = self._envelope()
        blocks = len(e) // self._block
        p0, p1 = (p // self._block for p in self._plateau)
        quiet_blocks = self._quiet // self._block
        gap = -(-self._guard // self._block) + 2
        if blocks < p1 + quiet_blocks + gap + 1:
            return []  # too short to hold a valid onset yet; wait for more
        settle = len(e) - self._lookahead  # crossings before this index have all they need
        decided_before, self._decided = self._decided, self._start + self._delay + settle
        peak = e[: blocks * self._block].reshape(blocks, self._block).max(axis=1)
        windows = np.lib.stride_tricks.sliding_window_view
        plateau = np.median(windows(peak[p0:], p1 - p0), axis=1)  # [j] for block j
        quiet = windows(peak, quiet_blocks).max(axis=1)  # [j] for blocks j .. j + quiet - 1
        first = quiet_blocks + gap
        last = blocks - p1  # exclusive
        j = np.arange(first, last)
        level = plateau[j]
        candidate = (
            (peak[j] >= level / 2)
            & (quiet[j - gap - quiet_blocks] < 2 * _QUIET_RATIO * level)
            & (level > self.min_level)
        )
        onsets = []
        skip_to = 0
        for block in j[candidate]:
            start = int(block) * self._block
            if start < skip_to:
                continue
            crossing = self._crossing(e, start, float(level[block - first]))
            if crossing is None:
                continue
            found, plateau = crossing
            position = self._start + self._delay + found
            skip_to = int(found) + self._quiet
            if decided_before <= position < self._decided and position > self._last_onset:
                onsets.append((float(position), plateau))
                self._last_onset = position
        return onsets

    def _crossing(self, e: npt.NDArray[np.float64], start: int, level: float) -> tuple[float, float] | None:
        """Fractional envelope index of the half-plateau crossing near ``start`` and the
        plateau level, if valid."""
        half = level / 2
        above = np.flatnonzero(e[start : start + 3 * self._block] >= half)
        if len(above) == 0:
            return None
        anchor = start + int(above[0])
        p0, p1 = self._plateau
        for _ in range(4):
            lo = max(0, anchor - self._rise)
            below = np.flatnonzero(e[lo:anchor] < half)
            if len(below) == 0:
                return None
            k = lo + int(below[-1])
            if k + p1 > len(e):
                return None
            level = float(np.median(e[k + p0 : k + p1]))
            half = level / 2
            if e[k] < half <= e[k + 1]:
                break
            # The refined level moved the crossing; restart from the first sample above it.
            lo = max(0, k - self._rise)
            above = np.flatnonzero(e[lo : k + self._rise] >= half)
            if len(above) == 0:
                return None
            anchor = lo + int(above[0])
        else:
            return None
        quiet_from = k - self._guard - self._quiet
        if level <= self.min_level or quiet_from < 0:
            return None
        if e[quiet_from : k - self._guard].max() >= _QUIET_RATIO * level:
            return None
        if e[k + self._guard : k + p1].min() < _HOLD_RATIO * level:
            return None
        return k + (half - e[k]) / (e[k + 1] - e[k]), level

    def _trim(self) -> None:
        # Keep what a crossing at the first undecided position still needs: its quiet window,
        # the guard before it, the kernel and a couple of blocks of slack for the coarse grid.
        if math.isinf(self._decided):
            return
        keep_from = int(self._decided) - self._delay - self._guard - self._quiet - 6 * self._block
        drop = keep_from - self._start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._start += drop
