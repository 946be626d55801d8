"""Co-host audio quality: echo, dropouts, noise floor and SNR (:mod:`qoe.signal.audioquality`
and :func:`qoe.metrics.audio_quality`, :func:`qoe.metrics.cohost_echo`).

The estimators first on made-up onsets and blocks with exact answers, then on the test signal
sent through libopus at 64 kbit/s and decoded again (PyAV), as the room's audio reaches a
viewer: the host's track, and a co-host's track carrying the host's echo, a mute and noise,
each with known values. No event loop: the tones are found and the blocks measured as the
WHEP viewer does it, and the figures come from the timelines by the functions a run uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import av
import numpy as np
import pytest

from qoe import eventlog
from qoe.media.encode import AudioEncoder
from qoe.metrics import audio_quality, cohost_echo, result_of
from qoe.signal import (
    COHOST_TONE_HZ,
    HOST_TONE_HZ,
    SAMPLE_RATE,
    SignalAudio,
    ToneOnsetDetector,
    identity_delay,
)
from qoe.signal.audioquality import (
    ECHO_MAX_RETURN_LOSS_DB,
    MARKER_SILENCE_MIN_SNR_DB,
    NOISE_FLOOR_MIN_DBFS,
    dbfs,
    dropouts,
    echo,
    missing_markers,
    noise_power,
    snr_db,
)
from qoe.timeline import AudioBlock, ClockPoint, Timeline, ToneOnset

BLOCK = 960
START_SECOND = 1_700_000_000  # a multiple of 4: the mute windows fall on whole seconds


def host_onsets(seconds: int) -> np.ndarray:
    """The host's marker and identity-burst onsets over ``seconds`` whole seconds."""
    return np.array([t for s in range(seconds) for t in (s, s + identity_delay(s))], dtype=float)


# -- the estimators on exact inputs -------------------------------------------------------


def test_an_echo_of_the_identity_bursts_alone_gives_its_delay_and_return_loss() -> None:
    # Through a codec the echo of a marker is often lost under the co-host's own marker
    # (20 ms apart at 0.12 s), so only the bursts come back: their spacing still fixes it.
    far = host_onsets(10)
    back = far[1::2] + 0.12
    found = echo(far, np.full(far.size, 0.25), back, np.full(back.size, 0.075))
    assert found is not None and found.matches == 10
    assert found.delay_seconds == pytest.approx(0.12, abs=1e-9)
    assert found.return_loss_db == pytest.approx(20 * math.log10(0.25 / 0.075))


def test_no_echo_from_no_onsets_from_too_few_or_from_one_too_quiet() -> None:
    far = host_onsets(10)
    levels = np.full(far.size, 0.25)
    assert echo(far, levels, [], []) is None
    assert echo(far, levels, far[1:5:2] + 0.2, [0.1, 0.1]) is None  # two agree: not enough
    quiet = 0.25 * 10 ** (-(ECHO_MAX_RETURN_LOSS_DB + 1) / 20)
    assert echo(far, levels, far + 0.2, np.full(far.size, quiet)) is None
    stray = np.array([0.37, 2.91, 5.55, 7.02])  # onsets at no common delay
    assert echo(far, levels, stray, np.full(stray.size, 0.1)) is None


def test_echo_takes_the_delay_most_onsets_agree_on() -> None:
    far = host_onsets(8)
    back = np.sort(np.concatenate([far + 0.3, [1.9, 4.45]]))  # two strays among them
    found = echo(far, np.full(far.size, 0.2), back, np.full(back.size, 0.02))
    assert found is not None and found.matches == far.size
    assert found.delay_seconds == pytest.approx(0.3, abs=1e-9)
    assert found.return_loss_db == pytest.approx(20.0)


def test_dropouts_are_the_gaps_between_blocks() -> None:
    starts = [0.00, 0.02, 0.04, 0.36, 0.38, 0.40, 0.405]  # 0.30 s missing, then a 5 ms step
    lengths = [0.02, 0.02, 0.02, 0.02, 0.02, 0.005, 0.02]
    found = dropouts(starts, lengths)
    assert found.count == 1
    assert found.seconds == pytest.approx(0.30)
    assert found.gaps == (pytest.approx((0.06, 0.36)),)
    assert dropouts([], []).count == 0
    with pytest.raises(ValueError, match="same shape"):
        dropouts([0.0, 0.02], [0.02])


