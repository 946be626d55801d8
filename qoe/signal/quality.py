"""Full-reference picture quality, live, from the test signal itself.

A viewer that reads a frame's code knows exactly which frame the sender rendered: the test
signal is a pure function of its size, slot and code (:class:`qoe.signal.SignalVideo`). So it
renders that frame again and compares the decoded luma with it, with no reference recording
and no alignment search. A code only counts when it reads whole and its CRC holds
(:func:`qoe.signal.read_code`); a frame without one is never scored.

Scaling rule: the reference is the signal rendered natively at the *decoded* size. A stream
carried at its source size (as every one of our publishers and the room send it) is scored
for coding loss alone. A stream that a server scaled on the way is scored with the scaler's
loss included, and its resolution shows in ``video.renditions`` beside it.

The figures, on luma (Y) only, 8 bits:

- PSNR, ``10 log10(255^2 / MSE)`` in dB, capped at :data:`PSNR_CAP_DB` for identical frames;
- SSIM as Wang, Bovik, Sheikh and Simoncelli defined it (IEEE TIP 2004): an 11x11 Gaussian
  window of sigma 1.5, K1 = 0.01, K2 = 0.03, population covariances, the mean over the frame.
  scikit-image's ``structural_similarity`` computes it (``gaussian_weights=True,
  use_sample_covariance=False``): a maintained, widely cited implementation, called on
  float32 planes, which halves its cost against float64 with no change in the third decimal.

Cost is bounded by scoring a few frames a second, chosen by their capture time so that every
viewer of one stream scores the same frames (:class:`QualityScorer`).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qoe.signal.video import SignalVideo

__all__ = [
    "DEFAULT_RATE",
    "MAX_PENDING",
    "PSNR_CAP_DB",
    "SETTLE_SECONDS",
    "QualityScorer",
    "Score",
    "ScoringQueue",
    "parse_rate",
    "psnr",
    "ssim",
]

DEFAULT_RATE = 2.0
"""Frames scored per second of sender time by default."""

PSNR_CAP_DB = 100.0
"""PSNR of a frame identical to its reference (where the MSE is 0 and the ratio infinite)."""


@dataclass(frozen=True, slots=True)
class Score:
    psnr_db: float
    ssim: float


def psnr(reference: npt.ArrayLike, decoded: npt.ArrayLike) -> float:
    """PSNR in dB of 8-bit ``decoded`` against ``reference`` (same shape), capped at 100."""
    a, b = _planes(reference, decoded)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def ssim(reference: npt.ArrayLike, decoded: npt.ArrayLike) -> float:
    """Mean SSIM of 8-bit ``decoded`` against ``reference`` (same shape), Wang et al. 2004."""
    from skimage.metrics import structural_similarity  # scipy loads on the first score, not at import

    a, b = _planes(reference, decoded)
    return float(
        structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0
        )
    )


def _planes(reference: npt.ArrayLike, decoded: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], ...]:
    a, b = np.asarray(reference), np.asarray(decoded)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two 2-D planes of one shape, got {a.shape} and {b.shape}")
    return a.astype(np.float32), b.astype(np.float32)


def parse_rate(value: object) -> float | None:
    """A scoring rate from an option: a number of frames a second (0 or "off": none), or
    "all" (None: every frame). Raises ValueError naming what was wrong."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "all":
            return None
        if word == "off":
            return 0.0
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"must be frames a second, 'all' or 'off', got {value!r}") from None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"must be frames a second (>= 0), 'all' or 'off', got {value!r}")
    return float(value)


