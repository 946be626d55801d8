"""The probe host's loop lag: measured per run, and a blocked loop shows as overload.

Bounds: an idle loop on this machine wakes within a few ms of its timer, so an idle
window's worst lateness must stay under 30 ms (a third of the overload bound). A hold-up of
H reads as between H - 50 ms (it began just before a tick was due) and H: a loop blocked for
200 ms must read 145-250 ms, allowing 5 ms of timer slack below and scheduling above.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from probes import ProbeSpec
from probes.base import Watch, run
from qoe import clock, looplag, metrics
from qoe.result import ProbeResult
from qoe.timeline import CpuReading


async def test_an_idle_loop_is_on_time() -> None:
    window = looplag.open_window()
    await asyncio.sleep(0.5)
    lateness = window.close()
    assert 8 <= len(window.samples) <= 11  # a reading every 50 ms
    assert lateness["max"] is not None and lateness["max"] < 0.03, lateness


async def test_a_blocked_loop_reads_as_late_as_it_was_held() -> None:
    window = looplag.open_window()
    await asyncio.sleep(0.12)
    time.sleep(0.2)  # a callback that holds the loop, as an overloaded host does
    await asyncio.sleep(0.12)
    lateness = window.close()
    assert lateness["max"] is not None and 0.145 <= lateness["max"] < 0.25, lateness
    assert lateness["p50"] is not None and lateness["p50"] < 0.03  # one late tick, not many


async def test_a_stall_after_the_watch_is_left_out() -> None:
    window = looplag.open_window()
    await asyncio.sleep(0.2)
    watched_until = clock.monotonic()
    time.sleep(0.2)  # the probe's teardown, say
    await asyncio.sleep(0.1)
    assert window.close(until=watched_until)["max"] < 0.03  # type: ignore[operator]
    assert window.close()["max"] >= 0.145  # type: ignore[operator]


async def test_windows_overlap_and_the_ticker_stops_with_the_last() -> None:
    first = looplag.open_window()
    await asyncio.sleep(0.2)
    second = looplag.open_window()
    await asyncio.sleep(0.2)
    first.close()
    before = len(second.samples)
    await asyncio.sleep(0.2)
    assert len(second.samples) > before  # the ticker kept going for the open window
    assert len(first.samples) < len(second.samples) + 6
    second.close()
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "qoe-loop-lag"]
    assert second.close()["max"] is not None  # closing twice is harmless


def test_cpu_times_read_the_whole_machine() -> None:
    times = looplag.cpu_times()
    assert times is not None  # Linux: /proc/stat
    busy, total, stolen = times
    assert 0 <= stolen <= busy <= total and total > 0


def test_stolen_time_is_a_share_of_all_cpu_time() -> None:
    readings = [
        CpuReading(0.0, 100, 1000, 10),
        CpuReading(1.0, 400, 2000, 60),
        CpuReading(2.0, 900, 3000, 260),
    ]
    assert metrics.cpu_stolen(readings) == pytest.approx(250 / 2000)
    assert metrics.cpu_stolen(readings, until=1.5) == pytest.approx(50 / 1000)
    assert metrics.cpu_stolen(readings[:1]) is None
    assert metrics.cpu_busy(readings) == pytest.approx(800 / 2000)


def test_a_loop_that_never_sleeps_reads_as_overloaded() -> None:
    idle_machine = [CpuReading(0.0, 100, 1000, 0, 5.0), CpuReading(2.0, 500, 3000, 0, 6.9)]
    assert metrics.loop_busy(idle_machine) == pytest.approx(0.95)
    assert metrics.cpu_busy(idle_machine) == pytest.approx(0.2)
    assert metrics.overloaded(0.02, 0.2, 0.95) is True  # on time, machine idle, loop saturated
    assert metrics.overloaded(0.02, 0.2, 0.77) is False
    assert metrics.loop_busy([CpuReading(0.0, 1, 2), CpuReading(1.0, 2, 4)]) is None  # not read


async def test_the_loop_threads_cpu_is_read_from_the_windows_start_to_its_close() -> None:
    before = time.thread_time()
    window = looplag.open_window()
    end = time.monotonic() + 0.6
    while time.monotonic() < end:  # the loop's own thread spins, never yielding
        sum(range(1000))
    await asyncio.sleep(1.1)  # a tick reads the CPU times once a second
    window.close()
    spent = time.thread_time() - before
    readings = window.cpu_readings()
    busy = metrics.loop_busy(readings)
    assert busy is not None and len(readings) >= 3
    span = readings[-1].at - readings[0].at
    # What the thread itself says it spent, whatever else the machine ran meanwhile.
    assert busy * span == pytest.approx(spent, abs=0.02)
    assert spent > 0.1  # the spin's share, even on a host busy with other work


async def test_every_core_busy_reads_as_an_overloaded_machine() -> None:
    """One CPU burner per core for 1.5 s: at least 85 % of the machine's time is busy."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)
    ]
    try:
        await asyncio.sleep(0.2)  # the burners are up
        window = looplag.open_window()
        await asyncio.sleep(1.5)
        window.close()
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert len(window.cpu) >= 3  # the opening reading, one a second, the closing one
    busy = window.cpu_busy()
    assert busy is not None and busy >= looplag.CPU_BUSY_OVERLOAD, busy


async def test_a_window_closed_before_any_tick_has_no_figures() -> None:
    assert looplag.open_window().close() == {"p50": None, "p95": None, "max": None}


async def test_every_probe_run_reports_its_hosts_loop_lag() -> None:
    async def calm(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
        await asyncio.sleep(0.3)

    async def hogging(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
        await asyncio.sleep(0.1)
        time.sleep(0.2)
        await asyncio.sleep(0.1)

    spec = ProbeSpec(url="http://127.0.0.1:9/", kind="test", duration=1)
    ok, hogged = await run(spec, calm), await run(spec, hogging)
    assert ok.probe_host.loop_lag_seconds["max"] < 0.03
    assert ok.probe_host.cpu_busy_ratio is not None and 0 <= ok.probe_host.cpu_busy_ratio <= 1
    assert hogged.probe_host.overloaded is True
    assert hogged.probe_host.loop_lag_seconds["max"] >= 0.145
    assert hogged.to_dict()["probe_host"]["overloaded"] is True
