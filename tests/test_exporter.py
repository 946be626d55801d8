"""``qoe serve``: /metrics after one cycle, /probe within the scrape timeout and its
allow-list, and an exporter that keeps serving whatever its probes do."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import probes
from probes.base import ProbeSpec, Watch
from qoe import metrics
from qoe.exporter.metrics import ExporterCollector, ResultCollector
from qoe.exporter.server import Exporter
from qoe.fleet import parse_fleet
from qoe.result import ProbeResult, VideoSection
from qoe.timeline import ChatReceived, ChatSent, RunInfo, Timeline, VideoFrameEvent
from tests.test_room_limits import half_sent_connections_close
from tests.whep_front import redirects

MEASURED_BY_WHEP = {
    "qoe_probe_success",
    "qoe_probe_duration_seconds",
    "qoe_probe_last_run_timestamp_seconds",
    "qoe_join_seconds",
    "qoe_video_fps",
    "qoe_video_stall_ratio",
    "qoe_glass_to_glass_seconds",
    "qoe_av_offset_seconds",
    "qoe_av_offset_abs_seconds",
    "qoe_probe_runs",
    "qoe_video_freezes",
    "qoe_video_frozen_seconds",
    "qoe_video_pauses",
    "qoe_video_stalls_over_threshold",
    "qoe_video_watched_seconds",
    "qoe_video_dropped_frames",
    "qoe_video_decode_errors",
    "qoe_probe_loop_lag_seconds",
    "qoe_probe_host_cpu_busy_ratio",
    "qoe_probe_host_cpu_stolen_ratio",
    "qoe_join_duration_seconds",
}


def fleet_for(url: str, extra: str = "") -> str:
    return f"""\
