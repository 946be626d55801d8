"""The qoe command as a user meets it: help, usage errors, exit codes."""

from __future__ import annotations

import json

import pytest


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
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli, args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr


def test_room_on_a_busy_port_is_a_config_error(room_proc, cli) -> None:
    with room_proc() as url:
        port = url.rsplit(":", 1)[1]
        done = cli("room", "--port", port)
    assert done.returncode == 2
    assert "cannot serve on 127.0.0.1:" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
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
    assert all(r["success"] and r["video"]["freeze_count"] == 0 for r in results)
