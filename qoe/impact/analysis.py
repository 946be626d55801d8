"""``analyse()``: session log (+ probe results) -> every figure of the impact report.

Steps, each timed: load and validate (DuckDB), link (DuckDB window functions and as-of join),
fetch per-session arrays (numpy, one column at a time of fixed-width types), then the
estimators of :mod:`.dropoff`, :mod:`.contrasts` and :mod:`.bands`, the thresholds and the
alert rules of :mod:`.rules`.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qoe.errors import ConfigError

from .arms import arms as arm_figures
from .bands import BandTable, av_bands, band_table, join_bands, picture_bands, stall_bands
from .behaviour import BehaviourResult, behaviour
from .causal import make_cells
from .contrasts import HD_BITRATE_KBPS, HD_HEIGHT, ContrastResult, picture, run_contrasts
from .doses import DoseResponse, dose_responses
from .dropoff import AbandonCurve, abandonment, early_exit_curve
from .link import DAY, RETURN_DAYS, link_sessions, load_probes
from .load import TIMESTAMP_RANGE, Validation, connect, load_sessions
from .rules import Thresholds, alert_rules, recommend
from .schema import CONTROLS, HEIGHT_RANGE
from .segments import (
    DIMENSIONS,
    SegmentResult,
    Tiers,
    attribution,
    check_segment_by,
    extra_columns,
    segment_masks,
    segments,
)

__all__ = ["TRUTH_KEYS", "Impact", "Options", "analyse"]

ARM_COLUMNS = {"arm": "arm", **DIMENSIONS}
"""Columns an A/B arm may be read from (``--arm-from``) -> the category code."""

CODE = {"room_id": "room", "device": "device", "network": "network", "region": "region", "hour": "hour"}
TRUTH_KEYS = {
    "abandon_knee": "abandon_knee_seconds",
    "abandon_per_second": "abandon_per_second",
    "watch_per_stall_percent": "watch_change_per_stall_percent",
    "watch_av_out_of_band": "watch_change_av_out_of_band",
    "early_exit_per_second": "early_exit_per_second",
    "return7_failed": "return7_failed",
    "return7_stall": "return7_stall",
    "watch_sd": "watch_change_sd",
    "return7_sd": "return7_sd",
    "dose_watch_per_stall_percent": "watch_change_per_stall_percent",
    "dose_watch_per_chat_echo_second": "watch_change_per_chat_echo_second",
}
"""Figure key here -> key in a simulator's ground truth (``effects``)."""


