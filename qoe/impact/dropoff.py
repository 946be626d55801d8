"""Drop-off before the first frame against waiting time: the abandonment curve, its knee and the
per-second slope past it, by three estimators side by side.

A session that never shows a frame tells how long the viewer waited, not how long the join
would have taken; a session that joined at ``J`` tells that the viewer would have waited at
least ``J``. So the abandonment curve ``F(t)`` (the share of viewers who leave before a
first frame arriving at ``t``) is a survival problem: leaving is the event, the first frame
censors it. Binned Kaplan-Meier gives ``F``; a hinge ``level + slope * max(0, t - knee)`` fit
to it gives the knee and "each second beyond the knee costs ``slope`` of viewers"
(Krishnan & Sitaraman, IMC 2012 report 2 s and 5.8 % per second).

- ``naive``: one Kaplan-Meier curve over all sessions. If the viewers who wait long (weak
  networks) are also more (or less) patient, the risk set late in the curve is not like the
  population and the slope is biased.
- ``stratified``: Kaplan-Meier within strata of identical confounders, standardised to the
  population (the matched design's exact matching; individual pairs cannot be formed because
  the join time of a viewer who left is unknown). Controls are added in the given order while
  each stratum keeps enough sessions at risk; thinner strata are pooled and reported.
- ``regression``: a piecewise-exponential proportional-hazards model, fitted by Poisson
  likelihood (iterative proportional fitting): a baseline hazard per time bin and network,
  times a factor per room, device, region and hour; the curve is standardised to the
  population's mix of confounders.

Confidence intervals: delete-a-group jackknife over ``n_groups`` random groups of viewers
(so a viewer's sessions stay together), with Student's t on ``n_groups - 1`` degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from .causal import Estimate, _blocks, make_cells
from .survival import Hinge, hinge_fit, km_from_counts, standardised

__all__ = ["AbandonCurve", "abandonment"]

MIN_AT_RISK = 10
"""A stratum with fewer sessions still waiting at the curve's end is pooled with the other thin ones."""
MAX_POOLED = 0.1
"""At most this share of sessions may sit in pooled thin strata; otherwise fewer controls are used."""
T_NEED = 4.5
"""Strata must keep sessions waiting at least this long (or to the pooled curve's end, if shorter),
seconds: the standardised curve only exists where every stratum's curve does."""


@dataclass
class AbandonCurve:
    method: str
    t: np.ndarray
    """(K,) seconds: upper edges of the bins."""
    share: np.ndarray
    """(K,) share of sessions that left without a first frame by ``t``."""
    hinge: Hinge
    knee: Estimate
    slope: Estimate
    """Share of viewers lost per second of waiting past the knee."""
    controls: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "t": [round(float(x), 4) for x in self.t],
            "share": [round(float(x), 6) for x in self.share],
            "knee": self.knee.to_dict(),
            "slope": self.slope.to_dict(),
            "level": self.hinge.level,
            "controls": self.controls,
            "note": self.note,
        }


def _estimate(full: float, reps: np.ndarray, n: int, method: str, floor: float = 0.0) -> Estimate:
    """Delete-a-group jackknife interval; half-width at least ``floor`` (a knee is only located
    to within a bin, even when every replicate picks the same one)."""
    g = reps.size
    se = float(np.sqrt((g - 1) / g * np.sum((reps - reps.mean()) ** 2)))
    half = max(float(stats.t.ppf(0.975, g - 1)) * se, floor)
    return Estimate(full, full - half, full + half, se, n, method)


def _fit(share: np.ndarray, t: np.ndarray, at_risk: np.ndarray, knees: np.ndarray) -> Hinge:
    return hinge_fit(t, share, np.maximum(at_risk, 1.0), knees)


def _knees(t: np.ndarray) -> np.ndarray:
    """Candidate knees: from 0.5 s to 1 s before the curve's end."""
    return np.arange(0.5, max(float(t[-1]) - 1.0, 0.6), 0.02)


def _at_risk(code: np.ndarray, size: int, b: np.ndarray, k: int) -> np.ndarray:
    """(size, k) sessions still waiting at the start of each bin, per stratum; b (n,) bin index
    of each session's wait (k = past the last bin)."""
    counts = np.bincount(code * (k + 1) + b, minlength=size * (k + 1)).reshape(size, k + 1)
    return np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, :k]


