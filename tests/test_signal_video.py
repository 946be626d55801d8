"""Known-answer tests for the video generator, the marker layout and the flash detector.

Frame times in these tests are exact multiples of 1/30 s from a whole second, so "at the
whole second" is an exact float comparison, not a tolerance.
"""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from qoe.signal.code import BLACK, WHITE, FrameCode, read_code
from qoe.signal.detect import FlashDetector
from qoe.signal.video import FLASH_SECONDS, SignalVideo, flash_level, marker_rect

START = 1_700_000_000  # a whole second of sender time
FPS = 30


def test_render_layout_and_planes() -> None:
    video = SignalVideo(640, 360)
    frame = video.render(START + 0.5, 7, tag=3)
    assert frame.shape == (540, 640) and frame.dtype == np.uint8
    assert (frame[360:] == 128).all()  # neutral chroma
    luma = frame[:360]
    assert read_code(luma) == FrameCode.at(7, START + 0.5, 3)
    assert np.median(luma[122:138]) == 100  # background between the code and the texture
    band = luma[140:260].astype(float)  # TEXTURE_BAND: 7/18 to 13/18 of 360 rows
    assert 110 < band.mean() < 150 and band.std() > 20  # detail an encoder must spend bits on
    assert (luma[260:270] == 100).sum() > 0.9 * 10 * 640  # flat again above the markers
    # PyAV takes the array as is and gives back the same planes.
    assert (av.VideoFrame.from_ndarray(frame, format="yuv420p").to_ndarray() == frame).all()


def test_marker_rects() -> None:
    assert marker_rect(0, 640, 360) == (40, 270, 160, 60)
    assert marker_rect(1, 640, 360) == (440, 270, 160, 60)  # mirrored
    assert marker_rect(0, 320, 180) == (20, 135, 80, 30)
    assert marker_rect(1, 1280, 360, region=(640, 0, 640, 360)) == (1080, 270, 160, 60)
    with pytest.raises(ValueError):
        marker_rect(2, 640, 360)


def test_marker_flashes_for_flash_seconds() -> None:
    host, cohost = SignalVideo(slot=0), SignalVideo(slot=1)
    for offset, expect in [
        (0.0, WHITE),
        (0.05, WHITE),
        (FLASH_SECONDS + 1e-6, BLACK),
        (0.5, BLACK),
        (0.999, BLACK),
    ]:
        assert flash_level(host.render(START + offset, 0)[:360], 0) == expect
        assert flash_level(cohost.render(START + offset, 0)[:360], 1) == expect
    # Each participant flashes only its own slot.
    assert flash_level(host.render(START, 0)[:360], 1) == 100


def test_bar_moves() -> None:
    video = SignalVideo()
    a, b = video.render(START + 0.5, 0)[200], video.render(START + 1.5, 1)[200]
    assert not np.array_equal(a, b)


def test_the_texture_halves_scroll_opposite_ways() -> None:
    video = SignalVideo(640, 360)
    # A quarter of the width a second: 160 px; far from the bar, which is near x = 0 here.
    a, b = video.render(START, 0)[:360], video.render(START + 0.25, 1)[:360]
    upper, lower = slice(150, 190), slice(210, 250)
    assert np.array_equal(b[upper, 100:500], a[upper, 140:540])  # moved left by 40 px
    assert np.array_equal(b[lower, 140:540], a[lower, 100:500])  # moved right by 40 px


def test_a_frame_depends_on_capture_time_only_through_whole_ticks() -> None:
    video = SignalVideo(640, 360)
    at = START + 0.1234
    assert np.array_equal(video.render(at, 5), video.render(at + 0.00004, 5))
    assert not np.array_equal(video.render(at, 5), video.render(at + 0.004, 5))


@pytest.mark.parametrize(("width", "height"), [(318, 180), (320, 178), (641, 360), (640, 361)])
def test_bad_sizes(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="even and at least 320x180"):
        SignalVideo(width, height)


def test_flash_detector_hysteresis() -> None:
    detector = FlashDetector()
    levels = [200, 150, 100, 170, 90, 120, 150, 161, 200, 30, 224, 224, 95.9, 160, 160.1]
    onsets = [t for t, level in enumerate(levels) if detector.add(float(t), level) is not None]
    # Not at t=0 (never seen dark), not at 3 (100 is not below 96), then 7, 10 and 14.
    assert onsets == [7, 10, 14]


def test_flash_onsets_at_whole_seconds_at_30_fps() -> None:
    for slot in (0, 1):
        video, detector = SignalVideo(slot=slot), FlashDetector()
        onsets = []
        for i in range(FPS * 5 + 10):
            t = START + 0.4 + i / FPS  # start mid-second so the first flash is seen from dark
            level = flash_level(video.render(t, i)[:360], slot)
            if (onset := detector.add(t, level)) is not None:
                onsets.append(onset)
        assert onsets == [float(START + s) for s in range(1, 6)]


def test_co_host_tiles_in_one_frame() -> None:
    # A composited room frame: host on the left, co-host on the right, each at 640x360.
    room = np.concatenate(
        [
            SignalVideo(slot=0).render(START, 1)[:360],
            SignalVideo(slot=1).render(START + 0.5, 2)[:360],
        ],
        axis=1,
    )
    left, right = (0, 0, 640, 360), (640, 0, 640, 360)
    assert read_code(room, left) == FrameCode.at(1, START)
    assert read_code(room, right) == FrameCode.at(2, START + 0.5)
    assert flash_level(room, 0, left) == WHITE
    assert flash_level(room, 1, right) == BLACK


def test_render_is_fast() -> None:
    # Budget: 1 ms per 640x360 frame (measured ~0.05 ms); loose bound against slow CI.
    video = SignalVideo()
    start = time.perf_counter()
    for i in range(300):
        video.render(START + i / FPS, i)
    per_frame = (time.perf_counter() - start) / 300
    print(f"SignalVideo.render 640x360: {per_frame * 1e3:.3f} ms")
    assert per_frame < 1e-3
