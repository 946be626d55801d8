"""Ground-truth knobs and the fan-out, without a network."""

from __future__ import annotations

import numpy as np
import pytest

from qoe.errors import ConfigError
from qoe.media import Fanout, Knobs
from qoe.media.compose import RawTap
from qoe.media.encode import AudioEncoder, VideoEncoder
from qoe.signal import SignalVideo
from sim.room.impair import CohostImpairment


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
        ({"mute_for": 0.3}, "--mute-for needs --mute-every"),
        ({"echo_gain": 1.5}, "--echo-gain must be between 0 and 1"),
        ({"echo_gain": 0.3, "echo_delay": 1.5}, "--echo-delay must be between 0 and 1 seconds"),
        ({"cohost_echo_gain": -0.1}, "--cohost-echo must be between 0 and 1"),
        ({"cohost_noise_db": 61.0}, "--cohost-noise-db must be between 0 and 60 dB"),
    ],
)
def test_bad_knobs(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Knobs(**kwargs)


def test_mute_schedule_is_on_whole_samples() -> None:
    # 4 s from a Unix second near 1.7e9: as a float, the block starting 0.3 s in reads as
    # 0.29999995 s in and would be muted too, making the gap a block longer than the knob.
    knobs = Knobs(mute_every=4, mute_for=0.3)
    first = 1_700_000_000 * 48000
    muted = [j for j in range(250) if knobs.muted(first + j * 960, 48000)]
    assert muted == list(range(15)) + list(range(200, 215))  # 15 blocks of 20 ms each time


def test_the_rooms_cohost_impairment_adds_the_hosts_echo_and_noise() -> None:
    host = RawTap()
    host.audio(100.0, np.full(48000, 0.5, dtype=np.float32))  # a second of the host from t=100
    impaired = CohostImpairment(
        host,
        Knobs(cohost_echo_gain=0.3, cohost_echo_delay=0.2, cohost_noise_db=20.0),
        np.random.default_rng(1),
    )
    block = impaired.apply(100.1, np.zeros(48000, dtype=np.float32))
    # The block heard the host 0.2 s back, from 99.9 s: silence for 0.1 s, then 0.3 x 0.5.
    assert abs(float(np.mean(block[:4800]))) < 0.01
    assert float(np.mean(block[4800:])) == pytest.approx(0.15, abs=0.01)
    # Noise 20 dB below the marker tone's power (0.125): a standard deviation of 0.0354.
    assert float(np.std(block[:4800])) == pytest.approx(np.sqrt(0.125 / 100), rel=0.05)


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
