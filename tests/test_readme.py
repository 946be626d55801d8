"""The README's quick start and tour, run as a new user would run them, line by line.

Each command is read from README.md itself, so a line that changes there is the line that
runs here, and a new line without a check below fails this test. Two things differ from a
user's shell, and only these: ports are free ones (8080, 8081, 1935 and 1936 may be taken on
a CI host), and watching is capped at a few seconds (``--duration``) so the suite stays within
its time. Servers (``qoe room``, ``qoe rtmp-server``, ``qoe netem proxy``) and publishers run
in the background, as a user runs them in another terminal, and are stopped by pid.

The tour runs in chapters, each a test: a chapter starts where a line starts a server or runs
a demo, and first starts the servers the lines before it left running.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.servers import free_port, require, stop_process

pytestmark = pytest.mark.slow

WATCH = 3
"""Seconds a probe or demo of the tour watches (the README's durations are longer)."""
PUBLISH = 9
"""Seconds a background publisher of the tour publishes: long enough for the probes after it."""
LONGER = "cohost=separate"
"""The tour's line that watches 8 s, not :data:`WATCH`: a co-host's echo and dropouts need
more identity bursts and mutes (every 4 s) than 3 s hold; its publisher lasts 14 s."""


def readme_block(heading: str) -> list[str]:
    """The commands of the first ``sh`` block under ``heading``, comments and continuations off."""
    text = (Path(ROOT) / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def table(out: str) -> list[dict[str, str]]:
    """The rows of a results table (the header's columns are split on two or more spaces)."""
    lines = [line for line in out.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("probe "))
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for line in lines[start + 2 :]:
        if line.startswith(("note:", "qoe")):
            break
        rows.append(dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=False)))
    return rows


def near(cell: str, value: float, tolerance: float) -> bool:
    return cell not in ("-", "") and abs(float(cell) - value) <= tolerance


@dataclass
class Tour:
    tmp: Path
    ports: dict[str, int] = field(default_factory=dict)
    servers: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def args(self, line: str) -> list[str]:
        for written, port in self.ports.items():
            line = line.replace(written, str(port))
        args = shlex.split(line)[1:]
        if args[0] == "rtmp-server":  # the line relies on the default ports
            args += ["--rtmp-port", str(self.ports["1935"]), "--http-port", str(self.ports["8081"])]
        if "--duration" in args:
            i = args.index("--duration")
            if "--echo-gain" in args:  # the publisher the longer line watches
                args[i + 1] = "14"
            elif LONGER in args:
                args[i + 1] = "8"
            else:
                args[i + 1] = str(PUBLISH if args[0] == "publish" else min(float(args[i + 1]), WATCH))
        elif args[0] in ("probe", "demo", "publish"):
            args += ["--duration", str(PUBLISH if args[0] == "publish" and "--cohost" not in args else WATCH)]
        return args

    def run(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qoe", *self.args(line)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
        )

    def start(self, line: str, ready: str) -> subprocess.Popen[str]:
        """Start ``line`` in the background; wait for ``ready`` on its stdout."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "qoe", *self.args(line)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        seen = ""
        while ready not in seen and time.monotonic() < deadline and proc.poll() is None:
            seen += proc.stdout.readline()
        if ready not in seen:
            stop_process(proc)
            pytest.fail(f"{line}: never said {ready!r}: {seen}{proc.stderr.read() if proc.stderr else ''}")
        return proc


Check = Callable[[Tour, str], None]


def finished(check: Callable[[subprocess.CompletedProcess[str]], bool]) -> Check:
    """Run the line to its end: exit 0 and ``check`` of its output holds."""

    def run(tour: Tour, line: str) -> None:
        done = tour.run(line)
        assert done.returncode == 0, f"{line}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert check(done), f"{line}:\n{done.stdout}\n{done.stderr}"

    return run


def server(name: str, ready: str) -> Check:
    """Start (or restart) a server the lines after it use."""

    def run(tour: Tour, line: str) -> None:
        if name in tour.servers:
            stop_process(tour.servers.pop(name))
        tour.servers[name] = tour.start(line, ready)

    return run


def publisher(settle: float) -> Check:
    """Publish in the background (stopped by pid at the end); give it ``settle`` s to go live."""

    def run(tour: Tour, line: str) -> None:
        said = tour.tmp / f"publisher-{len(tour.background)}.err"
        with said.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "qoe", *tour.args(line)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=tour.tmp,
                stdin=subprocess.DEVNULL,
            )
        tour.background.append(proc)
        time.sleep(settle)
        assert proc.poll() is None, (
            f"{line}: exited with {proc.returncode} before its viewers came: {said.read_text()}"
        )

    return run


def watched(av: float | None = None, tolerance: float = 10.0, column: str = "A/V ms") -> Check:
    """A probe's table: one row, ok, and (when given) its A/V offset within ``tolerance`` ms."""
    return finished(
        lambda done: (
            (rows := table(done.stdout))[0]["ok"] == "yes"
            and (av is None or near(rows[0][column], av, tolerance))
        )
    )


