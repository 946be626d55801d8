"""The treatment/outcome contrasts ``qoe impact`` estimates, each by naive difference, matched
pairs and fixed-effects regression on the same confounders (see :mod:`.causal`).

=========================  ==========================================  =====================
key                        treated vs control (units)                  outcome
=========================  ==========================================  =====================
watch_per_stall_percent    stall >= threshold vs no stall (joined)     log watch time, per
                                                                       percentage point of
                                                                       stall ratio (dose)
watch_av_out_of_band       A/V offset outside vs inside ITU-R          log watch time
                           BT.1359-1 acceptability (+90/-185 ms)
early_exit_per_second      join > knee + 1 s vs join <= knee           left within 60 s of
                           (joined)                                    the first frame, per
                                                                       second past the knee
return7_failed             no first frame vs joined without stall      came back within 7 d
                           above threshold (visit-ending sessions)
return7_stall              stall > threshold vs <= threshold (joined,  came back within 7 d
                           visit-ending)
watch_sd                   SD picture vs HD picture (joined, neither   log watch time
                           stalled above threshold; see
                           :class:`Picture`)
return7_sd                 the same, visit-ending sessions             came back within 7 d
repurchase7_failed/_stall  the same as the return ones, among          ordered again in 7 d
/_sd                       customers
=========================  ==========================================  =====================

Watch-time effects are estimated on the log scale and reported as a relative change
``exp(b) - 1``; the others as differences of shares (``points`` when shown x 100).

The picture contrasts leave out sessions that stalled above the threshold on both sides: a
rendition drops when the network does, and the same sessions stall, so without it the
stall's own cost would be read as the picture's wherever the controls leave the two tied.

**Designs and their support.** Each contrast names the design behind its headline
(:meth:`ContrastResult.headline`), tried in this order:

1. matched pairs, when at least :data:`MIN_PAIRS` pairs formed, holding at least
   :data:`MIN_MATCH_RATE` of the treated sessions, and their interval is finite;
2. the fixed-effects regression: for a dose (a per-unit effect) a dose-response slope over every
   session with the exposure measured, at least :data:`MIN_DOSE_SESSIONS` of them with more than
   one dose; for a yes/no treatment, at least :data:`MIN_GROUP` treated and :data:`MIN_GROUP`
   control sessions;
3. otherwise "not estimable", with the reason (e.g. "1 matched pair, needs 30; 41 control
   sessions"). No headline is printed from a design below its minimum.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from .causal import Cells, Estimate, Paired, Subset, fe_regression, match_pairs, naive, paired
from .link import Sessions

__all__ = [
    "AV_ACCEPTABLE",
    "HD_BITRATE_KBPS",
    "HD_HEIGHT",
    "MIN_DOSE_SESSIONS",
    "MIN_GROUP",
    "MIN_MATCH_RATE",
    "MIN_PAIRS",
    "ContrastResult",
    "Picture",
    "log_watch_of",
    "picture",
    "run_contrasts",
]

MIN_PAIRS = 30
"""Fewest matched pairs behind a matched-pair headline: below it the paired interval rests on
a handful of viewers (one pair has no standard error at all)."""
MIN_MATCH_RATE = 0.1
"""Smallest share of the treated sessions the pairs must hold: the paired estimate is the effect
on the *matched* treated, and a few dozen pairs out of thousands of treated (a log where almost
every session stalls has few controls) describe the few cells that had controls, not the
treated; the regression, which uses every session, is then the headline."""
MIN_GROUP = 30
"""Fewest treated and fewest control sessions behind a yes/no regression headline."""
MIN_DOSE_SESSIONS = 100
"""Fewest sessions behind a dose-response (per-unit) regression headline."""
NOT_ESTIMABLE = "not estimable"

AV_ACCEPTABLE = (-0.185, 0.09)
"""ITU-R BT.1359-1 acceptability, seconds, + = audio ahead."""
HD_HEIGHT = 720
"""Picture height from which a session counts as HD (720p and up), pixels; below it, SD."""
HD_BITRATE_KBPS = 1500.0
"""Without ``video_height``: the mean video bitrate from which a session counts as HD, kbit/s.
Live H.264 at 720p30 is encoded at about 1.5 Mbit/s and up (the low end of common live
encoding ladders), so a session received below it was in all likelihood shown an SD
rendition. Project choice, and a proxy: where a log has the height, the height is used."""


@dataclass(frozen=True)
class Picture:
    """Each session's picture-quality band: SD below ``hd_from``, HD at or above it.

    Read from ``video_height`` when the log has that column, else from ``bitrate_kbps``: one
    yardstick per log, never mixed row by row, since a height and a bitrate draw the line in
    different places and a mix would make the band mean something else in every room."""

    basis: str
    """``video_height`` or ``bitrate_kbps``: the column the band is read from."""
    value: np.ndarray
    """(n,) the height (pixels) or the bitrate (kbit/s); NaN where the session has none."""
    hd_from: float

    @property
    def sd(self) -> np.ndarray:
        """(n,) bool: known, and below ``hd_from``."""
        return np.isfinite(self.value) & (self.value < self.hd_from)

    @property
    def hd(self) -> np.ndarray:
        """(n,) bool: known, and at or above ``hd_from``."""
        return np.isfinite(self.value) & (self.value >= self.hd_from)

    @property
    def rule(self) -> str:
        """What SD means here, for titles and notes: ``below 720p`` or ``below 1500 kbit/s``."""
        if self.basis == "video_height":
            return f"below {self.hd_from:g}p"
        return f"below {self.hd_from:g} kbit/s"


def picture(
    s: Sessions,
    columns: Collection[str],
    *,
    hd_height: float = HD_HEIGHT,
    hd_bitrate_kbps: float = HD_BITRATE_KBPS,
) -> Picture | None:
    """The log's picture band (see :class:`Picture`), or None when it has neither column."""
    if "video_height" in columns:
        return Picture("video_height", np.asarray(s.height), float(hd_height))
    if "bitrate_kbps" in columns:
        return Picture("bitrate_kbps", np.asarray(s.bitrate), float(hd_bitrate_kbps))
    return None


