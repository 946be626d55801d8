"""What every probe shares: its spec, its signature, and the runner that enforces both.

A probe is ``async def probe(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None``.
It records what it sees in the run's event log (:meth:`Watch.open_log`), finishes the log in
the reports it hands to :meth:`Watch.on_close`, hands its clean-up to :meth:`Watch.defer`, and
raises a :class:`~qoe.errors.ProbeError` when it cannot go on. It fills no figure itself:
the runner computes every one from the log (:func:`qoe.metrics.fill_result`). The
runner owns the watch window: it closes it the moment the probe's body returns or fails (or
at the planned end, whichever is first), has the figures computed over that window, and only
then tears down, timing the teardown on its own. No probe stamps its own end, so no probe can
count a slow teardown (a remote server answering DELETE late) as a trailing freeze.

:func:`run` turns whatever happens (success, a probe error, a deadline, a bug) into a
:class:`ProbeResult`; it never raises, because a failed probe is a result (blackbox_exporter's
``prober`` does the same), and figures measured before a failure survive.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qoe import checks, clock, looplag, metrics
from qoe.clockdomain import clock_domain
from qoe.errors import ConfigError, DeadlineError, ProbeError
from qoe.redact import redact_url
from qoe.result import ProbeResult
from qoe.timeline import Failure, RunInfo, Timeline
from sim.profiles import load_profile

__all__ = ["TEARDOWN_SECONDS", "ProbeFn", "ProbeSpec", "Watch", "run"]

log = logging.getLogger(__name__)

TEARDOWN_SECONDS = 5.0
"""Time a probe may take past its duration to close its peers and say goodbye."""

TEARDOWN_FLOOR_SECONDS = 1.0
"""Teardown time granted even to a run that used its whole deadline: peers are closed."""

ProbeFn = Callable[["ProbeSpec", ProbeResult, "Watch"], Awaitable[None]]
Report = Callable[[float], Awaitable[None] | None]
Cleanup = Callable[[], Awaitable[object] | object]


class Watch:
    """The window one probe run watches, owned by :func:`run`.

    It opens when the run starts (the viewer's "click": the first attempt) and closes at the
    planned end, ``start + duration``, or earlier at the instant the probe's body returned or
    failed. Figures are computed over ``[start, stopped]`` by the reports a probe registers
    with :meth:`on_close`; the clean-ups it registers with :meth:`defer` (closing peers, the
    WHEP DELETE, socket close handshakes) run afterwards, last registered first, and their
    time is the run's ``teardown_seconds``, never part of a QoE figure.
    """

    def __init__(self, start: float, duration: float, started_at: float) -> None:
        self.start = start
        """Monotonic seconds when the run started."""
        self.started_at = started_at
        """Wall-clock (Unix) seconds at the same instant."""
        self.until = start + duration
        """Monotonic seconds when the run stops watching unless it stops earlier."""
        self.stopped: float | None = None
        """Monotonic seconds when the run stopped watching (None while it watches)."""
        self.log = Timeline((), start=start, started_at=started_at)
        """The run's event log: the probe's own, once it opened one with :meth:`open_log`."""
        self._reports: list[Report] = []
        self._cleanups: list[Cleanup] = []

    def open_log(self, phases: tuple[str, ...], role: str) -> Timeline:
        """The probe's event log, with its join phases and its role (see
        :attr:`~qoe.timeline.Timeline.role`); the run's figures are computed from it."""
        self.log = Timeline(phases, start=self.start, started_at=self.started_at, role=role, run=self.log.run)
        return self.log

    def left(self) -> float:
        """Seconds left until the planned end (0 once it has passed)."""
        return max(0.0, self.until - clock.monotonic())

    def on_close(self, report: Report) -> None:
        """Have ``report(stopped)`` fill the result once the window has closed."""
        self._reports.append(report)

    def defer(self, cleanup: Cleanup) -> None:
        """Have ``cleanup()`` run after the reports, as part of the teardown."""
        self._cleanups.append(cleanup)

    def close(self, at: float) -> float:
        """Stop watching at ``at`` (never past the planned end); returns the instant."""
        if self.stopped is None:
            self.stopped = min(max(at, self.start), self.until)
        return self.stopped

    async def report(self) -> None:
        """Run the reports; if one fails the others still run, then its error is raised."""
        if self.stopped is None:
            raise RuntimeError("the watch window is still open")
        first: Exception | None = None
        for report in self._reports:
            try:
                outcome = report(self.stopped)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    async def teardown(self) -> None:
        """Run the clean-ups, last registered first; each runs even if one before failed."""
        errors: list[BaseException] = []
        while self._cleanups:
            cleanup = self._cleanups.pop()
            try:
                outcome = cleanup()
                if inspect.isawaitable(outcome):
                    await outcome
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.append(exc)
        if errors:
            log.warning("teardown: %s", "; ".join(str(e) or type(e).__name__ for e in errors))


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
    clock_offset: float | None = None
    """The publisher's clock minus this host's, seconds, when they are different hosts kept in
    step by NTP or PTP: glass-to-glass is corrected by it (see :mod:`qoe.clockdomain`)."""
    seed: int | None = None
    """Seed for the network emulation's random draws (loss, jitter); None draws a fresh one."""
    deadline_seconds: float | None = None
    """Hard limit on the whole run; default: duration + TEARDOWN_SECONDS. A scrape sets it
    from its timeout so the answer comes back in time."""
    may_contact: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)
    """Which URLs a server may send the probe on to (a redirect's target, a WebRTC session's
    ``Location``); None: any. The exporter sets it from its allow list, so that a target it
    was allowed to probe cannot hand its offer, token or DELETE to another host."""

    def __post_init__(self) -> None:
        for name in ("duration", "join_timeout", "media_timeout"):
            checks.number(getattr(self, name), name, above=0.0)
        if self.deadline_seconds is not None:
            checks.number(self.deadline_seconds, "deadline_seconds", above=0.0)

    def network(self) -> Any:
        """The emulated network profile (``sim.profiles.Profile``), or None for ``none``.

        Raises ConfigError for an unknown profile name or a bad profile file.
        """
        if self.profile in ("", "none"):
            return None
        return load_profile(self.profile)

    @property
    def deadline(self) -> float:
        """Hard limit on the whole run, enforced by :func:`run`."""
        if self.deadline_seconds is not None:
            return self.deadline_seconds
        return self.duration + TEARDOWN_SECONDS