def _support(at_risk: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per row of ``at_risk`` (rows, K), the last edge (s) up to which MIN_AT_RISK sessions wait."""
    ok = at_risk >= MIN_AT_RISK
    k = at_risk.shape[1]
    last = np.where(ok.any(axis=1), k - np.argmax(ok[:, ::-1], axis=1), 0)
    return edges[last]


def _coarsen(
    cell: np.ndarray, size: int, b: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, int, float, float] | None:
    """Pool the strata whose sessions stop waiting soonest (at most MAX_POOLED of the sessions)
    so the common support, the time up to which every stratum keeps MIN_AT_RISK sessions
    waiting, is as long as possible. Returns codes, their count, pooled share and support (s);
    None when there are too many strata to tabulate."""
    k = edges.size - 1
    if size * k > 20_000_000:
        return None
    at = _at_risk(cell, size, b, k)
    support = _support(at, edges)
    n = at[:, 0] if k else np.bincount(cell, minlength=size)
    order = np.argsort(support, kind="stable")
    share = np.cumsum(n[order]) / b.size
    pooled_support = _support(np.cumsum(at[order], axis=0), edges)  # row j: pool order[:j + 1]
    # Pooling order[:j] leaves support[order[j]] for the rest and pooled_support[j - 1] for the pool.
    j_max = int(np.searchsorted(share, MAX_POOLED, side="right"))
    js = np.arange(min(j_max, size - 1) + 1)
    common = support[order[js]]
    common = np.where(js > 0, np.minimum(common, pooled_support[np.maximum(js - 1, 0)]), common)
    j = int(js[np.argmax(common)])
    thin = np.zeros(size, bool)
    thin[order[:j]] = True
    keep = int((~thin).sum())
    # Through a table of the strata, not an int64 per session.
    code = np.where(thin, keep, np.cumsum(~thin) - 1).astype(np.int32)[cell]
    return (
        code,
        keep + (1 if j else 0),
        float(share[j - 1]) if j else 0.0,
        float(common.max()),
    )


def _strata(
    factors: dict[str, np.ndarray], order: list[str], b: np.ndarray, edges: np.ndarray, t_min: float
) -> tuple[np.ndarray, int, list[str], float, float]:
    """Controls in ``order`` are added while the standardised curve stays at least 3/4 as long as
    with the first control alone, and at least ``t_min`` seconds: more controls remove more
    confounding, a longer curve pins the slope down."""
    best: tuple[np.ndarray, int, list[str], float, float] = (
        np.zeros(b.size, np.int32),
        1,
        [],
        0.0,
        float(edges[-1]),
    )
    first = None
    for i in range(1, len(order) + 1):
        cells = make_cells([factors[c] for c in order[:i]])
        got = _coarsen(cells.cell, cells.count, b, edges)
        if got is None:
            break
        code, count, pooled, common = got
        first = common if first is None else first
        if common < max(t_min, 0.75 * first):
            break
        best = (code, count, order[:i], pooled, common)
    return best


def _ph_tables(
    b: np.ndarray, part: np.ndarray, left: np.ndarray, combo: np.ndarray, n_combo: int, widths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events D (C, K), exposure seconds E (C, K) and sessions n (C,) per combination and bin.

    b (n,) bin of each wait (K: past the last bin), part (n,) seconds waited inside that bin.
    """
    k = widths.size
    size = n_combo * (k + 1)
    idx = combo.astype(np.int64 if size >= 1 << 31 else np.int32)
    np.multiply(idx, k + 1, out=idx)
    np.add(idx, b, out=idx)
    # Tables of combinations x bins: at 100 M sessions (thousands of rooms) each is about a GB,
    # so as few as possible at once. Counts are whole numbers: summed as integers, they are the
    # same as the float sums.
    counts = np.bincount(idx, minlength=size).reshape(n_combo, k + 1)
    exposure = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, 1:].astype(float)  # sessions past bin k
    n = counts.sum(axis=1).astype(float)
    del counts
    d = np.bincount(idx[left], minlength=size).reshape(n_combo, k + 1)[:, :k].astype(float)
    exposure *= widths[None, :]
    exposure += np.bincount(idx, weights=part, minlength=size).reshape(n_combo, k + 1)[:, :k]
    return d, exposure, n


