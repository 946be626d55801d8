"""What the room does to a co-host's audio by its knobs: the host's echo and white noise.

Ground truth for the co-host audio figures (docs/METRICS.md): the room leaks a share of its
host's audio, as the host sent it, into the co-host's, a fixed delay later on their shared
send clock (a co-host whose loudspeaker plays the host into its microphone), and adds white
Gaussian noise at a set level below the marker tone.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from qoe.media import Knobs
from qoe.media.compose import RawTap

__all__ = ["MARKER_TONE_POWER", "CohostImpairment"]

MARKER_TONE_POWER = 0.125
"""Mean square of the test signal's marker tone (a sine of amplitude 0.5): -3 dBFS."""


class CohostImpairment:
    """Applies the ``cohost_echo*`` and ``cohost_noise_db`` knobs to a co-host's audio."""

    def __init__(self, host: RawTap, knobs: Knobs, rng: np.random.Generator) -> None:
        self.host = host
        self.echo_gain = knobs.cohost_echo_gain
        self.echo_delay = knobs.cohost_echo_delay
        noise_db = knobs.cohost_noise_db
        power = 0.0 if noise_db is None else MARKER_TONE_POWER / 10 ** (noise_db / 10)
        self.noise_sigma = float(np.sqrt(power))
        """Standard deviation of the added noise (full scale 1.0)."""
        self.rng = rng

    @staticmethod
    def wanted(knobs: Knobs) -> bool:
        """Whether the knobs ask the room to change a co-host's audio at all."""
        return knobs.cohost_echo_gain > 0 or knobs.cohost_noise_db is not None

    def apply(self, send_time: float, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The co-host's mono block sent at ``send_time`` (Unix seconds), with the echo of
        the host's audio sent ``echo_delay`` earlier and the noise added."""
        out = np.array(samples, dtype=np.float64)
        if self.echo_gain:
            heard = self.host.samples_at(send_time - self.echo_delay, len(out), mark_read=False)
            out += self.echo_gain * heard
        if self.noise_sigma:
            out += self.rng.normal(0.0, self.noise_sigma, len(out))
        return np.clip(out, -1.0, 1.0).astype(np.float32)
