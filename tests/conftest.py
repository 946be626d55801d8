"""Shared fixtures: rooms in this process or in a ``qoe room`` process, and the ``qoe`` command."""

from __future__ import annotations

import gc
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qoe.media import Knobs
from sim.room.server import LiveRoom
from tests.servers import stop_process
from tests.sharing import (  # noqa: F401 (hooks: parallel workers share the machine)
    pytest_collection_modifyitems,
    pytest_runtest_logreport,
    pytest_runtest_protocol,
    pytest_terminal_summary,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def quiet_heap(request: pytest.FixtureRequest) -> Iterator[None]:
    """Slow tests time real media in this process; earlier tests' objects must not stall it.

    The suite runs in one process, and what earlier tests leave (the impact tests' data
    among it) made the collector's full passes take up to 198 ms here: a freeze in whatever
    room and probes run in the process, which a probe process of its own never carries. So
    before a slow test everything alive is collected and frozen out of the scans, and thawed
    after it (see :func:`qoe.looplag.settle_heap`, which does this once for a real process).
    """
    if request.node.get_closest_marker("slow") is None:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture
def room() -> Callable[..., AbstractAsyncContextManager[LiveRoom]]:
    """``async with room(av_offset=0.08) as r:`` an embedded room on a free loopback port."""

    @asynccontextmanager
    async def start(**knobs: float) -> AsyncIterator[LiveRoom]:
        async with LiveRoom("127.0.0.1", 0, knobs=Knobs(**knobs)) as live:
            yield live

    return start


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


def qoe(*args: str, timeout: float = 90) -> Completed:
    """Run the ``qoe`` command as a user would (``python -m qoe``) and capture its output."""
    done = subprocess.run(
        [sys.executable, "-m", "qoe", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    return Completed(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli() -> Callable[..., Completed]:
    return qoe


@contextmanager
def room_server(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run ``qoe room --port 0 ARGS`` in its own process (a ``--port`` in ARGS wins); yield
    the process and its URL; stop it by pid, first waking it if a test stopped it. Its log
    goes to a file, not a pipe nobody reads, which a long run would fill and block on."""
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qoe", "room", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
        match = re.search(r"serving (http://\S+)", line)
        if not match:
            log.seek(0)
            raise RuntimeError(f"qoe room did not start: {line!r} {log.read()[-2000:]}")
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a stopped process takes no SIGTERM
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()


@contextmanager
def room_process(*args: str) -> Iterator[str]:
    """Run ``qoe room --port 0 ARGS`` in its own process; yield its URL; stop it by pid."""
    with room_server(*args) as (_, url):
        yield url


def run_bench(
    script: str, args: str, summary: Path, timeout: float
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run ``bench/SCRIPT ARGS --summary SUMMARY`` as a user would; its exit and the figures it
    wrote. No traceback may reach its stderr."""
    done = subprocess.run(
        [sys.executable, script, *args.split(), "--summary", str(summary)],
        cwd=Path(ROOT) / "bench",
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert summary.exists(), f"{script} {args}: exit {done.returncode}, no figures: {done.stderr.strip()}"
    return done, json.loads(summary.read_text())


@pytest.fixture
def room_proc() -> Callable[..., AbstractContextManager[str]]:
    return room_process


def freezes_within(knobs: Knobs, start: float, end: float) -> tuple[int, int]:
    """How many of the freezes ``knobs`` inject fall wholly inside [start, end] (Unix
    seconds), and how many straddle an edge: the publisher stops its video whenever the
    capture time modulo ``freeze_every`` is below ``freeze_for``. (For publishers whose
    ground truth is their knobs alone, as through a server that only forwards.)"""
    every = knobs.freeze_every
    assert every is not None
    spans = [
        (k * every, k * every + knobs.freeze_for)
        for k in range(math.floor(start / every), math.ceil(end / every) + 1)
    ]
    inside = sum(1 for a, b in spans if start < a and b < end)
    straddling = sum(1 for a, b in spans if a < start < b or a < end < b)
    return inside, straddling