def test_a_marker_silent_in_audio_that_came_is_missing_one_in_a_gap_is_not() -> None:
    markers = [10.003, 11.003, 13.003, 15.003, 16.003]  # 12 and 14 are not there
    onsets = markers + [m + 0.25 for m in markers]
    assert missing_markers(markers, onsets) == 2
    assert missing_markers(markers, onsets, gaps=((13.9, 14.2),)) == 1  # 14 fell in a gap
    assert missing_markers([10.0], [10.0]) == 0


def test_the_noise_floor_is_the_median_of_the_blocks_away_from_tones() -> None:
    starts = np.arange(50) * 0.02
    powers = np.full(50, 1e-4)
    powers[[0, 1, 2, 3, 4, 5, 10, 11, 12]] = 0.1  # a tone at 0 (0.1 s) and one at 0.2
    assert noise_power(starts, np.full(50, 0.02), powers, [0.0, 0.2]) == pytest.approx(1e-4)
    assert noise_power([], [], [], [0.0]) is None
    assert noise_power([0.0], [0.02], [0.1], [0.0]) is None  # nothing away from the tone


def test_decibels_follow_aes17_and_floor_digital_silence() -> None:
    assert dbfs(0.5) == pytest.approx(0.0)  # a full-scale sine
    assert dbfs(0.125) == pytest.approx(-6.0206, abs=1e-4)  # the marker tone: amplitude 0.5
    assert dbfs(0.0) == NOISE_FLOOR_MIN_DBFS
    assert snr_db(0.25, 0.125 / 100) == pytest.approx(20.0)


# -- through Opus -------------------------------------------------------------------------


@dataclass
class Track:
    """What a viewer records of one participant's own track, and its timeline."""

    tone_hz: float
    echo_hz: float | None = None
    timeline: Timeline = field(init=False)

    def __post_init__(self) -> None:
        self.timeline = Timeline(("first",), tone_hz=self.tone_hz, echo_hz=self.echo_hz)
        # The sender's clock: stream time 0 is sample START_SECOND * 48000 of the signal.
        self.timeline.sync["audio"] = [ClockPoint(0.0, float(START_SECOND))]


