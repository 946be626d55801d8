"""Every result says which clocks its glass-to-glass figure subtracts."""

from __future__ import annotations

import pytest

from probes.base import ProbeSpec, Watch, run
from qoe.clockdomain import SAME_HOST, SYNCHRONISED, UNKNOWN, clock_domain, is_local_host
from qoe.result import ProbeResult


@pytest.mark.parametrize(
    ("url", "offset", "domain"),
    [
        ("http://127.0.0.1:8080/whep/demo", None, SAME_HOST),
        ("http://localhost:8080/whep/demo", None, SAME_HOST),
        ("http://[::1]:8080/whep/demo", None, SAME_HOST),
        ("rtmp://127.0.0.5/live/x", None, SAME_HOST),
        ("http://192.0.2.10/whep/demo", None, UNKNOWN),  # TEST-NET-1: never this host
        ("https://live.example.com/whep/shop", None, UNKNOWN),
        ("https://live.example.com/whep/shop", 0.0, SYNCHRONISED),
        ("http://127.0.0.1:8080/whep/demo", -0.004, SYNCHRONISED),
    ],
)
def test_clock_domain(url: str, offset: float | None, domain: str) -> None:
    assert clock_domain(url, offset) == domain


def test_local_host_names() -> None:
    assert is_local_host("127.0.0.1") and is_local_host("localhost")
    assert not is_local_host("") and not is_local_host("203.0.113.7")


async def test_a_given_clock_offset_corrects_glass_to_glass() -> None:
    async def measured(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
        result.latency.glass_to_glass_seconds = {"p50": 0.100, "p95": 0.150, "max": 0.200}

    # The publisher's clock runs 30 ms ahead of ours: its capture stamps read 30 ms late,
    # so what we subtracted was 30 ms short.
    spec = ProbeSpec(url="https://live.example.com/whep/shop", kind="test", duration=0.1, clock_offset=0.03)
    result = await run(spec, measured)
    assert result.latency.clock_domain == SYNCHRONISED
    assert result.latency.clock_offset_seconds == 0.03
    assert result.latency.glass_to_glass_seconds == pytest.approx({"p50": 0.13, "p95": 0.18, "max": 0.23})
    plain = await run(
        ProbeSpec(url="https://live.example.com/whep/shop", kind="test", duration=0.1), measured
    )
    assert plain.latency.clock_domain == UNKNOWN and plain.latency.clock_offset_seconds is None
    assert plain.latency.glass_to_glass_seconds["p50"] == 0.100
