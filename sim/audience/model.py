"""The audience model: every number the simulator draws from, in one place, with its source.

Three tables, each a frozen dataclass with documented defaults:

- :class:`Behaviour`: how viewers react to QoE. These are the *true effects* that
  ``qoe impact`` should recover; defaults are calibrated to docs/SOURCES.md
  (Krishnan & Sitaraman, IMC 2012), the rest are project choices and say so.
- :class:`Population`: who the viewers are, and the confounding: viewers on weak networks
  differ in baseline return rate, watch time, patience and purchasing, so a naive comparison
  of good and bad sessions mixes QoE with who had them.
- :class:`Qoe`: the QoE a session gets, by network (the category names are those of
  ``sim/profiles``), device, region, room and hour, with incidents per room and hour.

``load_model(path)`` reads a TOML file with the tables ``[behaviour]``, ``[population]`` and
``[qoe]`` whose keys override the defaults; an unknown table or key is a
:class:`~qoe.errors.ConfigError`, as elsewhere in the project.

Units: seconds, probabilities 0..1, ratios 0..1 (a stall ratio of 0.01 is 1 %), days where a
name says so.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qoe import checks
from qoe.errors import ConfigError

__all__ = [
    "APP_VERSIONS",
    "DEVICES",
    "HD_HEIGHT",
    "NETWORKS",
    "REGIONS",
    "AudienceModel",
    "Behaviour",
    "Population",
    "Qoe",
    "load_model",
]

NETWORKS = ("wifi", "4g", "3g", "slow-3g")
"""Session network categories: names of built-in profiles in sim/profiles/profiles.toml."""
DEVICES = ("ios", "android", "web")
REGIONS = ("eu", "na", "latam", "apac", "mena")
APP_VERSIONS = ("5.2", "5.3", "5.4")
HD_HEIGHT = 720
"""Picture height from which a session is HD, pixels; below it SD (the line ``qoe impact`` draws)."""
HEIGHT_RANGE = (90, 4320)
"""Picture heights a ladder may hold, pixels (the range ``qoe impact`` accepts)."""


@dataclass(frozen=True)
class Behaviour:
    """Viewer reactions to QoE: the ground truth the analysis is tested against."""

    abandon_knee_seconds: float = 2.0
    """Nobody leaves before the first frame earlier than this (Krishnan & Sitaraman, IMC 2012)."""
    abandon_per_second: float = 0.058
    """Share of viewers whose patience runs out per second past the knee, population average:
    the patience CDF is ``min(1, m * 0.058 * (t - 2))`` with a viewer's multiplier ``m``
    (Krishnan & Sitaraman, IMC 2012: +5.8 % abandonment per extra second beyond 2 s)."""
    early_exit_per_second: float = 0.02
    """After a slow join, the chance per second of join past the knee that a viewer who would
    have stayed a minute leaves within 60 s anyway. Project choice; no published figure."""
    watch_loss_per_stall_percent: float = 0.05
    """Each percentage point of stall ratio multiplies watch time by (1 - this): 1 % of
    rebuffering costs 5 % of play time (Krishnan & Sitaraman, IMC 2012)."""
    watch_loss_av_out_of_band: float = 0.03
    """Watch time lost when the A/V offset is outside ITU-R BT.1359-1 acceptability. Project
    choice; BT.1359 gives the threshold, not the cost."""
    av_acceptable: tuple[float, float] = (-0.185, 0.09)
    """A/V offset band within which sync is acceptable, seconds, + = audio ahead (ITU-R BT.1359-1)."""
    watch_loss_sd: float = 0.1
    """Watch time lost when a session mostly shows an SD rendition (height below 720): its watch
    time is multiplied by (1 - this). Project choice; no published figure."""
    return_drop_failed: float = 0.023
    """7-day return probability lost after a visit whose last session never showed a frame
    (Krishnan & Sitaraman, IMC 2012: a failed visit is 2.32 % less likely to return in a week)."""
    return_drop_stall: float = 0.015
    """7-day return probability lost after a visit whose last session stalled more than
    ``stall_threshold``. Project choice; no published figure."""
    stall_threshold: float = 0.01
    """Stall ratio above which ``return_drop_stall`` applies (the existing alert's 1 %)."""
    return_drop_sd: float = 0.02
    """7-day return probability lost after a visit whose last session mostly showed an SD
    rendition (height below 720). Project choice; no published figure. A visit without a first
    frame loses ``return_drop_failed`` on top of what the picture it would have shown costs, so
    that stays the loss against the same visit with a frame."""
    return_drop_per_join_second: float = 0.0
    """7-day return probability lost per second of join time of a visit's last session, when
    it joined. 0 by default (no published figure; the published cost of a slow join is
    abandonment): set it to give an A/B test of join time (``qoe.ab_join_seconds``) a cost in
    returns beyond the visits it fails. Project choice."""
    retry_probability: float = 0.4
    """Chance a viewer tries again after a session without a first frame. Project choice."""
    max_retries: int = 2
    hop_probability: float = 0.15
    """Chance a viewer moves on to another live room after watching. Project choice."""
    visit_gap_seconds: float = 1800.0
    """Sessions of one viewer less than this apart form one visit (same default as ``qoe impact``)."""


@dataclass(frozen=True)
class Population:
    """Viewers and rooms. Per-network tuples follow :data:`NETWORKS` and describe a viewer by
    the *primary* network they use; a session uses it with probability ``network_stickiness``."""

    network_share: tuple[float, ...] = (0.5, 0.3, 0.15, 0.05)
    network_stickiness: float = 0.85
    device_share: tuple[float, ...] = (0.35, 0.45, 0.2)
    region_share: tuple[float, ...] = (0.35, 0.25, 0.15, 0.15, 0.1)
    app_share: tuple[float, ...] = (0.15, 0.35, 0.5)
    return_base: tuple[float, ...] = (0.92, 0.90, 0.85, 0.78)
    """Chance a viewer comes back at all after a visit (before QoE effects), by primary network:
    the confounder that makes weak-network sessions look worse for retention than QoE explains."""
    return_spread: float = 0.04
    """Standard deviation of a viewer's own return chance around the network's."""
    return_gap_days: float = 1.3
    """Median of a viewer's mean time to come back, days (log-normal across viewers, sigma 0.5)."""
    newcomer_share: float = 0.3
    """Viewers whose first visit falls anywhere in the log; the rest are regulars already active
    when the log starts (first visit within its first two days)."""
    patience: tuple[float, ...] = (1.1, 1.0, 0.85, 0.7)
    """Multiplier on ``abandon_per_second`` by the *session's* network (viewers expect a slow
    network to be slow and wait longer); normalised so the share-weighted mean is 1, so the
    population slope stays 5.8 %/s. By session, not by viewer: a viewer trait the log does not
    record would be a confounder no analysis of the log could remove."""
    patience_spread: float = 0.25
    """Log-normal sigma of a viewer's own patience multiplier (mean 1, independent of everything)."""
    watch_median_seconds: float = 360.0
    watch_sigma: float = 1.0
    """Log-normal sigma of a session's watch time before QoE effects."""
    watch_network_shift: tuple[float, ...] = (0.0, -0.1, -0.25, -0.4)
    """Log watch-time shift by primary network: a second confounder (weak-network viewers watch less)."""
    watch_device_shift: tuple[float, ...] = (0.0, -0.1, 0.15)
    watch_viewer_spread: float = 0.4
    watch_room_spread: float = 0.25
    prime_hours: tuple[int, int] = (18, 23)
    """UTC hours (inclusive) of prime time: viewers watch longer and networks stall more."""
    prime_watch_shift: float = 0.2
    hidden_confounder: float = 0.0
    """Strength of a confounder the log never records (0: none). Each session draws a hidden
    ``u ~ N(0, 1)`` (say, a crowded home network); its stall ratio is multiplied by
    ``exp(h u)`` and its watch time by ``exp(-h u)``, so sessions that stall more also watch
    less for a reason no control can see, and every estimate of a stall's cost is biased. For
    testing what the analysis cannot do. Project choice."""
    orders_per_hour: float = 0.25
    """Mean orders per hour watched, before viewer, room, network and region factors."""
    orders_network_factor: tuple[float, ...] = (1.0, 0.85, 0.6, 0.45)
    orders_region_factor: tuple[float, ...] = (1.1, 1.2, 0.8, 1.0, 0.9)
    order_value_median: float = 30.0
    order_value_sigma: float = 0.7
    rooms_per_viewer: float = 1 / 5000
    """Rooms when not given: one per this many viewers, at least 12."""
    always_on_rooms: float = 0.1
    """Share of rooms live around the clock (at least two, so every hour has a live room)."""


@dataclass(frozen=True)
class Qoe:
    """QoE a session draws, by session network (tuples follow :data:`NETWORKS`)."""

    join_median_seconds: tuple[float, ...] = (0.8, 1.3, 2.4, 4.2)
    join_sigma: float = 0.45
    join_device_shift: tuple[float, ...] = (-0.05, 0.1, 0.0)
    join_app_shift: tuple[float, ...] = (0.2, 0.05, 0.0)
    join_region_spread: float = 0.15
    join_room_spread: float = 0.15
    failure: tuple[float, ...] = (0.004, 0.008, 0.02, 0.05)
    """Chance the first frame never arrives at all (the viewer waits until patience runs out)."""
    stall_any: tuple[float, ...] = (0.12, 0.3, 0.55, 0.8)
    """Chance a joined session stalls at all."""
    stall_median: tuple[float, ...] = (0.003, 0.006, 0.012, 0.025)
    """Median stall ratio of a session that stalls."""
    region_stall_factor: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    """Multiplier on the stall ratio and on the failure chance by the viewer's region (follows
    :data:`REGIONS`): 1 everywhere by default; above 1 in one region degrades that region's QoE
    alone (a CDN edge in trouble), for testing which segment the analysis blames."""
    ab_share_b: float = 0.0
    """Share of viewers randomised into arm B of an A/B test, the rest in arm A; 0: no test and
    no ``arm`` column. Viewers are the unit of randomisation."""
    ab_join_seconds: float = 0.0
    """Join time arm B adds to every session from ``ab_start_day`` on, seconds (a slower player
    build, say): through abandonment it costs arm B failed visits and, through them, returns."""
    ab_start_day: float = 0.0
    """Day of the log the test starts; sessions before it carry no arm (the pre-period that
    CUPED reads)."""
    stall_sigma: float = 0.9
    stall_prime_factor: float = 1.4
    stall_room_spread: float = 0.3
    stall_max: float = 0.5
    incident_probability: float = 0.03
    """Chance a room has a join incident in a given hour, and (independently) a stall incident."""
    incident_join_factor: float = 2.5
    incident_failure_factor: float = 4.0
    incident_stall_factor: float = 3.0
    av_device_bias: tuple[float, ...] = (0.0, 0.04, -0.02)
    """Median A/V offset by device, seconds, + = audio ahead (ITU-R BT.1359 sign)."""
    av_sigma: float = 0.03
    av_drift_probability: tuple[float, ...] = (0.04, 0.09, 0.05)
    """Chance by device that a session drifts out of sync by 0.12-0.35 s either way."""
    chat_median_seconds: tuple[float, ...] = (0.12, 0.25, 0.5, 1.0)
    chat_sigma: float = 0.5
    hd_share: tuple[float, ...] = (0.85, 0.6, 0.3, 0.1)
    """Chance by session network that a joined session mostly shows an HD rendition (a height
    of 720 or more in ``heights``); otherwise an SD one. An adaptive player steps down on a weak
    network, so SD is confounded with the network like stalls are; within a network it is
    drawn independently of everything else."""
    heights: tuple[float, ...] = (360, 540, 720, 1080)
    """The rendition ladder's picture heights, ascending, with at least one SD (below 720) and
    one HD: within its band a session shows one of them, each equally likely."""
    height_bitrate_kbps: tuple[float, ...] = (800, 1200, 2500, 4500)
    """Typical bitrate of each rendition of ``heights``, kbit/s; a session's mean bitrate is this
    times a uniform draw from 0.8 to 1.15. With the defaults every SD session stays below 1500
    kbit/s and every HD one above, so the analysis's bitrate line agrees with its height line."""


@dataclass(frozen=True)
class AudienceModel:
    behaviour: Behaviour = field(default_factory=Behaviour)
    population: Population = field(default_factory=Population)
    qoe: Qoe = field(default_factory=Qoe)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> AudienceModel:
        """Raise ConfigError for values that make no sense; return self."""
        p, q, b = self.population, self.qoe, self.behaviour
        shares = {
            "population.network_share": (p.network_share, len(NETWORKS)),
            "population.device_share": (p.device_share, len(DEVICES)),
            "population.region_share": (p.region_share, len(REGIONS)),
            "population.app_share": (p.app_share, len(APP_VERSIONS)),
        }
        for name, (values, n) in shares.items():
            if len(values) != n or min(values) < 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
                raise ConfigError(f"{name} must be {n} non-negative shares summing to 1, got {list(values)}")
        per_network = {
            "population.return_base": p.return_base,
            "population.patience": p.patience,
            "population.watch_network_shift": p.watch_network_shift,
            "population.orders_network_factor": p.orders_network_factor,
            "qoe.join_median_seconds": q.join_median_seconds,
            "qoe.failure": q.failure,
            "qoe.stall_any": q.stall_any,
            "qoe.stall_median": q.stall_median,
            "qoe.chat_median_seconds": q.chat_median_seconds,
            "qoe.hd_share": q.hd_share,
        }
        if not (0 <= q.ab_share_b < 1 and q.ab_join_seconds >= 0 and q.ab_start_day >= 0):
            raise ConfigError(
                "qoe.ab_share_b must be in [0, 1), qoe.ab_join_seconds and qoe.ab_start_day at least 0, "
                f"got {q.ab_share_b}, {q.ab_join_seconds}, {q.ab_start_day}"
            )
        if len(q.region_stall_factor) != len(REGIONS) or min(q.region_stall_factor) <= 0:
            raise ConfigError(
                f"qoe.region_stall_factor needs one positive value per region {list(REGIONS)}, "
                f"got {list(q.region_stall_factor)}"
            )
        for name, values in per_network.items():
            if len(values) != len(NETWORKS):
                raise ConfigError(f"{name} needs one value per network {list(NETWORKS)}, got {list(values)}")
        for name, values in {
            "population.return_base": p.return_base,
            "qoe.failure": q.failure,
            "qoe.stall_any": q.stall_any,
            "qoe.hd_share": q.hd_share,
        }.items():
            if not all(0 <= v <= 1 for v in values):
                raise ConfigError(f"{name} must be probabilities 0..1, got {list(values)}")
        probabilities = {
            "behaviour.abandon_per_second": b.abandon_per_second,
            "behaviour.early_exit_per_second": b.early_exit_per_second,
            "behaviour.watch_loss_per_stall_percent": b.watch_loss_per_stall_percent,
            "behaviour.watch_loss_av_out_of_band": b.watch_loss_av_out_of_band,
            "behaviour.return_drop_failed": b.return_drop_failed,
            "behaviour.return_drop_stall": b.return_drop_stall,
            "behaviour.watch_loss_sd": b.watch_loss_sd,
            "behaviour.return_drop_sd": b.return_drop_sd,
            "behaviour.return_drop_per_join_second": b.return_drop_per_join_second,
            "behaviour.retry_probability": b.retry_probability,
            "behaviour.hop_probability": b.hop_probability,
            "population.network_stickiness": p.network_stickiness,
            "population.hidden_confounder": p.hidden_confounder,
            "population.newcomer_share": p.newcomer_share,
        }
        for name, value in probabilities.items():
            if not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
        low, high = HEIGHT_RANGE
        h = q.heights
        if (
            not all(v == round(v) and low <= v <= high for v in h)
            or list(h) != sorted(set(h))  # ascending, no height twice
            or not (min(h, default=HD_HEIGHT) < HD_HEIGHT <= max(h, default=0))
        ):
            raise ConfigError(
                f"qoe.heights must be whole numbers of pixels from {low} to {high}, ascending, with one "
                f"below {HD_HEIGHT} (SD) and one at {HD_HEIGHT} or above (HD), got {list(h)}"
            )
        if len(q.height_bitrate_kbps) != len(h) or not all(v > 0 for v in q.height_bitrate_kbps):
            raise ConfigError(
                f"qoe.height_bitrate_kbps needs one positive bitrate per height {list(h)}, "
                f"got {list(q.height_bitrate_kbps)}"
            )
        if b.abandon_knee_seconds < 0 or b.visit_gap_seconds <= 0:
            raise ConfigError("behaviour.abandon_knee_seconds must be >= 0 and visit_gap_seconds > 0")
        return self


_TABLES = {"behaviour": Behaviour, "population": Population, "qoe": Qoe}


def load_model(path: str | Path | None) -> AudienceModel:
    """The default model, with the TOML file's ``[behaviour]``, ``[population]``, ``[qoe]`` keys applied."""
    if path is None:
        return AudienceModel().check()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    parts: dict[str, Any] = {}
    try:
        for table, values in data.items():
            if table not in _TABLES:
                raise checks.unknown(table, _TABLES, what="table")
            cls = _TABLES[table]
            defaults = cls()
            checks.known_keys(checks.table(values, table), {f.name for f in dataclasses.fields(cls)}, table)
            parts[table] = cls(
                **{key: _typed(getattr(defaults, key), value, (table, key)) for key, value in values.items()}
            )
    except checks.BadValue as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return AudienceModel(**parts).check()


def _typed(default: Any, value: Any, where: tuple[str, str]) -> Any:
    """``value`` checked to be of the kind ``default`` is: a list of numbers, a whole number, a number."""
    if isinstance(default, tuple):
        if not isinstance(value, list):
            raise checks.BadValue(where, f"must be a list, got {checks.shown(value)}")
        return tuple(checks.number(v, (*where, i)) for i, v in enumerate(value))
    if isinstance(default, int):
        return checks.whole(value, where)
    return checks.number(value, where)
