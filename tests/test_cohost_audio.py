"""Co-host audio on a real room: a co-host WHIP publisher of ours, a WHEP viewer taking host
and co-host as separate tracks, and the knobs' ground truth (docs/METRICS.md).

Each test watches 6-8 s. The estimators' own tests, through libopus and without an event
loop, are in tests/test_signal_audioquality.py; bench/cohost_audio.py runs the same scenarios more
times (20 echo-free runs for false alarms).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from probes import ProbeSpec, run_probe
from qoe.media import Knobs
from qoe.media.source import PIPELINE_LATENCY
from qoe.metrics import to_sender_time
from qoe.result import ProbeResult
from qoe.signal import COHOST_TONE_HZ
from qoe.signal.audioquality import dropouts
from qoe.timeline import AudioBlock, Timeline
from sim.room.relay import RELAY_LATENCY
from tests.conftest import run_bench

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # a room, a co-host publisher and viewers in one process

SETTLE = 2.5
"""The room places a WHIP publisher by its first RTCP sender report (about a second)."""


async def watch_cohost(live, publisher: Knobs, watch_for: float) -> tuple[ProbeResult, Timeline]:  # type: ignore[no-untyped-def]
    """A co-host publishing with ``publisher``'s knobs, and one viewer of the separate tracks."""
    publishing = asyncio.create_task(
        run_probe(
            ProbeSpec(
                url=f"{live.url}/whip/demo",
                kind="whip",
                duration=SETTLE + watch_for + 2,
                options={"slot": 1, "tone_hz": COHOST_TONE_HZ, "knobs": publisher},
            )
        )
    )
    await asyncio.sleep(SETTLE)
    logs: list[Timeline] = []
    spec = ProbeSpec(
        url=f"{live.url}/whep/demo", kind="whep", duration=watch_for, options={"cohost": "separate"}
    )
    result = await run_probe(spec, on_log=logs.append)
    published = await publishing
    assert published.success, published.error
    assert result.success, result.error
    return result, logs[0]


def watched(cohost: Timeline, end: float | None) -> list[AudioBlock]:
    """The co-host's audio blocks the viewer had by the end of its watch (``end``, monotonic)."""
    return [b for b in cohost.audio_blocks if end is None or b.at <= end]


def mutes_within(cohost: Timeline, end: float | None, every: float, length: float) -> int:
    """The publisher's mute windows with co-host audio received before and after them, on
    the room's send clock for the co-host (its capture clock plus its and the relay's
    latency): the gaps a viewer can count. Opus shifts a gap 6.5 ms early and a block lasts
    20 ms, so a 10 ms margin tells a window with a block after it from one without."""
    blocks, points = watched(cohost, end), cohost.sync["audio"]
    first = to_sender_time(points, blocks[0].stream_time)
    last = to_sender_time(points, blocks[-1].stream_time + blocks[-1].seconds)
    assert first is not None and last is not None
    lag = PIPELINE_LATENCY + RELAY_LATENCY
    starts = (
        k * every + lag for k in range(math.ceil((first - lag) / every), math.floor((last - lag) / every) + 1)
    )
    return sum(1 for start in starts if first + 0.01 < start and start + length + 0.01 < last)


@pytest.mark.slow(seconds=13)
async def test_a_cohost_echo_and_mutes_are_measured_as_injected(room) -> None:
    knobs = Knobs(echo_gain=0.3, echo_delay=0.12, mute_every=4.0, mute_for=0.3)
    async with room() as live:
        result, log = await watch_cohost(live, knobs, watch_for=8)
    echo = result.cohost.echo
    assert echo["detected"] is True, echo
    assert echo["delay_seconds"] == pytest.approx(0.12, abs=0.010)
    assert echo["return_loss_db"] == pytest.approx(20 * math.log10(1 / 0.3), abs=3)  # 10.46 dB
    if result.probe_host.overloaded:
        # The room runs in this process: a loop held for hundreds of milliseconds holds its
        # relay too, and the gaps that makes are real gaps in what the viewer got, beside the
        # mutes. The result says so; the counts are judged on a host that kept up.
        return
    cohost = log.participants["cohost"]
    due = mutes_within(cohost, log.end, 4.0, 0.3)
    blocks = watched(cohost, log.end)
    gaps = dropouts([b.stream_time for b in blocks], [b.seconds for b in blocks])
    assert due >= 1
    assert result.cohost.audio["dropouts"]["count"] == due == gaps.count
    assert all(abs((end - start) - 0.3) <= 0.020 for start, end in gaps.gaps), gaps.gaps
    # The host was not muted, and its tone does not return in its own track.
    assert result.audio.dropouts["count"] == 0


@pytest.mark.slow(seconds=11)
async def test_the_rooms_cohost_noise_sets_the_snr_and_is_no_echo(room) -> None:
    async with room(cohost_noise_db=10.0) as live:
        result, _ = await watch_cohost(live, Knobs(), watch_for=6)
    # 10 dB below the marker; Opus drops the noise above 20 kHz, so it reads about 0.9 dB high.
    assert result.cohost.audio["snr_db"] == pytest.approx(10.0, abs=3)
    # The marker (amplitude 0.5) is -6.02 dBFS as AES17 counts it; the noise 10 dB below that.
    assert result.cohost.audio["noise_floor_dbfs"] == pytest.approx(-16.02, abs=3)
    assert result.cohost.echo["detected"] is False
    assert result.audio.snr_db is not None and result.audio.snr_db > 40  # the host's track is clean


async def test_the_rooms_cohost_echo_is_measured_as_injected(room) -> None:
    async with room(cohost_echo_gain=0.5, cohost_echo_delay=0.25) as live:
        result, _ = await watch_cohost(live, Knobs(), watch_for=6)
    echo = result.cohost.echo
    assert echo["detected"] is True, echo
    assert echo["delay_seconds"] == pytest.approx(0.25, abs=0.010)
    assert echo["return_loss_db"] == pytest.approx(20 * math.log10(1 / 0.5), abs=3)  # 6.02 dB


def test_the_bench_counts_no_false_echo_in_a_small_sample(tmp_path: Path) -> None:
    # bench/cohost_audio.py's false-alarm count, in two runs instead of twenty.
    summary = tmp_path / "cohost_audio.json"
    done, figures = run_bench(
        "cohost_audio.py", "--only none --runs 2 --parallel 2 --watch 4", summary, timeout=120
    )
    assert done.returncode == 0, done.stdout
    assert figures["none"] == {"runs": 2, "succeeded": 2, "false_alarms": 0, "measured": 2}