def every_row_ok(count: int, more: Callable[[list[dict[str, str]]], bool] = lambda rows: True) -> Check:
    return finished(
        lambda done: (
            len(rows := table(done.stdout)) == count and all(r["ok"] == "yes" for r in rows) and more(rows)
        )
    )


def proxied(tour: Tour, line: str) -> None:
    proxy = tour.start(line, "qoe netem proxy")
    stop_process(proxy)


CHECKS: dict[str, Check] = {
    "qoe demo": finished(
        lambda done: (
            len(rows := table(done.stdout)) == 3
            and all(r["ok"] == "yes" for r in rows)
            # no freezes, unless the machine said it was too busy to play smoothly
            and (all(r["freezes"] == "0" for r in rows) or "note: this machine was overloaded" in done.stdout)
        )
    ),
    "qoe room --port 8080": server("room", "serving"),
    "qoe room --port 8080 --av-offset 0.08": server("room", "serving"),
    "qoe probe http://127.0.0.1:8080/whep/demo --duration 10": watched(av=80),
    "qoe probe http://127.0.0.1:8080/whep/demo --duration 10 --json": finished(
        lambda done: (
            (r := json.loads(done.stdout))["success"]
            and abs(r["av_sync"]["offset_seconds"]["median"] - 0.08) <= 0.010
        )
    ),
    "qoe probe http://127.0.0.1:8080/whep/demo --events run.json": watched(av=80),
    "qoe replay run.json": watched(av=80),
    "qoe publish http://127.0.0.1:8080/whip/shop --duration 60": publisher(settle=3.0),
    "qoe probe http://127.0.0.1:8080/whep/shop": watched(),
    "qoe demo --viewers 10 --duration 20 --freeze-every 5 --freeze-for 1": every_row_ok(10),
    "qoe demo --profile 4g --profile 3g": every_row_ok(
        6, lambda rows: {r["profile"] for r in rows} == {"4g", "3g"}
    ),
    "qoe demo --cohost --viewers 2": every_row_ok(
        3, lambda rows: [r["probe"] for r in rows] == ["viewer-1-mix", "viewer-2-tracks", "cohost-publisher"]
    ),
    "qoe probe ws://127.0.0.1:8080/chat/demo": finished(
        lambda done: (row := table(done.stdout)[0])["ok"] == "yes" and int(row["sent"]) > 0
    ),
    "qoe probe http://127.0.0.1:8080/flv/demo.flv": watched(av=80),
    "qoe probe http://127.0.0.1:8080/hls/demo/index.m3u8": watched(av=80),
    "qoe room --port 8080 --bitrate 300 --quality-drop-every 10 --quality-drop-for 2": server(
        "room", "serving"
    ),
    "qoe probe http://127.0.0.1:8080/whep/demo --decode none": watched(),
    "qoe probe http://127.0.0.1:8080/whep/demo --quality all": finished(
        lambda done: (
            (row := table(done.stdout)[0])["ok"] == "yes"
            and 0.9 <= float(row["SSIM p50"]) < 0.995
            and 25 <= float(row["PSNR p50"]) < 45
        )
    ),
    "qoe rtmp-server": server("rtmp", "Ctrl-C stops it"),
    "qoe publish rtmp://127.0.0.1/live/canary --duration 60": publisher(settle=2.0),
    "qoe probe rtmp://127.0.0.1/live/canary": watched(av=0),
    "qoe probe http://127.0.0.1:8081/hls/canary.m3u8": watched(av=0),
    "qoe publish http://127.0.0.1:8080/whip/demo --cohost --profile 3g": finished(
        lambda done: done.stdout.startswith("published ")
    ),
    "qoe publish http://127.0.0.1:8080/whip/demo --cohost --duration 60 --echo-gain 0.3 --echo-delay 0.12 "
    "--mute-every 4 --mute-for 0.3": publisher(settle=3.0),
    "qoe probe http://127.0.0.1:8080/whep/demo -o cohost=separate --duration 10 --json": finished(
        lambda done: (
            (r := json.loads(done.stdout))["success"]
            and r["cohost"]["echo"]["detected"]
            and abs(r["cohost"]["echo"]["delay_seconds"] - 0.12) <= 0.010
            and abs(r["cohost"]["echo"]["return_loss_db"] - 10.5) <= 3
            and r["cohost"]["audio"]["dropouts"]["count"] >= 2
        )
    ),
    "qoe netem profiles": finished(lambda done: "3g" in done.stdout and "4g" in done.stdout),
    "qoe netem check 4g": finished(lambda done: "delay" in done.stdout),
    "qoe netem proxy --listen 127.0.0.1:1936 --to 127.0.0.1:1935 --profile 3g --tcp": proxied,
}
"""What each README line must do, keyed by the line as written there."""


