"""The audio half of the test signal: a short tone at every whole second of sender time.

Host and co-host use different frequencies (:data:`HOST_TONE_HZ`, :data:`COHOST_TONE_HZ`) so
a :class:`~qoe.signal.detect.ToneOnsetDetector` tells them apart in one mixed stream.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "COHOST_TONE_HZ",
    "HOST_TONE_HZ",
    "RAMP_SECONDS",
    "SAMPLE_RATE",
    "TONE_SECONDS",
    "SignalAudio",
]

SAMPLE_RATE = 48_000
TONE_SECONDS = 0.1
RAMP_SECONDS = 0.002
HOST_TONE_HZ = 1000.0
COHOST_TONE_HZ = 1500.0


class SignalAudio:
    """Renders the tone track as float32 PCM (full scale 1.0), mono.

    Sample index ``n`` is the instant ``n / sample_rate`` in Unix seconds. A tone burst of
    ``tone_hz`` starts at every whole second ``S`` shifted to ``S - offset_seconds`` and lasts
    :data:`TONE_SECONDS`. ``offset_seconds > 0`` puts audio ahead of video (ITU-R BT.1359
    sign), which is how tests and the room inject a known A/V offset.

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
        within = (np.mod(n, rate) + self._shift_fraction) / rate  # seconds since the second
        since_onset = np.where(within < 0.5, within, within - 1.0)
        ramp = RAMP_SECONDS
        rise = np.clip((since_onset + ramp / 2) / ramp, 0.0, 1.0)
        fall = np.clip((since_onset - TONE_SECONDS + ramp / 2) / ramp, 0.0, 1.0)
        envelope = 0.5 * (np.cos(np.pi * fall) - np.cos(np.pi * rise))
        tone = np.sin(2 * np.pi * self.tone_hz * since_onset)
        pcm: npt.NDArray[np.float32] = (self.amplitude * envelope * tone).astype(np.float32)
        return pcm
