"""Configuration of one direction of an emulated link, validated on construction.

Units are SI throughout: seconds for times, bits per second for rates, bytes for sizes,
probabilities in ``[0, 1]``. Every field defaults to "no impairment", so ``LinkConfig()`` is
a perfect link. Invalid values raise :class:`~qoe.errors.ConfigError` with a one-line
message that starts with the field's name (``loss: must be between 0 and 1, got 1.5``);
the profile loader prefixes the profile and direction.

What each field does and in which order the effects apply is documented on
:class:`sim.netem.link.Link`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from qoe import checks
from qoe.errors import ConfigError

from .trace import Trace

__all__ = ["JITTER_DISTRIBUTIONS", "SCHEDULABLE", "JitterDistribution", "LinkConfig"]

JitterDistribution = Literal["normal", "uniform", "pareto"]

#: Accepted values of :attr:`LinkConfig.jitter_distribution`.
JITTER_DISTRIBUTIONS: tuple[str, ...] = get_args(JitterDistribution)

#: Fields a :attr:`LinkConfig.schedule` step may change.
SCHEDULABLE: tuple[str, ...] = ("delay", "jitter", "loss", "burst_length", "rate", "duplicate")


@dataclass(frozen=True)
class LinkConfig:
    """One direction of a link. All defaults mean "no impairment".

    Attributes:
        delay: one-way propagation delay, seconds, >= 0.
        jitter: spread of the per-packet propagation delay, seconds, >= 0. Its meaning
            depends on ``jitter_distribution``: ``"normal"``: the standard deviation;
            ``"uniform"``: the half-width (delay varies in ``delay +- jitter``, standard
            deviation ``jitter / sqrt(3)``); ``"pareto"``: the standard deviation of a
            Lomax (Pareto II, shape 3) variate shifted to mean zero, i.e. a right-skewed
            tail of delay spikes that never undercuts ``delay - 0.58 * jitter``. A sampled
            propagation delay below zero is clamped to zero, as netem sends such packets at
            once; the mean is unbiased while ``delay`` exceeds about 3 x ``jitter``.
        jitter_distribution: ``"normal"`` (netem's default), ``"uniform"`` or ``"pareto"``.
        reorder: if False (the default: real paths rarely reorder), a packet never departs
            before the one sent before it; jitter then only ever holds packets back, which
            raises the mean delay slightly when packets are closer together than the jitter.
        loss: random loss probability per packet, ``0..1``.
        burst_length: mean loss-burst length L >= 1 in packets. When set, ``loss`` is the
            stationary loss rate of a two-state Gilbert-Elliott chain parameterised as
            libwebrtc's SimulatedNetwork (docs/SOURCES.md, "Burst loss"): P(stay in loss) =
            1 - 1/L, P(start a burst) = p / (1 - p) / L, which needs p <= L / (L + 1).
        rate: bottleneck capacity in bits per second; None is infinite.
        queue_packets: drop-tail bound on packets held by the bottleneck (waiting or being
            serialised); None is unbounded.
        queue_seconds: drop-tail bound on a packet's time in the bottleneck (waiting plus
            serialisation): a packet that would stay longer is dropped; None is unbounded.
        duplicate: probability that a delivered packet is delivered twice, ``0..1``.
        outages: ``(start, duration)`` pairs in seconds from the link's start; every packet
            arriving in ``[start, start + duration)`` is dropped.
        schedule: ``(at, {field: value})`` steps in seconds from the link's start, strictly
            increasing ``at``; each changes the named fields (any of :data:`SCHEDULABLE`)
            from then on. Changes accumulate: a step keeps what earlier steps set.
        trace: a Mahimahi capacity trace (:class:`~sim.netem.trace.Trace`) whose time 0 is
            the link's start; it sets the capacity, so ``rate`` must stay None.
    """

    delay: float = 0.0
    jitter: float = 0.0
    jitter_distribution: JitterDistribution = "normal"
    reorder: bool = False
    loss: float = 0.0
    burst_length: float | None = None
    rate: float | None = None
    queue_packets: int | None = None
    queue_seconds: float | None = None
    duplicate: float = 0.0
    outages: Sequence[tuple[float, float]] = ()
    schedule: Sequence[tuple[float, Mapping[str, float | None]]] = field(default=())
    trace: Trace | None = None

    def __post_init__(self) -> None:
        _check_impairments(self.__dict__, "")
        checks.one_of(self.jitter_distribution, JITTER_DISTRIBUTIONS, "jitter_distribution")
        checks.boolean(self.reorder, "reorder")
        if self.trace is not None and not isinstance(self.trace, Trace):
            raise ConfigError(f"trace: must be a Trace, got {self.trace!r}")
        if self.trace is not None and self.rate is not None:
            raise ConfigError("rate: cannot be combined with trace (the trace sets the capacity)")
        if self.queue_packets is not None:
            checks.whole(self.queue_packets, "queue_packets", minimum=1)
        if self.queue_seconds is not None:
            _positive(self.queue_seconds, "queue_seconds")
        outages = tuple(_outage(item, f"outages[{i}]") for i, item in enumerate(self.outages))
        object.__setattr__(self, "outages", outages)
        object.__setattr__(self, "schedule", self._checked_schedule())
        has_capacity = (
            self.rate is not None
            or self.trace is not None
            or any("rate" in changes for _, changes in self.schedule)
        )
        if not has_capacity:
            for name in ("queue_packets", "queue_seconds"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{name}: needs a capacity (rate or trace) to queue behind")

    def _checked_schedule(self) -> tuple[tuple[float, Mapping[str, float | None]], ...]:
        steps: list[tuple[float, Mapping[str, float | None]]] = []
        state: dict[str, Any] = {name: getattr(self, name) for name in SCHEDULABLE}
        previous = -math.inf
        for i, step in enumerate(self.schedule):
            where = f"schedule[{i}]"
            if not (isinstance(step, Sequence) and len(step) == 2):
                raise ConfigError(f"{where}: must be an (at, {{field: value}}) pair, got {step!r}")
            at, changes = step
            at = _non_negative(at, f"{where}.at")
            if at <= previous:
                raise ConfigError(f"{where}.at: must be later than the step before, got {at}")
            previous = at
            if not isinstance(changes, Mapping) or not changes:
                raise ConfigError(f"{where}: must change at least one field, got {changes!r}")
            for name in changes:
                if name not in SCHEDULABLE:
                    raise ConfigError(
                        f"{where}.{name}: cannot be scheduled (schedulable: {', '.join(SCHEDULABLE)})"
                    )
            if "rate" in changes and self.trace is not None:
                raise ConfigError(f"{where}.rate: cannot be combined with trace")
            state.update(changes)
            _check_impairments(state, f"{where}.")
            steps.append((at, MappingProxyType(dict(changes))))
        return tuple(steps)


def _check_impairments(values: Mapping[str, Any], prefix: str) -> None:
    """Validate the schedulable fields of ``values`` (a config's or a schedule state)."""
    _non_negative(values["delay"], f"{prefix}delay")
    _non_negative(values["jitter"], f"{prefix}jitter")
    checks.probability(values["loss"], f"{prefix}loss")
    checks.probability(values["duplicate"], f"{prefix}duplicate")
    if values["rate"] is not None:
        _positive(values["rate"], f"{prefix}rate")
    burst = values["burst_length"]
    if burst is not None:
        checks.number(burst, f"{prefix}burst_length", minimum=1.0)
        # P(start a burst) = p / (1 - p) / L must stay a probability.
        most = burst / (burst + 1)
        if values["loss"] > most:
            raise ConfigError(
                f"{prefix}loss: with burst_length {values['burst_length']}, must be at most "
                f"L/(L+1) = {most:.3g}, got {values['loss']}"
            )


def _non_negative(value: object, name: str) -> float:
    return checks.number(value, name, minimum=0.0)


def _positive(value: object, name: str) -> float:
    return checks.number(value, name, above=0.0)


def _outage(item: object, name: str) -> tuple[float, float]:
    if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
        raise ConfigError(f"{name}: must be a [start, duration] pair, got {item!r}")
    start = _non_negative(item[0], f"{name}.start")
    duration = _positive(item[1], f"{name}.duration")
    return start, duration