@dataclass
class ContrastResult:
    key: str
    title: str
    outcome: str
    unit: str
    """How the value reads: "relative" (x100 = %), "share" (x100 = points or % of viewers)."""
    log_scale: bool
    treated: int
    control: int
    naive: Estimate
    matched: Paired
    regression: Estimate
    dose: bool = False
    """True when the regression is a dose-response slope (per unit of a continuous exposure)."""

    def shown(self, e: Estimate) -> tuple[float, float, float]:
        """(value, low, high) in the reading unit: relative change for log-scale outcomes."""
        if self.log_scale:
            return float(np.expm1(e.value)), float(np.expm1(e.low)), float(np.expm1(e.high))
        return e.value, e.low, e.high

    def support(self) -> dict[str, int]:
        return {
            "pairs": self.matched.pairs,
            "treated": self.treated,
            "control": self.control,
            "regression_sessions": self.regression.n,
        }

    def why_not(self, design: str) -> str | None:
        """Why ``design`` ("matched", "regression" or "naive") cannot carry a headline, or None."""
        if design == "matched":
            m = self.matched
            if m.pairs < MIN_PAIRS:
                return (
                    f"{m.pairs} matched pair{'s' if m.pairs != 1 else ''}, needs {MIN_PAIRS} "
                    f"({self.treated} treated, {self.control} control sessions)"
                )
            if m.pairs < MIN_MATCH_RATE * self.treated:
                return (
                    f"{m.pairs} matched pairs hold {100 * m.pairs / self.treated:.1f} % of the "
                    f"{self.treated} treated sessions, needs {100 * MIN_MATCH_RATE:g} % "
                    f"({self.control} control sessions)"
                )
            return None if m.effect.ok else "matched pairs give no finite interval"
        if design == "regression":
            r = self.regression
            if self.dose:
                if r.n < MIN_DOSE_SESSIONS:
                    return f"{r.n} sessions with the exposure measured, needs {MIN_DOSE_SESSIONS}"
            elif min(self.treated, self.control) < MIN_GROUP:
                return (
                    f"{self.treated} treated and {self.control} control sessions, needs {MIN_GROUP} of each"
                )
            return None if r.ok else "the regression gives no finite interval (no variation left)"
        if min(self.treated, self.control) < MIN_GROUP:
            return f"{self.treated} treated and {self.control} control sessions, needs {MIN_GROUP} of each"
        return None if self.naive.ok else "no finite interval"

    def headline(self) -> tuple[str, Estimate | None, str]:
        """(design, estimate, note): the first design with enough support (module docstring),
        or ``("not estimable", None, reason)``. The note says why earlier designs were passed."""
        skipped: list[str] = []
        for design, e in (("matched", self.matched.effect), ("regression", self.regression)):
            reason = self.why_not(design)
            if reason is None:
                name = "matched pairs" if design == "matched" else self.regression_name
                return name, e, "; ".join(skipped)
            skipped.append(f"{'matched pairs' if design == 'matched' else self.regression_name}: {reason}")
        return NOT_ESTIMABLE, None, "; ".join(skipped)

    @property
    def regression_name(self) -> str:
        return "dose-response regression" if self.dose else "fixed-effects regression"

    def to_dict(self) -> dict[str, Any]:
        design, e, note = self.headline()
        out: dict[str, Any] = {
            "key": self.key,
            "title": self.title,
            "outcome": self.outcome,
            "unit": self.unit,
            "log_scale": self.log_scale,
            "treated": self.treated,
            "control": self.control,
            "support": self.support(),
            "matched_pairs": self.matched.to_dict(),
            "headline": {"design": design, "note": note}
            | (dict(zip(("value", "low", "high"), self.shown(e), strict=True)) if e else {"reason": note}),
        }
        for name, est in (
            ("naive", self.naive),
            ("matched", self.matched.effect),
            ("regression", self.regression),
        ):
            reason = self.why_not(name)
            if reason is None:
                v, lo, hi = self.shown(est)
                out[name] = {"value": v, "low": lo, "high": hi, "estimate": est.to_dict()}
            else:
                out[name] = {"estimable": False, "reason": reason, "n": est.n}
        return out


