"""The ProbeResult contract: stable field paths, null for what was not measured."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from qoe.errors import ConnectError
from qoe.redact import redact_url
from qoe.report import host_note, results_table
from qoe.result import ProbeResult, field_paths, get_path

CONTRACT = [
    "probe",
    "kind",
    "target",
    "profile",
    "started_at",
    "duration_seconds",
    "success",
    "error",
    "join.total_seconds",
    "join.phases",
    "video.frames",
    "video.fps",
    "video.freeze_count",
    "video.freeze_seconds",
    "video.pause_count",
    "video.stall_ratio",
    "video.dropped_frames",
    "video.width",
    "video.height",
    "latency.glass_to_glass_seconds.p50",
    "latency.glass_to_glass_seconds.p95",
    "latency.glass_to_glass_seconds.max",
    "av_sync.offset_seconds.median",
    "av_sync.offset_seconds.p95_abs",
    "av_sync.samples",
    "chat.echo_seconds.p50",
    "chat.echo_seconds.p95",
    "chat.echo_seconds.max",
    "chat.sent",
    "chat.lost",
    "cohost.offset_seconds.median",
    "cohost.av_offset_seconds.median",
]


def test_every_contract_path_is_in_the_schema() -> None:
    paths = set(field_paths())
    assert [p for p in CONTRACT if p not in paths] == []


def test_unmeasured_figures_are_null_not_zero() -> None:
    data = json.loads(ProbeResult(probe="p", kind="whep", target="t").to_json())
    for path in CONTRACT:
        if path.split(".")[0] in ("video", "latency", "av_sync", "chat", "cohost"):
            assert get_path(data, path) is None, path


def test_round_trip_through_json() -> None:
    result = ProbeResult(probe="p", kind="whep", target="t", success=True)
    result.video.fps = 29.97
    result.join.phases = {"signaling": 0.01}
    again = ProbeResult.from_dict(json.loads(result.to_json()))
    assert again == result


def test_failure_keeps_one_line_and_the_kind() -> None:
    result = ProbeResult(probe="p", kind="whep", target="t", success=True)
    result.fail(ConnectError("cannot connect\nsecond line"))
    assert (result.success, result.error.kind, result.error.message) == (
        False,
        "connect",
        "cannot connect",
    )
    result.fail(RuntimeError("bug"))
    assert result.error.kind == "internal"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8080/whep/demo", "http://127.0.0.1:8080/whep/demo"),
        (
            "https://cdn.example/whep/r?token=s3cret&x=1",
            "https://cdn.example/whep/r?token=***&x=***",
        ),
        ("https://user:pw@cdn.example/whep/r", "https://user:***@cdn.example/whep/r"),
        ("rtmp://ingest.example/live/streamkey123", "rtmp://ingest.example/live/***"),
    ],
)
def test_secrets_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_table_says_when_its_host_was_overloaded() -> None:
    calm, busy = (ProbeResult(probe=name, kind="whep", target="t") for name in "ab")
    busy.probe_host.overloaded = True
    busy.probe_host.loop_lag_seconds["max"] = 0.180
    busy.probe_host.cpu_busy_ratio = 0.93
    assert host_note([calm]) is None
    note = host_note([calm, busy])
    assert note is not None and note.startswith("note: this machine was overloaded during 1 of 2 runs")
    assert "180 ms late" in note and "93% busy" in note
    table = results_table([calm, busy]).splitlines()
    assert table[0].split()[:2] == ["probe", "profile"] and [row.split()[0] for row in table[2:]] == [
        "a",
        "b",
    ]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtmp://h/live/KEY/", "rtmp://h/live/***/"),
        ("http://h/whep/r?SECRET", "http://h/whep/r?***"),
        ("http://h/whep/r;jsessionid=abc?x=1", "http://h/whep/r;***?x=***"),
    ],
)
def test_secrets_in_the_forms_redaction_used_to_miss(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_servers_hostile_text_never_reaches_a_result_as_it_was() -> None:
    result = ProbeResult(probe="p", kind="whep", target="t")
    body = "\x1b[31mboom\x1b[0m\x00 at rtmp://h/live/KEY: see http://h/x?token=s3cret " + "z" * 5000
    result.fail(ConnectError(body))
    assert result.error is not None
    message = result.error.message
    assert message.startswith("boom at rtmp://h/live/***: see http://h/x?token=*** zzz")
    assert not any(bad in message for bad in ("\x1b", "\x00", "KEY", "s3cret"))
    assert len(message) <= 300
    ET.fromstring(f"<m>{message}</m>")  # safe inside JUnit XML
