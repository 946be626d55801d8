"""Viewer-population simulator with known QoE -> behaviour effects (``qoe audience simulate``).

A seeded population of viewers (heterogeneous patience, devices, networks, regions, app
versions) visits rooms that are live on weekly schedules. Each session draws its QoE from its
network category (the names of ``sim/profiles``), device, region, room and hour, with incidents
per room and hour, and a picture height (weak networks more often SD); the viewer reacts
through a documented, configurable model (:mod:`.model`, :mod:`.sessions`). Viewers on weak
networks also differ in baseline return rate, watch time, patience and purchasing, so naive
comparisons are confounded, as real logs are.

``simulate(out, viewers=..., days=..., rng=...)`` writes the sessions in the schema of
:mod:`qoe.impact` (Parquet, or CSV when ``out`` ends in ``.csv``) and the ground truth beside
them (``<name>.truth.json``): the model, and the true effects measured on the simulated
population itself, e.g. the exact 7-day return change of visits that ended without a frame.

Scale: viewers are generated in chunks of ``chunk_viewers``, vectorised with numpy, and each
chunk is written before the next is drawn, so memory stays bounded by the chunk size.
A run is reproducible for the same seed, model and chunk size.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qoe.errors import ConfigError

from .model import APP_VERSIONS, DEVICES, NETWORKS, REGIONS, AudienceModel, load_model
from .population import World, make_world
from .sessions import RETURN_DAYS, Truth, simulate_chunk
from .writer import SessionWriter, truth_path, write_probes

__all__ = [
    "APP_VERSIONS",
    "DEFAULT_START",
    "DEVICES",
    "EFFECTS_DOC",
    "NETWORKS",
    "REGIONS",
    "AudienceModel",
    "load_model",
    "simulate",
    "truth_path",
]

DEFAULT_START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
"""A Monday, 00:00 UTC."""


EFFECTS_DOC = {
    "abandon_per_second": "share of sessions whose viewer leaves before the first frame, per second "
    "of waiting past the knee (population average of the patience CDF's slope)",
    "early_exit_per_second": "added chance of leaving within 60 s after the first frame, per second "
    "of join time past the knee, averaged over joined sessions past the knee. Approximate as a "
    "yardstick: the effect scales with the chance the viewer would have stayed a minute, which "
    "varies by network, and each estimator averages it with its own weights",
    "watch_change_per_stall_percent": "relative change of watch time per percentage point of stall ratio",
    "watch_change_av_out_of_band": "relative change of watch time when the A/V offset is outside "
    "ITU-R BT.1359-1 acceptability",
    "returnK_failed": "change of the chance to return within K days after a visit whose last session "
    "showed no frame, vs the same visit with a frame (mean over such visits with K days of follow-up)",
    "returnK_stall": "the same for a last session with stall ratio above behaviour.stall_threshold, "
    "vs the same visit without",
    "watch_change_per_chat_echo_second": "placebo: relative change of watch time per second of chat "
    "echo time. Zero by construction: chat echo differs by network (a confounder) but no viewer "
    "reacts to it, so an analysis that finds an effect has missed a confounder",
    "arm_b_return7": "A/B test: change of the chance to return within 7 days after a viewer's first "
    "visit in the test (the first with a session from qoe.ab_start_day on), for arm B "
    "(qoe.ab_join_seconds more join time) against the same visit without the added join time; "
    "the mean over arm B's viewers whose first visit in the test has 7 days of follow-up (arm A's "
    "is zero), so the B - A difference of first-visit 7-day return rates. Assignment precedes "
    "that visit, so both arms have it alike; later visits they do not",
    "arm_b_return7_every_visit": "the same change averaged over every visit of arm B in the test "
    "with 7 days of follow-up, for comparison. No difference of the arms' logs estimates it: the "
    "arm changes which later visits exist (a viewer who does not return makes none), so a "
    "per-visit B - A difference also carries the arms' different visit mixes",
    "watch_change_sd": "relative change of watch time when a session mostly shows an SD rendition "
    "(video_height below 720) instead of an HD one",
    "returnK_sd": "the same as returnK_failed for a last session that mostly showed an SD rendition, "
    "vs the same visit in HD",
}
"""What each true effect in ``<name>.truth.json`` means."""


def simulate(
    out: str | Path,
    *,
    viewers: int,
    days: int,
    rng: np.random.Generator,
    model: AudienceModel | None = None,
    rooms: int | None = None,
    start: dt.datetime = DEFAULT_START,
    chunk_viewers: int = 50_000,
    probes: str | Path | None = None,
    probe_interval: float = 900.0,
    progress: Callable[[int, int], None] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Simulate ``viewers`` over ``days`` and write sessions to ``out``; return the ground truth.

    ``probes``: also write fleet probe results (JSON lines) for the same rooms, one per room,
    network profile and ``probe_interval`` seconds while the room is live.
    ``progress(viewers_done, viewers)`` is called after each chunk; ``seed`` is only recorded
    in the truth file (the draws come from ``rng``).
    """
    model = (model or AudienceModel()).check()
    if viewers < 1 or days < 1:
        raise ConfigError(f"need at least 1 viewer and 1 day, got {viewers} viewers, {days} days")
    if start.tzinfo is None:
        raise ConfigError("start must be timezone-aware (UTC)")
    n_rooms = rooms if rooms is not None else max(12, round(viewers * model.population.rooms_per_viewer))
    if n_rooms < 2:
        raise ConfigError(f"need at least 2 rooms, got {n_rooms}")
    world_rng, probe_rng, chunk_rng = rng.spawn(3)
    world = make_world(model, n_rooms, days, start.timestamp(), world_rng)
    truth = Truth()
    began = time.monotonic()
    writer = SessionWriter(out, world, arm=model.qoe.ab_share_b > 0)
    try:
        done = 0
        while done < viewers:
            n = min(chunk_viewers, viewers - done)
            chunk = simulate_chunk(model, world, done + 1, n, chunk_rng.spawn(1)[0], truth)
            writer.write(chunk.columns)
            done += n
            if progress:
                progress(done, viewers)
    finally:
        writer.close()
    probe_lines = write_probes(probes, model, world, probe_interval, probe_rng) if probes else 0
    result = _truth_document(model, world, truth, viewers, days, n_rooms)
    result["files"] = {
        "sessions": str(out),
        "probes": str(probes) if probes else None,
        "probe_lines": probe_lines,
    }
    result["seconds"] = round(time.monotonic() - began, 2)
    result["seed"] = seed
    result["chunk_viewers"] = chunk_viewers
    truth_path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _truth_document(
    model: AudienceModel, world: World, truth: Truth, viewers: int, days: int, rooms: int
) -> dict[str, Any]:
    b = model.behaviour

    def mean(key: str) -> float | None:
        n = truth.return_n.get(key, 0)
        return truth.return_sum[key] / n if n else None

    effects: dict[str, Any] = {
        "abandon_knee_seconds": b.abandon_knee_seconds,
        "abandon_per_second": b.abandon_per_second * truth.patience_sum / max(truth.sessions, 1),
        "early_exit_per_second": truth.early_exit_sum / truth.early_exit_n if truth.early_exit_n else None,
        "watch_change_per_stall_percent": -b.watch_loss_per_stall_percent,
        "watch_change_av_out_of_band": -b.watch_loss_av_out_of_band,
        "watch_change_sd": -b.watch_loss_sd,
        "watch_change_per_chat_echo_second": 0.0,
    }
    if model.qoe.ab_share_b > 0:
        effects["arm_b_return7"] = mean("arm_b_7")
        effects["arm_b_return7_every_visit"] = mean("arm_b_7_every_visit")
    for days_ in RETURN_DAYS:
        effects[f"return{days_}_failed"] = mean(f"failed_{days_}")
        effects[f"return{days_}_stall"] = mean(f"stall_{days_}")
        effects[f"return{days_}_sd"] = mean(f"sd_{days_}")
    return {
        "generator": "sim.audience",
        "viewers": viewers,
        "days": days,
        "rooms": rooms,
        "log_start": dt.datetime.fromtimestamp(world.start_epoch, dt.UTC).isoformat().replace("+00:00", "Z"),
        "log_end": dt.datetime.fromtimestamp(world.start_epoch + world.horizon, dt.UTC)
        .isoformat()
        .replace("+00:00", "Z"),
        "effects": effects,
        "effects_doc": EFFECTS_DOC,
        "counts": {
            "sessions": truth.sessions,
            "visits": truth.visits,
            "joined": truth.joined,
            "open_at_log_end": truth.open_sessions,
        },
        "model": model.to_dict(),
    }
