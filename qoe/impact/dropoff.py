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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from . import causal
from .causal import Estimate, _blocks, cell_table, make_cells
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


Codes = Callable[[Any], np.ndarray]
"""The codes of the sessions at a block (slice) or an index array: looked up when a block needs
them, so that no code array per session is held (:class:`~.causal.CellTable`)."""


def _length(at: slice | np.ndarray) -> int:
    return at.stop - at.start if isinstance(at, slice) else int(at.size)


def _pieces(at: slice | np.ndarray, n: int) -> Iterator[slice | np.ndarray]:
    """The blocks of the whole log (``at`` a slice of all of it), or an index array in pieces."""
    if isinstance(at, slice):
        yield from _blocks(n)
        return
    for a in range(0, at.size, causal.CHUNK):
        yield at[a : a + causal.CHUNK]


def _reader(codes: np.ndarray) -> Codes:
    """The codes of the array ``codes`` at a block."""

    def read(at: Any) -> np.ndarray:
        return codes[at]

    return read


def _pooled(codes: Codes, table: np.ndarray) -> Codes:
    """``table[codes(at)]``: the strata after thin ones are pooled (:func:`_coarsen`)."""

    def read(at: Any) -> np.ndarray:
        return table[codes(at)]

    return read


def _codes_of(
    factors: list[np.ndarray], maps: list[np.ndarray | None] | None = None
) -> tuple[Codes, int, list[np.ndarray], list[int]]:
    """Cell codes of the combinations of ``factors`` (through ``maps`` where given), their
    count, and per factor the level of each cell and the number of levels: looked up block by
    block where a table of the combinations fits, else one array (:func:`~.causal.make_cells`)."""
    table = cell_table(factors, maps)
    if table is not None:
        return table.codes, table.count, table.levels, table.n_levels
    mapped = [f if m is None else m[f] for f, m in zip(factors, maps or [None] * len(factors), strict=True)]
    cells = make_cells(mapped)
    return _reader(cells.cell), cells.count, cells.levels, cells.n_levels


def _at_risk(codes: Codes, size: int, b: np.ndarray, k: int) -> np.ndarray:
    """(size, k) sessions still waiting at the start of each bin, per stratum; b (n,) bin index
    of each session's wait (k = past the last bin)."""
    counts = np.zeros(size * (k + 1), np.int64)
    for at in _blocks(b.size):
        idx = codes(at).astype(np.int64)
        idx *= k + 1
        idx += b[at]
        np.add.at(counts, idx, 1)
    at_risk = counts.reshape(size, k + 1)
    return np.cumsum(at_risk[:, ::-1], axis=1)[:, ::-1][:, :k]


