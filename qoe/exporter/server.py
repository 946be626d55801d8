"""``qoe serve``: run a fleet's probes on their schedule and serve the results to Prometheus.

Endpoints:

- ``/metrics``: the latest result and running totals of every scheduled probe
  (:mod:`qoe.exporter.metrics`).
- ``/probe?target=NAME|URL[&kind=K]``: one short probe run now, answered with that run's
  metrics only, as blackbox_exporter's ``/probe`` does; it finishes within the scrape timeout
  from ``X-Prometheus-Scrape-Timeout-Seconds``. Only fleet targets (by name or URL) and URLs
  matching the fleet's ``allow`` patterns may be probed; anything else is refused with 403
  before any connection is made, so the exporter cannot be turned against arbitrary hosts.
  Nor can an allowed server send the probe on: a redirect or a session ``Location`` to
  another host that no pattern admits fails the run before anything goes there.
- ``/healthz``: 200 while the exporter serves.

A probe that fails, crashes or hangs is a failed result (``qoe_probe_success 0``); it never
stops the exporter from serving, and it never stops its own schedule.

What the exporter may be made to hold is bounded, so a burst of scrapes or a slow target
costs a known amount:

- at most ``probe_concurrency`` ``/probe`` runs at once (``[fleet] probe_concurrency``,
  ``qoe serve --probe-concurrency``); beyond it a request is answered at once with 503, a
  ``Retry-After`` of the seconds until the first running probe's deadline and a one-line body,
  and counted (``qoe_exporter_probe_requests_refused_total``). Queuing instead would hold a
  socket and a task per request without bound, and answer after the scrape timeout anyway.
- scheduled runs keep their turns (every ``interval`` seconds from the first); a turn that
  comes while the probe's previous run still goes (slower than its interval, or waiting for a
  slot of ``[fleet] concurrency``) is skipped, logged and counted
  (``qoe_probe_runs_skipped_total``), never queued behind it.
- a connection is closed when it has not sent a whole request head within
  :data:`IDLE_SECONDS` of opening, or of its previous answer, so idle or half-sent
  connections (slowloris) hold nothing for long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import logging
import math
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from probes import PUBLISHERS, probe_spec, run_probe
from qoe import clock
from qoe.errors import ConfigError
from qoe.exporter.metrics import ExporterCollector, ResultCollector
from qoe.fleet.config import Fleet, Target
from qoe.fleet.plan import Run
from qoe.fleet.runner import spec_for
from qoe.redact import redact_url
from qoe.result import ProbeResult

__all__ = ["DEFAULT_SCRAPE_TIMEOUT", "Exporter"]

log = logging.getLogger(__name__)

DEFAULT_SCRAPE_TIMEOUT = 10.0
"""Prometheus's default scrape_timeout, used when a request does not say its own."""
SCRAPE_MARGIN = 0.5
"""Seconds kept free of a scrape timeout for writing the answer."""
TEARDOWN_BUDGET = 1.0
"""Seconds of a /probe's budget left for closing the peer after it stops watching."""
FIRST_ROUND_SPREAD = 10.0
"""Scheduled probes start spread over this many seconds (or their interval, if shorter)."""
IDLE_SECONDS = 20.0
"""Seconds a connection may go without a whole request head: aiohttp's keep-alive timeout,
which runs from a connection's start as well as after each answer (aiohttp 3.14.4 on).
Longer than aiohttp clients keep an idle connection for reuse (15 s), so they never send on
one the exporter is closing; Prometheus reconnects, as it does after any idle close."""


def _parts(url: str) -> tuple[str, str, str, list[str]] | None:
    """(scheme, host, port, path segments) of ``url``; None for a URL with user information,
    a query or a fragment, which no allow pattern may admit."""
    parts = urlsplit(url)
    if "@" in parts.netloc or parts.query or parts.fragment or "?" in url or "#" in url:
        return None
    netloc = parts.netloc.lower()
    if netloc.startswith("["):  # an IPv6 literal holds colons of its own
        host, _, rest = netloc.partition("]")
        host, port = host + "]", rest.removeprefix(":")
    else:
        host, sep, port = netloc.rpartition(":")
        if not sep:
            host, port = netloc, ""
    return parts.scheme.lower(), host, port, parts.path.split("/")


