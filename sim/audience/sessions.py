"""Visits and sessions of one chunk of viewers, vectorised over viewers.

A viewer's life in the log is a chain of *visits*. A visit starts at the viewer's preferred time
of day in a live room and holds one or more *sessions*: after a session without a first frame
the viewer may retry the same room, after watching they may hop to another live room. When the
visit ends, the QoE of its *last* session decides the chance to come back (the same definition
``qoe impact`` uses: a viewer's last session before the gap).

Per session (all documented in :mod:`.model`):

1. QoE: join time ``J`` (log-normal by network, device, app, region, room, incident), a
   failure (the first frame never arrives: ``J`` is infinite), stall ratio, A/V offset, chat echo,
   and the picture: HD with a chance by network, else SD, a height of the ladder within its band
   and a mean bitrate near that rendition's.
2. Patience ``P = knee + U / (m * a)`` with ``U`` uniform, so ``P(P <= t) = m a (t - knee)``:
   the viewer leaves without a frame at ``P`` if ``P < J``; otherwise joins at ``J``.
3. Watch time ``W = W0 * (1 - l_s)^(100 s) * (1 - l_av)^[A/V outside] * (1 - l_sd)^[SD]`` where
   ``W0`` is log-normal and, after a slow join, sometimes cut below 60 s (early exit).
4. Orders: Poisson in hours watched.

A viewer's first visit starts near their preferred time of day. Return after a visit ending at
``E``: the viewer comes back with chance ``rho_eff``, after ``gap + G`` with ``G`` exponential.
``rho_eff = rho - drop / P7`` where ``P7`` is the chance that such a return lands within 7 days,
so a drop in ``rho_eff`` lowers the 7-day return rate by exactly ``drop``; the drops of a failed,
a stalled and an SD last session add up (a failed one's on top of what the picture it drew
would have cost, see :func:`_return_decision`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from .model import DEVICES, HD_HEIGHT, NETWORKS, AudienceModel
from .population import DAY, VISIT_WINDOW, Viewers, World, make_viewers, next_slot

__all__ = ["Chunk", "Truth", "simulate_chunk"]

RETURN_DAYS = (1, 7, 30)
MAX_WAIT = 120.0
"""Nobody waits longer than this for a first frame, seconds (caps a zero abandonment slope)."""
MAX_HOPS = 2
MEAN_STALL_SECONDS = 2.5


@dataclass
class Truth:
    """Accumulators for the true effects, summed over chunks (see :func:`simulate_chunk`)."""

    sessions: int = 0
    viewers: int = 0
    visits: int = 0
    joined: int = 0
    open_sessions: int = 0
    patience_sum: float = 0.0
    early_exit_sum: float = 0.0
    early_exit_n: int = 0
    return_sum: dict[str, float] = field(default_factory=dict)
    return_n: dict[str, int] = field(default_factory=dict)

    def add_return(self, key: str, values: np.ndarray) -> None:
        self.return_sum[key] = self.return_sum.get(key, 0.0) + float(values.sum())
        self.return_n[key] = self.return_n.get(key, 0) + int(values.size)


@dataclass
class Chunk:
    """Sessions of one chunk as columns; times in seconds since the log start."""

    columns: dict[str, np.ndarray]


def _draw_sessions(
    model: AudienceModel,
    world: World,
    v: Viewers,
    who: np.ndarray,
    t: np.ndarray,
    room: np.ndarray,
    rng: np.random.Generator,
    truth: Truth,
) -> dict[str, np.ndarray]:
    """One session for each viewer index ``who`` starting at ``t`` in ``room``."""
    b, q, pop = model.behaviour, model.qoe, model.population
    n = who.size
    sticky = rng.random(n) < pop.network_stickiness
    network = np.where(sticky, v.network[who], rng.integers(0, len(NETWORKS), n)).astype(np.int8)
    device, region, app = v.device[who], v.region[who], v.app[who]
    hour = world.log_hour(t)
    hod = world.hour_of_day(t)
    prime = (hod >= pop.prime_hours[0]) & (hod <= pop.prime_hours[1])
    join_incident = world.join_incident[room, hour]
    stall_incident = world.stall_incident[room, hour]

    log_join = (
        np.log(np.asarray(q.join_median_seconds))[network]
        + np.asarray(q.join_device_shift)[device]
        + np.asarray(q.join_app_shift)[app]
        + world.region_join[region]
        + world.join_shift[room]
        + rng.normal(0.0, q.join_sigma, n)
    )
    join = np.exp(log_join) * np.where(join_incident, q.incident_join_factor, 1.0)
    in_test = np.zeros(n, bool) if v.arm_b is None else t >= q.ab_start_day * DAY
    added = np.where(in_test & v.arm_b[who], q.ab_join_seconds, 0.0) if v.arm_b is not None else 0.0
    join = join + added
    region_factor = np.asarray(q.region_stall_factor)[region]
    fail_p = (
        np.asarray(q.failure)[network]
        * np.where(join_incident, q.incident_failure_factor, 1.0)
        * region_factor
    )
    join[rng.random(n) < fail_p] = np.inf

    by_network = np.asarray(pop.patience) / np.dot(pop.patience, pop.network_share)
    multiplier = v.patience[who] * by_network[network]
    with np.errstate(divide="ignore"):
        patience = np.minimum(
            b.abandon_knee_seconds + rng.random(n) / (multiplier * b.abandon_per_second), MAX_WAIT
        )
    joined = join < patience
    truth.patience_sum += float(multiplier.sum())
    # Arm B's counterfactual: the same session without the added join time.
    joined_without = (join - added) < patience

    # Playback, drawn for everyone (keeps the draws aligned), used where joined.
    stalls = rng.random(n) < np.asarray(q.stall_any)[network]
    stall = (
        np.asarray(q.stall_median)[network]
        * world.stall_factor[room]
        * np.where(prime, q.stall_prime_factor, 1.0)
        * np.where(stall_incident, q.incident_stall_factor, 1.0)
        * region_factor
        * np.exp(rng.normal(0.0, q.stall_sigma, n))
    )
    watch_mu = v.watch_mu[who] + world.engagement[room] + np.where(prime, pop.prime_watch_shift, 0.0)
    if pop.hidden_confounder > 0:  # drawn only when asked for, so other runs keep their draws
        hidden = pop.hidden_confounder * rng.normal(0.0, 1.0, n)
        stall = stall * np.exp(hidden)
        watch_mu = watch_mu - hidden
    stall = np.where(stalls, np.minimum(stall, q.stall_max), 0.0)
    watch0 = np.exp(watch_mu + rng.normal(0.0, pop.watch_sigma, n))
    past_knee = np.maximum(np.where(joined, join, 0.0) - b.abandon_knee_seconds, 0.0)
    early = rng.random(n) < b.early_exit_per_second * past_knee
    watch0 = np.where(early, np.minimum(watch0, rng.uniform(5.0, 55.0, n)), watch0)
    av = np.asarray(q.av_device_bias)[device] + rng.normal(0.0, q.av_sigma, n)
    drift = rng.random(n) < np.asarray(q.av_drift_probability)[device]
    av = av + drift * rng.choice([-1.0, 1.0], n) * rng.uniform(0.12, 0.35, n)
    lo, hi = b.av_acceptable
    av_out = (av < lo) | (av > hi)
    # The picture: HD by the network's chance, then one rung of the ladder within the band.
    heights = np.asarray(q.heights, float)
    ladder_hd, ladder_sd = np.flatnonzero(heights >= HD_HEIGHT), np.flatnonzero(heights < HD_HEIGHT)
    hd = rng.random(n) < np.asarray(q.hd_share)[network]
    rung = np.where(
        hd,
        ladder_hd[rng.integers(0, ladder_hd.size, n)],
        ladder_sd[rng.integers(0, ladder_sd.size, n)],
    )
    height = heights[rung]
    kbps = np.asarray(q.height_bitrate_kbps, float)[rung] * rng.uniform(0.8, 1.15, n)
    watch = (
        watch0
        * (1.0 - b.watch_loss_per_stall_percent) ** (100.0 * stall)
        * np.where(av_out, 1.0 - b.watch_loss_av_out_of_band, 1.0)
        * np.where(hd, 1.0, 1.0 - b.watch_loss_sd)
    )
    chat = np.exp(np.log(np.asarray(q.chat_median_seconds))[network] + rng.normal(0.0, q.chat_sigma, n))
    orders = rng.poisson(v.orders_per_hour[who] * world.buy[room] * watch / 3600.0)
    value = orders * np.exp(rng.normal(np.log(pop.order_value_median), pop.order_value_sigma, n))
    stall_seconds = stall * watch
    stall_count = np.where(stall > 0, np.maximum(1, rng.poisson(stall_seconds / MEAN_STALL_SECONDS)), 0)

    # The chance that a viewer who would have watched a minute leaves early, per second of join:
    # the early-exit effect on P(exit within 60 s), averaged over joined sessions past the knee.
    sel = joined & (past_knee > 0)
    if sel.any():
        p60 = 1.0 - ndtr((np.log(60.0) - watch_mu[sel]) / pop.watch_sigma)
        truth.early_exit_sum += float((b.early_exit_per_second * p60).sum())
        truth.early_exit_n += int(sel.sum())

    end = np.where(joined, t + join + watch, t + patience)
    nan = np.full(n, np.nan)
    return {
        "viewer": who,
        "start": t,
        "end": end,
        "room": room,
        "network": network,
        "joined": joined,
        "join": np.where(joined, join, nan),
        "stall_seconds": np.where(joined, stall_seconds, nan),
        "stall_count": np.where(joined, stall_count, -1),
        "stall": np.where(joined, stall, 0.0),
        "av": np.where(joined, av, nan),
        "chat": np.where(joined, chat, nan),
        "height": np.where(joined, height, nan),
        "kbps": np.where(joined, kbps, nan),
        "picture_sd": ~hd,  # the picture drawn; shown only when joined
        "arm": np.where(in_test, np.where(v.arm_b[who], 2, 1) if v.arm_b is not None else 0, 0).astype(
            np.int8
        ),
        "failed_without_arm": ~joined_without,
        "join_paid": np.where(joined, join, 0.0),
        "join_paid_without": np.where(joined_without, join - added, 0.0),
        "orders": np.where(joined, orders, 0),
        "value": np.where(joined, value, 0.0),
    }


def _return_decision(
    model: AudienceModel,
    world: World,
    v: Viewers,
    who: np.ndarray,
    end: np.ndarray,
    failed: np.ndarray,
    stalled: np.ndarray,
    picture_sd: np.ndarray,
    rng: np.random.Generator,
    truth: Truth,
    arm: np.ndarray | None = None,
    failed_without: np.ndarray | None = None,
    join_paid: np.ndarray | None = None,
    join_paid_without: np.ndarray | None = None,
    first_in_test: np.ndarray | None = None,
) -> np.ndarray:
    """Start of each viewer's next visit after a visit ending at ``end`` (inf: never).

    The gap is ``visit_gap + 60 s`` plus an exponential with the viewer's mean, whatever the
    time of day: were it snapped to the viewer's favourite hour, the chance of coming back within
    k days would depend on when the visit ended, and QoE that shortens a visit would change
    returns through that path too, beyond the drop the model states.

    ``picture_sd``: the last session drew an SD picture (shown if it joined). A visit without a
    first frame loses ``return_drop_failed`` on top of what that picture would have cost, so
    the failed drop stays the loss against the same visit *with* a frame, whichever picture it
    would have had: the comparison ``qoe impact`` makes, against joined visits of the same
    network, SD and HD alike.

    ``first_in_test``: the visit is its viewer's first in the A/B test (the first with a session
    from ``qoe.ab_start_day`` on); the arm's truth is read on these visits, see below.
    """
    b = model.behaviour
    n = who.size
    gap0 = b.visit_gap_seconds + 60.0
    mean_gap = v.return_gap_days[who] * DAY
    reach = {d: 1.0 - np.exp(-max(d * DAY - gap0, 0.0) / mean_gap) for d in RETURN_DAYS}
    rho = v.return_chance[who]
    drops = {
        "failed": (failed, b.return_drop_failed * failed),
        "stall": (stalled, b.return_drop_stall * stalled),
        "sd": (picture_sd & ~failed, b.return_drop_sd * picture_sd),
    }
    if b.return_drop_per_join_second > 0 and join_paid is not None:
        drops["join"] = (join_paid > 0, b.return_drop_per_join_second * join_paid)
    total = np.sum([d for _, d in drops.values()], axis=0)

    def chance(drop: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.clip(rho - np.where(drop > 0, drop / reach[7], 0.0), 0.0, 1.0)

    rho_eff = chance(total)
    # Each effect's truth is the change against the same visit without that one cause, the
    # others kept: a stalled visit on an SD picture counts its stall drop for the stall and its
    # SD drop for the picture, never their sum for either; a failed visit, its failed drop alone.
    without = {key: chance(total - d) for key, (_, d) in drops.items()}
    for days in RETURN_DAYS:
        eligible = end + days * DAY <= world.horizon
        for key, (flag, _) in drops.items():
            change = (rho_eff - without[key]) * reach[days]
            truth.add_return(f"{key}_{days}", change[eligible & flag])
    if arm is not None and failed_without is not None and first_in_test is not None:
        # The arm's effect on 7-day returns: against the same visit whose last session had no
        # added join time (failed or not without it); arm A's is zero. Read on each B viewer's
        # first visit in the test: which later visits a viewer makes depends on the arm, whether
        # the first one happens and where it falls does not (assignment precedes it). The same
        # over every B visit is kept beside it, for comparison.
        cf_total = total - drops["failed"][1] + b.return_drop_failed * failed_without
        if "join" in drops and join_paid_without is not None:
            cf_total = cf_total - drops["join"][1] + b.return_drop_per_join_second * join_paid_without
        change = (rho_eff - chance(cf_total)) * reach[7]
        b_visit = (end + 7 * DAY <= world.horizon) & (arm == 2)
        truth.add_return("arm_b_7", change[b_visit & first_in_test])
        truth.add_return("arm_b_7_every_visit", change[b_visit])
    back = rng.random(n) < rho_eff
    return np.where(back, end + gap0 + rng.exponential(mean_gap), np.inf)


def simulate_chunk(
    model: AudienceModel, world: World, first_viewer: int, n: int, rng: np.random.Generator, truth: Truth
) -> Chunk:
    """All sessions of viewers ``first_viewer .. first_viewer + n - 1`` within the log."""
    b = model.behaviour
    v = make_viewers(model, world, first_viewer, n, rng)
    if model.qoe.ab_share_b > 0:  # drawn only for a test, so other runs keep their draws
        v.arm_b = rng.random(n) < model.qoe.ab_share_b
    truth.viewers += n
    newcomer = rng.random(n) < model.population.newcomer_share
    first = rng.random(n) * np.where(newcomer, world.horizon, min(2 * DAY, world.horizon))
    t_next = next_slot(first, (v.preferred + rng.random(n) * VISIT_WINDOW) % DAY, world)
    parts: list[dict[str, np.ndarray]] = []
    seen_test = np.zeros(n, bool)  # per viewer: a visit of theirs had a session in the A/B test
    active = np.flatnonzero(t_next < world.horizon)
    while active.size:
        truth.visits += active.size
        who, t = active, t_next[active]
        room = world.pick_rooms(t, rng)
        retries = np.zeros(who.size, np.int8)
        hops = np.zeros(who.size, np.int8)
        last_end = np.zeros(who.size)
        last_failed = np.zeros(who.size, bool)
        last_stalled = np.zeros(who.size, bool)
        last_picture_sd = np.zeros(who.size, bool)
        last_arm = np.zeros(who.size, np.int8)
        last_failed_without = np.zeros(who.size, bool)
        last_join = np.zeros(who.size)
        last_join_without = np.zeros(who.size)
        cur = np.arange(who.size)
        while cur.size:
            s = _draw_sessions(model, world, v, who[cur], t[cur], room[cur], rng, truth)
            parts.append(s)
            last_end[cur] = s["end"]
            last_failed[cur] = ~s["joined"]
            last_stalled[cur] = s["joined"] & (s["stall"] > b.stall_threshold)
            last_picture_sd[cur] = s["picture_sd"]
            last_arm[cur] = s["arm"]
            last_failed_without[cur] = s["failed_without_arm"]
            last_join[cur] = s["join_paid"]
            last_join_without[cur] = s["join_paid_without"]
            retry = (
                (~s["joined"]) & (retries[cur] < b.max_retries) & (rng.random(cur.size) < b.retry_probability)
            )
            hop = s["joined"] & (hops[cur] < MAX_HOPS) & (rng.random(cur.size) < b.hop_probability)
            gap = np.where(retry, rng.uniform(2.0, 20.0, cur.size), rng.uniform(5.0, 120.0, cur.size))
            t_new = s["end"] + gap
            go = (retry | hop) & (t_new < world.horizon)
            retries[cur] += retry
            hops[cur] += hop
            t[cur] = t_new
            moved = cur[go & hop]
            room[moved] = world.pick_rooms(t[moved], rng)
            cur = cur[go]
        in_test = last_arm != 0  # a visit's last session is its latest: in the test if any is
        first_in_test = in_test & ~seen_test[who]
        seen_test[who] |= in_test
        closed = last_end < world.horizon
        nxt = np.full(who.size, np.inf)
        idx = np.flatnonzero(closed)
        nxt[idx] = _return_decision(
            model,
            world,
            v,
            who[idx],
            last_end[idx],
            last_failed[idx],
            last_stalled[idx],
            last_picture_sd[idx],
            rng,
            truth,
            last_arm[idx] if v.arm_b is not None else None,
            last_failed_without[idx],
            last_join[idx],
            last_join_without[idx],
            first_in_test[idx],
        )
        t_next[who] = nxt
        active = who[nxt < world.horizon]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if cols:
        cols["viewer_id"] = v.ids[cols["viewer"]]
        cols["device"] = v.device[cols["viewer"]]
        cols["region"] = v.region[cols["viewer"]]
        cols["app"] = v.app[cols["viewer"]]
        truth.sessions += cols["start"].size
        truth.joined += int(cols["joined"].sum())
        truth.open_sessions += int((cols["end"] > world.horizon).sum())
    return Chunk(cols)


CATEGORIES = {"network": NETWORKS, "device": DEVICES}
