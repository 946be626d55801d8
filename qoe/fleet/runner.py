"""Run a fleet's probe runs concurrently within a bound, reporting each as it finishes.

One event loop is one core: a decoding WebRTC viewer costs a few percent of a core, so a
large fleet is spread over worker processes (``qoe fleet worker``, one per share of the runs,
fed run ids on stdin, streaming results back as JSON lines). A worker that dies takes no
result with it silently: each of its unfinished runs becomes a failed result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from probes import ProbeSpec, probe_spec, run_probe
from qoe import clock
from qoe.errors import ProbeError
from qoe.fleet.config import Fleet, Target, load_fleet
from qoe.fleet.plan import Run, expand
from qoe.incident import save_incident
from qoe.result import ProbeResult
from qoe.timeline import Timeline

__all__ = [
    "PROBES_PER_WORKER",
    "Progress",
    "default_workers",
    "get_ready",
    "run_fleet",
    "run_worker",
    "spec_for",
]

START_INTERVAL = 0.05
"""Seconds between probe starts within one process. Joining costs a burst of CPU (ICE, a
DTLS handshake, decoder start-up); fifty at the same instant starve the probes already
watching, and their freezes would be the fleet's doing, not the room's."""
PROBES_PER_WORKER = 12
"""Concurrent probes one worker process is given before another is started: a core holds
about 25 decoding viewers (bench/viewers.py), and the worker shares it with the rest."""


def default_workers(concurrency: int, runs: int) -> int:
    """One worker per PROBES_PER_WORKER concurrent probes, at most one per core."""
    wanted = math.ceil(min(concurrency, runs) / PROBES_PER_WORKER)
    return max(1, min(wanted, os.cpu_count() or 1))


def spec_for(run: Run) -> ProbeSpec:
    target = run.target
    return probe_spec(
        target.url,
        kind=target.kind,
        duration=target.duration,
        name=target.probe,
        profile=run.profile,
        join_timeout=target.join_timeout,
        media_timeout=target.media_timeout,
        decode=target.decode,
        seed=target.seed,
        clock_offset=target.clock_offset,
        options=target.options,
    )


DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "rtmp": 1935, "rtmps": 443, "rtsp": 554}


def _address(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname and port else None


async def _answers(host: str, port: int, deadline: float) -> bool:
    """Whether ``host:port`` takes a TCP connection before ``deadline`` (monotonic), retried."""
    while True:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            if clock.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.25)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


async def get_ready(fleet: Fleet, targets: Sequence[Target], note: Callable[[str], None]) -> None:
    """Before the measured runs: wait up to ``fleet.wait`` seconds for each target's server to
    take a connection (a room started just before the fleet may not listen yet), then watch
    each target for ``fleet.warmup`` seconds, unscored. ``note`` is told what is waited for
    and what went wrong; nothing here fails the fleet, since the measured runs will say it."""
    deadline = clock.monotonic() + fleet.wait
    addresses = sorted({a for t in targets if (a := _address(t.url)) is not None})
    waits = [asyncio.create_task(_answers(host, port, deadline)) for host, port in addresses]
    done, _ = await asyncio.wait(waits, timeout=1.0) if waits else (set(), set())
    if len(done) < len(waits):
        note(f"waiting up to {fleet.wait:g} s for {len(waits) - len(done)} target server(s) to answer")
    for (host, port), answered in zip(addresses, await asyncio.gather(*waits), strict=True):
        if not answered:
            note(f"{host}:{port} did not answer within {fleet.wait:g} s; its runs will say why")
    if fleet.warmup <= 0:
        return
    note(f"warming up: watching {len(targets)} target(s) for {fleet.warmup:g} s, unscored")
    gate = asyncio.Semaphore(fleet.concurrency)

    async def warm(target: Target) -> None:
        async with gate:
            spec = dataclasses.replace(spec_for(Run(target, target.profiles[0], 0)), duration=fleet.warmup)
            result = await run_probe(spec)
        if not result.success and result.error is not None:
            note(f"warm-up of {target.name} failed ({result.error.kind}: {result.error.message})")

    await asyncio.gather(*(warm(t) for t in targets))


async def run_fleet(
    runs: Sequence[Run],
    *,
    concurrency: int,
    workers: int = 1,
    fleet_path: str | None = None,
    on_result: Callable[[ProbeResult], None] | None = None,
    incidents: Path | None = None,
) -> list[ProbeResult]:
    """Run every run, at most ``concurrency`` at once; results in the order of ``runs``.

    A run never raises: a probe that fails, hangs past its deadline or crashes is a failed
    result (see :func:`probes.base.run`). With ``workers`` > 1 the runs are dealt round-robin
    to that many ``qoe fleet worker`` processes, which read the fleet from ``fleet_path``.
    A failed run's incident bundle (:mod:`qoe.incident`) goes under ``incidents`` if given.
    """
    if workers > 1 and fleet_path is not None and len(runs) > 1:
        return await _run_in_workers(runs, concurrency, workers, fleet_path, on_result, incidents)
    gate = asyncio.Semaphore(concurrency)
    next_start = clock.monotonic()

    async def one(run: Run) -> ProbeResult:
        nonlocal next_start
        async with gate:
            now = clock.monotonic()
            start, next_start = max(now, next_start), max(now, next_start) + START_INTERVAL
            await asyncio.sleep(start - now)
            logs: list[Timeline] = []
            result = await run_probe(spec_for(run), on_log=logs.append)
        result.run = run.id
        result.target = run.target.name
        result.labels = dict(run.target.labels)
        if incidents is not None and not result.success and logs:
            _save_incident(incidents, result, logs[0])
        if on_result is not None:
            on_result(result)
        return result

    return list(await asyncio.gather(*(one(run) for run in runs)))


async def _run_in_workers(
    runs: Sequence[Run],
    concurrency: int,
    workers: int,
    fleet_path: str,
    on_result: Callable[[ProbeResult], None] | None,
    incidents: Path | None,
) -> list[ProbeResult]:
    workers = min(workers, len(runs))
    share = math.ceil(concurrency / workers)
    by_id: dict[str, ProbeResult] = {}

    async def worker(slice_: Sequence[Run]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qoe",
            "fleet",
            "worker",
            fleet_path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        job = {
            "runs": [run.id for run in slice_],
            "concurrency": share,
            "incidents": None if incidents is None else str(incidents),
        }
        proc.stdin.write(json.dumps(job).encode() + b"\n")
        await proc.stdin.drain()
        proc.stdin.close()
        stderr = asyncio.create_task(proc.stderr.read())
        while line := await proc.stdout.readline():
            try:
                result = ProbeResult.from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue  # a stray line on stdout is not a result
            if result.run in by_id or result.run not in wanted:
                continue
            by_id[result.run] = result
            if on_result is not None:
                on_result(result)
        code = await proc.wait()
        detail = (await stderr).decode(errors="replace").strip().splitlines()
        for run in slice_:
            if run.id not in by_id:
                lost = _orphan(run, f"fleet worker exited with code {code}: {detail[-1] if detail else ''}")
                by_id[run.id] = lost
                if on_result is not None:
                    on_result(lost)

    wanted = {run.id for run in runs}
    await asyncio.gather(*(worker(runs[i::workers]) for i in range(workers)))
    return [by_id[run.id] for run in runs]


def _orphan(run: Run, message: str) -> ProbeResult:
    result = ProbeResult(
        probe=run.target.probe,
        kind=run.target.kind,
        target=run.target.name,
        profile=run.profile,
        run=run.id,
        labels=dict(run.target.labels),
    )
    error = ProbeError(message.strip())
    result.fail(error)
    if result.error is not None:
        result.error.kind = "worker"
    return result


async def run_worker(fleet_path: str) -> int:
    """The ``qoe fleet worker`` side: read a job from stdin, stream results to stdout."""
    job = json.loads(sys.stdin.readline())
    fleet = load_fleet(fleet_path)
    wanted = set(job["runs"])
    runs = [run for run in expand(fleet) if run.id in wanted]

    def emit(result: ProbeResult) -> None:
        sys.stdout.write(result.to_json() + "\n")
        sys.stdout.flush()

    incidents = Path(job["incidents"]) if job.get("incidents") else None
    await run_fleet(runs, concurrency=int(job["concurrency"]), on_result=emit, incidents=incidents)
    return 0


def _save_incident(directory: Path, result: ProbeResult, log: Timeline) -> None:
    """Write a failed run's bundle; a bundle that cannot be written is said on stderr and
    costs the fleet nothing else (the result itself is kept either way)."""
    try:
        folder = save_incident(directory, result, log)
    except OSError as exc:
        print(f"qoe fleet: cannot save the incident of {result.run}: {exc.strerror or exc}", file=sys.stderr)
        return
    print(f"qoe fleet: incident of {result.run} saved in {folder}", file=sys.stderr, flush=True)


class Progress:
    """Progress on a terminal (one line, rewritten) or plain lines in a log."""

    def __init__(self, total: int, stream: IO[str] | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.failed = 0
        self.started = clock.monotonic()

    def __call__(self, result: ProbeResult) -> None:
        self.done += 1
        self.failed += not result.success
        elapsed = clock.monotonic() - self.started
        if self.tty:
            line = f"\r[{self.done}/{self.total}] {self.failed} failed, {elapsed:.0f} s"
            self.stream.write(line.ljust(40))
        else:
            outcome = "ok" if result.success else f"FAILED ({result.error.kind if result.error else '?'})"
            join = result.join.total_seconds
            self.stream.write(
                f"[{self.done}/{self.total}] {result.run} {outcome}"
                f"{f', join {join * 1000:.0f} ms' if join is not None else ''}"
                f", freezes {result.video.freeze_count if result.video.freeze_count is not None else '-'}"
                f", {elapsed:.0f} s elapsed\n"
            )
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()
