"""Faults around a probe, as an operator meets them: the room killed, frozen or restarted
while a viewer watches; a scrape of a target that hangs; a Pushgateway that refuses; a disk
that fills while results are written.

Each fault must end in a classified result or a one-line error with its exit code, within
the run's deadline, with no traceback, and without losing what was already measured or
written. Everything runs as the ``qoe`` command, against ``qoe room`` processes on loopback
stopped by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, qoe
from tests.servers import stop_process

FULL = "/dev/full"
"""A file every write to fails with ENOSPC: a full disk, without root or a tiny filesystem."""


@contextlib.contextmanager
def room_at(port: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``qoe room --port PORT`` in its own process: (the process, its URL); stopped by pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qoe", "room", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"serving (http://\S+)", proc.stdout.readline())
        if match is None:
            raise RuntimeError(f"qoe room did not start (exit {proc.poll()})")
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process takes no SIGTERM
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def room_url() -> Iterator[str]:
    with room_at(0) as (_, url):
        yield url


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr


def fleet_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        'slos = ["success min >= 1"]\n[fleet]\nduration = 1.5\ncount = 1\nwarmup = 0\nwait = 10\n'
        f'[[targets]]\nname = "room"\nurl = "{url}/whep/demo"\n'
    )
    return path


# -- a full disk ----------------------------------------------------------------------------


def test_a_full_disk_under_the_results_file_is_one_line_and_the_verdicts_still_out(
    tmp_path: Path, room_url: str
) -> None:
    junit = tmp_path / "junit.xml"
    done = qoe("fleet", "run", str(fleet_file(tmp_path, room_url)), "--json-out", FULL, "--junit", str(junit))
    no_traceback(done.stderr)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"qoe fleet run: error: cannot write {FULL}: No space left on device"
    )
    assert "1 of 1 SLOs hold" in done.stdout  # judged, and said, before the error
    assert junit.read_text().count("<testcase") == 1


def test_a_full_disk_under_junit_loses_no_result_already_written(tmp_path: Path, room_url: str) -> None:
    results = tmp_path / "results.jsonl"
    done = qoe(
        "fleet", "run", str(fleet_file(tmp_path, room_url)), "--json-out", str(results), "--junit", FULL
    )
    no_traceback(done.stderr)
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.splitlines()[-1] == f"qoe fleet run: error: cannot write {FULL}: No space left on device"
    )
    (line,) = results.read_text().splitlines()
    assert json.loads(line)["success"] is True


def test_a_full_disk_under_the_event_log_keeps_the_printed_result(room_url: str) -> None:
    done = qoe("probe", f"{room_url}/whep/demo", "--duration", "1.5", "--json", "--events", FULL)
    no_traceback(done.stderr)
    assert done.returncode == 2
    assert done.stderr.strip() == f"qoe probe: error: --events {FULL}: No space left on device"
    result = json.loads(done.stdout)  # the whole result, printed before the log was saved
    assert result["success"] is True and result["video"]["frames"] > 20