[fleet]
duration = 3
interval = 30
allow = ["http://127.0.0.1:*/whep/allowed-*"]
[[targets]]
name = "demo"
url = "{url}/whep/demo"
labels = {{ region = "local" }}
{extra}"""


async def scrape(url: str, **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.text()


@pytest.mark.slow
async def test_metrics_after_one_cycle_show_every_family(room) -> None:
    async with room() as live, Exporter(parse_fleet(fleet_for(live.url)), port=0) as exporter:
        for _ in range(200):
            if exporter.rounds:
                break
            await asyncio.sleep(0.1)
        status, text = await scrape(f"{exporter.url}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    own = [*ResultCollector._families(), *ExporterCollector._families()]
    defined = {f.name + ("_info" if f.type == "info" else "") for f in own}
    assert defined == set(families)
    for name in MEASURED_BY_WHEP:
        samples = [s for s in families[name].samples if s.labels.get("target") == "demo"]
        assert samples, f"{name} has no sample for the probe"
        assert all(s.labels["kind"] == "whep" and s.labels["profile"] == "none" for s in samples)
    success = families["qoe_probe_success"].samples[0]
    assert success.value == 1.0
    phases = {s.labels["phase"] for s in families["qoe_join_seconds"].samples}
    assert phases == {
        "total",
        "signaling",
        "ice_connected",
        "dtls_connected",
        "first_rtp_packet",
        "first_decoded_frame",
    }
    assert [s.labels for s in families["qoe_target_info"].samples] == [{"target": "demo", "region": "local"}]
    assert families["qoe_build_info"].samples[0].labels["version"]
    # Not measured by a WebRTC viewer: listed as families, never exported as zero.
    assert not families["qoe_chat_echo_seconds"].samples
    assert not families["qoe_cohost_offset_seconds"].samples


@pytest.mark.slow
async def test_probe_answers_within_the_scrape_timeout(room) -> None:
    async with room() as live, Exporter(parse_fleet(fleet_for(live.url)), port=0, schedule=False) as exporter:
        started = time.monotonic()
        status, text = await scrape(
            f"{exporter.url}/probe?target=demo", **{"X-Prometheus-Scrape-Timeout-Seconds": "4"}
        )
        took = time.monotonic() - started
        by_url_status, _ = await scrape(
            f"{exporter.url}/probe?target={live.url}/whep/allowed-room",
            **{"X-Prometheus-Scrape-Timeout-Seconds": "3"},
        )
    assert status == 200 and took < 4.0
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["qoe_probe_success"].samples[0].value == 1.0
    assert families["qoe_probe_duration_seconds"].samples[0].value < 4.0
    assert by_url_status == 200  # allowed by pattern (the room has no such room: a failed probe)


@contextlib.asynccontextmanager
async def listening(host: str) -> AsyncIterator[tuple[int, list[object]]]:
    """A TCP listener on ``host`` that notes every connection made to it: (its port, the
    peers that connected), for a test to show that nothing was."""
    connections: list[object] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer.get_extra_info("peername"))
        writer.close()

    async with await asyncio.start_server(record, host, 0) as listener:
        yield listener.sockets[0].getsockname()[1], connections


async def test_probe_refuses_targets_outside_the_fleet_without_contacting_them() -> None:
    fleet = parse_fleet(fleet_for("http://127.0.0.1:1"))
    exporter_of = Exporter(fleet, port=0, schedule=False)
    async with listening("127.0.0.1") as (port, connections), exporter_of as exporter:
        for target in (
            f"http://127.0.0.1:{port}/whep/demo",
            f"http://127.0.0.1:{port}/whep/x?token=s3cret",
            "not-a-target",
            f"127.0.0.1:{port}",
            # A pattern's * must not cross into user information, a query or another segment.
            f"http://127.0.0.1:1@127.0.0.1:{port}/whep/allowed-x",
            f"http://127.0.0.1:{port}/whip/victim%3F/whep/allowed-x",
            f"http://127.0.0.1:{port}/whep/allowed-x/../../whip/victim",
        ):
            status, body = await scrape(f"{exporter.url}/probe?target={quote(target, safe=':/')}")
            assert status == 403, target
            assert "s3cret" not in body
        # An allowed URL still never publishes: /probe runs viewers.
        allowed = quote(f"http://127.0.0.1:{port}/whep/allowed-x", safe=":/")
        status, body = await scrape(f"{exporter.url}/probe?target={allowed}&kind=whip")
        assert (status, body) == (403, "/probe runs viewers only, not 'whip'\n")
        status, _ = await scrape(f"{exporter.url}/probe")
        assert status == 400
        await asyncio.sleep(0.2)
    assert connections == []


async def test_an_allowed_server_cannot_send_the_probe_elsewhere() -> None:
    """A URL that /probe may reach by pattern redirects to another host: the probe follows
    no further, and the other host hears nothing (neither the offer nor a DELETE)."""
    async with listening("127.0.0.2") as (other, elsewhere):
        table = {"/whep/allowed-x": (307, f"http://127.0.0.2:{other}/whep/allowed-x")}
        async with redirects(table) as (base, hops):
            exporter_fleet = parse_fleet(fleet_for("http://127.0.0.1:1"))
            async with Exporter(exporter_fleet, port=0, schedule=False) as exporter:
                status, body = await scrape(
                    f"{exporter.url}/probe?target={quote(base, safe=':/')}/whep/allowed-x"
                )
            await asyncio.sleep(0.2)
    assert status == 200
    assert "qoe_probe_success{" in body and "} 0.0" in body.split("qoe_probe_success{")[1].splitlines()[0]
    assert len(hops) == 1
    assert elsewhere == []
    fence = Exporter(exporter_fleet, port=0, schedule=False).fence(f"{base}/whep/allowed-x")
    assert fence(f"{base}/whep/sessions/1")  # the session on the target's own host
    assert fence("http://127.0.0.1:9/whep/allowed-y")  # another URL the patterns admit
    assert not fence(f"http://127.0.0.2:{other}/whep/sessions/1")
    assert not fence(f"http://u:p@{base.removeprefix('http://')}/whep/sessions/1")


def test_malformed_fleet_stops_serve_at_start(cli, tmp_path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(fleet_for("http://127.0.0.1:1").replace("duration = 3", 'duration = "3"'))
    done = cli("serve", "--fleet", str(path), "--port", "0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"{path}:2: fleet.duration: must be a number, got '3'" in lines[0]


async def test_probes_that_crash_or_hang_never_stop_the_exporter(monkeypatch) -> None:
    async def crash(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
        raise RuntimeError("a bug in a probe")

    async def hang(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
        await asyncio.Event().wait()

    monkeypatch.setitem(probes.PROBES, "crash", crash)
    monkeypatch.setitem(probes.PROBES, "hang", hang)
    extra = """
