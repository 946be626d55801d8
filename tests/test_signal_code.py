"""Known-answer tests for the frame code: round trips, scaling, and refusal of damaged codes.

The contract under test is "the exact code or None, never a wrong number", so every check
compares with ``==`` (no tolerance) and the fuzzing asserts the result is in the set of
acceptable answers.
"""

from __future__ import annotations

import time
from collections import Counter

import av
import numpy as np
import pytest

from qoe.signal.code import (
    BLACK,
    WHITE,
    FrameCode,
    crc16_ccitt_false,
    paint_code,
    read_code,
    unwrap_ticks,
)

WALL = 1_700_000_123.4567
CODE = FrameCode.at(54321, WALL, tag=0xBEEF)


def painted(width: int, height: int, code: FrameCode = CODE, fill: int = 100) -> np.ndarray:
    luma = np.full((height, width), fill, dtype=np.uint8)
    paint_code(luma, code)
    return luma


def cell_edges(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell edges as the layout defines them: round(i * size / parts)."""
    xs = np.floor(np.arange(17) * width / 16 + 0.5).astype(int)
    ys = np.floor(np.arange(7) * height / 18 + 0.5).astype(int)
    return xs, ys


def test_crc_check_value() -> None:
    # The catalogue check value of CRC-16/CCITT-FALSE.
    assert crc16_ccitt_false(b"123456789") == 0x29B1


def test_frame_code_at_and_ranges() -> None:
    code = FrameCode.at(65536 + 7, 1.23456, tag=9)
    assert code == FrameCode(seq=7, ticks=12346, tag=9)
    assert FrameCode.at(0, 2**32 / 10_000 + 0.5).ticks == 5000  # ticks wrap modulo 2**32
    for bad in (
        {"seq": -1, "ticks": 0},
        {"seq": 65536, "ticks": 0},
        {"seq": 0, "ticks": 2**32},
        {"seq": 0, "ticks": 0, "tag": 65536},
    ):
        with pytest.raises(ValueError):
            FrameCode(**bad)


def test_unwrap_ticks_nearest_to_reference() -> None:
    wrap = 2**32 / 10_000
    code = FrameCode.at(1, WALL)
    assert unwrap_ticks(code.ticks, WALL + 3.0) == pytest.approx(WALL, abs=1e-4)
    # Across a wrap of the 32-bit field, in both directions, within half a period.
    assert unwrap_ticks(code.ticks, WALL + 0.49 * wrap) == pytest.approx(WALL, abs=1e-4)
    assert unwrap_ticks(code.ticks, WALL - 0.49 * wrap) == pytest.approx(WALL, abs=1e-4)
    near_wrap = FrameCode.at(0, wrap * 400_000 - 0.25)  # a sender just before a wrap
    assert near_wrap.ticks == 2**32 - 2500
    assert unwrap_ticks(near_wrap.ticks, wrap * 400_000 + 1.0) == pytest.approx(
        wrap * 400_000 - 0.25, abs=1e-4
    )


@pytest.mark.parametrize(("width", "height"), [(320, 180), (640, 360), (1280, 720), (334, 202)])
def test_round_trip_at_sizes(width: int, height: int) -> None:
    luma = painted(width, height)
    assert read_code(luma) == CODE
    xs, ys = cell_edges(width, height)
    # Only the top 6/18 of the height is painted; the rest is untouched.
    assert (luma[ys[-1] :] == 100).all()
    assert (luma[: ys[-1], : xs[1]] == WHITE).all()  # reference column 0
    assert (luma[: ys[-1], xs[-2] :] == BLACK).all()  # reference column 15


def test_round_trip_many_values() -> None:
    rng = np.random.default_rng(1)
    luma = np.full((180, 320), 100, dtype=np.uint8)
    for _ in range(300):
        code = FrameCode(int(rng.integers(65536)), int(rng.integers(2**32)), int(rng.integers(65536)))
        paint_code(luma, code)
        assert read_code(luma) == code
    for code in (FrameCode(0, 0, 0), FrameCode(65535, 2**32 - 1, 65535)):
        paint_code(luma, code)
        assert read_code(luma) == code


def test_round_trip_in_sub_rect() -> None:
    frame = np.full((360, 640), 100, dtype=np.uint8)
    left, right = (0, 0, 320, 360), (320, 0, 320, 360)
    other = FrameCode.at(2, WALL + 1)
    paint_code(frame, CODE, left)
    paint_code(frame, other, right)
    assert read_code(frame, left) == CODE
    assert read_code(frame, right) == other
    assert read_code(frame) is None  # the whole frame is not one code
    inset = (37, 21, 401, 299)
    frame[:] = 100
    paint_code(frame, CODE, inset)
    assert read_code(frame, inset) == CODE


def test_after_downscale_with_pyav() -> None:
    frame = np.full((540, 640), 128, dtype=np.uint8)  # yuv420p, neutral chroma
    paint_code(frame[:360], CODE)
    small = av.VideoFrame.from_ndarray(frame, format="yuv420p").reformat(width=320, height=180)
    assert read_code(small.to_ndarray()[:180]) == CODE


def test_small_misregistration_and_gain_still_read() -> None:
    # A scaler's sub-pixel shift or a codec's level change must not matter: cells are read
    # in their central half against per-row references.
    luma = painted(640, 360)
    for dx, dy in [(-8, 0), (8, 0), (0, -4), (0, 4), (5, -3)]:
        shifted = np.roll(luma, (dy, dx), axis=(0, 1))
        assert read_code(shifted) == CODE
    compressed = (luma.astype(float) * 0.5 + 60).astype(np.uint8)  # contrast 96, offset
    assert read_code(compressed) == CODE


def test_single_flipped_cell_is_refused() -> None:
    luma = painted(640, 360)
    xs, ys = cell_edges(640, 360)
    for row in range(6):
        for col in range(16):  # data cells and the two reference columns
            damaged = luma.copy()
            cell = damaged[ys[row] : ys[row + 1], xs[col] : xs[col + 1]]
            cell[:] = np.where(cell == WHITE, BLACK, WHITE)
            assert read_code(damaged) is None, (row, col)


def test_fuzzed_corruption_never_reads_a_wrong_value() -> None:
    rng = np.random.default_rng(20240611)
    xs, ys = cell_edges(320, 180)
    outcomes: Counter[tuple[int, str]] = Counter()
    for trial in range(3000):
        code = FrameCode(int(rng.integers(65536)), int(rng.integers(2**32)), int(rng.integers(65536)))
        luma = painted(320, 180, code).astype(np.float64)
        acceptable: set[FrameCode | None] = {None}
        kind = trial % 5
        if kind == 0:  # flip 1..12 random cells (1..3 are always caught by the CRC)
            for index in rng.choice(96, size=int(rng.integers(1, 13)), replace=False):
                row, col = divmod(int(index), 16)
                cell = luma[ys[row] : ys[row + 1], xs[col] : xs[col + 1]]
                cell[:] = WHITE + BLACK - cell
        elif kind == 1:  # noise over the code
            luma += rng.normal(0.0, rng.uniform(5, 120), luma.shape)
            acceptable.add(code)
        elif kind == 2:  # a blend of two frames' codes, as a bad scaler or encoder might make
            other = FrameCode(int(rng.integers(65536)), int(rng.integers(2**32)), 0)
            alpha = rng.uniform(0, 1)
            luma = (1 - alpha) * luma + alpha * painted(320, 180, other)
            acceptable |= {code, other}
        elif kind == 3:  # random blocks painted gray, black or white over the code
            for _ in range(int(rng.integers(1, 6))):
                x, y = int(rng.integers(0, 300)), int(rng.integers(0, 60))
                w, h = int(rng.integers(2, 60)), int(rng.integers(2, 30))
                luma[y : y + h, x : x + w] = rng.choice([BLACK, 128, WHITE])
            acceptable.add(code)
        else:  # a random level per cell: bits near the threshold must be refused
            levels = rng.uniform(0, 255, (6, 16))
            image = np.repeat(np.repeat(levels, np.diff(ys), 0), np.diff(xs), 1)
            luma[: ys[-1]] = image
        result = read_code(np.clip(luma, 0, 255).astype(np.uint8))
        assert result in acceptable, (trial, kind, result, code)
        outcome = "none" if result is None else "exact" if result == code else "other"
        outcomes[kind, outcome] += 1
    print("fuzz outcomes (kind, outcome): count", dict(sorted(outcomes.items())))
    # Flipped cells and random levels never read; noise, blends and blocks sometimes do.
    assert all(outcomes[kind, "none"] > 0 for kind in range(5))
    assert all(outcomes[kind, "exact"] > 0 for kind in (1, 2, 3))


@pytest.mark.parametrize("level", [0, 32, 100, 128, 224, 255])
def test_flat_frames_read_none(level: int) -> None:
    assert read_code(np.full((360, 640), level, dtype=np.uint8)) is None


def test_noise_and_other_patterns_read_none() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        assert read_code(rng.integers(0, 256, (180, 320), dtype=np.uint8)) is None
    y, x = np.mgrid[0:360, 0:640]
    patterns = {
        "horizontal ramp": (x * 255 // 639),
        "vertical ramp": (y * 255 // 359),
        # Checkerboards and stripes at the code's own cell size and others.
        **{f"checker {s}": np.where((x // s + y // s) % 2, 224, 32) for s in (10, 20, 40, 80)},
        **{f"stripes {s}": np.where((x // s) % 2, 32, 224) for s in (20, 40, 80)},
        # Colour bars: luma of white, yellow, cyan, green, magenta, red, blue, black (BT.601).
        "bars": np.array([235, 210, 170, 145, 106, 81, 41, 16])[x * 8 // 640],
    }
    for name, pattern in patterns.items():
        assert read_code(pattern.astype(np.uint8)) is None, name


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="2-D"):
        read_code(np.zeros((10, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="too small"):
        read_code(np.zeros((30, 30), dtype=np.uint8))
    with pytest.raises(ValueError, match="outside"):
        paint_code(np.zeros((360, 640), dtype=np.uint8), CODE, (400, 0, 320, 180))


def test_read_is_fast() -> None:
    # Budget: 0.2 ms per 640x360 frame (measured ~0.06 ms); the loose bound keeps the test
    # meaningful on a slow CI machine without flaking.
    luma = painted(640, 360)
    read_code(luma)
    start = time.perf_counter()
    for _ in range(500):
        read_code(luma)
    per_frame = (time.perf_counter() - start) / 500
    print(f"read_code 640x360: {per_frame * 1e3:.3f} ms")
    assert per_frame < 0.4e-3