@dataclass
class Options:
    probes: str | None = None
    log_end: float | None = None
    visit_gap: float = 1800.0
    stall_threshold: float = 0.01
    watch_loss_budget: float = 0.05
    hd_height: int = HD_HEIGHT
    """Picture height from which a session counts as HD (see :class:`~.contrasts.Picture`)."""
    hd_bitrate_kbps: float = HD_BITRATE_KBPS
    """Mean bitrate from which a session counts as HD, for a log without ``video_height``."""
    controls: tuple[str, ...] = CONTROLS
    probe_room: str = "target"
    probe_window: float = 900.0
    qoe_source: str = "auto"
    jackknife_groups: int = 10
    threads: int | None = None
    memory_limit: str | None = "4GB"
    temp_dir: str | None = None
    segment_by: tuple[str, ...] = ()
    """Category columns whose levels are segments (see :mod:`.segments`): the schema's, or any
    column of the log outside it; tiers always are."""
    tiers: Tiers = field(default_factory=Tiers)
    arm_from: str | None = None
    """Category column holding the A/B arm; None: ``arm`` when the log has it."""
    arm_split: tuple[float, ...] | None = None
    """Intended share of viewers per arm, in the arms' name order; None: equal."""

    def check(self) -> Options:
        if self.arm_from is not None and self.arm_from not in ARM_COLUMNS:
            raise ConfigError(
                f"--arm-from {self.arm_from}: choose a category column: {', '.join(ARM_COLUMNS)}"
            )
        check_segment_by(self.segment_by)
        self.tiers.check()
        if self.temp_dir is not None and not os.path.isdir(self.temp_dir):
            raise ConfigError(f"--temp-dir {self.temp_dir}: no such folder")
        unknown = [c for c in self.controls if c not in CODE]
        if unknown:
            raise ConfigError(f"unknown control(s) {', '.join(unknown)}; choose from {', '.join(CODE)}")
        if not self.controls:
            raise ConfigError("need at least one control")
        if not 0 < self.stall_threshold < 1:
            raise ConfigError(f"stall threshold must be a ratio between 0 and 1, got {self.stall_threshold}")
        if not 0 < self.watch_loss_budget < 1:
            raise ConfigError(f"watch-loss budget must be between 0 and 1, got {self.watch_loss_budget}")
        low_h, high_h = HEIGHT_RANGE
        if isinstance(self.hd_height, bool) or not isinstance(self.hd_height, int):
            raise ConfigError(f"HD height must be a whole number of pixels, got {self.hd_height!r}")
        if not low_h < self.hd_height <= high_h:  # a line at the lowest height leaves no SD
            raise ConfigError(
                f"HD height must be above {low_h} and at most {high_h} pixels, got {self.hd_height}"
            )
        if not (math.isfinite(self.hd_bitrate_kbps) and self.hd_bitrate_kbps > 0):
            raise ConfigError(f"HD bitrate must be a positive number of kbit/s, got {self.hd_bitrate_kbps}")
        if self.visit_gap <= 0 or self.probe_window <= 0:
            raise ConfigError("visit gap and probe window must be positive")
        if not 2 <= self.jackknife_groups <= 100:
            raise ConfigError(f"jackknife groups must be 2..100, got {self.jackknife_groups}")
        low, high = TIMESTAMP_RANGE
        if self.log_end is not None and not low <= self.log_end < high:  # also refuses NaN
            raise ConfigError(f"log end must be Unix seconds from 1970 to 9999, got {self.log_end}")
        return self


