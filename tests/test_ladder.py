"""The room's rendition ladder: its rungs, how a viewer's bandwidth estimate moves it between
them, and the switch at a keyframe of the new rung, without a network."""

from __future__ import annotations

import pytest

from qoe.errors import ConfigError
from qoe.media import Fanout, SignalSource
from qoe.media.encode import VideoEncoder
from qoe.media.ladder import DOWN_AFTER, UP_AFTER, Rung, RungChooser, make_ladder
from qoe.signal import SignalVideo


def test_the_default_ladder_of_the_rooms_host() -> None:
    assert make_ladder(640, 360, 500_000, 3) == (
        Rung(640, 360, 500_000),
        Rung(480, 270, 300_000),
        Rung(320, 180, 150_000),
    )
    assert make_ladder(1280, 720, 2_500_000, 4)[-1] == Rung(480, 270, 500_000)
    assert make_ladder(640, 360, 500_000, 1) == (Rung(640, 360, 500_000),)


def test_a_ladder_that_does_not_fit_says_how_many_do() -> None:
    with pytest.raises(ValueError, match=r"4 renditions of 640x360 do not fit above 320x180: at most 3 do"):
        make_ladder(640, 360, 500_000, 4)
    with pytest.raises(ConfigError, match=r"^--renditions: 2 renditions of 320x180 do not fit"):
        SignalSource(Fanout(), width=320, height=180, renditions=2)


def test_congestion_moves_a_viewer_down_to_the_rung_that_fits() -> None:
    chooser = RungChooser([2_500_000, 1_500_000, 750_000])
    sending = 2_000_000.0  # the top rung's encoder needs less than its 2.5 Mbit/s target
    assert chooser.update(1_900_000, 0.0, sending) is None  # follows what arrives: no congestion
    assert chooser.update(1_600_000, 1.0, sending) is None  # below 0.9 of what is sent: once...
    assert chooser.update(1_600_000, 1.0 + DOWN_AFTER, sending) == 1  # ...and held: 1.5M fits
    assert chooser.update(700_000, 5.0, 1_400_000) is None
    assert chooser.update(700_000, 5.0 + DOWN_AFTER, 1_400_000) == 2  # nothing fits: the bottom
    assert chooser.update(300_000, 9.0, 700_000) is None  # the bottom has nowhere lower to go
    assert chooser.update(300_000, 9.0 + DOWN_AFTER, 700_000) is None


def test_heavy_loss_moves_a_viewer_down_though_its_remb_climbs() -> None:
    # A drop-tail queue that stays full: the delay stops growing, so a delay-based REMB
    # climbs while 40 % of the packets are lost (the 3G profile under 2 Mbit/s).
    chooser = RungChooser([2_500_000, 1_500_000, 750_000])
    assert chooser.update(2_100_000, 0.0, 2_000_000) is None
    assert chooser.lost(0.40, 0.5, 2_000_000) is None  # capped at 2M x 0.8 = 1.6M: below 1.8M
    assert chooser.update(2_200_000, 0.5 + DOWN_AFTER, 2_000_000) == 1
    assert chooser.lost(0.01, 3.0, 1_400_000) is None  # loss gone: the REMB alone again
    assert chooser.rung == 1


def test_one_low_report_is_not_congestion() -> None:
    chooser = RungChooser([500_000, 300_000, 150_000])
    assert chooser.update(400_000, 0.0) is None
    assert chooser.update(480_000, 0.5) is None  # back up: the clock resets
    assert chooser.update(400_000, 0.6 + DOWN_AFTER) is None
    assert chooser.rung == 0


def test_a_viewer_climbs_one_rung_after_the_estimate_held_for_a_while() -> None:
    chooser = RungChooser([500_000, 300_000, 150_000])
    chooser.update(100_000, 0.0)
    assert chooser.update(100_000, DOWN_AFTER) == 2
    assert chooser.update(320_000, 2.0) is None  # fits the next rung up: the clock starts
    assert chooser.update(330_000, 2.0 + UP_AFTER - 0.1) is None
    assert chooser.update(250_000, 2.0 + UP_AFTER) is None  # fell back: the clock resets
    assert chooser.update(320_000, 10.0) is None
    assert chooser.update(320_000, 10.0 + UP_AFTER) == 1
    assert chooser.rung == 1


async def test_a_switch_waits_for_a_keyframe_of_the_new_rung_and_is_recorded() -> None:
    requests: list[tuple[str | None, int]] = []
    fanout = Fanout(on_keyframe_request=lambda codec=None, rung=0: requests.append((codec, rung)))
    fanout.codec = "vp8"
    _, video = fanout.subscribe()
    big, small = VideoEncoder(640, 360, gop=100), VideoEncoder(320, 180, gop=100)
    big_image, small_image = SignalVideo(640, 360).render(1000.0, 0), SignalVideo(320, 180).render(1000.0, 0)
    fanout.push("video", big.encode(big_image, 0, keyframe=True), rung=0)
    assert fanout.wanted == {("vp8", 0)}
    video.switch_to(2)
    assert requests[-1] == (None, 2) and fanout.wanted == {("vp8", 0), ("vp8", 2)}
    fanout.push("video", small.encode(small_image, 0), rung=2)  # the small encoder's first frame: a keyframe
    fanout.push("video", big.encode(big_image, 3000), rung=0)  # the old rung no longer reaches it
    fanout.push("video", small.encode(small_image, 3000), rung=2)
    sizes = []
    while not video._queue.empty():
        sizes.append((await video.recv()).is_keyframe)
    assert sizes == [True, True, False]  # big keyframe, small keyframe, small delta
    assert video.rung == 2 and video.target is None and fanout.wanted == {("vp8", 2)}
    assert [rung for _, rung in video.history] == [0, 2]


async def test_a_switch_target_gets_no_delta_frames_before_its_keyframe() -> None:
    fanout = Fanout(on_keyframe_request=lambda codec=None, rung=0: None)
    fanout.codec = "vp8"
    _, video = fanout.subscribe()
    encoder = VideoEncoder(320, 180, gop=100)
    image = SignalVideo(320, 180).render(1000.0, 0)
    key = encoder.encode(image, 0, keyframe=True)
    fanout.push("video", key, rung=0)
    video.switch_to(1)
    other = VideoEncoder(320, 180, gop=100)
    other.encode(image, 0)
    fanout.push("video", other.encode(image, 3000), rung=1)  # a delta of rung 1: not a start
    assert video.rung == 0 and video.target == 1
