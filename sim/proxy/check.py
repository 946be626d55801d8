"""``qoe netem check``: send real datagrams through the emulator on loopback, compare with the profile.

:func:`check_profile` measures one direction of a profile on the user's own machine, through
a :class:`~sim.proxy.UdpProxy` on 127.0.0.1, with a sender and a sink in this process. Two
phases:

1. **Impairments** (``packets`` datagrams of :data:`MEDIA_BYTES`): delay, jitter, loss,
   burst length and duplication, with the capacity stage bypassed (``rate``, ``trace``,
   queue bounds and scheduled rate steps removed), so the figures are the propagation and
   loss model's, not queueing at a rate the fast test pace would exceed. The default pace,
   :data:`DEFAULT_RATE_PPS`, is chosen to finish 10,000 packets in a few seconds;
   ``rate_pps`` sets a stream-like pace instead (a 2 Mbit/s video stream of 1200-byte
   packets is about 200 packets/s).
2. **Capacity**, when the direction has one: datagrams of :data:`CAPACITY_BYTES` offered
   at :data:`OVERLOAD` times the capacity for :data:`CAPACITY_SECONDS`, through the full
   configuration; capacity is the bits delivered per second from the first delivery to the
   last, against the configured rate (or the trace's bytes over the same window).

For every figure the report shows three values: *configured* (from the profile's numbers
alone), *model* (the link model's answer for the very packets sent, from
:func:`~sim.netem.simulate` on their send times: it includes effects of the traffic, such as
the no-reordering clamp raising the mean delay when packets are closer together than the
jitter) and *measured* (what the sink saw). Measured against model is the emulator's
fidelity on this machine; model against configured is what the profile means for this
traffic. Scheduling error is the proxy's own record (actual send minus planned departure).

Time here is real (``time.monotonic``): the point is the real path, so no simulated clock.
Outages and schedule steps later than the check's few seconds are not exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qoe import looplag
from qoe.errors import ConfigError
from sim.netem import DropReason, Fates, LinkConfig, simulate
from sim.netem.segments import segments
from sim.profiles import DIRECTIONS, Profile, load_profile
from sim.shaper import Scheduler

from .udp import UdpProxy

__all__ = [
    "CAPACITY_BYTES",
    "CAPACITY_SECONDS",
    "DEFAULT_RATE_PPS",
    "MEDIA_BYTES",
    "OVERLOAD",
    "CheckReport",
    "Metric",
    "check_profile",
]

MEDIA_BYTES = 1200
"""Datagram size of the impairment phase: a typical RTP video packet (MTU minus headroom)."""
CAPACITY_BYTES = 1500
"""Datagram size of the capacity phase: one Mahimahi delivery opportunity."""
DEFAULT_RATE_PPS = 4000.0
"""Default pace of the impairment phase, packets/s: 10,000 packets in 2.5 s."""
CAPACITY_SECONDS = 2.0
"""How long the capacity phase saturates the link, seconds."""
OVERLOAD = 1.25
"""Offered load of the capacity phase as a multiple of the capacity (after loss)."""
DRAIN_TIMEOUT = 5.0
"""Longest wait for packets still in the emulated link after the last send, seconds."""

STOLEN_OVERLOAD = 0.04
"""Share of the machine's CPU time taken by a hypervisor at which the check's host counts as
busy. The proxy's promise is tighter than a probe's (2 ms, not the 150 ms freeze margin) and a
virtual CPU taken away for a few milliseconds breaks it while the guest looks idle: on a
2-vCPU guest, 32 runs of the 20,000-packet check kept a p99 scheduling error of 0.15-1.54 ms
while 0.1-3.9 % of CPU time was stolen, and had 2.2-8.1 ms while 5.5-18.6 % was."""

BUSY_OVERLOAD = 0.5
"""Share of the machine's CPU time spent (by anything) at which the check's host counts as
busy, tighter than a probe's for the same reason: the check alone keeps a 2-core host about
4 % busy (3.7-3.9 % for the 20,000-packet 4g and 3g checks on an idle one), so at half its
time gone, other work is competing for the core the deliveries need. With the host 78 % busy
(other tests beside it), the 20,000-packet check's p99 scheduling error was 3.9 ms."""