def _contrast(
    key: str,
    title: str,
    outcome: str,
    unit: str,
    *,
    y: np.ndarray,
    treated: np.ndarray,
    control: np.ndarray,
    cells: Cells,
    cluster: np.ndarray,
    rng: np.random.Generator,
    dose: np.ndarray | None = None,
    sample: np.ndarray | None = None,
    log_scale: bool = False,
    worse: str = "lower",
    subset: Subset | None = None,
) -> ContrastResult:
    """One contrast: masks (n,), outcome y (n,), optional dose (n,), regression sample (n,).

    The masks are narrowed to where ``y`` is known in place: each caller passes masks of its
    own (at 100 M sessions a copy of each is 100 MB)."""
    known = np.isfinite(y)
    treated &= known
    control &= known
    if sample is None:
        sample = treated | control
    else:
        sample &= known
    del known
    reg_dose = treated if dose is None else dose
    if dose is not None:
        sample &= np.isfinite(dose)
    ti, ci = match_pairs(cells.cell, treated, control, rng, subset)
    return ContrastResult(
        key,
        title,
        outcome,
        unit,
        log_scale,
        int(treated.sum()),
        int(control.sum()),
        naive(y, treated, control, cluster, dose=dose, subset=subset),
        paired(y, ti, ci, cluster, treated=int(treated.sum()), dose=dose, worse=worse),
        fe_regression(y, reg_dose, sample, cells, cluster, subset),
        dose=dose is not None,
    )


def log_watch_of(watch: np.ndarray, closed: np.ndarray) -> np.ndarray:
    """(n,) float32 log watch time where ``closed``, NaN elsewhere (one log-sized array)."""
    out = np.maximum(watch, np.float32(1e-3), dtype=np.float32)
    np.log(out, out=out)
    out[~closed] = np.nan
    return out


