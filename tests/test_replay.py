"""Every figure comes from the run's event log: a saved log gives the probe's very result.

Each case runs a real probe against a real server, saves its event log as JSON, loads it
again and computes the result with no probe running (:func:`qoe.metrics.result_of`). The two
results must be equal field for field, and each case first checks that the run measured
something, so an empty log cannot pass for a faithful one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from probes import ProbeSpec, run_probe
from probes.ffmpeg import RtmpPublisher
from qoe import eventlog, metrics
from qoe.media import Knobs
from qoe.result import ProbeResult
from qoe.timeline import Timeline
from tests.servers import NginxRtmp, nginx_rtmp

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # probes recorded and replayed beside their room


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmp]:
    with nginx_rtmp(tmp_path_factory.mktemp("nginx")) as server:
        yield server


async def recorded(spec: ProbeSpec) -> tuple[ProbeResult, Timeline]:
    logs: list[Timeline] = []
    result = await run_probe(spec, on_log=logs.append)
    assert len(logs) == 1
    return result, logs[0]


def assert_replays(result: ProbeResult, log: Timeline) -> None:
    saved = eventlog.dumps(log)
    replayed = metrics.result_of(eventlog.loads(saved))
    assert replayed.to_dict() == result.to_dict()


async def test_a_whep_viewer_replays(room) -> None:  # type: ignore[no-untyped-def]
    async with room(av_offset=0.08, freeze_every=2.0, freeze_for=0.4) as live:
        result, log = await recorded(ProbeSpec(url=f"{live.url}/whep/demo", kind="whep", duration=5))
    assert result.success, result.error
    assert (result.video.frames or 0) > 100 and (result.video.freeze_count or 0) >= 1
    assert result.av_sync.offset_seconds["median"] is not None
    assert len(log.loop_ticks) > 50 and log.role == "viewer"
    assert_replays(result, log)


async def test_an_rtmp_viewer_replays(nginx: NginxRtmp) -> None:
    async with RtmpPublisher(nginx.rtmp_url("replay"), knobs=Knobs(av_offset=-0.1)) as publisher:
        await asyncio.wait_for(publisher.publishing.wait(), 5)
        result, log = await recorded(ProbeSpec(url=nginx.rtmp_url("replay"), kind="rtmp", duration=4))
    assert result.success, result.error
    assert (result.video.frames or 0) > 60 and result.av_sync.offset_seconds["median"] is not None
    assert result.network == log.network
    assert_replays(result, log)


async def test_a_chat_probe_replays(room) -> None:  # type: ignore[no-untyped-def]
    async with room(chat_delay=0.03, chat_drop_every=5) as live:
        url = live.url.replace("http://", "ws://") + "/chat/demo"
        result, log = await recorded(ProbeSpec(url=url, kind="chat", duration=4, options={"rate": 10}))
    assert result.success, result.error
    assert (result.chat.sent or 0) >= 10 and (result.chat.lost or 0) >= 1
    assert len(log.chat_sent) == result.chat.sent
    assert_replays(result, log)


@pytest.mark.slow(seconds=10)
async def test_a_cohost_run_and_its_interactions_replay(room) -> None:  # type: ignore[no-untyped-def]
    async with room(cohost_offset=0.15) as live:
        cohost = asyncio.create_task(
            run_probe(
                ProbeSpec(
                    url=f"{live.url}/whip/demo",
                    kind="whip",
                    duration=10,
                    options={"slot": 1, "tone_hz": 1500.0, "knobs": Knobs(av_offset=0.06)},
                )
            )
        )
        await asyncio.sleep(2.5)  # the room places a WHIP publisher by its first RTCP report
        runs = await asyncio.gather(
            *(
                recorded(
                    ProbeSpec(
                        url=f"{live.url}/whep/demo",
                        kind="whep",
                        duration=6,
                        options={"cohost": mode, "interact_every": 1.0},
                    )
                )
                for mode in ("mixed", "separate")
            )
        )
        assert (await cohost).success
    for result, log in runs:
        assert result.success, result.error
        # Something measured (a busy host may see fewer seconds); the point is the replay.
        assert (result.cohost.samples or 0) >= 1 and result.cohost.offset_seconds["median"] is not None
        # The host answers on camera each second; a host too busy to keep up may not within 6 s.
        assert result.chat.interaction_seconds["p50"] is not None or result.probe_host.overloaded
        assert "cohost" in log.participants and log.asked
        assert_replays(result, log)


@pytest.mark.slow(seconds=10)
def test_qoe_replay_prints_what_qoe_probe_printed(cli, room_proc, tmp_path) -> None:  # type: ignore[no-untyped-def]
    events = tmp_path / "run.json"
    with room_proc("--av-offset", "0.05") as url:
        probed = cli("probe", f"{url}/whep/demo", "--duration", "3", "--json", "--events", str(events))
    assert probed.returncode == 0, probed.stderr
    replayed = cli("replay", str(events), "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == json.loads(probed.stdout)
    assert json.loads(probed.stdout)["video"]["frames"] > 60


def test_a_file_that_is_not_an_event_log_is_one_clear_line(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    wrong = tmp_path / "result.json"
    wrong.write_text('{"probe": "whep"}')
    done = cli("replay", str(wrong))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"qoe replay: error: {wrong}: not a qoe-event-log/1 document (format None)"
    ]