[[targets]]
name = "crashes"
url = "http://127.0.0.1:1/whep/x"
kind = "crash"
interval = 1
[[targets]]
name = "hangs"
url = "http://127.0.0.1:1/whep/y"
kind = "hang"
duration = 1
"""
    fleet = parse_fleet(fleet_for("http://127.0.0.1:1", extra))
    async with Exporter(fleet, port=0) as exporter:
        monkeypatch.setattr("probes.base.TEARDOWN_SECONDS", 1.0)
        seen: dict[str, float] = {}
        for _ in range(100):
            status, text = await scrape(f"{exporter.url}/metrics")
            assert status == 200
            health, _ = await scrape(f"{exporter.url}/healthz")
            assert health == 200
            families = {f.name: f for f in text_string_to_metric_families(text)}
            seen = {s.labels["target"]: s.value for s in families["qoe_probe_success"].samples}
            failures = {
                (s.labels["target"], s.labels["error"]): s.value
                for s in families["qoe_probe_failures"].samples
            }
            if {"crashes", "hangs"} <= set(seen) and failures.get(("crashes", "internal"), 0) >= 2:
                break
            await asyncio.sleep(0.1)
    assert seen["crashes"] == 0.0 and seen["hangs"] == 0.0
    assert failures[("hangs", "timeout")] >= 1
    assert failures[("crashes", "internal")] >= 2  # its schedule went on after the crash


def test_stall_counters_add_up_every_run() -> None:
    # A stream that stopped 2 s before the run ended: no freeze, but stalled time, so the
    # frozen seconds' rate over watched seconds stays the stall ratio.
    registry = CollectorRegistry()
    collector = ResultCollector(registry)
    result = ProbeResult(probe="p", kind="whep", target="t", success=True)
    result.video = VideoSection(
        freeze_count=1,
        freeze_seconds=0.6,
        pause_count=0,
        pause_seconds=0.0,
        trailing_seconds=2.0,
        stalls_over_seconds={"threshold": 0.5, "count": 1, "seconds": 0.6},
        watched_seconds=6.5,
    )
    collector.observe(result, finished_at=0.0)
    collector.observe(result, finished_at=60.0)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    value = {name: families[name].samples[0].value for name in families if families[name].samples}
    assert value["qoe_video_frozen_seconds"] == pytest.approx(5.2)
    assert value["qoe_video_stalls_over_threshold"] == 2
    assert value["qoe_video_frozen_seconds"] / value["qoe_video_watched_seconds"] == pytest.approx(2.6 / 6.5)


def test_cohost_audio_figures_are_exported_per_participant() -> None:
    registry = CollectorRegistry()
    collector = ResultCollector(registry)
    result = ProbeResult(probe="p", kind="whep", target="t", success=True)
    result.audio.dropouts = {"count": 0, "seconds": 0.0, "missing_markers": 0}
    result.audio.snr_db = 90.0
    result.cohost.echo = {"detected": True, "delay_seconds": 0.12, "return_loss_db": 10.5}
    result.cohost.audio = {
        "snr_db": 20.0,
        "noise_floor_dbfs": -23.0,
        "dropouts": {"count": 2, "seconds": 0.6, "missing_markers": 1},
    }
    collector.observe(result, finished_at=0.0)
    collector.observe(result, finished_at=60.0)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}

    def values(name: str) -> dict[str | None, float]:
        return {s.labels.get("participant"): s.value for s in families[name].samples}

    assert values("qoe_cohost_echo_detected") == {None: 1.0}
    assert values("qoe_cohost_echo_delay_seconds") == {None: 0.12}
    assert values("qoe_cohost_echo_return_loss_decibels") == {None: 10.5}
    assert values("qoe_audio_snr_decibels") == {"host": 90.0, "cohost": 20.0}
    assert values("qoe_audio_noise_floor_dbfs") == {"cohost": -23.0}  # the host's not measured
    assert values("qoe_audio_dropouts") == {"host": 0.0, "cohost": 4.0}  # two runs added up
    assert values("qoe_audio_dropout_seconds") == {"host": 0.0, "cohost": pytest.approx(1.2)}
    assert values("qoe_audio_missing_markers") == {"host": 0.0, "cohost": 2.0}


def test_figures_a_kind_does_not_measure_are_null_and_never_exported() -> None:
    # A WHEP viewer sends no chat and a chat probe watches no video: their results say null
    # for those figures (as the README promises), and the exporter leaves them out rather
    # than counting zeros that would read as "no messages lost" or "no freezes".
    viewer = Timeline(("first_frame",), start=0.0, started_at=1e9, end=3.0, role="viewer")
    viewer.run = RunInfo(probe="viewer", kind="whep", target="t")
    viewer.video = [VideoFrameEvent(i / 30, 1e9 + i / 30, i / 30, 64, 36) for i in range(90)]
    talker = Timeline(
        ("receiver_connected", "sender_connected"), start=0.0, started_at=1e9, end=3.0, role="chat"
    )
    talker.run = RunInfo(probe="talker", kind="chat", target="t")
    talker.chat_sent = [ChatSent("a", 0, 1e9 + 1.0), ChatSent("b", 1, 1e9 + 1.2)]
    talker.chat_received = [ChatReceived("a", 1e9 + 1.05)]
    whep, chat = metrics.result_of(viewer), metrics.result_of(talker)

    chat_fields = ("sent", "lost", "duplicated", "reordered")
    assert {k: json.loads(whep.to_json())["chat"][k] for k in chat_fields} == dict.fromkeys(chat_fields)
    assert {k: json.loads(chat.to_json())["chat"][k] for k in chat_fields} == {
        "sent": 2,
        "lost": 1,
        "duplicated": 0,
        "reordered": 0,
    }
    assert json.loads(chat.to_json())["video"]["freeze_count"] is None

    registry = CollectorRegistry()
    collector = ResultCollector(registry)
    for result in (whep, chat, whep):
        collector.observe(result, finished_at=0.0)
    families = text_string_to_metric_families(generate_latest(registry).decode())
    kinds = {f.name: {s.labels.get("kind") for s in f.samples} for f in families}
    for name in ("qoe_chat_messages_sent", "qoe_chat_messages_lost", "qoe_chat_echo_seconds"):
        assert kinds[name] == {"chat"}, name
    for name in ("qoe_video_freezes", "qoe_video_frozen_seconds", "qoe_video_watched_seconds"):
        assert kinds[name] == {"whep"}, name


def rss_bytes() -> int:
    """This process's resident memory (the exporter runs in it)."""
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
    return int(kib) * 1024