async def run(
    spec: ProbeSpec, probe: ProbeFn, *, on_log: Callable[[Timeline], None] | None = None
) -> ProbeResult:
    """Run ``probe`` under its deadline and return its result, whatever happens.

    The result is computed from the run's event log (:func:`qoe.metrics.fill_result`);
    ``on_log`` is handed the finished log, to save it or replay it.
    """
    target = redact_url(spec.url)
    result = ProbeResult(
        probe=spec.name or spec.kind, kind=spec.kind, target=target, url=target, profile=spec.profile
    )
    watch = Watch(clock.monotonic(), spec.duration, clock.wall())
    log = watch.log
    log.run = RunInfo(
        probe=result.probe,
        kind=spec.kind,
        target=target,
        profile=spec.profile,
        clock_domain=clock_domain(spec.url, spec.clock_offset),
        clock_offset=spec.clock_offset,
    )
    lag = looplag.open_window()
    try:
        async with asyncio.timeout_at(_loop_time(watch.start + spec.deadline)):
            await probe(spec, result, watch)
    except BaseException as exc:
        body_ended = clock.monotonic()
        watch.close(body_ended)
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            await _finish(spec, watch, result, lag, body_ended, on_log)
            raise
        _fail(watch, spec, exc)
    else:
        body_ended = clock.monotonic()
        watch.close(body_ended)
    await _finish(spec, watch, result, lag, body_ended, on_log)
    return result


def _loop_time(monotonic: float) -> float:
    """A :func:`qoe.clock.monotonic` instant on the running loop's clock."""
    return asyncio.get_running_loop().time() + (monotonic - clock.monotonic())


def failure(exc: BaseException) -> Failure:
    """What a run's log records of the error that ended it."""
    kind = (
        exc.kind if isinstance(exc, ProbeError) else "config" if isinstance(exc, ConfigError) else "internal"
    )
    message = str(exc) or type(exc).__name__
    return Failure(kind, message.splitlines()[0])


def _fail(watch: Watch, spec: ProbeSpec, exc: BaseException) -> None:
    if isinstance(exc, TimeoutError) and not isinstance(exc, ProbeError):
        exc = DeadlineError(f"probe did not finish within its deadline of {spec.deadline:g} s")
    elif not isinstance(exc, ProbeError | ConfigError):  # a bug in a probe must not take the fleet down
        log.error("probe %s against %s crashed", spec.kind, redact_url(spec.url), exc_info=exc)
    watch.log.failure = failure(exc)


async def _finish(
    spec: ProbeSpec,
    watch: Watch,
    result: ProbeResult,
    lag: looplag.LagWindow,
    body_ended: float,
    on_log: Callable[[Timeline], None] | None,
) -> None:
    """Close the window, finish the log, tear down (timed on its own), then the figures."""
    stopped = watch.stopped if watch.stopped is not None else watch.close(body_ended)
    lag.close(stopped)
    try:
        await watch.report()
    except Exception as exc:
        if watch.log.failure is None:
            log.error("probe %s against %s: report failed", spec.kind, result.target, exc_info=exc)
            watch.log.failure = failure(exc)
    run_log = watch.log
    run_log.finish(stopped)
    run_log.loop_ticks = lag.loop_ticks()
    run_log.cpu = lag.cpu_readings()
    left = watch.start + spec.deadline - clock.monotonic()
    budget = max(TEARDOWN_FLOOR_SECONDS, min(TEARDOWN_SECONDS, left))
    try:
        async with asyncio.timeout(budget):
            await watch.teardown()
    except TimeoutError:
        log.warning("probe %s against %s: teardown took over %.1f s", spec.kind, result.target, budget)
    run_log.body_end, run_log.teardown_end = body_ended, clock.monotonic()
    metrics.fill_result(result, run_log)
    if on_log is not None:
        on_log(run_log)
