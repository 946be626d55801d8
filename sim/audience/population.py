"""Rooms with weekly schedules, per-room-hour incidents, and seeded viewer populations.

Everything here is numpy arrays indexed by room or viewer; times are seconds since the start
of the log (``World.start_epoch`` is that instant in Unix seconds, UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import APP_VERSIONS, DEVICES, NETWORKS, REGIONS, AudienceModel

__all__ = ["DAY", "Viewers", "World", "make_viewers", "make_world", "next_slot"]

DAY = 86400.0
HOURS_PER_WEEK = 168
VISIT_WINDOW = 7200.0
"""A viewer's visits start within this many seconds after their preferred time of day."""


@dataclass
class World:
    """The platform: rooms, when they are live, how good their delivery is, and when it breaks."""

    start_epoch: float
    horizon: float
    """Length of the log, seconds."""
    room_ids: list[str]
    live: np.ndarray
    """(168, R) bool: room live in that hour of the week (Monday 00 UTC = 0)."""
    slot_cdf: np.ndarray
    """(168 * R,) flattened per-hour-of-week cumulative popularity of live rooms, slot s in (s, s+1]."""
    engagement: np.ndarray
    """(R,) log watch-time shift of the room's content."""
    buy: np.ndarray
    """(R,) multiplier on orders per hour watched."""
    join_shift: np.ndarray
    """(R,) log join-time shift of the room's delivery."""
    stall_factor: np.ndarray
    """(R,) multiplier on the stall ratio of the room's delivery."""
    join_incident: np.ndarray
    """(R, H) bool: join incident in room r during hour h of the log."""
    stall_incident: np.ndarray
    region_join: np.ndarray
    """(regions,) log join-time shift by region (distance to the CDN)."""
    preferred_hour: np.ndarray
    """(24,) probability that a viewer's preferred hour of day (UTC) is h."""

    @property
    def rooms(self) -> int:
        return len(self.room_ids)

    def hour_of_week(self, t: np.ndarray) -> np.ndarray:
        hours = np.floor((self.start_epoch + t) / 3600.0).astype(np.int64)
        return (hours + 72) % HOURS_PER_WEEK  # 1970-01-01 was a Thursday: hour 72 of its week

    def hour_of_day(self, t: np.ndarray) -> np.ndarray:
        return (np.floor((self.start_epoch + t) / 3600.0).astype(np.int64)) % 24

    def log_hour(self, t: np.ndarray) -> np.ndarray:
        return np.minimum(np.floor(t / 3600.0).astype(np.int64), self.join_incident.shape[1] - 1)

    def pick_rooms(self, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A live room for each start time ``t`` (seconds), by popularity; shape of ``t``."""
        slot = self.hour_of_week(t)
        q = slot + rng.random(t.shape)
        index = np.searchsorted(self.slot_cdf, q, side="right")
        return (index - slot * self.rooms).astype(np.int32)


def make_world(
    model: AudienceModel, rooms: int, days: int, start_epoch: float, rng: np.random.Generator
) -> World:
    """Rooms with schedules: most live a few hours a day (evenings UTC weigh most), some only on
    weekdays or weekends, ``always_on_rooms`` of them around the clock."""
    if rooms < 2:
        raise ValueError(f"need at least 2 rooms, got {rooms}")
    pop, qoe = model.population, model.qoe
    hours = np.arange(24)
    start_weight = 1 + 3 * np.exp(-(((hours - 20) / 3.0) ** 2)) + np.exp(-(((hours - 13) / 2.5) ** 2))
    start_hour = rng.choice(24, rooms, p=start_weight / start_weight.sum())
    length = rng.integers(2, 7, rooms)
    kind = rng.choice(3, rooms, p=[0.7, 0.2, 0.1])  # daily, weekdays, weekends
    always_on = np.zeros(rooms, bool)
    always_on[rng.permutation(rooms)[: max(2, round(pop.always_on_rooms * rooms))]] = True
    live = np.zeros((HOURS_PER_WEEK, rooms), bool)
    week_hour = np.arange(HOURS_PER_WEEK)
    day_of_week, hour_of_day = week_hour // 24, week_hour % 24
    for r in range(rooms):
        if always_on[r]:
            live[:, r] = True
            continue
        on_hour = (hour_of_day - start_hour[r]) % 24 < length[r]
        # A slot that runs past midnight belongs to the day it started on.
        started = (day_of_week - ((hour_of_day - start_hour[r]) % 24 > hour_of_day)) % 7
        on_day = {0: started >= 0, 1: started < 5, 2: started >= 5}[int(kind[r])]
        live[:, r] = on_hour & on_day
    popularity = np.exp(rng.normal(0.0, 1.0, rooms))
    weights = live * popularity
    cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    cdf[:, -1] = 1.0
    slot_cdf = (cdf + np.arange(HOURS_PER_WEEK)[:, None]).ravel()
    n_hours = int(np.ceil(days * 24)) + 1
    by_hour = weights.reshape(7, 24, rooms).sum(axis=(0, 2))
    return World(
        start_epoch=start_epoch,
        horizon=days * DAY,
        room_ids=[f"room-{i:03d}" if rooms <= 1000 else f"room-{i:05d}" for i in range(rooms)],
        live=live,
        slot_cdf=slot_cdf,
        engagement=rng.normal(0.0, pop.watch_room_spread, rooms),
        buy=np.exp(rng.normal(-0.08, 0.4, rooms)),
        join_shift=rng.normal(0.0, qoe.join_room_spread, rooms),
        stall_factor=np.exp(rng.normal(0.0, qoe.stall_room_spread, rooms)),
        join_incident=rng.random((rooms, n_hours)) < qoe.incident_probability,
        stall_incident=rng.random((rooms, n_hours)) < qoe.incident_probability,
        region_join=rng.normal(0.0, qoe.join_region_spread, len(REGIONS)),
        preferred_hour=by_hour / by_hour.sum(),
    )


@dataclass
class Viewers:
    """One chunk of viewers; every array has shape (n,)."""

    ids: np.ndarray
    network: np.ndarray
    """Primary network, index into NETWORKS."""
    device: np.ndarray
    region: np.ndarray
    app: np.ndarray
    preferred: np.ndarray
    """Preferred time of day, seconds after 00:00 UTC."""
    return_chance: np.ndarray
    return_gap_days: np.ndarray
    patience: np.ndarray
    """The viewer's own multiplier on the abandonment slope (mean 1), times the network's."""
    watch_mu: np.ndarray
    """Log of the viewer's median watch time, seconds, before room and hour."""
    orders_per_hour: np.ndarray
    arm_b: np.ndarray | None = None
    """bool (n,): the viewer is in arm B of the A/B test (None: no test)."""


def make_viewers(
    model: AudienceModel, world: World, first_id: int, n: int, rng: np.random.Generator
) -> Viewers:
    pop = model.population
    network = rng.choice(len(NETWORKS), n, p=pop.network_share).astype(np.int8)
    device = rng.choice(len(DEVICES), n, p=pop.device_share).astype(np.int8)
    region = rng.choice(len(REGIONS), n, p=pop.region_share).astype(np.int8)
    app = rng.choice(len(APP_VERSIONS), n, p=pop.app_share).astype(np.int8)
    preferred = (rng.choice(24, n, p=world.preferred_hour) + rng.random(n)) * 3600.0
    s = pop.patience_spread
    patience = np.exp(rng.normal(-s * s / 2, s, n))
    return_chance = np.clip(
        np.asarray(pop.return_base)[network] + rng.normal(0, pop.return_spread, n), 0.05, 0.99
    )
    watch_mu = (
        np.log(pop.watch_median_seconds)
        + np.asarray(pop.watch_network_shift)[network]
        + np.asarray(pop.watch_device_shift)[device]
        + rng.normal(0.0, pop.watch_viewer_spread, n)
    )
    orders = (
        pop.orders_per_hour
        * np.asarray(pop.orders_network_factor)[network]
        * np.asarray(pop.orders_region_factor)[region]
        * np.exp(rng.normal(-0.245, 0.7, n))
    )
    return Viewers(
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        network=network,
        device=device,
        region=region,
        app=app,
        preferred=preferred,
        return_chance=return_chance,
        return_gap_days=np.exp(rng.normal(np.log(pop.return_gap_days), 0.5, n)),
        patience=patience,
        watch_mu=watch_mu,
        orders_per_hour=orders,
    )


def next_slot(after: np.ndarray, time_of_day: np.ndarray, world: World) -> np.ndarray:
    """The first instant at or after ``after`` whose UTC time of day is ``time_of_day`` (seconds)."""
    phase = (world.start_epoch + after) % DAY
    return after + (time_of_day - phase) % DAY
