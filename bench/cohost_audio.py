"""Benchmark: co-host audio figures against their ground truth, on a real room and real probes.

One embedded room on loopback, a co-host WHIP publisher of ours with the knobs of each
scenario, and WHEP viewers that take host and co-host as separate tracks. Each scenario
prints one line per viewer run and a summary; the summary's last line is JSON.

    python bench/cohost_audio.py                         # every scenario, 20 echo-free runs
    python bench/cohost_audio.py --only none --runs 20   # false alarms: no echo in 20 runs
    python bench/cohost_audio.py --only echo,mute,noise  # the knobs' figures

It exits 1, naming each, when a figure misses its ground truth by more than the stated
tolerance (echo delay 10 ms, return loss 3 dB, dropout 20 ms and the exact count, SNR 3 dB),
or when a run fails; ``--summary FILE`` writes the summary there too.

Scenarios (ground truth in brackets):

- ``echo``: the publisher leaks 0.3 of the host's signal 0.12 s late (delay 0.12 s, echo
  return loss 20 log10(1 / 0.3) = 10.46 dB);
- ``none``: no echo (never detected: a detection is a false alarm);
- ``mute``: the publisher sends no audio for 0.3 s at every multiple of 4 s of wall time
  (one dropout of 0.3 s each time one falls inside the watch);
- ``noise``: the room adds white noise 20 dB and then 10 dB below the marker tone (the
  co-host's SNR).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from probes import ProbeSpec, run_probe
from qoe.looplag import settle_heap
from qoe.media import Knobs
from qoe.media.source import PIPELINE_LATENCY
from qoe.metrics import to_sender_time
from qoe.result import ProbeResult
from qoe.signal import COHOST_TONE_HZ
from qoe.signal.audioquality import dropouts
from qoe.timeline import Timeline
from sim.room.relay import RELAY_LATENCY
from sim.room.server import LiveRoom

SCENARIOS = ("echo", "none", "mute", "noise")
SETTLE = 2.5
"""Seconds from the co-host's publish to the first viewer: the room places a WHIP publisher
by its first RTCP sender report."""


def mute_truth(log: Timeline, every: float, length: float) -> list[tuple[float, float]]:
    """The publisher's mute windows with co-host audio received before and after them (the
    gaps a viewer can count), as (start, end) on the room's send clock for the co-host's
    track: its capture clock plus its pipeline latency and the room's relay latency. Opus
    shifts a gap 6.5 ms early and a block lasts 20 ms, so a 10 ms margin tells a window with
    a block after it from one without."""
    cohost = log.participants["cohost"]
    blocks = [b for b in cohost.audio_blocks if log.end is None or b.at <= log.end]
    points = cohost.sync.get("audio", [])
    if not blocks or not points:
        return []
    first = to_sender_time(points, blocks[0].stream_time)
    last = to_sender_time(points, blocks[-1].stream_time + blocks[-1].seconds)
    assert first is not None and last is not None
    lag = PIPELINE_LATENCY + RELAY_LATENCY
    windows = []
    for k in range(math.ceil((first - lag) / every), math.floor((last - lag) / every) + 1):
        start = k * every + lag
        if first + 0.01 < start and start + length + 0.01 < last:
            windows.append((start, start + length))
    return windows


def figures(
    result: ProbeResult, log: Timeline | None = None, mute: tuple[float, float] | None = None
) -> dict[str, Any]:
    cohost = result.cohost
    truth = None if log is None or mute is None else len(mute_truth(log, *mute))
    gaps: list[float] = []
    if log is not None and "cohost" in log.participants:
        blocks = [b for b in log.participants["cohost"].audio_blocks if log.end is None or b.at <= log.end]
        found = dropouts([b.stream_time for b in blocks], [b.seconds for b in blocks])
        gaps = [end - start for start, end in found.gaps]
    return {
        "mutes_due": truth,
        "gap_seconds": gaps,
        "success": result.success,
        "error": None if result.error is None else f"{result.error.kind}: {result.error.message}",
        "echo": cohost.echo,
        "dropouts": cohost.audio["dropouts"],
        "snr_db": cohost.audio["snr_db"],
        "noise_floor_dbfs": cohost.audio["noise_floor_dbfs"],
        "host_snr_db": result.audio.snr_db,
        "overloaded": result.probe_host.overloaded,
    }


async def session(
    room_knobs: Knobs, publisher_knobs: Knobs, runs: int, watch: float, parallel: int
) -> list[dict[str, Any]]:
    """``runs`` viewers of ``watch`` seconds, ``parallel`` at a time, of one co-host."""
    mute = None
    if publisher_knobs.mute_every is not None:
        mute = (publisher_knobs.mute_every, publisher_knobs.mute_for)
    out: list[dict[str, Any]] = []
    rounds = math.ceil(runs / parallel)
    async with LiveRoom("127.0.0.1", 0, knobs=room_knobs) as live:
        publisher = asyncio.create_task(
            run_probe(
                ProbeSpec(
                    url=f"{live.url}/whip/demo",
                    kind="whip",
                    duration=SETTLE + rounds * (watch + 2) + 2,
                    options={"slot": 1, "tone_hz": COHOST_TONE_HZ, "knobs": publisher_knobs},
                )
            )
        )
        await asyncio.sleep(SETTLE)
        for first in range(0, runs, parallel):
            specs = [
                ProbeSpec(
                    url=f"{live.url}/whep/demo", kind="whep", duration=watch, options={"cohost": "separate"}
                )
                for _ in range(min(parallel, runs - first))
            ]
            logs: list[list[Timeline]] = [[] for _ in specs]
            done = await asyncio.gather(
                *(run_probe(spec, on_log=log.append) for spec, log in zip(specs, logs, strict=True))
            )
            for result, log in zip(done, logs, strict=True):
                row = figures(result, log[0] if log else None, mute)
                out.append(row)
                print(f"  {json.dumps(row)}", flush=True)
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
    return out


def _values(rows: list[dict[str, Any]], pick: Any) -> list[Any]:
    return [v for row in rows if row["success"] and (v := pick(row)) is not None]


def _failed(rows: list[dict[str, Any]], name: str, problems: list[str]) -> None:
    for row in rows:
        if not row["success"]:
            problems.append(f"{name}: a run failed: {row['error']}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--runs", type=int, default=20, help="viewer runs of the echo-free scenario")
    parser.add_argument("--watch", type=float, default=10.0, help="seconds each viewer watches")
    parser.add_argument("--parallel", type=int, default=2, help="viewers at once in the echo-free scenario")
    parser.add_argument("--summary", type=Path, help="also write the summary (JSON) to this file")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in chosen if s not in SCENARIOS]:
        parser.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
    settle_heap()
    summary: dict[str, Any] = {}
    problems: list[str] = []
    if "echo" in chosen:
        truth_db = 20 * math.log10(1 / 0.3)
        print(f"echo: --echo-gain 0.3 --echo-delay 0.12 (truth: 0.120 s, {truth_db:.2f} dB)", flush=True)
        rows = await session(Knobs(), Knobs(echo_gain=0.3, echo_delay=0.12), 3, args.watch, 1)
        _failed(rows, "echo", problems)
        delays = _values(rows, lambda r: r["echo"]["delay_seconds"])
        losses = _values(rows, lambda r: r["echo"]["return_loss_db"])
        detected = sum(1 for r in rows if r["echo"]["detected"])
        summary["echo"] = {
            "runs": len(rows),
            "detected": detected,
            "delay_seconds": delays,
            "return_loss_db": losses,
        }
        if detected < len(rows):
            problems.append(f"echo: detected in {detected} of {len(rows)} runs")
        problems += [
            f"echo: delay {d:.4f} s, not within 10 ms of 0.12" for d in delays if abs(d - 0.12) > 0.010
        ]
        problems += [
            f"echo: return loss {x:.2f} dB, not within 3 dB" for x in losses if abs(x - truth_db) > 3
        ]
    if "none" in chosen:
        print(f"none: no echo, {args.runs} runs of {args.watch:g} s (truth: never detected)", flush=True)
        rows = await session(Knobs(), Knobs(), args.runs, args.watch, args.parallel)
        _failed(rows, "none", problems)
        alarms = sum(1 for r in rows if r["echo"]["detected"])
        summary["none"] = {
            "runs": len(rows),
            "succeeded": sum(1 for r in rows if r["success"]),
            "false_alarms": alarms,
            "measured": sum(1 for r in rows if r["echo"]["detected"] is not None),
        }
        if alarms or summary["none"]["measured"] < len(rows):
            problems.append(f"none: {alarms} false alarms, {summary['none']['measured']} runs measured")
    if "mute" in chosen:
        print(
            "mute: --mute-every 4 --mute-for 0.3 (truth: one 0.300 s gap per window inside the watch)",
            flush=True,
        )
        rows = await session(Knobs(), Knobs(mute_every=4, mute_for=0.3), 3, args.watch, 1)
        _failed(rows, "mute", problems)
        summary["mute"] = {
            "due": _values(rows, lambda r: r["mutes_due"]),
            "counts": _values(rows, lambda r: r["dropouts"]["count"]),
            "gap_seconds": [g for r in rows for g in r["gap_seconds"]],
        }
        for row in rows:
            if row["success"] and row["dropouts"]["count"] != row["mutes_due"]:
                problems.append(f"mute: {row['dropouts']['count']} dropouts, {row['mutes_due']} due")
        problems += [
            f"mute: a gap of {g:.4f} s" for g in summary["mute"]["gap_seconds"] if abs(g - 0.3) > 0.020
        ]
    if "noise" in chosen:
        summary["noise"] = {}
        for db in (20.0, 10.0):
            print(f"noise: room --cohost-noise-db {db:g} (truth: co-host SNR {db:g} dB)", flush=True)
            rows = await session(Knobs(cohost_noise_db=db), Knobs(), 2, args.watch, 1)
            _failed(rows, f"noise {db:g}", problems)
            snr = _values(rows, lambda r: r["snr_db"])
            summary["noise"][f"{db:g}"] = {
                "snr_db": snr,
                "median": statistics.median(snr) if snr else None,
                "noise_floor_dbfs": _values(rows, lambda r: r["noise_floor_dbfs"]),
            }
            problems += [f"noise {db:g}: SNR {x:.2f} dB, not within 3 dB" for x in snr if abs(x - db) > 3]
    summary["problems"] = problems
    for problem in problems:
        print(f"PROBLEM {problem}", flush=True)
    text = json.dumps(summary)
    print(text)
    if args.summary is not None:
        args.summary.write_text(text + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
