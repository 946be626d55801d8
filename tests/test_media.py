"""Ground-truth knobs and the fan-out, without a network."""

from __future__ import annotations

import numpy as np
import pytest

from qoe.errors import ConfigError
from qoe.media import Fanout, Knobs
from qoe.media.encode import AudioEncoder, VideoEncoder
from qoe.signal import SignalVideo


def test_freeze_schedule_is_anchored_to_wall_clock() -> None:
    knobs = Knobs(freeze_every=3, freeze_for=0.5)
    assert knobs.frozen(3.0) and knobs.frozen(6.49)
    assert not knobs.frozen(6.5) and not knobs.frozen(5.99)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"freeze_for": 0.5}, "--freeze-for needs --freeze-every"),
        ({"freeze_every": 1, "freeze_for": 1.0}, "shorter than --freeze-every"),
        ({"delay": -0.1}, "--delay must be between 0 and 30"),
        ({"av_offset": 5.5}, "--av-offset must be between -5 and 5"),
        ({"av_offset": -5.01}, "--av-offset must be between -5 and 5"),
        ({"quality_drop_for": 0.5}, "--quality-drop-for needs --quality-drop-every"),
        ({"quality_drop_every": 2, "quality_drop_for": 2.0}, "shorter than --quality-drop-every"),
    ],
)
def test_bad_knobs(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Knobs(**kwargs)


def test_av_offset_knob_covers_the_measured_range_and_beyond() -> None:
    # Probes measure +-3 s and report up to 5 s as out of range: both have a ground truth.
    for offset in (-5.0, -3.0, 0.6, 3.0, 5.0):
        assert Knobs(av_offset=offset).av_offset == offset


async def test_fanout_starts_each_subscriber_at_a_keyframe() -> None:
    requests: list[tuple[str | None, int]] = []
    fanout = Fanout(on_keyframe_request=lambda codec=None, rung=0: requests.append((codec, rung)))
    audio, video = fanout.subscribe()
    assert requests and fanout.subscribers == 1
    encoder = VideoEncoder(320, 180, gop=100)
    image = SignalVideo(320, 180).render(1000.0, 0)
    key = encoder.encode(image, 0, keyframe=True)
    delta = encoder.encode(image, 3000)
    fanout.push("video", delta)  # joined between keyframes: skipped
    fanout.push("video", key)
    fanout.push("video", delta)
    fanout.push("audio", AudioEncoder().encode([0.0] * 960, 0))
    assert (await video.recv()).is_keyframe
    assert not (await video.recv()).is_keyframe
    assert (await audio.recv()).time_base.denominator == 48000
    video.stop()
    audio.stop()
    assert fanout.subscribers == 0


def test_a_raw_tap_counts_media_that_reached_the_mix_after_its_slot() -> None:
    from qoe.media.compose import RawTap

    tap = RawTap()
    image = np.zeros((54, 64), dtype=np.uint8)
    tap.video(100.0, image, 64, 36)
    assert tap.frame_at(100.5) is not None  # the mix has shown up to 100.5
    tap.video(99.9, image, 64, 36)  # older than the latest frame: ignored, not late
    tap.video(100.52, image, 64, 36)  # on time
    assert tap.late_frames == 0
    tap.frame_at(101.0)
    tap.video(100.9, image, 64, 36)  # its slot was read already: the mix showed 100.52
    assert tap.late_frames == 1
    tap.video(101.005, image, 64, 36)  # nearer 101.0, read already, than the next mix frame
    assert tap.late_frames == 2
    tap.samples_at(200.0, 960)  # read through 200.02
    tap.audio(200.01, np.ones(960, dtype=np.float32))  # its first half came after its slot
    assert tap.late_samples == 480
    tap.audio(200.02, np.ones(960, dtype=np.float32))
    assert tap.late_samples == 480