_HEADER = struct.Struct("!Qd")  # sequence number, send time (time.monotonic seconds)
_HELLO = b"qoe-netem-check hello"


@dataclass(frozen=True)
class Metric:
    """One row of the report: a figure's configured, model and measured values (None: n/a)."""

    name: str
    unit: str
    configured: float | None
    model: float | None
    measured: float | None
    description: str = ""


@dataclass
class CheckReport:
    """What :func:`check_profile` found. Times in seconds, rates in bits/s, ratios 0..1."""

    profile: str
    direction: str
    packets: int
    rate_pps: float
    metrics: list[Metric] = field(default_factory=list)
    scheduling_error: dict[str, Any] = field(default_factory=dict)
    capacity_packets: int = 0
    duration_seconds: float = 0.0
    host: dict[str, Any] = field(default_factory=dict)
    """This machine while the check ran: ``loop_lag_max_seconds``, ``cpu_busy_ratio``,
    ``cpu_stolen_ratio`` and ``overloaded`` (see :mod:`qoe.looplag` and
    :data:`STOLEN_OVERLOAD`). A busy host delivers late, so a scheduling error
    over its bound on an overloaded host is the host's, not the emulator's."""
    notes: list[str] = field(default_factory=list)

    @property
    def host_overloaded(self) -> bool:
        return bool(self.host.get("overloaded"))

    def __getitem__(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``metrics`` maps each name to its unit and three values."""
        return {
            "profile": self.profile,
            "direction": self.direction,
            "packets": self.packets,
            "rate_pps": self.rate_pps,
            "capacity_packets": self.capacity_packets,
            "duration_seconds": self.duration_seconds,
            "metrics": {
                m.name: {
                    "unit": m.unit,
                    "configured": m.configured,
                    "model": m.model,
                    "measured": m.measured,
                }
                for m in self.metrics
            },
            "scheduling_error": self.scheduling_error,
            "host": dict(self.host),
            "notes": list(self.notes),
        }

    def format_table(self) -> str:
        """A plain-text table for humans (milliseconds, percent, Mbit/s)."""
        head = (
            f"profile {self.profile}, {self.direction}: {self.packets} packets at "
            f"{self.rate_pps:g}/s"
            + (f", {self.capacity_packets} saturating" if self.capacity_packets else "")
            + f", {self.duration_seconds:.1f} s"
        )
        rows = [("", "configured", "model", "measured")]
        for m in self.metrics:
            scale, unit = _display(m.unit)
            rows.append(
                (
                    f"{m.description or m.name} ({unit})" if unit else (m.description or m.name),
                    _fmt(m.configured, scale),
                    _fmt(m.model, scale),
                    _fmt(m.measured, scale),
                )
            )
        err = self.scheduling_error
        if err.get("p99") is not None:
            rows.append(
                (
                    "scheduling error p50 / p99 (ms)",
                    "",
                    "",
                    f"{err['p50'] * 1e3:.2f} / {err['p99'] * 1e3:.2f}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [head]
        for row in rows:
            lines.append(
                "  ".join([row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, 4)]).rstrip()
            )
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _display(unit: str) -> tuple[float, str]:
    return {"s": (1e3, "ms"), "ratio": (100.0, "%"), "bit/s": (1e-6, "Mbit/s")}.get(unit, (1.0, unit))


def _fmt(value: float | None, scale: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * scale:.3f}" if abs(value * scale) < 100 else f"{value * scale:.1f}"


def host_too_busy(worst_lag: float | None, busy: float | None, stolen: float | None) -> bool:
    """Whether the check's host was too busy to keep its deliveries on time: overloaded as a
    probe's host is (:func:`qoe.metrics.overloaded`), with :data:`BUSY_OVERLOAD` of its CPU
    time spent, or with :data:`STOLEN_OVERLOAD` of it taken by a hypervisor."""
    return (
        bool(looplag.overloaded(worst_lag, busy))
        or (busy is not None and busy >= BUSY_OVERLOAD)
        or (stolen is not None and stolen >= STOLEN_OVERLOAD)
    )


async def check_profile(
    profile_name_or_path: str | Profile,
    packets: int = 10000,
    direction: str = "downlink",
    rate_pps: float | None = None,
    rng: np.random.Generator | None = None,
) -> CheckReport:
    """Measure ``direction`` of a profile through a UDP proxy on loopback (see module doc).

    Raises :class:`~qoe.errors.ConfigError` for an unknown profile or direction, or a
    non-positive ``packets`` or ``rate_pps``.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction: must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if packets < 1:
        raise ConfigError(f"packets: must be at least 1, got {packets}")
    if rate_pps is not None and not rate_pps > 0:
        raise ConfigError(f"rate_pps: must be > 0, got {rate_pps}")
    profile = (
        profile_name_or_path
        if isinstance(profile_name_or_path, Profile)
        else load_profile(profile_name_or_path)
    )
    rng = rng if rng is not None else np.random.default_rng()
    config: LinkConfig = getattr(profile, direction)
    pace = float(rate_pps) if rate_pps is not None else DEFAULT_RATE_PPS
    started = time.monotonic()

    report = CheckReport(profile.name, direction, packets, pace)
    lag = looplag.open_window()
    bare = _without_capacity(config)
    phase_rng = rng.spawn(1)[0]
    run = await _run(profile, direction, bare, packets, pace, MEDIA_BYTES, phase_rng)
    model = simulate(bare, run.sent_at - run.origin, MEDIA_BYTES, _link_twin(phase_rng, direction))
    _impairment_metrics(report, bare, run, model)
    lateness = [run.lateness]

    capacity = _capacity_at_start(config)
    if capacity is not None:
        if config.trace is not None:
            # A trace's capacity swings far around its mean: offer more than the phase's
            # own stretch of it carries, so the queue never runs dry.
            capacity = 1.5 * config.trace.bytes_between(0.0, CAPACITY_SECONDS) * 8 / CAPACITY_SECONDS
        offered = OVERLOAD * capacity / (1.0 - min(config.loss, 0.5)) / (8 * CAPACITY_BYTES)
        count = max(int(offered * CAPACITY_SECONDS), 20)
        cap_run = await _run(profile, direction, config, count, offered, CAPACITY_BYTES, rng.spawn(1)[0])
        report.capacity_packets = count
        _capacity_metric(report, config, cap_run)
        lateness.append(cap_run.lateness)
    report.scheduling_error = _summary(np.concatenate(lateness))
    worst, busy, stolen = lag.close()["max"], lag.cpu_busy(), lag.cpu_stolen()
    report.host = {
        "loop_lag_max_seconds": worst,
        "cpu_busy_ratio": busy,
        "cpu_stolen_ratio": stolen,
        "overloaded": host_too_busy(worst, busy, stolen),
    }
    if report.host_overloaded:
        why = []
        if busy is not None:
            why.append(f"CPUs {busy:.0%} busy")
        if stolen:
            why.append(f"{stolen:.0%} of their time taken by the hypervisor")
        report.notes.append(
            "this host was busy while the check ran"
            + (f" ({', '.join(why)})" if why else "")
            + ": late deliveries are its own; judge the emulator's fidelity on a quieter host"
        )
    if bare != config:
        report.notes.append(
            "delay, jitter and loss measured with the capacity stage bypassed; capacity measured saturated"
        )
    if config.jitter and not config.reorder and 1.0 / pace < 3.0 * _jitter_std(config):
        report.notes.append(
            f"packets {1e3 / pace:.2g} ms apart with {config.jitter * 1e3:g} ms jitter and no "
            "reordering: holding packets in order raises the delay (model column); a slower "
            "rate_pps shows the profile at a stream's pace"
        )
    if config.outages or config.schedule:
        report.notes.append(
            "outages and schedule steps are timed from the link's start; "
            "those after the check's first seconds are not exercised"
        )
    report.duration_seconds = time.monotonic() - started
    return report


def _link_twin(phase_rng: np.random.Generator, direction: str) -> np.random.Generator:
    """A generator in the state the proxy's first flow gives its ``direction`` link.

    :class:`~sim.proxy.UdpProxy` spawns ``(uplink, downlink)`` generators from its own for
    each flow it starts; replaying the same stream lets the model column be the link's
    plan for the very packets sent, so measured minus model is the real path's own error.
    """
    seq = phase_rng.bit_generator.seed_seq
    assert isinstance(seq, np.random.SeedSequence)
    fresh = np.random.SeedSequence(seq.entropy, spawn_key=seq.spawn_key, pool_size=seq.pool_size)
    twin = np.random.Generator(type(phase_rng.bit_generator)(fresh))
    return twin.spawn(2)[0 if direction == "uplink" else 1]


# -- one phase ---------------------------------------------------------------------------


@dataclass
class _Run:
    origin: float  # the proxy flow's start (its links' time origin), time.monotonic
    sent_at: np.ndarray  # (n,) actual send time of each sequence number
    first_at: np.ndarray  # (n,) first arrival at the sink; NaN if lost
    copies: np.ndarray  # (n,) int, copies received
    received_order: np.ndarray  # sequence numbers in arrival order (first copies only)
    sizes: int
    lateness: np.ndarray  # the proxy's scheduling errors in the measured direction, seconds


class _Sink:
    """Records each datagram's sequence number and arrival time (one non-blocking socket)."""

    def __init__(self, sock: socket.socket, n: int) -> None:
        self.sock = sock
        self.first_at = np.full(n, np.nan)
        self.copies = np.zeros(n, dtype=np.int64)
        self.order: list[int] = []

    def readable(self) -> None:
        unpack = _HEADER.unpack_from
        for _ in range(256):
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            now = time.monotonic()
            if len(data) < _HEADER.size:
                continue
            seq, _ = unpack(data)
            if seq >= len(self.copies):
                continue
            if not self.copies[seq]:
                self.first_at[seq] = now
                self.order.append(seq)
            self.copies[seq] += 1


async def _run(
    profile: Profile,
    direction: str,
    config: LinkConfig,
    n: int,
    pace: float,
    size: int,
    rng: np.random.Generator,
) -> _Run:
    """Send ``n`` datagrams of ``size`` bytes at ``pace`` per second through ``config``."""
    perfect = LinkConfig()
    measured = dataclasses.replace(
        profile,
        uplink=config if direction == "uplink" else perfect,
        downlink=config if direction == "downlink" else perfect,
    )
    loop = asyncio.get_running_loop()
    server = _socket()
    client = _socket()
    proxy = UdpProxy(("127.0.0.1", 0), server.getsockname()[:2], measured, rng)
    pacer = Scheduler()
    sender, receiver = (client, server) if direction == "uplink" else (server, client)
    sink = _Sink(receiver, n)
    sent_at = np.full(n, np.nan)
    try:
        await proxy.start()
        loop.add_reader(receiver.fileno(), sink.readable)
        if direction == "downlink":
            # The flow starts with the client's first datagram (over the unimpaired uplink);
            # the server learns the flow's address from it.
            hello = _Hello(server)
            loop.add_reader(server.fileno(), hello.readable)
            origin = time.monotonic()
            client.sendto(_HELLO, proxy.address)
            async with asyncio.timeout(2.0):
                await hello.heard
            target = hello.heard.result()
        else:
            origin = math.nan  # the first measured datagram starts the flow
            target = proxy.address
        buf = bytearray(size)
        pack = _HEADER.pack_into

        start = time.monotonic() + 0.01
        finished = loop.create_future()

        def send(seq: int) -> None:
            # Each send schedules the next: a heap of all n sends up front would be n
            # long-lived objects for the garbage collector to trace, which showed up as
            # millisecond pauses in the scheduling error.
            now = time.monotonic()
            pack(buf, 0, seq, now)
            sent_at[seq] = now
            with contextlib.suppress(OSError):  # a refused send counts as lost
                sender.sendto(buf, target)
            if seq + 1 < n:
                pacer.at(start + (seq + 1) / pace, send, seq + 1)
            elif not finished.done():
                finished.set_result(None)

        pacer.at(start, send, 0)
        async with asyncio.timeout(n / pace + 30.0):
            await finished
        # Cheap polling only: a full stats() while packets are in flight would itself
        # stall the loop for milliseconds.
        deadline = time.monotonic() + max(DRAIN_TIMEOUT, 4 * config.delay)
        while proxy.pending(direction) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)  # the last datagrams are on loopback
        sink.readable()
        lateness = proxy.lateness(direction).samples()
    finally:
        pacer.close()
        for sock in (server, client):
            if not loop.is_closed():
                loop.remove_reader(sock.fileno())
        await proxy.stop()
        server.close()
        client.close()
    return _Run(
        origin=origin if direction == "downlink" else float(sent_at[0]),
        sent_at=sent_at,
        first_at=sink.first_at,
        copies=sink.copies,
        received_order=np.asarray(sink.order, dtype=np.int64),
        sizes=size,
        lateness=lateness,
    )


