"""What every probe shares: its spec, its signature, and the runner that enforces both.

A probe is ``async def probe(spec: ProbeSpec, result: ProbeResult) -> None``: it fills
``result`` as it measures (in a ``finally``, so figures measured before a failure survive) and
raises a :class:`~qoe.errors.ProbeError` when it cannot go on. :func:`run` turns whatever
happens (success, a probe error, a deadline, a bug) into a :class:`ProbeResult`; it never
raises, because a failed probe is a result (blackbox_exporter's ``prober`` does the same).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qoe import clock, looplag
from qoe.errors import ConfigError, DeadlineError, ProbeError
from qoe.redact import redact_url
from qoe.result import ProbeResult, iso_time

__all__ = ["TEARDOWN_SECONDS", "ProbeFn", "ProbeSpec", "run"]

log = logging.getLogger(__name__)

TEARDOWN_SECONDS = 5.0
"""Time a probe may take past its duration to close its peers and say goodbye."""

ProbeFn = Callable[["ProbeSpec", ProbeResult], Awaitable[None]]


@dataclass(frozen=True)
class ProbeSpec:
    """One probe run: what to probe, how, and for how long."""

    url: str
    kind: str
    duration: float = 10.0
    """Seconds from the probe's start (the viewer's "click") until it stops watching."""
    name: str = ""
    """The probe's label in results and metrics; defaults to the kind."""
    profile: str = "none"
    """Network profile name, reported as is."""
    join_timeout: float = 10.0
    """Seconds to wait for the first decoded frame before failing with ``no_media``."""
    media_timeout: float = 5.0
    """Seconds without any packet, once media flowed, before failing with ``disconnected``."""
    decode: bool = True
    """Decode video to read the test signal; without it only transport figures are measured."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Kind-specific options (e.g. the tone frequency to look for, a publisher's knobs)."""
    seed: int | None = None
    """Seed for the network emulation's random draws (loss, jitter); None draws a fresh one."""
    deadline_seconds: float | None = None
    """Hard limit on the whole run; default: duration + TEARDOWN_SECONDS. A scrape sets it
    from its timeout so the answer comes back in time."""

    def __post_init__(self) -> None:
        if not self.duration > 0:
            raise ConfigError(f"--duration must be positive, got {self.duration}")
        if not self.join_timeout > 0 or not self.media_timeout > 0:
            raise ConfigError("timeouts must be positive")

    def network(self) -> Any:
        """The emulated network profile (``sim.profiles.Profile``), or None for ``none``.

        Raises ConfigError for an unknown profile name or a bad profile file.
        """
        if self.profile in ("", "none"):
            return None
        from sim.profiles import load_profile

        return load_profile(self.profile)

    @property
    def deadline(self) -> float:
        """Hard limit on the whole run, enforced by :func:`run`."""
        if self.deadline_seconds is not None:
            return self.deadline_seconds
        return self.duration + TEARDOWN_SECONDS


async def run(spec: ProbeSpec, probe: ProbeFn) -> ProbeResult:
    """Run ``probe`` under its deadline and return its result, whatever happens."""
    result = ProbeResult(
        probe=spec.name or spec.kind,
        kind=spec.kind,
        target=redact_url(spec.url),
        url=redact_url(spec.url),
        profile=spec.profile,
        started_at=iso_time(clock.wall()),
    )
    looplag.settle_heap()
    start = clock.monotonic()
    lag = looplag.open_window()
    try:
        async with asyncio.timeout(spec.deadline):
            await probe(spec, result)
        result.success = result.error is None
    except ProbeError as exc:
        result.fail(exc)
    except ConfigError as exc:
        result.fail(exc)
        if result.error is not None:
            result.error.kind = "config"
    except TimeoutError:
        result.fail(DeadlineError(f"probe did not finish within its deadline of {spec.deadline:g} s"))
    except Exception as exc:  # a bug in a probe must not take the fleet or exporter down
        log.exception("probe %s against %s crashed", spec.kind, result.target)
        result.fail(exc)
    finally:
        watched = result.duration_seconds
        until = start + watched if watched else None
        host = result.probe_host
        host.loop_lag_seconds, host.cpu_busy_ratio = lag.close(until), lag.cpu_busy(until)
        host.overloaded = looplag.overloaded(host.loop_lag_seconds["max"], host.cpu_busy_ratio)
    if not result.duration_seconds:
        result.duration_seconds = clock.monotonic() - start
    return result