@pytest.mark.slow
async def test_probes_beyond_the_limit_are_refused_at_once_with_retry_after(room, monkeypatch) -> None:
    # 100 scrapes at once used to start 100 WebRTC viewers, queued on nothing.
    real, running, most, started = probes.PROBES["whep"], 0, 0, 0

    async def counted(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
        nonlocal running, most, started
        running, started = running + 1, started + 1
        most = max(most, running)
        try:
            await real(spec, result, watch)
        finally:
            running -= 1

    monkeypatch.setitem(probes.PROBES, "whep", counted)
    # The limit comes from [fleet] probe_concurrency (default 8), or qoe serve's flag over it.
    assert parse_fleet(fleet_for("http://127.0.0.1:1")).probe_concurrency == 8
    flagged = Exporter(parse_fleet(fleet_for("http://127.0.0.1:1")), probe_concurrency=2)
    assert flagged.stats.probe_limit == 2
    async with room() as live:
        fleet = parse_fleet(fleet_for(live.url).replace("[fleet]\n", "[fleet]\nprobe_concurrency = 4\n"))
        async with (
            Exporter(fleet, port=0, schedule=False) as exporter,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        ):
            assert exporter.stats.probe_limit == 4

            async def one() -> tuple[int, str | None, str]:
                headers = {"X-Prometheus-Scrape-Timeout-Seconds": "4"}
                async with http.get(f"{exporter.url}/probe?target=demo", headers=headers) as r:
                    return r.status, r.headers.get("Retry-After"), await r.text()

            burst = asyncio.gather(*(one() for _ in range(100)))
            await asyncio.sleep(1.0)  # the four admitted are watching now
            before = time.monotonic()
            status, during = await scrape(f"{exporter.url}/metrics")
            metrics_took = time.monotonic() - before
            answers = await burst
            _, after = await scrape(f"{exporter.url}/metrics")
    assert status == 200 and metrics_took < 1.0
    gauges = {s.name: s.value for f in text_string_to_metric_families(during) for s in f.samples}
    assert gauges["qoe_exporter_probe_requests_in_flight"] == 4
    assert gauges["qoe_exporter_probe_requests_limit"] == 4

    ok = [body for code, _, body in answers if code == 200]
    refused = [(retry, body) for code, retry, body in answers if code == 503]
    assert len(ok) + len(refused) == 100
    assert most == 4 and started == len(ok) == 4
    assert all("qoe_probe_success" in body for body in ok)
    for retry, body in refused:
        assert retry is not None and 1 <= int(retry) <= 4  # the first running probe's deadline
        assert body == f"busy: 4 probes are running, the limit; retry in {retry} s\n"
    counters = {s.name: s.value for f in text_string_to_metric_families(after) for s in f.samples}
    assert counters["qoe_exporter_probe_requests_refused_total"] == len(refused) == 96
    assert counters["qoe_exporter_probe_requests_in_flight"] == 0


@pytest.mark.slow(seconds=16)
async def test_a_probe_slower_than_its_interval_skips_turns(room, monkeypatch, caplog) -> None:
    # A 2.5 s probe due every second: before, each run started as the last one ended, its
    # turns silently lost; a loop that queued them would stack runs without end.
    real, spans = probes.PROBES["whep"], []

    async def timed(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
        begun = time.monotonic()
        try:
            await real(spec, result, watch)
        finally:
            spans.append((begun, time.monotonic()))

    monkeypatch.setitem(probes.PROBES, "whep", timed)
    caplog.set_level("WARNING", logger="qoe.exporter.server")
    async with room() as live:
        fleet = parse_fleet(fleet_for(live.url, "duration = 2.5\ninterval = 1\n"))
        assert fleet.targets[0].interval == 1.0
        async with Exporter(fleet, port=0) as exporter:
            for _ in range(150):
                if exporter.rounds >= 2:
                    break
                await asyncio.sleep(0.1)
            status, text = await scrape(f"{exporter.url}/metrics")
            skipped = dict(exporter.stats.skipped)
    assert status == 200 and exporter.rounds >= 2
    spans.sort()
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    # The next run starts at the first turn after the last one ended, not a whole interval later.
    assert all(later[0] - earlier[1] < 1.5 for earlier, later in itertools.pairwise(spans)), spans
    [(key, count)] = skipped.items()
    assert key == ("whep", "whep", "demo", "none") and count >= 2 * (len(spans) - 1)
    counted = {
        s.labels["target"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "qoe_probe_runs_skipped_total"
    }
    assert counted == {"demo": count}
    lines = [r.getMessage() for r in caplog.records if "skipped a turn" in r.getMessage()]
    assert len(lines) == count
    assert lines[0].startswith("probe demo [none]: skipped a turn, its previous run is still going after")


async def test_connections_that_never_finish_a_request_are_closed() -> None:
    fleet = parse_fleet(fleet_for("http://127.0.0.1:1"))
    async with Exporter(fleet, port=0, schedule=False, idle_seconds=1.5) as exporter:
        closed = await half_sent_connections_close(exporter.url, "/healthz", 1.5)
        status, _ = await scrape(f"{exporter.url}/metrics")
    assert status == 200 and len(closed) == 300
    assert min(closed) >= 1.4 and max(closed) <= 3.0, (min(closed), max(closed))
