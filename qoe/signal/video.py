"""The video half of the test signal: frame code, flash marker, and detail that moves.

A frame (any even size from 320x180) is mid-gray with a slowly moving vertical bar, the frame
code (:mod:`qoe.signal.code`) across the top 6/18 and, in the participant's slot, a marker
that is white for :data:`FLASH_SECONDS` from every whole second of sender time and black
otherwise. Host and co-host use different slots so one composited room frame shows both.

Between the code and the markers (:data:`TEXTURE_BAND`) runs a band of fine texture, its upper
half scrolling left and its lower half right, a quarter of the width per second: enough
detail and motion that an encoder starved of bits visibly loses it, so picture quality
(:mod:`qoe.signal.quality`) responds to bitrate as camera video does. The code and the markers
stay on flat ground, so the texture costs their reading nothing.

A frame is a pure function of its size, slot and code: every time-dependent part is computed
in whole ticks (100 µs) of the capture time the code carries. A viewer that reads a code
regenerates the frame the sender rendered, bit for bit (:meth:`SignalVideo.render`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from qoe.signal.code import BLACK, TICKS_PER_SECOND, WHITE, FrameCode, paint_code

__all__ = [
    "BACKGROUND",
    "FLASH_SECONDS",
    "MARKER_SLOTS",
    "TEXTURE_BAND",
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

TEXTURE_BAND = (7 / 18, 13 / 18)
"""The textured band's top and bottom, as fractions of the frame height: below the code's
six rows (6/18) and a cell's height clear of it, above the markers (0.75)."""

_BAR_LUMA = 150
_BAR_PERIOD_TICKS = 8 * TICKS_PER_SECOND  # a sweep across the frame: slow enough that encoders keep up
_TEXTURE_PERIOD_TICKS = 4 * TICKS_PER_SECOND  # each half-band scrolls its whole width in 4 s
_TEXTURE_LOW, _TEXTURE_HIGH = 48, 208

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


def _hash_noise(columns: int, rows: int) -> npt.NDArray[np.uint32]:
    """A (rows, columns) array of 8-bit values from an integer hash of each cell's position:
    the same on every machine and numpy release, unlike a seeded generator's stream."""
    x = np.arange(columns, dtype=np.uint32)[None, :]
    y = np.arange(rows, dtype=np.uint32)[:, None]
    h = x * np.uint32(0x9E3779B1) ^ y * np.uint32(0x85EBCA77)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return h >> np.uint32(24)


def _texture(width: int, rows: int) -> npt.NDArray[np.uint8]:
    """The band's texture for a frame ``width`` wide, twice over side by side (so any
    ``width``-wide window of it is a scroll position): hashed noise in cells of width/160
    pixels (at least 2), softened by a 3x3 mean, between luma 48 and 208."""
    cell = max(2, width // 160)
    cells = _hash_noise(-(-width // cell), -(-rows // cell))
    pixels = np.repeat(np.repeat(cells, cell, axis=0), cell, axis=1)[:rows, :width].astype(np.uint32)
    padded = np.pad(pixels, ((1, 1), (0, 0)), mode="edge")
    vertical = padded[:-2] + padded[1:-1] + padded[2:]
    soft = np.roll(vertical, 1, axis=1) + vertical + np.roll(vertical, -1, axis=1)
    level = _TEXTURE_LOW + soft * (_TEXTURE_HIGH - _TEXTURE_LOW) // (9 * 255)
    return np.tile(level.astype(np.uint8), (1, 2))


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
        top, bottom = (int(np.floor(f * height + 0.5)) for f in TEXTURE_BAND)
        self._band = (top, (top + bottom) // 2, bottom)
        self._texture = _texture(width, bottom - top)
        # Neutral chroma never changes, so the whole planar frame is a copy of this.
        self._background = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        self._background[:height] = BACKGROUND

    def render(self, capture_wall: float, seq: int, tag: int = 0) -> npt.NDArray[np.uint8]:
        """Frame ``seq`` captured at ``capture_wall`` (Unix seconds), shape (height*3//2, width).

        The layout ``av.VideoFrame.from_ndarray(frame, format="yuv420p")`` accepts: the luma
        plane, then the U and V planes each flattened into height//4 rows. The picture depends
        on ``capture_wall`` only through its whole ticks, so the time a reader unwraps from the
        code (:func:`qoe.signal.unwrap_ticks`) renders the same frame.
        """
        ticks = round(capture_wall * TICKS_PER_SECOND)
        frame = self._background.copy()
        luma = frame[: self.height]
        width = self.width
        top, middle, bottom = self._band
        shift = ticks % _TEXTURE_PERIOD_TICKS * width // _TEXTURE_PERIOD_TICKS
        rows = middle - top
        luma[top:middle] = self._texture[:rows, shift : shift + width]
        luma[middle:bottom] = self._texture[rows:, width - shift : 2 * width - shift]
        travel = width - self._bar_width
        bar_x = ticks % _BAR_PERIOD_TICKS * travel // _BAR_PERIOD_TICKS
        luma[:, bar_x : bar_x + self._bar_width] = _BAR_LUMA
        paint_code(luma, FrameCode.at(seq, capture_wall, tag))
        x, y, w, h = self._marker
        flash = ticks % TICKS_PER_SECOND < round(FLASH_SECONDS * TICKS_PER_SECOND)
        luma[y : y + h, x : x + w] = WHITE if flash else BLACK
        return frame