class _Hello:
    """The server's reader on the downlink: learns the flow's address from the hello."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.heard: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def readable(self) -> None:
        for _ in range(256):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            if data == _HELLO and not self.heard.done():
                self.heard.set_result(addr)


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    return sock


# -- figures -----------------------------------------------------------------------------


def _without_capacity(config: LinkConfig) -> LinkConfig:
    """``config`` with no capacity stage: no rate, trace, queue bounds or rate steps."""
    steps = []
    for at, changes in config.schedule:
        kept = {k: v for k, v in changes.items() if k != "rate"}
        if kept:
            steps.append((at, kept))
    return dataclasses.replace(
        config, rate=None, trace=None, queue_packets=None, queue_seconds=None, schedule=steps
    )


def _capacity_at_start(config: LinkConfig) -> float | None:
    """Capacity in bits/s in force at the link's start (a trace: its mean), or None."""
    if config.trace is not None:
        return config.trace.mean_rate
    byte_time = segments(config)[0].byte_time
    return 8.0 / byte_time if byte_time else None


_QUANTILE_Z = {
    # Standardised jitter variates' quantiles (see sim.netem.config): normal; uniform on
    # [-1, 1]; Lomax(3) shifted to mean 0 and scaled to unit variance.
    "normal": {0.5: 0.0, 0.99: 2.3263},
    "uniform": {0.5: 0.0, 0.99: 0.98},
    "pareto": {
        0.5: (0.5 ** (-1 / 3) - 1 - 0.5) / math.sqrt(0.75),
        0.99: (0.01 ** (-1 / 3) - 1 - 0.5) / math.sqrt(0.75),
    },
}


