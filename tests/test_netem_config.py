"""Validation of LinkConfig and of trace files, the batch helper's argument checks, and a
coarse guard on the per-packet cost of Link.send (sim.netem.config, .trace, .batch)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qoe.errors import ConfigError
from sim.netem import Link, LinkConfig, Trace, load_trace, simulate

TRACE = Trace("t", np.array([0, 10, 20]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay": -0.1}, "delay: must be >= 0, got -0.1"),
        ({"delay": "50ms"}, "delay: must be a number, got '50ms'"),
        ({"delay": True}, "delay: must be a number, got true"),
        ({"jitter": float("nan")}, "jitter: must be a finite number, got nan"),
        ({"jitter_distribution": "gamma"},
         "jitter_distribution: must be one of normal, uniform, pareto, got 'gamma'"),
        ({"reorder": 1}, "reorder: must be true or false, got 1"),
        ({"loss": 1.5}, "loss: must be between 0 and 1, got 1.5"),
        ({"loss": -0.01}, "loss: must be between 0 and 1, got -0.01"),
        ({"burst_length": 0.5}, "burst_length: must be >= 1, got 0.5"),
        ({"loss": 0.6, "burst_length": 1},
         "loss: with burst_length 1, must be at most L/(L+1) = 0.5, got 0.6"),
        ({"rate": 0}, "rate: must be > 0, got 0"),
        ({"rate": -5.0}, "rate: must be > 0, got -5.0"),
        ({"rate": 1e6, "queue_packets": 0}, "queue_packets: must be at least 1, got 0"),
        ({"rate": 1e6, "queue_packets": 2.5}, "queue_packets: must be a whole number, got 2.5"),
        ({"rate": 1e6, "queue_seconds": 0}, "queue_seconds: must be > 0, got 0"),
        ({"queue_packets": 10}, "queue_packets: needs a capacity (rate or trace) to queue behind"),
        ({"duplicate": 2}, "duplicate: must be between 0 and 1, got 2"),
        ({"outages": [(1.0,)]}, "outages[0]: must be a [start, duration] pair, got (1.0,)"),
        ({"outages": [(1.0, 0.0)]}, "outages[0].duration: must be > 0, got 0.0"),
        ({"outages": [(-1.0, 2.0)]}, "outages[0].start: must be >= 0, got -1.0"),
        ({"schedule": [(1.0, {"delay": -1})]}, "schedule[0].delay: must be >= 0, got -1"),
        ({"schedule": [(1.0, {"loss": 0.1}), (1.0, {"loss": 0.2})]},
         "schedule[1].at: must be later than the step before, got 1.0"),
        ({"schedule": [(1.0, {"queue_packets": 3})]},
         "schedule[0].queue_packets: cannot be scheduled "
         "(schedulable: delay, jitter, loss, burst_length, rate, duplicate)"),
        ({"schedule": [(1.0, {})]}, "schedule[0]: must change at least one field, got {}"),
        ({"loss": 0.4, "schedule": [(1.0, {"burst_length": 0.5})]},
         "schedule[0].burst_length: must be >= 1, got 0.5"),
        ({"loss": 0.6, "schedule": [(1.0, {"burst_length": 1})]},
         "schedule[0].loss: with burst_length 1, must be at most L/(L+1) = 0.5, got 0.6"),
        ({"trace": TRACE, "rate": 1e6},
         "rate: cannot be combined with trace (the trace sets the capacity)"),
        ({"trace": TRACE, "schedule": [(1.0, {"rate": 1e6})]},
         "schedule[0].rate: cannot be combined with trace"),
    ],
)  # fmt: skip
def test_bad_link_config(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        LinkConfig(**kwargs)
    assert str(info.value) == message


def test_good_link_config_normalises_sequences() -> None:
    config = LinkConfig(
        rate=1e6,
        queue_seconds=0.2,
        outages=[[1, 2]],  # type: ignore[list-item]
        schedule=[(0, {"loss": 0.1})],
    )
    assert config.outages == ((1.0, 2.0),)
    assert config.schedule[0][0] == 0.0 and dict(config.schedule[0][1]) == {"loss": 0.1}
    # A rate set only by a schedule step is a capacity to queue behind.
    LinkConfig(queue_packets=5, schedule=[(1.0, {"rate": 1e6})])


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "x.down"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty trace"),
        ("0\n5\nx\n", "line 3: not a non-negative integer: 'x'"),
        ("0\n5.5\n", "line 2: not a non-negative integer: '5.5'"),
        ("0\n-5\n", "line 2: not a non-negative integer: '-5'"),
        ("0\n\n7\n", "line 2: not a non-negative integer: ''"),
        ("0\n10\n9\n", "line 3: timestamps must not decrease, got 9 after 10"),
        ("0\n0\n", "trace must span a nonzero time (last timestamp is 0)"),
        (b"0\n\xff\n", "cannot read: 'ascii' codec can't decode byte 0xff in position 2: "
                       "ordinal not in range(128)"),
    ],
)  # fmt: skip
def test_bad_trace_file(tmp_path: Path, text: str | bytes, problem: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_trace(path)
    assert str(info.value) == f"trace file {path}: {problem}"


def test_missing_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.down"
    with pytest.raises(ConfigError) as info:
        load_trace(path)
    assert str(info.value) == f"trace file {path}: cannot read: No such file or directory"


def test_trace_file_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path, "0\n0\n3\n1000\n")
    trace = Trace.from_file(path)
    assert trace.times_ms.tolist() == [0, 0, 3, 1000]
    assert trace.period == 1.0 and trace.opportunities == 4
    # Before 2 s: 4 in the first loop, 3 in the second (its 2000 ms one is not before 2 s).
    assert trace.bytes_between(0.0, 2.0) == 7 * 1500
    # The last opportunity of a loop (at 1000 ms) coincides with the first of the next.
    assert trace.bytes_between(0.0, 1.0) == 3 * 1500
    assert trace.bytes_between(0.0, 1.0005) == 6 * 1500


def test_trace_from_array_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"trace t: entry 2: timestamps must not decrease"):
        Trace("t", np.array([0, 5, 4]))
    with pytest.raises(ConfigError, match=r"trace t: timestamps must be integers"):
        Trace("t", np.array([0.0, 5.0]))


def test_simulate_checks_its_arrays() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="non-decreasing"):
        simulate(LinkConfig(), np.array([1.0, 0.0]), 100, rng)
    with pytest.raises(ValueError, match="do not match"):
        simulate(LinkConfig(), np.zeros(3), np.ones(2, dtype=int), rng)
    with pytest.raises(ValueError, match="positive"):
        simulate(LinkConfig(), np.zeros(2), 0, rng)


def test_send_is_cheap() -> None:
    # Measured at about 1 us per packet on the development machine; the bound leaves 20x
    # headroom for slow CI runners while still catching an accidental O(n) per packet.
    config = LinkConfig(
        delay=0.03, jitter=0.005, loss=0.02, burst_length=2, rate=5e6, queue_packets=100,
        duplicate=0.01, outages=[(5.0, 1.0)], schedule=[(3.0, {"delay": 0.05})],
    )  # fmt: skip
    link = Link(config, np.random.default_rng(0))
    times = (np.arange(20_000) * 0.0005).tolist()
    started = time.perf_counter()
    for t in times:
        link.send(t, 1200)
    per_packet = (time.perf_counter() - started) / len(times)
    assert per_packet < 20e-6