def _support(at_risk: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per row of ``at_risk`` (rows, K), the last edge (s) up to which MIN_AT_RISK sessions wait."""
    ok = at_risk >= MIN_AT_RISK
    k = at_risk.shape[1]
    last = np.where(ok.any(axis=1), k - np.argmax(ok[:, ::-1], axis=1), 0)
    return edges[last]


def _narrow(count: int) -> type[np.signedinteger[Any]]:
    return np.int8 if count < 1 << 7 else np.int16 if count < 1 << 15 else np.int32


def _coarsen(
    codes: Codes, size: int, b: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, int, float, float] | None:
    """Pool the strata whose sessions stop waiting soonest (at most MAX_POOLED of the sessions)
    so the common support, the time up to which every stratum keeps MIN_AT_RISK sessions
    waiting, is as long as possible. Returns the new code of each stratum (a table, not a code
    per session), their count, pooled share and support (s); None when there are too many
    strata to tabulate."""
    k = edges.size - 1
    if size * k > 20_000_000 or k == 0:
        return None
    at = _at_risk(codes, size, b, k)
    support = _support(at, edges)
    n = at[:, 0]
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
    count = keep + (1 if j else 0)
    return (
        np.where(thin, keep, np.cumsum(~thin) - 1).astype(_narrow(count)),
        count,
        float(share[j - 1]) if j else 0.0,
        float(common.max()),
    )


def _strata(
    factors: dict[str, np.ndarray], order: list[str], b: np.ndarray, edges: np.ndarray, t_min: float
) -> tuple[Codes, int, list[str], float, float]:
    """Controls in ``order`` are added while the standardised curve stays at least 3/4 as long as
    with the first control alone, and at least ``t_min`` seconds: more controls remove more
    confounding, a longer curve pins the slope down."""

    def none(at: Any) -> np.ndarray:
        return np.zeros(_length(at), np.int8)

    best: tuple[Codes, int, list[str], float, float] = (
        none,
        1,
        [],
        0.0,
        float(edges[-1]),
    )
    first = None
    for i in range(1, len(order) + 1):
        codes, size, _, _ = _codes_of([factors[c] for c in order[:i]])
        got = _coarsen(codes, size, b, edges)
        if got is None:
            break
        pooled_code, count, pooled, common = got
        first = common if first is None else first
        if common < max(t_min, 0.75 * first):
            break
        best = (_pooled(codes, pooled_code), count, order[:i], pooled, common)
    return best


ROWS = 1 << 16
"""Rows of a (combinations, bins) table worked on at once: at 100 M sessions such a table is
hundreds of MB, and every product with it would be as large again."""


def _row_groups(starts: np.ndarray, rows: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Runs of whole strata (rows ``starts[i]`` on) of about ROWS rows or one stratum each: the
    rows and the strata's starts within them."""
    ends = np.append(starts[1:], rows)
    i = 0
    while i < starts.size:
        j = i + 1
        while j < starts.size and ends[j] - starts[i] <= ROWS:
            j += 1
        yield slice(int(starts[i]), int(ends[j - 1])), starts[i:j] - starts[i]
        i = j


def _sum_rows(rows: int, values: Callable[[slice], np.ndarray]) -> np.ndarray:
    """``values(all rows).sum(axis=0)``, ROWS rows at a time, in the same order (a sum down the
    rows adds them one after another)."""
    total: np.ndarray | None = None
    for a in range(0, rows, ROWS):
        chunk = values(slice(a, min(a + ROWS, rows)))
        total = chunk.sum(axis=0) if total is None else np.concatenate([total[None, :], chunk]).sum(axis=0)
    assert total is not None
    return total


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

    Combinations are sorted by stratum, which starts at rows ``starts``; d (C, K) events (whole
    numbers), e (C, K) exposure; returns (base, gammas). Products with the tables are formed a
    few strata or ROWS rows at a time."""
    floor = -30.0
    rows = d.shape[0]
    base = np.zeros((starts.size, d.shape[1])) if init is None else init[0].copy()
    gammas = [np.zeros(s) for s in sizes] if init is None else [g.copy() for g in init[1]]
    obs_c = d.sum(axis=1)
    num_base = np.add.reduceat(d, starts, axis=0)
    stratum = np.repeat(np.arange(starts.size), np.diff(np.append(starts, rows)))
    obs_lv = [np.bincount(lv, weights=obs_c, minlength=s) for lv, s in zip(levels, sizes, strict=True)]
    groups = list(_row_groups(starts, rows))
    hazard_e = np.empty(rows)
    for _ in range(sweeps):
        w = np.exp(sum((g[lv] for g, lv in zip(gammas, levels, strict=True)), np.zeros(rows)))
        den = np.concatenate([np.add.reduceat(e[r] * w[r, None], at, axis=0) for r, at in groups])
        with np.errstate(divide="ignore", invalid="ignore"):
            new_base = np.where(num_base > 0, np.log(num_base / den), floor)
        change = float(np.max(np.abs(new_base - base)))
        base = new_base
        hb = np.exp(base)
        for a in range(0, rows, ROWS):
            r = slice(a, min(a + ROWS, rows))
            hazard_e[r] = (e[r] * hb[stratum[r]]).sum(axis=1)
        for j, (lv, s) in enumerate(zip(levels, sizes, strict=True)):
            eta = sum((g[lv_] for g, lv_ in zip(gammas, levels, strict=True)), np.zeros(rows))
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
    w = np.exp(sum((g[lv] for g, lv in zip(gammas, levels, strict=True)), np.zeros(n.size)))
    cum = np.cumsum(np.exp(base) * widths[None, :], axis=1)  # (S, K)

    def gone(r: slice) -> np.ndarray:
        return n[r, None] * np.exp(-w[r, None] * cum[stratum[r]])

    return 1.0 - _sum_rows(n.size, gone) / n.sum()


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
    network = factors[order[0]]
    net = _coarsen(_reader(network), int(network.max()) + 1, b, edges)
    if net is not None and net[3] < t_need:
        net = None
    net_end = net[3] if net is not None else None
    base_map = net[0] if net is not None else np.zeros(int(network.max()) + 1, np.int8)
    del net
    ph_factors = order[1:] if net_end is not None else order
    # The combinations' codes are looked up block by block, as the strata's are: no code per
    # session is held for either (eight bytes a session at most).
    ph_codes, ph_count, ph_levels_all, ph_n_levels = _codes_of(
        [network, *(factors[c] for c in ph_factors)], [base_map, *([None] * len(ph_factors))]
    )
    base_levels = ph_levels_all[0]
    starts = np.flatnonzero(np.r_[True, base_levels[1:] != base_levels[:-1]])
    ph_levels, ph_sizes = ph_levels_all[1:], ph_n_levels[1:]
    ph_edges = np.round(np.arange(0.0, t_max + hazard_bin_seconds / 2, hazard_bin_seconds), 6)
    ph_widths = np.diff(ph_edges)
    ph_t = ph_edges[1:]
    kp = ph_widths.size
    ends = {
        "naive": t_max,
        "stratified": min(strat_end, t_max),
        "regression": min(net_end if net_end is not None else t_max, t_max),
    }
    t = {"naive": edges[1:], "stratified": edges[1:], "regression": ph_t}
    upto = {m: int(np.searchsorted(t[m], e + 1e-9, side="right")) for m, e in ends.items()}
    ph_risk = np.zeros(kp + 1, np.int64)
    for at in _blocks(n):
        ph_risk += np.bincount(np.minimum(_bins(wait[at], ph_edges, part=False)[0], kp), minlength=kp + 1)
    ph_risk = np.cumsum(ph_risk[::-1])[::-1]

    # Counts over everyone, then over each jackknife group: leaving a group out is a subtraction.
    # Every table is added to block by block (np.add.at adds in the sessions' order, as one
    # bincount over all of them would), so nothing per session is copied whole.
    def counts(sel: slice | np.ndarray) -> dict[str, Any]:
        nb = np.zeros((2, k + 1), np.int64)  # sessions, of which left, per bin
        st_all = np.zeros(n_strata * (k + 1), np.int64)
        sd = np.zeros(n_strata * (k + 1), np.int64)
        ph_n = np.zeros(ph_count * (kp + 1), np.int32)
        ph_d = np.zeros(ph_count * (kp + 1), np.int32)
        ph_e = np.zeros(ph_count * (kp + 1))
        ones = np.ones(min(n if isinstance(sel, slice) else sel.size, causal.CHUNK), np.int32)
        for at in _pieces(sel, n):
            lf = left[at]
            bs = b[at]
            nb[0] += np.bincount(bs, minlength=k + 1)
            nb[1] += np.bincount(bs[lf], minlength=k + 1)
            st = strata(at).astype(np.int64)
            st *= k + 1
            st += bs
            np.add.at(st_all, st, 1)
            np.add.at(sd, st[lf], 1)
            del bs, st
            pb, part = _bins(wait[at], ph_edges)
            assert part is not None
            idx = ph_codes(at).astype(np.int64)
            idx *= kp + 1
            idx += pb
            np.add.at(ph_n, idx, ones[: idx.size])
            np.add.at(ph_d, idx[lf], ones[: int(np.count_nonzero(lf))])
            np.add.at(ph_e, idx, part.astype(np.float64))
        nb[0] -= nb[1]
        sd2 = sd.reshape(n_strata, k + 1)
        sc = st_all.reshape(n_strata, k + 1) - sd2
        del st_all
        # Exposure: the whole width of every bin a session waited past, and its time inside its
        # own bin, formed in place a few rows at a time.
        sessions = ph_n.reshape(ph_count, kp + 1)
        ph_e2 = ph_e.reshape(ph_count, kp + 1)
        for a in range(0, ph_count, ROWS):
            r = slice(a, min(a + ROWS, ph_count))
            past = np.cumsum(sessions[r, ::-1], axis=1)[:, ::-1][:, 1:].astype(float)
            past *= ph_widths[None, :]
            past += ph_e2[r, :kp]
            ph_e2[r, :kp] = past
        ph = (ph_d.reshape(ph_count, kp + 1)[:, :kp], ph_e2[:, :kp], sessions.sum(axis=1).astype(float))
        return {"naive": (nb[1][None, :], nb[0][None, :]), "strata": (sd2, sc), "ph": ph}

    def curves(c: dict[str, Any], init: Any = None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], Any]:
        s_naive, r_naive = km_from_counts(*c["naive"])
        s_strat, r_strat = standardised(*c["strata"])
        pd, pe, pn = c["ph"]
        fit = _ph_fit(pd, pe, starts, ph_levels, ph_sizes, init)
        f_ph = _ph_curve(*fit, ph_levels, starts, pn, ph_widths)
        out = {
            "naive": (1.0 - s_naive[0], r_naive[0]),
            "stratified": (1.0 - s_strat, r_strat),
            "regression": (f_ph, ph_risk[:kp].astype(float)),
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
