"""Tone onsets from decoded audio frames that carry container timestamps.

Container timestamps are coarse (FLV counts milliseconds) while an AAC frame lasts 1024
samples (21.33 ms at 48 kHz), so stamping each frame from its own timestamp would leave
sub-millisecond gaps and overlaps between frames that the tone detector takes for breaks in
the audio. :class:`ToneScanner` numbers samples contiguously from the first frame's
timestamp instead and re-anchors only at a real discontinuity (a jump of more than
:data:`RESYNC_SECONDS`), so onsets are placed to within the first frame's rounding (0.5 ms
for FLV) on the stream's media timeline.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from qoe.signal import ToneOnsetDetector
from qoe.timeline import ToneOnset

__all__ = ["BATCH_SECONDS", "RESYNC_SECONDS", "ToneScanner"]

BATCH_SECONDS = 0.1
"""Audio fed to the detector at a time: it re-filters what it carries over between calls, so
a few larger calls cost far less than one per codec frame (onset positions do not change)."""
RESYNC_SECONDS = 0.010
"""A frame whose timestamp is further than this from where contiguous numbering puts it
starts a new anchor (a gap or a jump in the stream); below it, timestamp rounding."""


class ToneScanner:
    """Feeds mono PCM blocks stamped with stream times to a tone detector, in batches.

    ``add(stream_time, samples, rate)`` returns the onsets settled by that call; ``flush()``
    the rest. Onsets are :class:`~qoe.timeline.ToneOnset` in stream seconds. A change of
    sample rate starts a new detector.
    """

    def __init__(self, tone_hz: float) -> None:
        self.tone_hz = tone_hz
        self._detector: ToneOnsetDetector | None = None
        self._rate = 0
        self._next: int | None = None
        """Absolute index (stream seconds x rate) of the sample after the last one added."""
        self._pending: list[npt.NDArray[np.float32]] = []
        self._pending_first = 0
        self._pending_samples = 0

    def add(self, stream_time: float | None, samples: npt.ArrayLike, rate: int) -> list[ToneOnset]:
        """Feed one decoded block that starts at ``stream_time`` (seconds; None: right after
        the previous block) with ``rate`` samples per second."""
        block = np.asarray(samples, dtype=np.float32)
        if block.ndim != 1:
            raise ValueError(f"samples must be 1-D mono, got shape {block.shape}")
        onsets: list[ToneOnset] = []
        if rate != self._rate:
            onsets += self.flush()
            self._detector = (
                ToneOnsetDetector(self.tone_hz, sample_rate=rate) if rate > 2 * self.tone_hz else None
            )
            self._rate, self._next = rate, None
        if self._detector is None:
            return onsets
        if stream_time is None:
            if self._next is None:
                return onsets  # nowhere to place it on the timeline
            index = self._next
        else:
            index = round(stream_time * rate)
        if self._next is None or abs(index - self._next) > RESYNC_SECONDS * rate:
            onsets += self._drain()
            if self._next is not None and index < self._next:
                # The stream went back in time: the detector would skip samples "already seen".
                self._detector = ToneOnsetDetector(self.tone_hz, sample_rate=rate)
            self._next = index
        first = self._next
        self._next = first + len(block)
        if not self._pending:
            self._pending_first = first
        self._pending.append(block)
        self._pending_samples += len(block)
        if self._pending_samples >= BATCH_SECONDS * rate:
            onsets += self._drain()
        return onsets

    def flush(self) -> list[ToneOnset]:
        """Onsets still held back in the current batch."""
        return self._drain()

    def _drain(self) -> list[ToneOnset]:
        if not self._pending or self._detector is None:
            self._pending.clear()
            self._pending_samples = 0
            return []
        samples = np.concatenate(self._pending)
        found = self._detector.add(samples, self._pending_first)
        self._pending.clear()
        self._pending_samples = 0
        return [ToneOnset(index / self._rate, self.tone_hz) for index in found]