@dataclass
class Impact:
    source: str
    validation: Validation
    probes: dict[str, Any] | None
    counts: dict[str, int]
    sources: dict[str, str]
    controls: list[str]
    abandonment: dict[str, AbandonCurve] | None
    early_exit: dict[str, Any] | None
    contrasts: list[ContrastResult]
    bands: list[BandTable]
    thresholds: Thresholds
    rules: str
    lines: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    truth: dict[str, Any] | None = None
    doses: list[DoseResponse] = field(default_factory=list)
    segments: list[SegmentResult] = field(default_factory=list)
    tiers: dict[str, Any] = field(default_factory=dict)
    attribution: list[dict[str, Any]] = field(default_factory=list)
    behaviour: list[BehaviourResult] = field(default_factory=list)
    ab: dict[str, Any] | None = None

    def contrast(self, key: str) -> ContrastResult | None:
        return next((c for c in self.contrasts if c.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        ee = None
        if self.early_exit:
            h = self.early_exit["hinge"]
            ee = {
                "t": self.early_exit["t"].tolist(),
                "share": self.early_exit["share"].tolist(),
                "n": self.early_exit["n"].tolist(),
                "knee": h.knee,
                "level": h.level,
                "slope": h.slope,
            }
        return {
            "source": self.source,
            "validation": self.validation.to_dict(),
            "probes": self.probes,
            "counts": self.counts,
            "qoe_sources": self.sources,
            "controls": self.controls,
            "impact": self.lines,
            "abandonment": {k: v.to_dict() for k, v in (self.abandonment or {}).items()},
            "early_exit": ee,
            "contrasts": [c.to_dict() for c in self.contrasts],
            "dose_response": [d.to_dict() for d in self.doses],
            "tiers": self.tiers,
            "segments": [g.to_dict() for g in self.segments],
            "attribution": self.attribution,
            "behaviour": [b.to_dict() for b in self.behaviour],
            "ab_test": self.ab,
            "bands": [b.to_dict() for b in self.bands],
            "thresholds": self.thresholds.to_dict(),
            "notes": self.notes,
            "timings_seconds": self.timings,
            "truth": self.truth,
        }


def _line(
    key: str, text: str, method: str, v: float | None, lo: float | None, hi: float | None, scale: str
) -> dict[str, Any]:
    return {"key": key, "text": text, "method": method, "value": v, "low": lo, "high": hi, "scale": scale}


def _impact_lines(
    ab: dict[str, AbandonCurve] | None,
    contrasts: dict[str, ContrastResult],
    threshold: float,
    rule: str = "",
) -> list[dict[str, Any]]:
    """The impact table: one sentence per effect, with the headline estimate and its CI."""
    out = []

    def pct(x: float) -> str:
        return f"{100 * abs(x):.1f} %"

    if ab and "stratified" in ab:
        c = ab["stratified"]
        s = c.slope
        out.append(
            _line(
                "abandon_per_second",
                f"Each second of join time beyond {c.knee.value:.1f} s costs {pct(s.value)} of viewers "
                f"(95 % CI {100 * s.low:.1f} to {100 * s.high:.1f} %) before the first frame",
                "stratified Kaplan-Meier",
                s.value,
                s.low,
                s.high,
                "share",
            )
        )
    wording = {
        "watch_per_stall_percent": "Each 1 % of stall ratio costs {x} of watch time",
        "watch_av_out_of_band": "An A/V offset outside +90/-185 ms costs {x} of watch time",
        "early_exit_per_second": "{Title} costs {x} of viewers within 60 s of the first frame",
        "return7_stall": f"Sessions with stall ratio above {100 * threshold:g} % return {{x}} less "
        "within 7 days",
        "return7_failed": "A visit that ends without a first frame returns {x} less within 7 days",
        "repurchase7_stall": f"Customers whose visit ends above {100 * threshold:g} % stall buy again "
        "{x} less "
        "within 7 days",
        "repurchase7_failed": "Customers whose visit ends without a first frame buy again {x} less "
        "within 7 days",
        "watch_sd": "An SD picture ({rule}) costs {x} of watch time",
        "return7_sd": "Visits ending on an SD picture ({rule}) return {x} less within 7 days",
        "repurchase7_sd": "Customers whose visit ends on an SD picture ({rule}) buy again {x} less "
        "within 7 days",
    }
    for key, template in wording.items():
        r = contrasts.get(key)
        if r is None:
            continue
        # A headline comes from the first design with enough support (matched pairs, then the
        # regression); with none, the line says so and why, never a number without an interval.
        design, e, note = r.headline()
        if e is None:
            title = r.title[:1].upper() + r.title[1:]
            out.append(
                _line(key, f"{title} → {r.outcome}: not estimable ({note})", design, None, None, None, r.unit)
                | {"estimable": False, "reason": note}
            )
            continue
        v, lo, hi = r.shown(e)
        # Read as a cost: positive = harm. Early exits are harm when they rise, the rest when they fall.
        sign = 1.0 if key.startswith("early") else -1.0
        cost, c_lo, c_hi = (
            sorted((sign * v, sign * lo, sign * hi))[1],
            min(sign * lo, sign * hi),
            max(sign * lo, sign * hi),
        )
        unit = " points" if r.unit == "share" and not key.startswith("early") else " %"
        if cost < 0:  # the data say it helps: say so rather than "costs -x"
            template = template.replace("costs", "adds").replace(" less ", " more ")
            cost, c_lo, c_hi = -cost, -c_hi, -c_lo
        x = f"{abs(100 * cost):.1f}{unit}"
        text = (
            template.format(x=x, Title=r.title[:1].upper() + r.title[1:], rule=rule)
            + f" (95 % CI {100 * c_lo:.1f} to {100 * c_hi:.1f}{unit})"
        )
        if note:
            text += f"; {design}, since {note}"
        out.append(_line(key, text, design, v, lo, hi, r.unit) | {"estimable": True, "note": note})
    return out


def analyse(
    sessions: str | Path,
    rng: np.random.Generator,
    options: Options | None = None,
    truth: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Impact:
    """Run the whole analysis on a session log; raises ConfigError when the log is unusable.

    ``progress(step)`` is called as each step starts (a phrase such as ``"contrasts"`` or
    ``"segment 3/12: region eu"``), for a program to show; the library prints nothing."""
    opt = (options or Options()).check()
    say = progress or (lambda step: None)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    extra = extra_columns(opt.segment_by)
    with tempfile.TemporaryDirectory(prefix="qoe-impact-", dir=opt.temp_dir) as spill:
        con = connect(opt.threads, opt.memory_limit, spill)
        try:
            say("reading and validating the log")
            validation = load_sessions(con, sessions, log_end=opt.log_end, extra=extra)
            timings["load_and_validate"] = time.monotonic() - t0
            if not validation.usable:
                return _unusable(str(sessions), validation, timings)
            say(f"linking {validation.valid} sessions: visits, returns, probes")
            t1 = time.monotonic()
            probe_info = load_probes(con, opt.probes, room=opt.probe_room) if opt.probes else None
            assert validation.log_end is not None
            s = link_sessions(
                con,
                log_end=validation.log_end,
                visit_gap=opt.visit_gap,
                probes=probe_info is not None,
                probe_window=opt.probe_window,
                qoe_source=opt.qoe_source,
                columns=validation.columns,
                extra=extra,
                lapsing_seconds=opt.tiers.lapsing_days * DAY,
                high_value=opt.tiers.high_value,
                high_value_quantile=opt.tiers.high_value_quantile,
            )
            timings["link_and_fetch"] = time.monotonic() - t1
        finally:
            con.close()
    with tempfile.TemporaryDirectory(prefix="qoe-impact-", dir=opt.temp_dir) as parking:
        t2 = time.monotonic()
        notes: list[str] = []
        # What the first steps do not read waits in files until a step needs it (Sessions.park):
        # at 100 M sessions, about 1.8 GB the abandonment curves and the contrasts can use.
        visit_ends = int(s.visit_end.sum())
        later = {
            "arms": ["start", "visit_end"],
            "doses": ["chat"],
            "segments": ["tier"],
            "behaviour": [f"behaviour[{c}]" for c in s.behaviour],
            "bands": [f"{what}[{d}]" for what in ("returned", "rebought") for d in RETURN_DAYS if d != 7],
        }
        s.park(parking, [name for names in later.values() for name in names])
        controls = list(opt.controls)
        absent = [c for c in controls if c != "hour" and c not in validation.columns]
        if absent:
            notes.append(f"controls absent from the log (constant 'unknown'): {', '.join(absent)}")
        factors = [s.codes[CODE[c]] for c in controls]
        cells = make_cells(factors)
        match_rng, group_rng = rng.spawn(2)
        groups = group_rng.integers(0, opt.jackknife_groups, int(s.viewer.max()) + 1).astype(np.int8)[
            s.viewer
        ]
        ab: dict[str, AbandonCurve] | None = None
        say("abandonment curves")
        if (s.joined >= 0).any():
            order: list[str] = [
                c for c in ("network", "device", "region", "hour", "room_id") if c in controls
            ]
            try:
                ab = abandonment(
                    s.waits(),
                    s.joined == 0,
                    {c: s.codes[CODE[c]] for c in order},
                    order,
                    groups,
                    opt.jackknife_groups,
                )
            except ValueError as exc:
                notes.append(f"no abandonment curve: {exc}")
        else:
            notes.append("no join_seconds column: abandonment and failed-visit analyses skipped")
        del groups  # the jackknife groups serve the abandonment curves only
        timings["abandonment"] = time.monotonic() - t2
        t3 = time.monotonic()
        say("contrasts and dose-response")
        joined = s.joined == 1
        n_joined = int(joined.sum())
        known = joined & (~s.is_open | (s.watch >= 60))
        left60 = (s.watch < 60).astype(np.float32)
        left60[~known] = np.nan
        ee = early_exit_curve(s.join, left60)
        del left60, known, joined
        # Early exits are read per second past the drop-off knee: the early-exit curve's own knee is
        # a naive fit, pulled by the same confounding the causal estimates remove.
        knee = ab["stratified"].knee.value if ab else (ee["hinge"].knee if ee else None)
        pic = picture(s, validation.columns, hd_height=opt.hd_height, hd_bitrate_kbps=opt.hd_bitrate_kbps)
        if pic is None:
            notes.append(
                "no video_height or bitrate_kbps column: picture-quality (SD vs HD) analyses skipped"
            )
        elif pic.basis == "bitrate_kbps":
            notes.append(f"no video_height column: SD vs HD read from bitrate_kbps (SD = {pic.rule})")
        contrasts = run_contrasts(
            s, cells, match_rng, stall_threshold=opt.stall_threshold, knee=knee, picture=pic
        )
        by_key = {c.key: c for c in contrasts}
        s.unpark(later["doses"])
        doses = dose_responses(s, cells, validation.columns, picture_value=pic.value if pic else None)
        s.park(parking, later["doses"])
        timings["contrasts"] = time.monotonic() - t3
        t_seg = time.monotonic()
        s.unpark(later["segments"])
        masks, tiers_used = segment_masks(s, list(opt.segment_by), opt.tiers)
        seg_rng = match_rng.spawn(1)[0]
        segs = segments(
            s,
            cells,
            seg_rng,
            masks,
            stall_threshold=opt.stall_threshold,
            knee=knee,
            picture=pic,
            progress=say,
        )
        attributed = attribution(s, masks, by_key, stall_threshold=opt.stall_threshold, picture=pic)
        timings["segments"] = time.monotonic() - t_seg
        t_ab = time.monotonic()
        say("A/B arms and behaviour")
        abtest = None
        arm_col = opt.arm_from or ("arm" if "arm" in validation.columns else None)
        if arm_col is not None:
            if arm_col not in validation.columns:
                raise ConfigError(f"--arm-from {arm_col}: the log has no such column")
            key = ARM_COLUMNS[arm_col]
            s.unpark(later["arms"])
            abtest = arm_figures(s, s.codes[key], s.levels[key], split=opt.arm_split, source=arm_col)
            s.park(parking, later["arms"])
            if "warning" in abtest:
                notes.append(abtest["warning"])
        s.unpark(later["behaviour"])
        behaved = behaviour(
            s, cells, seg_rng.spawn(1)[0], stall_threshold=opt.stall_threshold, knee=knee, picture=pic
        )
        timings["arms_and_behaviour"] = time.monotonic() - t_ab
        t4 = time.monotonic()
        say("bands")
        s.unpark(later["bands"])
        bands = []
        if np.isfinite(s.stall_ratio).any():
            bands.append(band_table("stall ratio", *stall_bands(s.stall_ratio), s))
        if np.isfinite(s.av).any():
            bands.append(band_table("A/V offset", *av_bands(s.av), s))
        if (s.joined >= 0).any():
            bands.append(band_table("join time", *join_bands(s.join, s.joined), s))
        if pic is not None:
            name = "picture height" if pic.basis == "video_height" else "picture bitrate"
            bands.append(band_table(name, *picture_bands(pic), s))
        timings["bands"] = time.monotonic() - t4
        thresholds = recommend(ab["stratified"] if ab else None, by_key, budget=opt.watch_loss_budget)
        rules = alert_rules(thresholds, source=str(sessions))
        counts = {
            "sessions": s.n,
            "viewers": int(s.viewer.max()) + 1 if s.n else 0,
            "rooms": len(s.levels["room"]),
            "joined": n_joined,
            "no_first_frame": int((s.joined == 0).sum()),
            "open_at_log_end": int(s.is_open.sum()),
            "visit_ends": visit_ends,
        }
        timings["total"] = time.monotonic() - t0
        return Impact(
            str(sessions),
            validation,
            probe_info,
            counts,
            s.sources,
            controls,
            ab,
            ee,
            contrasts,
            bands,
            thresholds,
            rules,
            _impact_lines(ab, by_key, opt.stall_threshold, pic.rule if pic else ""),
            notes,
            timings,
            _truth_view(truth) if truth else None,
            doses,
            segs,
            tiers_used,
            attributed,
            behaved,
            abtest,
        )


def _truth_view(truth: dict[str, Any]) -> dict[str, Any]:
    effects = truth.get("effects", truth)
    return {k: effects.get(v) for k, v in TRUTH_KEYS.items()}


def _unusable(source: str, v: Validation, timings: dict[str, float]) -> Impact:
    from .rules import recommend as _rec

    t = _rec(None, {})
    return Impact(
        source,
        v,
        None,
        {"sessions": 0},
        {},
        [],
        None,
        None,
        [],
        [],
        t,
        alert_rules(t, source=source),
        [],
        ["the log is unusable: see validation"],
        timings,
    )