@contextmanager
def tour_in(tmp: Path) -> Iterator[Tour]:
    tour = Tour(tmp, {written: free_port() for written in ("8080", "8081", "1935", "1936")})
    try:
        yield tour
    finally:
        for publishing in tour.background:
            stop_process(publishing)
        for serving in tour.servers.values():
            stop_process(serving)


def readme_lines() -> list[str]:
    """The quick start's commands, then the tour's, as README.md has them."""
    quick = [line.split("&&")[-1].strip().removeprefix(".venv/bin/") for line in readme_block("Quick start")]
    return quick + readme_block("A tour of the commands")


SERVERS = ("qoe room", "qoe rtmp-server")
"""The lines that start a server the lines after them use."""


def starts_chapter(line: str) -> bool:
    """Whether the tour can be picked up again at ``line``: it starts a server, or is a demo
    (which runs its own room). Each chapter is a test of its own, so that the suite's
    parallel workers share the tour."""
    return line.startswith((*SERVERS, "qoe demo"))


def chapters(lines: list[str]) -> list[tuple[list[str], list[str]]]:
    """The tour in chapters: each the servers it finds running (the last line that started
    each one, in order) and its own lines."""
    found: list[tuple[list[str], list[str]]] = []
    running: dict[str, str] = {}
    for line in lines:
        if starts_chapter(line) or not found:
            found.append((list(running.values()), []))
        found[-1][1].append(line)
        if line.startswith(SERVERS):
            running[line.split()[1]] = line
    return found


CHAPTERS = chapters(readme_lines())


def test_every_readme_line_has_a_check() -> None:
    lines = readme_lines()
    assert "qoe demo" in lines and len(lines) > 20
    unchecked = [line for line in lines if line not in CHECKS]
    assert not unchecked, f"README lines without a check here: {unchecked}"
    # Every line runs in exactly one chapter, in README order.
    assert [line for _, own in CHAPTERS for line in own] == lines


@pytest.mark.slow(seconds=30)
@pytest.mark.parametrize(
    ("running", "lines"), CHAPTERS, ids=[own[0].removeprefix("qoe ")[:40] for _, own in CHAPTERS]
)
def test_the_quick_start_and_tour_work_as_written(
    running: list[str], lines: list[str], tmp_path: Path
) -> None:
    if any("rtmp" in line for line in running + lines):
        require("nginx")  # the tour's RTMP lines need nginx-rtmp (installed by bootstrap --servers)
    with tour_in(tmp_path) as tour:
        for line in running + lines:
            # RTMP's default port, written out so that it is replaced like the others.
            CHECKS[line](tour, line.replace("rtmp://127.0.0.1/", "rtmp://127.0.0.1:1935/"))
