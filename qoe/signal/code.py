"""The frame code: sequence number and capture time painted into the luma plane.

Layout, in coordinates normalised to the region the code is painted into: 16 columns x 6
rows of cells, each 1/16 of the width and 1/18 of the height, filling the full width and the
top 6/18 of the height. In every row column 0 is a white and column 15 a black reference
cell, so each row carries its own threshold and a reader copes with gain, offset and
vertical shading introduced by encoders and scalers. Columns 1..14 carry 84 data bits, row
by row, most significant bit first::

    version (4 bits, = 1) | seq (16) | ticks (32) | tag (16) | CRC-16/CCITT-FALSE (16)

The CRC (polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor) covers the
preceding 68 bits, packed most significant bit first into 9 bytes whose last 4 bits are zero.
It detects every error of up to 3 bits and every odd number of bit errors (Hamming distance
4 at this length); :func:`read_code` also refuses ambiguous cells, so a damaged code reads as
``None`` rather than as a wrong number.

The tag's layout (part of the signal's definition; docs/METRICS.md): its top bit tells two
uses apart, so a reader never takes one for the other::

    0                      nothing shown
    0x0001..0x7FFF         a chat-interaction nonce the host answers on camera (1..32767)
    0x8000 | id            a coupon drop the host announces, id 1..32767 (0x8001..0xFFFF)

A drop takes the field for :data:`DROP_SHOW_SECONDS` from the instant it opens; a chat nonce
that arrives meanwhile waits, and once the drop's time is up the latest nonce returns (or 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLACK",
    "CODE_COLUMNS",
    "CODE_ROWS",
    "CODE_VERSION",
    "DROP_FLAG",
    "DROP_ID_MAX",
    "DROP_SHOW_SECONDS",
    "GRID_ROWS",
    "NONCE_MAX",
    "TICKS_PER_SECOND",
    "WHITE",
    "FrameCode",
    "crc16_ccitt_false",
    "drop_of",
    "drop_tag",
    "nonce_of",
    "paint_code",
    "read_code",
    "unwrap_ticks",
]

CODE_VERSION = 1
CODE_COLUMNS = 16
CODE_ROWS = 6
GRID_ROWS = 18
"""The cell height is 1/GRID_ROWS of the region; the code uses the top CODE_ROWS of them."""

WHITE = 224
BLACK = 32
"""Luma levels of the cells; inside BT.601 studio range so no scaler clips them."""

TICKS_PER_SECOND = 10_000
_TICK_WRAP = 1 << 32
_DATA_COLUMNS = CODE_COLUMNS - 2
_DATA_BITS = CODE_ROWS * _DATA_COLUMNS  # 84
_MIN_CONTRAST = 64.0
_MIN_MARGIN = 0.25  # of the row's contrast

Rect = tuple[int, int, int, int]

DROP_FLAG = 0x8000
"""The tag's top bit: set, the other 15 bits are a coupon drop's id; clear, a chat nonce."""
DROP_ID_MAX = DROP_FLAG - 1
NONCE_MAX = DROP_FLAG - 1
"""Chat-interaction nonces are drawn from 1..NONCE_MAX, so they never set the drop bit."""
DROP_SHOW_SECONDS = 2.0
"""Seconds a drop holds the tag from its opening; then the latest chat nonce returns."""


def drop_tag(drop_id: int) -> int:
    """The tag that announces drop ``drop_id`` (1..32767)."""
    if not 1 <= drop_id <= DROP_ID_MAX:
        raise ValueError(f"a drop id is from 1 to {DROP_ID_MAX}, got {drop_id}")
    return DROP_FLAG | drop_id


def drop_of(tag: int | None) -> int | None:
    """The drop id a tag announces, or None (no tag, a chat nonce, or 0)."""
    if tag is None or not tag & DROP_FLAG or tag == DROP_FLAG:
        return None
    return tag & DROP_ID_MAX


def nonce_of(tag: int | None) -> int | None:
    """The chat nonce a tag shows, or None (no tag, 0, or a drop)."""
    if not tag or tag & DROP_FLAG:
        return None
    return tag


@dataclass(frozen=True)
class FrameCode:
    """What one video frame carries.

    ``seq`` is the frame sequence number modulo 2**16; ``ticks`` the sender's wall-clock
    capture time in units of 100 µs, modulo 2**32 (wraps every ~4.97 days, see
    :func:`unwrap_ticks`); ``tag`` a free 16-bit field (e.g. a chat nonce).
    """

    seq: int
    ticks: int
    tag: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.seq < 1 << 16:
            raise ValueError(f"seq must be in 0..65535, got {self.seq}")
        if not 0 <= self.ticks < _TICK_WRAP:
            raise ValueError(f"ticks must be in 0..2**32-1, got {self.ticks}")
        if not 0 <= self.tag < 1 << 16:
            raise ValueError(f"tag must be in 0..65535, got {self.tag}")

    @classmethod
    def at(cls, seq: int, capture_wall: float, tag: int = 0) -> FrameCode:
        """Code for frame ``seq`` captured at ``capture_wall`` (Unix seconds).

        ``seq`` is reduced modulo 2**16, as on the wire, so a sender can pass its frame count.
        """
        ticks = round(capture_wall * TICKS_PER_SECOND) % _TICK_WRAP
        return cls(seq % (1 << 16), ticks, tag)

    @property
    def capture_seconds(self) -> float:
        """``ticks`` in seconds, still modulo 2**32 ticks; see :func:`unwrap_ticks`."""
        return self.ticks / TICKS_PER_SECOND


def unwrap_ticks(ticks: int, reference_wall: float) -> float:
    """Unix time in seconds congruent to ``ticks`` (mod 2**32 x 100 µs) nearest ``reference_wall``.

    A receiver passes its own wall clock; the result is exact to the tick as long as the two
    clocks differ by less than half the wrap period (~2.5 days).
    """
    reference = round(reference_wall * TICKS_PER_SECOND)
    delta = (ticks - reference) % _TICK_WRAP
    if delta >= _TICK_WRAP // 2:
        delta -= _TICK_WRAP
    return (reference + delta) / TICKS_PER_SECOND


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, unreflected, xorout 0); check 0x29B1."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def _payload_crc(payload: int) -> int:
    # 68 payload bits, left-aligned in 9 bytes (the packing np.packbits would produce).
    return crc16_ccitt_false((payload << 4).to_bytes(9, "big"))


def _encode_bits(code: FrameCode) -> npt.NDArray[np.bool_]:
    payload = (CODE_VERSION << 64) | (code.seq << 48) | (code.ticks << 16) | code.tag
    word = (payload << 16) | _payload_crc(payload)
    # 84 bits left-aligned in 11 bytes, the inverse of the packing in _decode_bits.
    packed = np.frombuffer((word << 4).to_bytes(11, "big"), dtype=np.uint8)
    bits: npt.NDArray[np.bool_] = np.unpackbits(packed)[:_DATA_BITS].astype(bool)
    return bits


def _decode_bits(bits: npt.NDArray[np.bool_]) -> FrameCode | None:
    word = int.from_bytes(np.packbits(bits).tobytes(), "big") >> 4  # 84 bits in 11 bytes
    payload, crc = word >> 16, word & 0xFFFF
    if payload >> 64 != CODE_VERSION or _payload_crc(payload) != crc:
        return None
    return FrameCode(seq=(payload >> 48) & 0xFFFF, ticks=(payload >> 16) & 0xFFFFFFFF, tag=payload & 0xFFFF)


def _region(shape: tuple[int, ...], rect: Rect | None) -> Rect:
    if len(shape) != 2:
        raise ValueError(f"luma must be a 2-D (height, width) array, got shape {shape}")
    height, width = shape
    # Plain ints: the result keys a cache, and callers may pass numpy integers or a list.
    x, y, w, h = (0, 0, width, height) if rect is None else (int(v) for v in rect)
    if w < 2 * CODE_COLUMNS or h < 2 * GRID_ROWS:
        raise ValueError(f"region {w}x{h} is too small for the code (at least 32x36 pixels)")
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise ValueError(f"region {(x, y, w, h)} is outside the {width}x{height} array")
    return x, y, w, h


def _edges(origin: int, length: int, parts: int, count: int) -> npt.NDArray[np.intp]:
    """Pixel edges of cells of 1/parts of ``length``, rounded half up in integer arithmetic."""
    i = np.arange(count + 1)
    return origin + (2 * i * length + parts) // (2 * parts)


_SAMPLES_PER_AXIS = 4


@lru_cache(maxsize=64)
def _sample_index(rect: Rect) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], int]:
    """Where to sample the central half of every cell.

    Returns the rows to read (6 x sh of them, cell row by cell row), the columns (16, sw) and
    the pixel count per cell. Every cell gets a window of the same size so whole rows can be
    summed at once and the columns gathered with one fancy index. At most 4 x 4 evenly spaced
    pixels of each window are read: a cell is one flat level, so more pixels add cost (a
    probe reads every frame) but no information beyond averaging codec noise, which 16
    samples already do within the 25 % margin.
    """
    x, y, w, h = rect
    xs = _edges(x, w, CODE_COLUMNS, CODE_COLUMNS)
    ys = _edges(y, h, GRID_ROWS, CODE_ROWS)
    sw = max(1, (w // CODE_COLUMNS) // 2)
    sh = max(1, (h // GRID_ROWS) // 2)
    # Start so the window is centred in the cell: floor of (left + right - size) / 2.
    x0 = (xs[:-1] + xs[1:] - sw) // 2
    y0 = (ys[:-1] + ys[1:] - sh) // 2
    cols = x0[:, None] + _spread(sw)[None, :]
    rows = (y0[:, None] + _spread(sh)[None, :]).ravel()
    for shared in (rows, cols):  # handed out by the cache to every caller
        shared.setflags(write=False)
    return rows, cols, len(_spread(sw)) * len(_spread(sh))


def _spread(size: int, most: int = _SAMPLES_PER_AXIS) -> npt.NDArray[np.intp]:
    """Up to ``most`` offsets spread evenly over a window of ``size`` pixels."""
    if size <= most:
        return np.arange(size)
    return (np.arange(most) * (size - 1) + (most - 1) // 2) // (most - 1)


def paint_code(luma: npt.NDArray[np.uint8], code: FrameCode, rect: Rect | None = None) -> None:
    """Paint ``code`` in place into ``luma`` (height, width), uint8, inside ``rect``.

    ``rect`` is (x, y, w, h) in pixels (default: the whole array); the code covers its full
    width and the top 6/18 of its height. Chroma is the caller's business (neutral 128).
    """
    x, y, w, h = _region(luma.shape, rect)
    cells = np.empty((CODE_ROWS, CODE_COLUMNS), dtype=np.uint8)
    cells[:, 0] = WHITE
    cells[:, -1] = BLACK
    cells[:, 1:-1] = np.where(_encode_bits(code), WHITE, BLACK).reshape(CODE_ROWS, _DATA_COLUMNS)
    xs = _edges(x, w, CODE_COLUMNS, CODE_COLUMNS)
    ys = _edges(y, h, GRID_ROWS, CODE_ROWS)
    image = np.repeat(np.repeat(cells, np.diff(ys), axis=0), np.diff(xs), axis=1)
    luma[ys[0] : ys[-1], xs[0] : xs[-1]] = image


def read_code(luma: npt.ArrayLike, rect: Rect | None = None) -> FrameCode | None:
    """Read the code from ``luma`` (height, width) inside ``rect`` (x, y, w, h pixels).

    Returns ``None`` when the code is absent or damaged: a row with white - black contrast
    below 64 luma steps, a data cell nearer its row's threshold than 25% of the contrast, a
    version other than 1 or a CRC mismatch. The layout is relative, so a frame scaled by any
    factor reads the same as long as cells stay a few pixels large.
    """
    array = np.asarray(luma)
    rows, cols, count = _sample_index(_region(array.shape, rect))
    # Rows first (a contiguous copy), then the sampled columns; integer sums are cheapest.
    samples = array[rows][:, cols.ravel()].astype(np.uint32)
    sums = samples.reshape(CODE_ROWS, -1, CODE_COLUMNS, cols.shape[1]).sum(axis=3).sum(axis=1)
    means = sums / count  # (6, 16)
    white, black = means[:, 0], means[:, -1]
    contrast = white - black
    if np.any(contrast < _MIN_CONTRAST):
        return None
    threshold = (white + black)[:, None] / 2
    data = means[:, 1:-1]
    if np.any(np.abs(data - threshold) < _MIN_MARGIN * contrast[:, None]):
        return None
    return _decode_bits((data > threshold).ravel())