class QualityScorer:
    """Scores one participant's frames against the signal they carry.

    :param slot: the participant's marker slot (0 host, 1 co-host), part of its picture.
    :param rate: frames scored per second of capture time (None: every frame, 0: none). A
        frame is due when its capture time enters a new 1/rate slot, so any viewer of a stream
        scores the same frames, and a frame that was lost just moves the score to the next.
    """

    def __init__(self, slot: int = 0, rate: float | None = DEFAULT_RATE) -> None:
        self.slot = slot
        self.rate = rate
        self._last_slot: int | None = None
        self._signals: dict[tuple[int, int], SignalVideo] = {}

    @property
    def enabled(self) -> bool:
        return self.rate is None or self.rate > 0

    def due(self, capture_wall: float) -> bool:
        """Whether the frame captured at ``capture_wall`` is to be scored; marks it taken."""
        if self.rate is None:
            return True
        if self.rate <= 0:
            return False
        slot = math.floor(capture_wall * self.rate)
        if self._last_slot is not None and slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True

    def reference(
        self, width: int, height: int, capture_wall: float, seq: int, tag: int
    ) -> npt.NDArray[np.uint8]:
        """The luma plane the sender rendered for this code, at ``width`` x ``height``."""
        signal = self._signals.get((width, height))
        if signal is None:
            signal = self._signals[(width, height)] = SignalVideo(width, height, slot=self.slot)
        return signal.render(capture_wall, seq, tag)[:height]

    def score(self, y: npt.NDArray[np.uint8], capture_wall: float, seq: int, tag: int) -> Score | None:
        """PSNR and SSIM of decoded luma ``y`` against its reference; None for a size the
        signal has no rendering at (odd, or under 320x180)."""
        height, width = y.shape
        try:
            reference = self.reference(width, height, capture_wall, seq, tag)
        except ValueError:
            return None
        return Score(psnr(reference, y), ssim(reference, y))


SETTLE_SECONDS = 1.0
"""Seconds a probe's report waits for frames still being scored; any left count as skipped."""

MAX_PENDING = 4
"""Frames a scorer queues for its worker at most; a frame due beyond that is skipped and
counted, so a host too busy to keep up loses scores, never memory or timing."""

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _workers() -> ThreadPoolExecutor:
    """The process's scoring threads, one per core, shared by every scorer: off the event
    loop and the readers' threads, whose timing the probes measure."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="qoe-quality")
        return _executor


class ScoringQueue:
    """Scores frames off the calling thread with a :class:`QualityScorer`, at most
    :data:`MAX_PENDING` at a time; ``done(score)`` runs on a worker thread."""

    def __init__(self, scorer: QualityScorer) -> None:
        self.scorer = scorer
        self.skipped = 0
        """Frames that were due but found the queue full."""
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def offer(
        self,
        y: npt.NDArray[np.uint8],
        capture_wall: float,
        seq: int,
        tag: int,
        done: Callable[[Score | None], None],
    ) -> bool:
        """Queue a frame if it is due; False if it is not (or the queue is full: counted)."""
        if not self.scorer.due(capture_wall):
            return False
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self.skipped += 1
                return False
            plane = np.array(y, dtype=np.uint8, copy=True)  # the decoder may reuse its buffer
            future = _workers().submit(self._score, plane, capture_wall, seq, tag, done)
            self._pending.add(future)
        future.add_done_callback(self._finished)
        return True

    def _score(
        self,
        plane: npt.NDArray[np.uint8],
        capture_wall: float,
        seq: int,
        tag: int,
        done: Callable[[Score | None], None],
    ) -> None:
        score = self.scorer.score(plane, capture_wall, seq, tag)
        with self._lock:
            if not self._closed:  # a score that comes after wait() gave up stays out of the log
                done(score)

    @property
    def pending(self) -> int:
        """Frames queued or being scored."""
        with self._lock:
            return len(self._pending)

    def _finished(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    async def settle(self, timeout: float = SETTLE_SECONDS) -> int:
        """:meth:`wait` off the event loop (on it when nothing is pending): the frames due
        that went unscored in all, skipped and left."""
        if self.pending:
            left = await asyncio.to_thread(self.wait, timeout)
        else:
            left = self.wait(0.0)
        return self.skipped + left

    def wait(self, timeout: float) -> int:
        """Block until every queued frame is scored or ``timeout`` seconds pass; how many
        were left unscored. No score is recorded after it returns, so the event log the
        result is computed from stays the log that is saved."""
        with self._lock:
            pending = list(self._pending)
        _, left = wait(pending, timeout=timeout)
        with self._lock:
            self._closed = True
        for future in left:
            future.cancel()
        return len(left)