def url_matches(url: str, pattern: str) -> bool:
    """Whether ``url`` is one the allow ``pattern`` admits, compared part by part.

    Scheme and host are compared as parsed (the host may hold ``*`` for a label), the port as
    a glob, and the path segment by segment, so ``*`` never crosses a ``/``, a ``?`` or an
    ``@``: ``http://127.0.0.1:*/whep/allowed-*`` admits ``http://127.0.0.1:8080/whep/allowed-x``
    and neither ``http://127.0.0.1:1@evil:80/whep/allowed-x`` nor
    ``http://127.0.0.1:8080/whip/victim?/whep/allowed-x``.
    """
    got, want = _parts(url), _parts(pattern)
    if got is None or want is None:
        return False
    (scheme, host, port, path), (p_scheme, p_host, p_port, p_path) = got, want
    return (
        scheme == p_scheme
        and fnmatch.fnmatchcase(host, p_host.replace("[", "[[]"))  # an IPv6 literal's bracket
        and port.isdigit() == bool(port)
        and fnmatch.fnmatchcase(port, p_port)
        and len(path) == len(p_path)
        and all(fnmatch.fnmatchcase(segment, glob) for segment, glob in zip(path, p_path, strict=True))
    )


def _origin(url: str) -> tuple[str, str, int] | None:
    """Scheme, host and port of ``url``; None if it has user information or cannot be read."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(parts.scheme.lower(), 0)
    except ValueError:
        return None
    if "@" in parts.netloc or not parts.hostname:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


class Exporter:
    """The exporter: ``async with Exporter(fleet, port=0) as e: e.url``."""

    def __init__(
        self,
        fleet: Fleet,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        schedule: bool = True,
        probe_concurrency: int | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.fleet = fleet
        self.host = host
        self.port = port
        self.idle_seconds = idle_seconds
        self.registry = CollectorRegistry()
        self.collector = ResultCollector(self.registry)
        self.stats = ExporterCollector(probe_concurrency or fleet.probe_concurrency, self.registry)
        self._schedule = schedule
        self._gate = asyncio.Semaphore(fleet.concurrency)
        """Scheduled runs at once ([fleet] concurrency); /probe runs are bounded on their own."""
        self._probe_deadlines: dict[object, float] = {}
        """Each running /probe's deadline (monotonic), for the Retry-After of a refusal."""
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.rounds = 0
        """Scheduled probe runs finished so far."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Exporter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.add_routes(
            [
                web.get("/metrics", self._metrics),
                web.get("/probe", self._probe),
                web.get("/healthz", self._healthz),
                web.get("/", self._index),
            ]
        )
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=self.idle_seconds
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        if self._schedule:
            runs = [Run(t, p, 0) for t in self.fleet.targets for p in t.profiles]
            for i, run in enumerate(runs):
                spread = min(FIRST_ROUND_SPREAD, run.target.interval)
                offset = spread * i / max(1, len(runs))
                self._tasks.append(asyncio.create_task(self._loop(run, offset), name=f"serve-{run.id}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _loop(self, run: Run, offset: float) -> None:
        """Start ``run`` at each of its turns, ``interval`` seconds apart, unless its previous
        run still goes: then that turn is skipped and counted, so runs never pile up."""
        interval = run.target.interval
        turn = clock.monotonic() + offset
        going: asyncio.Task[None] | None = None
        started = 0.0
        key = (run.target.probe, run.target.kind, run.target.name, run.profile)
        try:
            while True:
                await asyncio.sleep(max(0.0, turn - clock.monotonic()))
                if going is not None and not going.done():
                    skipped = self.stats.skip(key)
                    log.warning(
                        "probe %s [%s]: skipped a turn, its previous run is still going after %.1f s "
                        "(interval %g s; %d turns skipped so far)",
                        run.target.name,
                        run.profile,
                        clock.monotonic() - started,
                        interval,
                        skipped,
                    )
                else:
                    started = clock.monotonic()
                    going = asyncio.create_task(self._run_once(run), name=f"serve-{run.id}-run")
                turn += interval
                # A loop that was itself held up (a suspended host) resumes at its next turn
                # rather than running every turn it missed at once.
                now = clock.monotonic()
                if turn < now:
                    turn += math.ceil((now - turn) / interval) * interval
        finally:
            if going is not None:
                going.cancel()
                await asyncio.gather(going, return_exceptions=True)

    async def _run_once(self, run: Run) -> None:
        try:
            async with self._gate:
                result = await run_probe(spec_for(run))
            result.target = run.target.name
            result.labels = dict(run.target.labels)
            self.collector.observe(result, clock.wall())
            self.rounds += 1
            outcome = "ok" if result.success else f"failed ({result.error.kind if result.error else '?'})"
            log.info("probe %s [%s]: %s", run.target.name, run.profile, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:  # nothing a probe does may end its schedule
            log.exception("probe %s [%s] crashed; its schedule goes on", run.target.name, run.profile)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _index(self, request: web.Request) -> web.Response:
        names = ", ".join(t.name for t in self.fleet.targets)
        return web.Response(text=f"qoe exporter: /metrics, /probe?target=NAME ({names}), /healthz\n")

    def allowed(self, target: str) -> Target | str | None:
        """The fleet target or allowed URL ``target`` names, or None if it is not allowed."""
        for t in self.fleet.targets:
            if target in (t.name, t.url):
                return t
        if any(url_matches(target, pattern) for pattern in self.fleet.allow):
            return target
        return None

    def fence(self, target: str) -> Callable[[str], bool]:
        """Where a probe of ``target``, allowed by a pattern, may be sent on by its server (a
        redirect, a WebRTC session's ``Location``): ``target``'s own scheme, host and port, or
        a URL the allow patterns admit; never a URL with user information. A fleet target is
        not fenced: its server was chosen by whoever wrote the fleet file."""
        home = _origin(target)

        def may_contact(url: str) -> bool:
            origin = _origin(url)
            return origin is not None and (
                origin == home or any(url_matches(url, pattern) for pattern in self.fleet.allow)
            )

        return may_contact

    async def _probe(self, request: web.Request) -> web.Response:
        target = request.query.get("target", "")
        if not target:
            return web.Response(status=400, text="missing ?target=NAME or URL\n")
        allowed = self.allowed(target)
        if allowed is None:
            log.warning("refused /probe of a target not in the fleet: %s", redact_url(target))
            return web.Response(status=403, text="target is not allowed by the fleet file\n")
        try:
            timeout = float(
                request.headers.get("X-Prometheus-Scrape-Timeout-Seconds", DEFAULT_SCRAPE_TIMEOUT)
            )
        except ValueError:
            return web.Response(status=400, text="X-Prometheus-Scrape-Timeout-Seconds is not a number\n")
        budget = timeout - SCRAPE_MARGIN
        if not math.isfinite(budget) or budget < TEARDOWN_BUDGET + 1.0:
            return web.Response(status=400, text=f"scrape timeout {timeout:g} s is too short for a probe\n")
        if isinstance(allowed, Target):
            spec = spec_for(Run(allowed, allowed.profiles[0], 0))
            name, labels = allowed.name, allowed.labels
        else:
            try:
                spec = probe_spec(allowed, kind=request.query.get("kind"))
            except ConfigError as exc:
                return web.Response(status=400, text=f"{exc}\n")
            if spec.kind in PUBLISHERS:  # a scrape must never publish into someone's room
                return web.Response(status=403, text=f"/probe runs viewers only, not {spec.kind!r}\n")
            spec = dataclasses.replace(spec, may_contact=self.fence(allowed))
            name, labels = redact_url(allowed), {}
        duration = max(1.0, min(spec.duration, budget - TEARDOWN_BUDGET))
        # The target's own spec (every field it sets), cut to the scrape's budget.
        spec = dataclasses.replace(
            spec, duration=duration, join_timeout=min(spec.join_timeout, duration), deadline_seconds=budget
        )
        now = clock.monotonic()
        if len(self._probe_deadlines) >= self.stats.probe_limit:
            # Refused at once, not queued: a queue would grow with every scrape and answer
            # after the scrape timeout anyway. A slot frees by the first deadline at the latest.
            self.stats.probes_refused += 1
            retry = max(1, math.ceil(min(self._probe_deadlines.values()) - now))
            log.info("refused /probe of %s: %d probes are running, the limit", name, self.stats.probe_limit)
            return web.Response(
                status=503,
                text=f"busy: {self.stats.probe_limit} probes are running, the limit; retry in {retry} s\n",
                headers={"Retry-After": str(retry)},
            )
        token = object()
        self._probe_deadlines[token] = now + budget
        self.stats.probes_in_flight = len(self._probe_deadlines)
        try:
            result: ProbeResult = await run_probe(spec)
        finally:
            del self._probe_deadlines[token]
            self.stats.probes_in_flight = len(self._probe_deadlines)
        result.target, result.labels = name, dict(labels)
        registry = CollectorRegistry()
        ResultCollector(registry).observe(result, clock.wall())
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
