"""Picture quality from the test signal: the reference frame, PSNR, SSIM, the scoring rate,
and the video figures over time (renditions, switches, received bitrate)."""

from __future__ import annotations

import math
import threading

import av
import numpy as np
import pytest

from probes import checked_options
from probes.options import OptionError
from qoe.media.encode import VideoEncoder
from qoe.media.frames import luma
from qoe.metrics import picture_quality, received_bitrate, renditions
from qoe.signal import SignalVideo, read_code, unwrap_ticks
from qoe.signal.quality import (
    MAX_PENDING,
    PSNR_CAP_DB,
    QualityScorer,
    Score,
    ScoringQueue,
    parse_rate,
    psnr,
    ssim,
)
from qoe.timeline import VideoFrameEvent

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def test_ssim_of_two_flat_pictures_is_the_luminance_term_alone() -> None:
    # Flat planes have no variance, so SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    a, b = np.full((64, 64), 100, np.uint8), np.full((64, 64), 110, np.uint8)
    expected = (2 * 100 * 110 + C1) / (100**2 + 110**2 + C1)  # 0.995476...
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-9)


def _ssim_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 written out window by window: an 11x11 Gaussian of sigma 1.5 (cut at
    3.5 sigma, as the library cuts it), population moments, the mean over every window that
    fits inside the picture."""
    radius = 5
    offsets = np.arange(-radius, radius + 1)
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    x, y = a.astype(float), b.astype(float)
    values = []
    for r in range(radius, a.shape[0] - radius):
        for c in range(radius, a.shape[1] - radius):
            wx = x[r - radius : r + radius + 1, c - radius : c + radius + 1]
            wy = y[r - radius : r + radius + 1, c - radius : c + radius + 1]
            mx, my = (window * wx).sum(), (window * wy).sum()
            vx = (window * wx * wx).sum() - mx * mx
            vy = (window * wy * wy).sum() - my * my
            cxy = (window * wx * wy).sum() - mx * my
            values.append(((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2)))
    return float(np.mean(values))


def test_ssim_matches_the_definition_computed_window_by_window() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (28, 30)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-90, 91, a.shape), 0, 255).astype(np.uint8)
    by_hand = _ssim_by_hand(a, b)
    assert 0.3 < by_hand < 0.95  # a real difference, not a corner case
    assert ssim(a, b) == pytest.approx(by_hand, abs=1e-5)


def test_psnr_from_a_known_mean_squared_error() -> None:
    a = np.full((8, 8), 100, np.uint8)
    b = a.copy()
    b[::2, ::2] = 108  # a quarter of the pixels off by 8: MSE 16
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 16), abs=1e-9)
    assert psnr(a, a) == PSNR_CAP_DB
    with pytest.raises(ValueError, match="one shape"):
        psnr(a, a[:4])


@pytest.mark.parametrize("size", [(320, 180), (480, 270), (640, 360), (1280, 720)])
def test_the_code_a_frame_carries_renders_that_frame_bit_for_bit(size: tuple[int, int]) -> None:
    width, height = size
    sender = SignalVideo(width, height, slot=1)
    scorer = QualityScorer(slot=1, rate=None)
    for k in range(0, 90, 7):  # across flashes, bar and texture positions
        capture = 1_750_000_000.0 + k / 30
        y = sender.render(capture, 1000 + k, tag=k * 3)[:height]
        code = read_code(y)
        assert code is not None
        unwrapped = unwrap_ticks(code.ticks, capture + 2.5)  # as a viewer 2.5 s later reads it
        assert np.array_equal(scorer.reference(width, height, unwrapped, code.seq, code.tag), y)
        assert scorer.score(y, unwrapped, code.seq, code.tag) == Score(PSNR_CAP_DB, pytest.approx(1.0))


def _scored_through_vp8(bitrate: int, frames: int = 120) -> tuple[np.ndarray, np.ndarray]:
    width, height = 640, 360
    sender, scorer = SignalVideo(width, height), QualityScorer(rate=None)
    encoder = VideoEncoder(width, height, codec="vp8", bitrate=bitrate)
    decoder = av.CodecContext.create("libvpx", "r")
    psnrs, ssims = [], []
    for k in range(frames):
        capture = 1_750_000_000.0 + k / 30
        for packet in encoder.encode(sender.render(capture, k), k * 3000, keyframe=k == 0):
            for frame in decoder.decode(packet):
                y = luma(frame)
                code = read_code(y)
                assert code is not None, "the code reads at every bitrate"
                score = scorer.score(y, unwrap_ticks(code.ticks, capture), code.seq, code.tag)
                assert score is not None
                psnrs.append(score.psnr_db)
                ssims.append(score.ssim)
    return np.array(psnrs), np.array(ssims)


def test_quality_responds_to_bitrate_on_the_same_content() -> None:
    low_psnr, low_ssim = _scored_through_vp8(300_000)
    high_psnr, high_ssim = _scored_through_vp8(1_500_000)
    # Measured: PSNR p50 34.0 vs 50.6 dB, SSIM p50 0.973 vs 0.999.
    assert np.median(high_psnr) - np.median(low_psnr) >= 8.0
    assert np.median(high_ssim) - np.median(low_ssim) >= 0.01
    _, default_ssim = _scored_through_vp8(500_000)
    assert np.median(default_ssim) >= 0.95


def test_the_rate_scores_the_same_frames_for_every_viewer() -> None:
    def scored(rate: float | None, first: int) -> list[int]:
        scorer = QualityScorer(rate=rate)
        return [k for k in range(first, 90) if scorer.due(1000 + k / 30)]

    assert scored(2.0, 0) == [0, 15, 30, 45, 60, 75]
    assert scored(2.0, 20) == [20, 30, 45, 60, 75]  # a late joiner falls into step
    assert len(scored(None, 0)) == 90
    assert scored(0.0, 0) == []


def test_parse_rate() -> None:
    assert parse_rate("all") is None
    assert parse_rate("off") == 0.0
    assert parse_rate("5") == 5.0
    assert parse_rate(0.5) == 0.5
    for bad in ("lots", -1, float("nan"), True):
        with pytest.raises(ValueError, match="must be frames a second"):
            parse_rate(bad)


def test_the_quality_option_of_viewers() -> None:
    assert checked_options("whep", {})["quality"] == 2.0
    assert checked_options("whep", {"quality": "all"})["quality"] == "all"
    assert checked_options("hls", {"quality": "off"})["quality"] == 0.0
    with pytest.raises(OptionError, match=r"option 'quality' of rtmp probes: must be frames a second"):
        checked_options("rtmp", {"quality": "lots"})


def test_a_full_queue_skips_and_counts_instead_of_piling_up() -> None:
    release = threading.Event()

    class Slow(QualityScorer):
        def score(self, y: np.ndarray, capture_wall: float, seq: int, tag: int) -> Score | None:
            release.wait(5)
            return Score(40.0, 0.99)

    queue = ScoringQueue(Slow(rate=None))
    results: list[Score | None] = []
    y = SignalVideo(320, 180).render(1000.0, 0)[:180]
    offered = [queue.offer(y, 1000 + k / 30, k, 0, results.append) for k in range(MAX_PENDING + 3)]
    assert offered == [True] * MAX_PENDING + [False] * 3
    assert queue.skipped == 3
    release.set()
    assert queue.wait(5) == 0
    assert results == [Score(40.0, 0.99)] * MAX_PENDING


def _frame(at: float, width: int = 640, height: int = 360, **fields: object) -> VideoFrameEvent:
    return VideoFrameEvent(at=at, wall=at, stream_time=at, width=width, height=height, **fields)  # type: ignore[arg-type]


def test_picture_quality_figures() -> None:
    frames = [_frame(k / 30) for k in range(60)]
    assert picture_quality(frames) is None  # nothing scored: no signal, or scoring off
    for k, frame in enumerate(frames[::15]):
        frame.psnr, frame.ssim = 30.0 + k, 0.90 + k / 100
    quality = picture_quality(frames, skipped=2)
    assert quality == {
        "psnr_db": {"p5": pytest.approx(30.15), "p50": pytest.approx(31.5)},
        "ssim": {"p5": pytest.approx(0.9015), "p50": pytest.approx(0.915)},
        "scored_frames": 4,
        "skipped_frames": 2,
    }


def test_renditions_add_up_to_the_time_shown() -> None:
    frames = [_frame(k / 10) for k in range(10)]  # 0.0-0.9 s at 640x360
    frames += [_frame(1 + k / 10, 320, 180) for k in range(20)]  # 1.0-2.9 s at 320x180
    frames += [_frame(3 + k / 10) for k in range(5)]  # 3.0-3.4 s back at 640x360
    shown = renditions(frames, end=4.0)
    assert shown.switches == 2
    assert shown.spans == [
        {"width": 640, "height": 360, "seconds": pytest.approx(1.0 + 1.0)},
        {"width": 320, "height": 180, "seconds": pytest.approx(2.0)},
    ]


def test_received_bitrate_per_second() -> None:
    # 3 s: 30 frames a second of 1000, 2000, then 500 bytes: 240, 480, 120 kbit/s.
    sizes = (1000, 2000, 500)
    frames = [_frame(s + k / 30, encoded_bytes=sizes[s]) for s in range(3) for k in range(30)]
    kbps = received_bitrate(frames, end=3.0)
    assert kbps == {"mean": pytest.approx(280.0), "p5": pytest.approx(132.0), "p50": pytest.approx(240.0)}
    assert received_bitrate([_frame(0.0)], end=1.0) is None  # no bytes seen