def through_opus(
    tone_hz: float,
    seconds: int,
    *,
    echo: tuple[float, float] | None = None,
    mute: tuple[float, float] | None = None,
    snr: float | None = None,
    seed: int = 7,
) -> Track:
    """The test signal of ``tone_hz`` (with the host's echo ``(gain, delay)``, muted
    ``(every, for)`` as the publisher mutes, white noise ``snr`` dB under the marker) sent
    through libopus at 64 kbit/s, decoded and recorded as the WHEP viewer records it."""
    rng = np.random.default_rng(seed)
    own, host = SignalAudio(tone_hz), SignalAudio(HOST_TONE_HZ)
    encoder = AudioEncoder()
    decoder = av.CodecContext.create("opus", "r")
    track = Track(tone_hz, HOST_TONE_HZ if tone_hz != HOST_TONE_HZ else None)
    log = track.timeline
    detectors = [
        ToneOnsetDetector(tone_hz, other_hz=[f for f in (HOST_TONE_HZ, COHOST_TONE_HZ) if f != tone_hz])
    ]
    if track.echo_hz is not None:
        detectors.append(ToneOnsetDetector(track.echo_hz, other_hz=(tone_hz,)))
    first = START_SECOND * SAMPLE_RATE
    for j in range(seconds * SAMPLE_RATE // BLOCK):
        start = first + j * BLOCK
        muted = mute is not None and start % round(mute[0] * SAMPLE_RATE) < round(mute[1] * SAMPLE_RATE)
        x = np.zeros(BLOCK) if muted else own.render(start, BLOCK).astype(float)
        if echo is not None and not muted:
            x += echo[0] * host.render(start - round(echo[1] * SAMPLE_RATE), BLOCK)
        if snr is not None and not muted:
            x += rng.normal(0.0, math.sqrt(0.125 / 10 ** (snr / 10)), BLOCK)
        packets = encoder.encode(x, j * BLOCK)
        if muted:
            continue  # encoded and dropped, as SignalSource does: the gap is the mute
        for packet in packets:
            for frame in decoder.decode(packet):
                mono = frame.to_ndarray()[0].astype(float)
                pts = int(frame.pts or 0)
                power = float(np.mean(mono**2))
                log.audio_blocks.append(
                    AudioBlock(0.0, pts / SAMPLE_RATE, frame.samples / SAMPLE_RATE, power)
                )
                for detector in detectors:
                    for onset, level in detector.add_with_levels(mono, pts):
                        log.tones.append(ToneOnset(onset / SAMPLE_RATE, detector.tone_hz, level))
    return track


@pytest.fixture(scope="module")
def host() -> Track:
    return through_opus(HOST_TONE_HZ, 10)


def test_through_opus_the_echo_of_gain_0_3_at_0_12_s(host: Track) -> None:
    cohost = through_opus(COHOST_TONE_HZ, 10, echo=(0.3, 0.12))
    found = cohost_echo(host.timeline, cohost.timeline)
    assert found["detected"] is True
    # Known answers: 0.12 s exactly on the senders' clocks (the codec delays both tracks
    # alike); 20 log10(1 / 0.3) = 10.46 dB, within 0.5 dB through the codec.
    assert found["delay_seconds"] == pytest.approx(0.12, abs=0.001)
    assert found["return_loss_db"] == pytest.approx(10.46, abs=0.5)


def test_through_opus_no_echo_is_found_where_there_is_none(host: Track) -> None:
    for seed, snr in ((1, None), (2, 20.0), (3, 10.0)):
        cohost = through_opus(COHOST_TONE_HZ, 10, snr=snr, seed=seed)
        assert cohost_echo(host.timeline, cohost.timeline)["detected"] is False


def test_through_opus_a_mute_of_0_3_s_every_4_s_is_one_dropout_each_time() -> None:
    cohost = through_opus(COHOST_TONE_HZ, 10, mute=(4.0, 0.3))
    figures = audio_quality(cohost.timeline)
    gaps = dropouts(
        [b.stream_time for b in cohost.timeline.audio_blocks],
        [b.seconds for b in cohost.timeline.audio_blocks],
    )
    # Mutes at 4 and 8 s of the 10 s (the one at 0 is before the first block).
    assert figures.dropouts["count"] == 2
    assert figures.dropouts["seconds"] == pytest.approx(0.6, abs=1e-9)
    assert [round(b - a, 6) for a, b in gaps.gaps] == [0.3, 0.3]
    # The mute fell on the co-host's marker: silence where it should sound is no extra
    # dropout, as the gap explains it.
    assert figures.dropouts["missing_markers"] == 0


@pytest.mark.parametrize("snr", [20.0, 10.0])
def test_through_opus_the_snr_of_the_injected_noise(snr: float) -> None:
    cohost = through_opus(COHOST_TONE_HZ, 8, snr=snr)
    figures = audio_quality(cohost.timeline)
    # Opus keeps the noise's power below 20 kHz and drops the rest (1/6 of a white noise's
    # at 48 kHz): about 0.8 dB less noise, so the SNR reads up to 1.5 dB high.
    assert figures.snr_db == pytest.approx(snr + 0.8, abs=0.7)
    assert figures.noise_floor_dbfs == pytest.approx(dbfs(0.125 / 10 ** (snr / 10)) - 0.8, abs=0.7)
    # At 10 dB the detector misses an onset now and then: no count of silent markers then.
    assert figures.dropouts["missing_markers"] == (0 if snr >= MARKER_SILENCE_MIN_SNR_DB else None)


def test_through_opus_a_clean_track_has_no_dropouts_and_a_high_snr(host: Track) -> None:
    figures = audio_quality(host.timeline)
    assert figures.dropouts == {"count": 0, "seconds": 0.0, "missing_markers": 0}
    assert figures.snr_db is not None and figures.snr_db > 60


def test_the_figures_replay_from_a_saved_event_log(host: Track) -> None:
    cohost = through_opus(COHOST_TONE_HZ, 4, echo=(0.3, 0.12), mute=(4.0, 0.3))
    log = Timeline(("first",), role="viewer", tone_hz=HOST_TONE_HZ)
    log.audio_blocks, log.tones, log.sync = (
        host.timeline.audio_blocks,
        host.timeline.tones,
        host.timeline.sync,
    )
    log.participants["cohost"] = cohost.timeline
    live = result_of(log)
    assert live.cohost.echo["detected"] is True and live.audio.dropouts["count"] == 0
    assert result_of(eventlog.loads(eventlog.dumps(log))).to_json() == live.to_json()
