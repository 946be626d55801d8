"""The audio half of the test signal: a marker tone at every whole second of sender time,
and after it an identity burst whose delay says which second it was.

Host and co-host use different frequencies (:data:`HOST_TONE_HZ`, :data:`COHOST_TONE_HZ`) so
a :class:`~qoe.signal.detect.ToneOnsetDetector` tells them apart in one mixed stream.

The identity burst of second ``S`` starts :func:`identity_delay` (S) after the marker:
``IDENTITY_BASE_SECONDS + IDENTITY_STEP_SECONDS * (S mod IDENTITY_MODULUS)``, 0.2 to 0.44 s.
Only onset times carry it, and onsets keep their precision through Opus and AAC, so a viewer
reads ``S mod 16`` from the gap between two onsets (:func:`qoe.signal.identify_markers`)
and pairs a tone with the flash of the same second even when audio and video are seconds
apart. Why 16: a marker's window for its identity burst (0.2..0.44 s after it) must not
reach the gap from an identity burst to the next marker (1 s less the delay, >= 0.56 s), so
the delays stay under 0.5 s; the burst must start after the marker's 100 ms and the
detector's 50 ms of quiet; and steps of 16 ms are many times the onsets' error through a
codec (0.01 ms through Opus, 0.5 ms through FLV's millisecond timestamps). That leaves room
for 18 steps; 16 are used. Half the modulus bounds the offsets that pair right (see
:data:`qoe.metrics.AV_RANGE_SECONDS`).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "COHOST_TONE_HZ",
    "HOST_TONE_HZ",
    "IDENTITY_BASE_SECONDS",
    "IDENTITY_MODULUS",
    "IDENTITY_SECONDS",
    "IDENTITY_STEP_SECONDS",
    "RAMP_SECONDS",
    "SAMPLE_RATE",
    "TONE_SECONDS",
    "SignalAudio",
    "identity_delay",
]

SAMPLE_RATE = 48_000
TONE_SECONDS = 0.1
RAMP_SECONDS = 0.002
HOST_TONE_HZ = 1000.0
COHOST_TONE_HZ = 1500.0
IDENTITY_MODULUS = 16
"""A marker's identity is its whole second modulo this."""
IDENTITY_BASE_SECONDS = 0.2
"""Delay from a marker's onset to its identity burst's, for identity 0."""
IDENTITY_STEP_SECONDS = 0.016
"""Extra delay per unit of identity."""
IDENTITY_SECONDS = 0.05
"""Length of an identity burst: the detector holds a tone to 75 % of its plateau for 30 ms
after its onset; 50 ms leaves 20 ms for a codec to smear its end."""


def identity_delay(second: int) -> float:
    """Seconds from the marker of whole second ``second`` to the onset of its identity burst."""
    return IDENTITY_BASE_SECONDS + IDENTITY_STEP_SECONDS * (second % IDENTITY_MODULUS)


class SignalAudio:
    """Renders the tone track as float32 PCM (full scale 1.0), mono.

    Sample index ``n`` is the instant ``n / sample_rate`` in Unix seconds. A marker burst of
    ``tone_hz`` starts at every whole second ``S`` shifted to ``S - offset_seconds`` and lasts
    :data:`TONE_SECONDS`; an identity burst of the same frequency follows it
    :func:`identity_delay` (S) later and lasts :data:`IDENTITY_SECONDS`.
    ``offset_seconds > 0`` puts audio ahead of video (ITU-R BT.1359 sign), which is how tests
    and the room inject a known A/V offset.

    The envelope rises and falls with raised-cosine ramps of :data:`RAMP_SECONDS` centred on
    the nominal onset and end, so it is exactly half its plateau at the nominal onset; the ramp
    keeps the spectrum narrow (no click for the codec to smear) and the symmetry makes the
    half-level point of any symmetric smoothing of the envelope fall on the onset too.
    Every burst starts at sine phase 0 at its nominal onset, so bursts are identical.
    """

    def __init__(
        self,
        tone_hz: float = HOST_TONE_HZ,
        sample_rate: int = SAMPLE_RATE,
        amplitude: float = 0.5,
        offset_seconds: float = 0.0,
    ) -> None:
        if not 0 < tone_hz < sample_rate / 2:
            raise ValueError(f"tone_hz must be in (0, {sample_rate / 2}), got {tone_hz}")
        if not 0 <= amplitude <= 1:
            raise ValueError(f"amplitude must be in [0, 1], got {amplitude}")
        self.tone_hz = tone_hz
        self.sample_rate = sample_rate
        self.amplitude = amplitude
        self.offset_seconds = offset_seconds
        shift = offset_seconds * sample_rate
        # Integer and fractional sample parts of the offset, so the time within the second
        # comes from exact integer arithmetic on indices around 1e14, not from n / rate.
        self._shift_samples = math.floor(shift)
        self._shift_fraction = shift - self._shift_samples

    def render(self, first_sample: int, count: int) -> npt.NDArray[np.float32]:
        """``count`` samples starting at absolute index ``first_sample`` (e.g. round(wall * rate)).

        Pure function of the index, so consecutive calls join seamlessly.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        rate = self.sample_rate
        n = np.arange(count, dtype=np.int64) + np.int64(first_sample + self._shift_samples)
        second, index = np.divmod(n, rate)
        within = (index + self._shift_fraction) / rate  # seconds since the second
        since_onset = np.where(within < 0.5, within, within - 1.0)
        # The identity burst of a second lies in its first half (0.2 .. 0.49 s).
        delay = IDENTITY_BASE_SECONDS + IDENTITY_STEP_SECONDS * np.mod(second, IDENTITY_MODULUS)
        since_identity = within - delay
        pcm: npt.NDArray[np.float32] = (
            self.amplitude
            * (self._burst(since_onset, TONE_SECONDS) + self._burst(since_identity, IDENTITY_SECONDS))
        ).astype(np.float32)
        return pcm

    def _burst(self, since_onset: npt.NDArray[np.float64], length: float) -> npt.NDArray[np.float64]:
        """A burst of ``length`` s at unit amplitude, sine phase 0 at its onset, 0 outside it."""
        ramp = RAMP_SECONDS
        rise = np.clip((since_onset + ramp / 2) / ramp, 0.0, 1.0)
        fall = np.clip((since_onset - length + ramp / 2) / ramp, 0.0, 1.0)
        envelope = 0.5 * (np.cos(np.pi * fall) - np.cos(np.pi * rise))
        burst: npt.NDArray[np.float64] = envelope * np.sin(2 * np.pi * self.tone_hz * since_onset)
        return burst
