"""The qoe command as a user meets it: help, usage errors, exit codes."""

from __future__ import annotations

import argparse
import json

import pytest

from qoe.cli import build_parser
from qoe.cli.common import address, listen_address, listen_port, port

PROXY = ["netem", "proxy", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9", "--profile", "3g"]
"""A good ``qoe netem proxy`` line; a case's own --listen or --to comes after, and wins."""


def test_help_lists_the_commands(cli) -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("demo", "room", "probe", "publish"):
        assert command in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", "http://127.0.0.1:1/whep/x", "--duration", "-1"], "must be positive"),
        (
            ["probe", "http://127.0.0.1:1/whep/x", "--duration", "ten"],
            "expected a number of seconds",
        ),
        (["probe", "ftp://example/x"], "cannot tell the probe kind"),
        (["room", "--freeze-for", "0.5"], "--freeze-for needs --freeze-every"),
        (["room", "--freeze-every", "1", "--freeze-for", "2"], "shorter than --freeze-every"),
        (["demo", "--viewers", "0"], "--viewers must be between 1 and 200"),
        (["nonsense"], "invalid choice"),
        # ports: checked when parsed, never an OverflowError from the socket layer
        (
            ["room", "--port", "70000"],
            "qoe room: error: argument --port: a port is from 0 (any free one) to 65535",
        ),
        (["room", "--port", "http"], "argument --port: expected a port number, got 'http'"),
        (["serve", "--fleet", "examples/fleet.toml", "--port", "-1"], "argument --port: a port is from 0"),
        ([*PROXY, "--listen", "127.0.0.1"], "argument --listen: expected HOST:PORT, got '127.0.0.1'"),
        ([*PROXY, "--listen", ":5000"], "argument --listen: expected HOST:PORT"),
        (
            [*PROXY, "--listen", "127.0.0.1:99999"],
            "argument --listen: a port is from 0 (any free one) to 65535",
        ),
        ([*PROXY, "--listen", "::1:5000"], "argument --listen: put an IPv6 host in brackets"),
        (
            [*PROXY, "--listen", "127.0.0.1:0", "--to", "127.0.0.1:0"],
            "argument --to: a port is from 1 to 65535",
        ),
        ([*PROXY, "--to", "127.0.0.1:x"], "argument --to: expected a port number"),
        # qoe publish takes WHIP and RTMP URLs only
        (
            ["publish", "ws://127.0.0.1:8080/chat/demo"],
            "cannot publish to ws://127.0.0.1:8080/chat/demo (scheme ws://): expected a WHIP http(s):// URL "
            "or an rtmp(s):// URL",
        ),
        (["publish", "127.0.0.1:8080/whip/x"], "expected a WHIP http(s):// URL or an rtmp(s):// URL"),
        (["publish", "--kind", "whip", "rtmp://127.0.0.1/live/x"], "--kind whip does not publish to rtmp://"),
        (["probe", "http://127.0.0.1:1/whip/x"], "is a WHIP URL, to publish to; use 'qoe publish'"),
        # usage checks come before any banner or work (one line on stderr: no banner above it)
        (["demo", "--profile", "5g"], "unknown profile '5g'"),
        (["demo", "--freeze-for", "1"], "--freeze-for needs --freeze-every"),
        (["probe", "http://127.0.0.1:1/whep/x", "--profile", "5g"], "unknown profile '5g'"),
        (["publish", "http://127.0.0.1:1/whip/x", "--profile", "5g"], "unknown profile '5g'"),
        (
            ["fleet", "run", "examples/fleet.toml", "--concurrency", "0"],
            "argument --concurrency: must be at least 1",
        ),
        (["fleet", "run", "examples/fleet.toml", "--workers", "0"], "argument --workers: must be at least 1"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli, args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr


def test_port_types_take_what_each_command_can_use() -> None:
    assert port("1") == 1 and port("65535") == 65535
    assert listen_port("0") == 0  # any free port: the servers' banners name the one they got
    assert address("localhost:1") == ("localhost", 1)
    assert listen_address("[::1]:0") == ("::1", 0)
    for bad, type_ in (("0", port), ("65536", listen_port), ("127.0.0.1:0", address), ("[::1]", address)):
        with pytest.raises(argparse.ArgumentTypeError):
            type_(bad)


def test_fleet_runs_old_json_spelling_still_writes_the_file_with_a_warning(capsys) -> None:
    args = build_parser().parse_args(["fleet", "run", "fleet.toml", "--json", "results.jsonl"])
    assert args.json_out == "results.jsonl"
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1
    assert "--json FILE is deprecated, use --json-out FILE" in warning[0]


def test_a_failed_publish_prints_its_failure_only(cli) -> None:
    done = cli("publish", "http://127.0.0.1:1/whip/x", "--duration", "1")
    assert done.returncode == 1
    assert done.stdout == ""  # no "published 0 frames" line, which would read as a success
    assert "qoe: publish failed: " in done.stderr


def test_room_on_a_busy_port_is_a_config_error(room_proc, cli) -> None:
    with room_proc() as url:
        port = url.rsplit(":", 1)[1]
        done = cli("room", "--port", port)
    assert done.returncode == 2
    assert "cannot serve on 127.0.0.1:" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow(seconds=20)
def test_demo_prints_a_table_and_json(cli) -> None:
    table = cli("demo", "--duration", "3", "--viewers", "2")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0]
    for column in ("join ms", "freezes", "g2g p50 ms", "A/V ms"):
        assert column in header
    assert "viewer-1" in table.stdout and "viewer-2" in table.stdout
    as_json = cli("demo", "--duration", "3", "--viewers", "2", "--json")
    assert as_json.returncode == 0
    results = json.loads(as_json.stdout)
    assert [r["probe"] for r in results] == ["viewer-1", "viewer-2"]
    assert all(r["success"] for r in results)
    # No freezes, unless the probe said its machine was too busy to play smoothly.
    assert all(r["video"]["freeze_count"] == 0 or r["probe_host"]["overloaded"] for r in results)