def _ph_fit(
    d: np.ndarray,
    e: np.ndarray,
    starts: np.ndarray,
    levels: list[np.ndarray],
    sizes: list[int],
    init: tuple[np.ndarray, list[np.ndarray]] | None = None,
    sweeps: int = 300,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Poisson MLE of log hazard = base[stratum, bin] + sum_j gamma_j[level], by IPF.

    Combinations are sorted by stratum, which starts at rows ``starts``; returns (base, gammas).
    """
    floor = -30.0
    base = np.zeros((starts.size, d.shape[1])) if init is None else init[0].copy()
    gammas = [np.zeros(s) for s in sizes] if init is None else [g.copy() for g in init[1]]
    obs_c = d.sum(axis=1)
    num_base = np.add.reduceat(d, starts, axis=0)
    stratum = np.repeat(np.arange(starts.size), np.diff(np.append(starts, d.shape[0])))
    obs_lv = [np.bincount(lv, weights=obs_c, minlength=s) for lv, s in zip(levels, sizes, strict=True)]
    for _ in range(sweeps):
        eta = sum((g[lv] for g, lv in zip(gammas, levels, strict=True)), np.zeros(d.shape[0]))
        den = np.add.reduceat(e * np.exp(eta)[:, None], starts, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            new_base = np.where(num_base > 0, np.log(num_base / den), floor)
        change = float(np.max(np.abs(new_base - base)))
        base = new_base
        hazard_e = (e * np.exp(base)[stratum]).sum(axis=1)
        for j, (lv, s) in enumerate(zip(levels, sizes, strict=True)):
            eta = sum((g[lv_] for g, lv_ in zip(gammas, levels, strict=True)), np.zeros(d.shape[0]))
            mu = np.bincount(lv, weights=hazard_e * np.exp(eta), minlength=s)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.where(obs_lv[j] > 0, np.log(obs_lv[j] / mu), floor - gammas[j])
            step = np.where(mu > 0, step, 0.0)
            gammas[j] = np.maximum(gammas[j] + step, floor)
            change = max(change, float(np.max(np.abs(step[obs_lv[j] > 0]), initial=0.0)))
        if change < 1e-7:
            break
    return base, gammas


def _ph_curve(
    base: np.ndarray,
    gammas: list[np.ndarray],
    levels: list[np.ndarray],
    starts: np.ndarray,
    n: np.ndarray,
    widths: np.ndarray,
) -> np.ndarray:
    stratum = np.repeat(np.arange(starts.size), np.diff(np.append(starts, n.size)))
    eta = sum((g[lv] for g, lv in zip(gammas, levels, strict=True)), np.zeros(n.size))
    cum = np.cumsum(np.exp(base) * widths[None, :], axis=1)  # (S, K)
    surv = np.exp(-np.exp(eta)[:, None] * cum[stratum])
    return 1.0 - (n[:, None] * surv).sum(axis=0) / n.sum()


def _bins(wait: np.ndarray, edges: np.ndarray, part: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Bin of each wait (K = past the last bin) and the seconds waited inside it (None unless
    ``part``)."""
    k = edges.size - 1
    # Narrow types, filled block by block: at 100 M sessions each of these is a few hundred MB,
    # and a whole-log searchsorted would be 800 MB of int64 more.
    b = np.empty(wait.size, np.int16 if k < 1 << 15 else np.int32)
    inside = np.empty(wait.size, np.float32) if part else None
    for s in _blocks(wait.size):
        bs = np.clip(np.searchsorted(edges, wait[s], side="right") - 1, 0, k).astype(b.dtype)
        b[s] = bs
        if inside is not None:
            ps = wait[s] - edges[np.minimum(bs, k - 1)].astype(np.float32)
            ps[bs >= k] = 0.0
            inside[s] = ps
    return b, inside


def _group_slices(group: np.ndarray, n_groups: int) -> Iterator[np.ndarray]:
    """Indices of each jackknife group, each in index order, one group at a time."""
    for g in range(n_groups):
        idx = np.flatnonzero(group == g)
        yield idx.astype(np.int32) if group.size < 1 << 31 else idx


def abandonment(
    wait: np.ndarray,
    left: np.ndarray,
    factors: dict[str, np.ndarray],
    order: list[str],
    group: np.ndarray,
    n_groups: int,
    *,
    bin_seconds: float = 0.1,
    hazard_bin_seconds: float = 0.25,
    t_cap: float = 10.0,
) -> dict[str, AbandonCurve]:
    """The abandonment curve by three methods (see module docstring).

    wait (n,) seconds until the first frame or until leaving without one; left (n,) bool, True
    when no frame showed; factors: confounder codes (n,) by name, ``order[0]`` being the
    network (the hazard model's strata); group (n,) jackknife group in ``[0, n_groups)``.
    """
    wait = np.asarray(wait)
    if wait.ndim != 1 or np.shape(left) != wait.shape or np.shape(group) != wait.shape:
        raise ValueError("wait, left and group must have the same shape (n,)")
    ok = np.isfinite(wait)
    left, group = np.asarray(left, bool), np.asarray(group)
    factors = {k: np.asarray(v) for k, v in factors.items()}
    if not ok.all():  # else the arrays as they are: at 100 M sessions each copy is 100-400 MB
        wait, left, group = wait[ok], left[ok], group[ok]
        factors = {k: v[ok] for k, v in factors.items()}
    del ok
    n = wait.size
    if n < 100 or left.sum() < 20:
        raise ValueError(f"too few sessions for an abandonment curve: {n} sessions, {int(left.sum())} left")
    edges = np.round(np.arange(0.0, t_cap + bin_seconds / 2, bin_seconds), 6)
    b, _ = _bins(wait, edges, part=False)
    k_all = edges.size - 1
    at_risk = np.cumsum(np.bincount(b, minlength=k_all + 1)[::-1])[::-1][:k_all]
    enough = np.flatnonzero(at_risk >= max(30, 0.001 * n))
    k_max = int(enough[-1]) + 1 if enough.size else 0
    if k_max * bin_seconds < 3.0:
        raise ValueError(f"too few sessions wait past 3 s (curve ends at {k_max * bin_seconds:.1f} s)")
    edges = edges[: k_max + 1]
    np.minimum(b, k_max, out=b)
    k = k_max
    t_max = float(edges[-1])
    t_need = min(t_max, T_NEED)
    strata, n_strata, used, pooled, strat_end = _strata(factors, order, b, edges, t_need)
    # The hazard model's baseline strata: network levels, thin ones pooled like the strata above;
    # if that pools too much, one baseline and the network as a proportional factor instead.
    net = _coarsen(factors[order[0]].astype(np.int32), int(factors[order[0]].max()) + 1, b, edges)
    if net is not None and net[3] < t_need:
        net = None
    net_end = net[3] if net is not None else None
    base_code = net[0] if net is not None else np.zeros(n, np.int32)
    del net
    ph_factors = order[1:] if net_end is not None else order
    ph_cells = make_cells([base_code, *(factors[c] for c in ph_factors)])
    del base_code
    base_levels = ph_cells.levels[0]
    starts = np.flatnonzero(np.r_[True, base_levels[1:] != base_levels[:-1]])
    ph_levels, ph_sizes = ph_cells.levels[1:], ph_cells.n_levels[1:]
    ph_edges = np.round(np.arange(0.0, t_max + hazard_bin_seconds / 2, hazard_bin_seconds), 6)
    ph_b, ph_part = _bins(wait, ph_edges)
    assert ph_part is not None
    del wait  # the bins hold what the curves need of it
    ph_widths = np.diff(ph_edges)
    ph_t = ph_edges[1:]
    ends = {
        "naive": t_max,
        "stratified": min(strat_end, t_max),
        "regression": min(net_end if net_end is not None else t_max, t_max),
    }
    t = {"naive": edges[1:], "stratified": edges[1:], "regression": ph_t}
    upto = {m: int(np.searchsorted(t[m], e + 1e-9, side="right")) for m, e in ends.items()}

    # Counts over everyone, then over each jackknife group: leaving a group out is a subtraction.
    def counts(sel: np.ndarray | slice) -> dict[str, Any]:
        lf = left[sel]
        bs = b[sel]
        nb_left = np.bincount(bs[lf], minlength=k + 1)
        nb = np.stack([np.bincount(bs, minlength=k + 1) - nb_left, nb_left])
        del bs
        st = strata[sel].astype(np.int32)
        st *= k + 1
        st += b[sel]
        size = n_strata * (k + 1)
        sd = np.bincount(st[lf], minlength=size).reshape(n_strata, k + 1)
        sc = np.bincount(st, minlength=size).reshape(n_strata, k + 1) - sd
        del st
        ph = _ph_tables(ph_b[sel], ph_part[sel], lf, ph_cells.cell[sel], ph_cells.count, ph_widths)
        return {"naive": (nb[1][None, :], nb[0][None, :]), "strata": (sd, sc), "ph": ph}

    def curves(c: dict[str, Any], init: Any = None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Any]:
        s_naive, r_naive = km_from_counts(*c["naive"])
        s_strat, r_strat = standardised(*c["strata"])
        pd, pe, pn = c["ph"]
        fit = _ph_fit(pd, pe, starts, ph_levels, ph_sizes, init)
        f_ph = _ph_curve(*fit, ph_levels, starts, pn, ph_widths)
        ph_risk = np.cumsum(
            np.bincount(np.minimum(ph_b, ph_widths.size), minlength=ph_widths.size + 1)[::-1]
        )[::-1]
        out = {
            "naive": (1.0 - s_naive[0], r_naive[0]),
            "stratified": (1.0 - s_strat, r_strat),
            "regression": (f_ph, ph_risk[: ph_widths.size].astype(float)),
        }
        return {m: (f[: upto[m]], r[: upto[m]]) for m, (f, r) in out.items()}, fit

    full_counts = counts(slice(None))
    full, fit = curves(full_counts)
    fits = {m: _fit(f, t[m][: upto[m]], r, _knees(t[m][: upto[m]])) for m, (f, r) in full.items()}
    reps: dict[str, list[tuple[float, float]]] = {m: [] for m in full}
    for idx in _group_slices(group, n_groups):
        loo = counts(idx)
        # Leaving the group out, in the group's own tables (each about a GB at 100 M sessions).
        for key in ("naive", "strata", "ph"):
            for a, p in zip(full_counts[key], loo[key], strict=True):
                np.subtract(a, p, out=p)
        rep, _ = curves(loo, fit)
        del loo
        for m, (f, r) in rep.items():
            h = _fit(f, t[m][: upto[m]], r, _knees(t[m][: upto[m]]))
            reps[m].append((h.knee, h.slope))
    baseline = order[0] if net_end is not None else "nothing"
    notes = {
        "naive": "one Kaplan-Meier curve over all sessions",
        "stratified": f"Kaplan-Meier within strata of {', '.join(used) or 'nothing'}, standardised; "
        f"{pooled:.1%} of sessions in thin strata pooled; up to {ends['stratified']:.1f} s",
        "regression": f"proportional hazards: baseline per {baseline} and "
        f"{hazard_bin_seconds:g} s, factors for {', '.join(ph_factors) or 'nothing'}; standardised; up to "
        f"{ends['regression']:.1f} s",
    }
    controls = {"naive": [], "stratified": used, "regression": list(order)}
    result = {}
    for m, (f, _) in full.items():
        arr = np.asarray(reps[m])
        result[m] = AbandonCurve(
            m,
            t[m][: upto[m]],
            f,
            fits[m],
            _estimate(fits[m].knee, arr[:, 0], n, m, floor=float(t[m][1] - t[m][0]) / 2),
            _estimate(fits[m].slope, arr[:, 1], n, m),
            controls[m],
            notes[m],
        )
    return result


def early_exit_curve(
    join: np.ndarray,
    left60: np.ndarray,
    *,
    bin_seconds: float = 0.25,
    t_cap: float = 10.0,
    min_sessions: int = 20,
) -> dict[str, Any] | None:
    """Share of joined sessions that end within 60 s of the first frame, by join time bin.

    join (n,) seconds, left60 (n,) 1.0 / 0.0, NaN when unknown (open sessions shorter than 60 s).
    Returns bin centres, shares and counts, and the weighted hinge fit, or None with too few bins.
    """
    join, left60 = np.asarray(join), np.asarray(left60)
    edges = np.arange(0.0, t_cap + bin_seconds / 2, bin_seconds)
    # Block by block: the counts are whole numbers (left60 is 0 or 1), the same in any order.
    counts = np.zeros(edges.size - 1, np.int64)
    k = np.zeros(edges.size - 1)
    for s in _blocks(join.size):
        ok = np.isfinite(join[s]) & np.isfinite(left60[s])
        b = np.clip(np.searchsorted(edges, join[s][ok], side="right") - 1, 0, edges.size - 2)
        counts += np.bincount(b, minlength=edges.size - 1)
        k += np.bincount(b, weights=left60[s][ok], minlength=edges.size - 1)
    n = counts.astype(float)
    keep = n >= min_sessions
    if keep.sum() < 8:
        return None
    centre = (edges[:-1] + edges[1:]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(keep, k / n, np.nan)
    knees = np.arange(0.5, centre[keep][-1] - 1.0, 0.02)
    h = hinge_fit(centre[keep], share[keep], n[keep], knees if knees.size else None)
    return {"t": centre[keep], "share": share[keep], "n": n[keep], "hinge": h}
