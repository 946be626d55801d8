"""The video half of the test signal: frame code, flash marker and a little motion.

A frame (any even size from 320x180) is mid-gray with a slowly moving vertical bar, the frame
code (:mod:`qoe.signal.code`) across the top 6/18 and, in the participant's slot, a marker
that is white for :data:`FLASH_SECONDS` from every whole second of sender time and black
otherwise. Host and co-host use different slots so one composited room frame shows both.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from qoe.signal.code import BLACK, WHITE, FrameCode, paint_code

__all__ = [
    "BACKGROUND",
    "FLASH_SECONDS",
    "MARKER_SLOTS",
    "SignalVideo",
    "flash_level",
    "marker_rect",
]

FLASH_SECONDS = 0.1
"""The marker is white while ``capture_wall mod 1 s < FLASH_SECONDS``."""

BACKGROUND = 100
"""Luma of the mid-gray background."""

MARKER_SLOTS: tuple[tuple[float, float, float, float], ...] = (
    (0.0625, 0.75, 0.25, 1 / 6),  # slot 0, host: bottom-left
    (0.6875, 0.75, 0.25, 1 / 6),  # slot 1, co-host: bottom-right, mirrored
)
"""Marker rects (x, y, w, h) as fractions of the region, one per participant slot."""

_BAR_LUMA = 150
_BAR_PERIOD_SECONDS = 8.0  # a sweep across the frame: slow enough that encoders keep up

Rect = tuple[int, int, int, int]


def _scale(origin: int, length: int, fraction: float) -> int:
    return origin + int(np.floor(fraction * length + 0.5))


def marker_rect(slot: int, width: int, height: int, region: Rect | None = None) -> Rect:
    """Pixel rect (x, y, w, h) of ``slot``'s marker in a ``width`` x ``height`` frame.

    ``region`` (x, y, w, h pixels) is the part of the frame the signal fills (default: all of
    it), e.g. one tile of a composited co-host frame.
    """
    if not 0 <= slot < len(MARKER_SLOTS):
        raise ValueError(f"slot must be in 0..{len(MARKER_SLOTS) - 1}, got {slot}")
    rx, ry, rw, rh = (0, 0, width, height) if region is None else region
    fx, fy, fw, fh = MARKER_SLOTS[slot]
    x0, x1 = _scale(rx, rw, fx), _scale(rx, rw, fx + fw)
    y0, y1 = _scale(ry, rh, fy), _scale(ry, rh, fy + fh)
    return x0, y0, x1 - x0, y1 - y0


def flash_level(luma: npt.ArrayLike, slot: int, region: Rect | None = None) -> float:
    """Mean luma (0..255) of the central half (each way) of ``slot``'s marker in ``luma``.

    The centre keeps encoder ringing and scaler blur at the marker's edges out of the level.
    """
    array = np.asarray(luma)
    if array.ndim != 2:
        raise ValueError(f"luma must be a 2-D (height, width) array, got shape {array.shape}")
    x, y, w, h = marker_rect(slot, array.shape[1], array.shape[0], region)
    inner = array[y + h // 4 : y + h - h // 4, x + w // 4 : x + w - w // 4]
    if inner.size == 0:
        raise ValueError(f"marker rect {(x, y, w, h)} is empty in a {array.shape} array")
    return float(inner.mean())


class SignalVideo:
    """Renders test-signal frames as yuv420p arrays.

    :param width: frame width in pixels, even, >= 320.
    :param height: frame height in pixels, even, >= 180.
    :param slot: marker slot, 0 for the host, 1 for the co-host.
    """

    def __init__(self, width: int = 640, height: int = 360, slot: int = 0) -> None:
        if width % 2 or height % 2 or width < 320 or height < 180:
            raise ValueError(f"frame size must be even and at least 320x180, got {width}x{height}")
        self.width = width
        self.height = height
        self.slot = slot
        self._marker = marker_rect(slot, width, height)
        self._bar_width = max(2, width // 32)
        # Neutral chroma never changes, so the whole planar frame is a copy of this.
        self._background = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        self._background[:height] = BACKGROUND

    def render(self, capture_wall: float, seq: int, tag: int = 0) -> npt.NDArray[np.uint8]:
        """Frame ``seq`` captured at ``capture_wall`` (Unix seconds), shape (height*3//2, width).

        The layout ``av.VideoFrame.from_ndarray(frame, format="yuv420p")`` accepts: the luma
        plane, then the U and V planes each flattened into height//4 rows.
        """
        frame = self._background.copy()
        luma = frame[: self.height]
        travel = self.width - self._bar_width
        bar_x = int((capture_wall % _BAR_PERIOD_SECONDS) / _BAR_PERIOD_SECONDS * travel)
        luma[:, bar_x : bar_x + self._bar_width] = _BAR_LUMA
        paint_code(luma, FrameCode.at(seq, capture_wall, tag))
        x, y, w, h = self._marker
        luma[y : y + h, x : x + w] = WHITE if capture_wall % 1.0 < FLASH_SECONDS else BLACK
        return frame