def _summary(errors: np.ndarray) -> dict[str, Any]:
    """Scheduling errors (seconds) as count, mean, p50, p99, max (None when empty)."""
    if errors.size == 0:
        return {"count": 0, "mean": None, "p50": None, "p99": None, "max": None}
    p50, p99 = np.quantile(errors, [0.5, 0.99])
    return {
        "count": int(errors.size),
        "mean": float(errors.mean()),
        "p50": float(p50),
        "p99": float(p99),
        "max": float(errors.max()),
    }


def _jitter_std(config: LinkConfig) -> float:
    if config.jitter_distribution == "uniform":
        return config.jitter / math.sqrt(3.0)
    return config.jitter


def _rfc3550_jitter(sent: np.ndarray, arrived: np.ndarray) -> float | None:
    """Mean of the RFC 3550 section 6.4.1 interarrival jitter estimate over the run, seconds.

    ``sent`` and ``arrived`` are in arrival order. J += (|D| - J) / 16 with D the change in
    transit time between consecutive arrivals; the mean over the run is steadier than the
    last value, which a receiver report would carry.
    """
    if sent.size < 2:
        return None
    d = np.abs(np.diff(arrived - sent))
    j = 0.0
    total = 0.0
    for value in d.tolist():
        j += (value - j) / 16.0
        total += j
    return total / d.size


