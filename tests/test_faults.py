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
import datetime as dt
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, qoe, room_server
from tests.servers import free_port, stop_process

FULL = "/dev/full"
"""A file every write to fails with ENOSPC: a full disk, without root or a tiny filesystem."""


def room_at(port: int) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[str], str]]:
    """``qoe room --port PORT`` in its own process: (the process, its URL); stopped by pid."""
    return room_server("--port", str(port))


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


def test_a_full_disk_under_standard_output_is_one_line(room_url: str) -> None:
    """``qoe probe --json > result.json`` on a full disk once ended in a traceback."""
    with open(FULL, "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "qoe", "probe", f"{room_url}/whep/demo", "--duration", "1", "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    no_traceback(done.stderr)
    assert done.returncode == 2
    assert done.stderr.strip() == "qoe probe: error: cannot write the output: No space left on device"


# -- the room killed, frozen, restarted while a viewer watches ------------------------------

TEARDOWN = 5.0
"""What a run may take past its duration to close (probes.base.TEARDOWN_SECONDS)."""
STARTUP = 5.0
"""What ``qoe probe`` may take to start (imports) on a busy two-core machine."""


def probe_process(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qoe", "probe", f"{url}/whep/demo", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def wait_for_viewer(url: str, timeout: float = 20.0) -> None:
    """Until the room shows a viewer: the probe joined, and the fault comes mid-probe."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/rooms/demo", timeout=5) as r:
            if json.load(r)["viewers"] >= 1:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no viewer joined {url} within {timeout:g} s")


def finished(proc: subprocess.Popen[str], within: float) -> tuple[int, dict, str]:
    """The probe's exit code, its JSON result and stderr, once it ended ``within`` seconds."""
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the probe did not finish within {within:g} s") from None
    no_traceback(err)
    return proc.returncode, json.loads(out), err


@pytest.mark.slow
def test_a_room_killed_then_restarted_mid_probe_is_a_disconnect_and_the_room_serves_again() -> None:
    port = free_port()
    with room_at(port) as (room, url):
        began = time.monotonic()
        viewer = probe_process(url, "--duration", "8", "--media-timeout", "2")
        wait_for_viewer(url)
        time.sleep(1.5)  # past the first frame (a join takes 0.1-0.3 s here): the kill comes mid-watch
        room.send_signal(signal.SIGKILL)
        room.wait()
        killed = time.monotonic()
        with room_at(port) as (_, again):  # the same port, a new room: the session is gone
            code, result, err = finished(viewer, 8 + TEARDOWN + STARTUP - (time.monotonic() - began))
            assert code == 1
            assert result["error"]["kind"] == "disconnected", result["error"]
            assert err.strip() == f"qoe: probe failed: disconnected: {result['error']['message']}"
            # It stopped watching once the media timeout passed after the kill (2 s, +-1 s).
            started = dt.datetime.fromisoformat(result["started_at"].replace("Z", "+00:00")).timestamp()
            stopped = started + result["video"]["watched_seconds"]
            assert 1.0 <= stopped - (time.time() - (time.monotonic() - killed)) <= 3.5
            assert result["video"]["frames"] > 20  # what it saw before the kill is kept
            after = qoe("probe", f"{again}/whep/demo", "--duration", "1.5", "--json")
            no_traceback(after.stderr)
            assert after.returncode == 0 and json.loads(after.stdout)["success"] is True


@pytest.mark.slow(seconds=18)
def test_a_room_stopped_for_5_s_mid_probe_is_a_freeze_not_a_failure() -> None:
    with room_at(0) as (room, url):
        viewer = probe_process(url, "--duration", "11", "--media-timeout", "8")
        wait_for_viewer(url)
        time.sleep(1.0)
        room.send_signal(signal.SIGSTOP)
        time.sleep(5.0)
        room.send_signal(signal.SIGCONT)
        code, result, _ = finished(viewer, 11 + TEARDOWN + STARTUP)
    assert code == 0 and result["success"] is True, result["error"]
    video = result["video"]
    assert video["freeze_count"] >= 1
    # The 5 s without media, and at most a few seconds of catching up after it.
    assert 4.5 <= video["freeze_seconds"] <= 9.0, video
    assert video["pause_count"] == 0


# -- a scrape of a target that hangs --------------------------------------------------------


def test_a_scrape_of_a_hung_room_answers_in_time_and_metrics_keep_serving(tmp_path: Path) -> None:
    with room_at(0) as (room, url):
        fleet = tmp_path / "serve.toml"
        fleet.write_text(
            f'[fleet]\nduration = 2\ninterval = 3600\n[[targets]]\nname = "hung"\nurl = "{url}/whep/demo"\n'
        )
        room.send_signal(signal.SIGSTOP)  # takes connections (the kernel's backlog), answers nothing
        serve = subprocess.Popen(
            [sys.executable, "-m", "qoe", "serve", "--fleet", str(fleet), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert serve.stdout is not None
            match = re.search(r"metrics on (http://\S+)/metrics", serve.stdout.readline())
            assert match is not None, serve.poll()
            exporter = match.group(1)
            timeout = 4.0
            scraped: dict[str, object] = {}

            def scrape() -> None:
                request = urllib.request.Request(
                    f"{exporter}/probe?target=hung",
                    headers={"X-Prometheus-Scrape-Timeout-Seconds": str(timeout)},
                )
                began = time.monotonic()
                with urllib.request.urlopen(request, timeout=timeout + 5) as r:
                    scraped.update(status=r.status, body=r.read().decode(), took=time.monotonic() - began)

            hung = threading.Thread(target=scrape)
            hung.start()
            time.sleep(1.0)  # the probe is waiting on the frozen room now
            began = time.monotonic()
            with urllib.request.urlopen(f"{exporter}/metrics", timeout=5) as r:
                assert r.status == 200 and "qoe_exporter_probe_requests_in_flight 1.0" in r.read().decode()
            assert time.monotonic() - began < 1.0
            hung.join(timeout + 5)
            assert scraped["status"] == 200 and float(str(scraped["took"])) < timeout, scraped
            assert re.search(
                r'^qoe_probe_success\{[^}]*target="hung"[^}]*\} 0\.0$', str(scraped["body"]), re.M
            )
            with urllib.request.urlopen(f"{exporter}/healthz", timeout=5) as r:
                assert r.status == 200
        finally:
            stop_process(serve)
            _, err = serve.communicate()
            no_traceback(err)


# -- a Pushgateway that refuses -------------------------------------------------------------


@contextlib.contextmanager
def refusing_gateway() -> Iterator[tuple[str, list[str]]]:
    """A stand-in Pushgateway that answers every push with 500; yields its URL and the paths
    pushed to."""
    pushed: list[str] = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            pushed.append(self.path)
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"storage is broken\n")

        do_POST = do_PUT

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pushed
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("gateway", ["closed", "500"])
def test_a_refusing_pushgateway_is_one_line_and_the_results_are_written(
    tmp_path: Path, room_url: str, gateway: str
) -> None:
    results, junit = tmp_path / "results.jsonl", tmp_path / "junit.xml"
    with contextlib.ExitStack() as stack:
        if gateway == "closed":
            url, pushed = f"http://127.0.0.1:{free_port()}", None
        else:
            url, pushed = stack.enter_context(refusing_gateway())
        done = qoe(
            "fleet", "run", str(fleet_file(tmp_path, room_url)),
            "--json-out", str(results), "--junit", str(junit), "--push-gateway", url,
        )  # fmt: skip
    no_traceback(done.stderr)
    assert done.returncode == 1, done.stderr  # every SLO held; the push failed
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("qoe: push")]
    assert line.startswith(f"qoe: push to {url} failed: ")
    assert ("Connection refused" if gateway == "closed" else "500") in line
    if pushed is not None:
        assert pushed == ["/metrics/job/qoe/instance/" + os.uname().nodename]
    assert json.loads(results.read_text())["success"] is True
    assert "1 of 1 SLOs hold" in done.stdout and junit.read_text().count("<testcase") == 1