def run_contrasts(
    s: Sessions,
    cells: Cells,
    rng: np.random.Generator,
    *,
    stall_threshold: float,
    knee: float | None,
    days: int = 7,
    picture: Picture | None = None,
    within: np.ndarray | None = None,
    subset: Subset | None = None,
) -> list[ContrastResult]:
    """Every contrast the data supports (a figure absent from the log skips its contrasts);
    ``within`` (n,) bool restricts every contrast to a segment's sessions. ``subset``: ``s``,
    ``cells`` and ``picture`` hold a segment's sessions gathered out of the whole log
    (:meth:`.link.Sessions.take`), placed by it (:class:`~.causal.Subset`): the same figures as
    ``within`` over the whole log."""
    out: list[ContrastResult] = []
    cl = s.viewer
    joined = s.joined == 1
    if within is not None:
        joined &= np.asarray(within, bool)
    closed = joined & ~s.is_open & (s.watch > 0)
    log_watch = log_watch_of(s.watch, closed)
    has_stall = np.isfinite(s.stall_ratio)
    pct = f"{stall_threshold * 100:g} %"
    if has_stall[closed].any():
        dose = np.float32(100.0) * s.stall_ratio
        out.append(
            _contrast(
                "watch_per_stall_percent",
                "each 1 % of stall ratio",
                "watch time",
                "relative",
                y=log_watch,
                treated=closed & has_stall & (s.stall_ratio >= stall_threshold),
                control=closed & has_stall & (s.stall_ratio == 0),
                dose=dose,
                sample=closed & has_stall,
                cells=cells,
                cluster=cl,
                rng=rng,
                subset=subset,
                log_scale=True,
            )
        )
        del dose  # each exposure's arrays go when its contrast is done: at 100 M sessions, 400 MB each
    has_av = np.isfinite(s.av)
    if has_av[closed].any():
        lo, hi = AV_ACCEPTABLE
        out_band = (s.av < lo) | (s.av > hi)
        out.append(
            _contrast(
                "watch_av_out_of_band",
                "A/V offset outside +90/-185 ms",
                "watch time",
                "relative",
                y=log_watch,
                treated=closed & has_av & out_band,
                control=closed & has_av & ~out_band,
                cells=cells,
                cluster=cl,
                rng=rng,
                subset=subset,
                log_scale=True,
            )
        )
        del out_band
    del has_av
    stalled = joined & has_stall & (s.stall_ratio > stall_threshold)
    del has_stall
    smooth = joined & ~stalled
    if picture is not None and np.isfinite(picture.value[closed]).any():
        out.append(
            _contrast(
                "watch_sd",
                f"an SD picture ({picture.rule})",
                "watch time",
                "relative",
                y=log_watch,
                treated=closed & smooth & picture.sd,
                control=closed & smooth & picture.hd,
                cells=cells,
                cluster=cl,
                rng=rng,
                subset=subset,
                log_scale=True,
            )
        )
    del log_watch, closed
    if knee is not None and np.isfinite(s.join[joined]).any():
        known = joined & (~s.is_open | (s.watch >= 60))
        left60 = (s.watch < 60).astype(np.float32)
        left60[~known] = np.nan
        past = np.maximum(s.join - np.float32(knee), np.float32(0.0))
        past[~known] = np.nan
        out.append(
            _contrast(
                "early_exit_per_second",
                f"each second of join time beyond {knee:.1f} s",
                "left within 60 s",
                "share",
                y=left60,
                treated=known & (s.join > knee + 1.0),
                control=known & (s.join <= knee),
                dose=past,
                sample=known,
                cells=cells,
                cluster=cl,
                rng=rng,
                subset=subset,
                worse="higher",
            )
        )
        del known, left60, past
    for what, flag, label in (
        ("return", s.returned[days], "came back"),
        ("repurchase", s.rebought[days], "ordered again"),
    ):
        units = flag >= 0
        if within is not None:
            units &= np.asarray(within, bool)
        if what == "repurchase":
            units &= s.customer
            if not units.any() or not s.any_orders:
                continue
        y = flag.astype(np.float32)
        y[~units] = np.nan
        if (s.joined >= 0).any() and (units & (s.joined == 0)).any():
            out.append(
                _contrast(
                    f"{what}{days}_failed",
                    "a visit ending without a first frame",
                    f"{label} within {days} days",
                    "share",
                    y=y,
                    treated=units & (s.joined == 0),
                    control=units & smooth,
                    cells=cells,
                    cluster=cl,
                    rng=rng,
                    subset=subset,
                )
            )
        if (units & stalled).any():
            out.append(
                _contrast(
                    f"{what}{days}_stall",
                    f"a visit ending with stall ratio above {pct}",
                    f"{label} within {days} days",
                    "share",
                    y=y,
                    treated=units & stalled,
                    control=units & smooth,
                    cells=cells,
                    cluster=cl,
                    rng=rng,
                    subset=subset,
                )
            )
        if picture is not None and (units & smooth & picture.sd).any():
            out.append(
                _contrast(
                    f"{what}{days}_sd",
                    f"a visit ending on an SD picture ({picture.rule})",
                    f"{label} within {days} days",
                    "share",
                    y=y,
                    treated=units & smooth & picture.sd,
                    control=units & smooth & picture.hd,
                    cells=cells,
                    cluster=cl,
                    rng=rng,
                    subset=subset,
                )
            )
        del y, units
    return out