def _bursts(lost: np.ndarray) -> float | None:
    """Mean length of runs of consecutive lost packets (``lost``: bool, send order)."""
    if not lost.any():
        return None
    padded = np.concatenate(([False], lost, [False])).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return float(np.mean(ends - starts))


def _impairment_metrics(report: CheckReport, config: LinkConfig, run: _Run, model: Fates) -> None:
    model_departures = model.departures + run.origin
    model_reasons = model.reasons
    sent = run.sent_at
    valid = np.isfinite(sent)
    got = np.isfinite(run.first_at) & valid
    delay = run.first_at[got] - sent[got]
    model_ok = (model_reasons == DropReason.DELIVERED) & valid
    model_delay = model_departures[model_ok] - sent[model_ok]
    order = run.received_order[valid[run.received_order]]
    model_order = np.flatnonzero(model_ok)
    model_order = model_order[np.argsort(model_departures[model_order], kind="stable")]

    std = _jitter_std(config)
    z = _QUANTILE_Z[config.jitter_distribution]
    p = config.loss
    configured_burst = (config.burst_length or 1.0 / (1.0 - p)) if p > 0 else None

    def stats(values: np.ndarray) -> tuple[float | None, ...]:
        if values.size == 0:
            return (None, None, None, None)
        p50, p99 = np.quantile(values, [0.5, 0.99])
        return (float(values.mean()), float(p50), float(p99), float(values.std()))

    measured = stats(delay)
    modelled = stats(model_delay)
    n = int(valid.sum())
    lost = ~got[valid]
    model_lost = ~model_ok[valid]
    rows = [
        ("delay_mean", "s", config.delay, modelled[0], measured[0], "delay mean"),
        ("delay_p50", "s", config.delay + z[0.5] * std, modelled[1], measured[1], "delay p50"),
        ("delay_p99", "s", config.delay + z[0.99] * std, modelled[2], measured[2], "delay p99"),
        ("delay_std", "s", std, modelled[3], measured[3], "jitter, std of delay"),
        (
            "jitter_rfc3550",
            "s",
            None,
            _rfc3550_jitter(sent[model_order], model_departures[model_order]),
            _rfc3550_jitter(sent[order], run.first_at[order]),
            "jitter, RFC 3550",
        ),
        (
            "loss_rate",
            "ratio",
            p,
            float(model_lost.mean()) if n else None,
            float(lost.mean()) if n else None,
            "loss rate",
        ),
        (
            "burst_length",
            "packets",
            configured_burst,
            _bursts(model_lost),
            _bursts(lost),
            "mean loss burst",
        ),
        (
            "duplicate_rate",
            "ratio",
            config.duplicate,
            float(np.isfinite(model.duplicates[model_ok]).mean()) if model_ok.any() else None,
            float((run.copies[got] > 1).mean()) if got.any() else None,
            "duplicates",
        ),
    ]
    report.metrics.extend(Metric(*row) for row in rows)


def _capacity_metric(report: CheckReport, config: LinkConfig, run: _Run) -> None:
    arrivals = np.sort(run.first_at[np.isfinite(run.first_at)])
    if arrivals.size < 3:
        report.metrics.append(Metric("capacity", "bit/s", None, None, None, "capacity"))
        return
    window = float(arrivals[-1] - arrivals[0])
    # Bits delivered after the first arrival, over the time they took.
    measured = (arrivals.size - 1) * run.sizes * 8 / window if window > 0 else None
    if config.trace is not None:
        # Served times lag arrivals by the propagation delay; the trace origin is the flow's.
        a = arrivals[0] - config.delay - run.origin
        b = arrivals[-1] - config.delay - run.origin
        configured = config.trace.bytes_between(max(a, 0.0), b) * 8 / (b - a) if b > a else None
    else:
        configured = _capacity_at_start(config)
    report.metrics.append(Metric("capacity", "bit/s", configured, None, measured, "capacity"))
