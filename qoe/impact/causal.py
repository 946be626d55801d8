"""Causal estimators for a treatment's effect on an outcome: naive, matched pairs, fixed effects.

Pure numpy/scipy over arrays, randomness passed in as a Generator; every function takes index or mask
arrays of shape (n,) and returns an :class:`Estimate` with a 95 % confidence interval.

- :func:`naive`: difference of group means (per unit of dose when a dose is given). It ignores
  who had the treatment, so confounders (network, device, room, hour) leak into it.
- :func:`match_pairs` + :func:`paired`: the quasi-experimental matched-pair design of Krishnan
  & Sitaraman (IMC 2012), reconstructed (docs/SOURCES.md): each treated unit is paired at random
  with an untreated unit *identical in the confounders* (same cell), without replacement.
  Per pair the outcome is +1 when the treated unit did worse, -1 when it did better, 0 on a tie;
  the *net outcome* is (pairs +1 - pairs -1) / pairs, with a two-sided sign test. The effect
  size is the mean paired difference (or, for a dose, sum of outcome differences over sum of
  dose differences). Unmatched treated units are reported, not hidden: the estimate is for the
  matched treated units.
- :func:`fe_regression`: least squares of the outcome on the treatment (or dose) with additive
  fixed effects for the same confounders (a level per room, device, network, region and hour).

Standard errors are cluster-robust by viewer (a viewer's sessions are not independent): the
sum over viewers of the squared sum of each viewer's influence, with the G / (G - 1) correction;
for matched pairs two-way, by the treated and by the control unit's viewer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "Z95",
    "CellTable",
    "Cells",
    "Estimate",
    "Paired",
    "Subset",
    "cell_table",
    "fe_regression",
    "make_cells",
    "match_pairs",
    "naive",
    "paired",
]

Z95 = float(stats.norm.ppf(0.975))
CHUNK = 1 << 22
"""Sessions per block when a sum runs over the whole log: at 100 M sessions a float64 copy of
one column is 800 MB, so sums go block by block and nothing log-sized is copied."""


def _blocks(n: int, subset: Subset | None = None) -> Iterator[slice]:
    if subset is not None:
        yield from subset.blocks()
        return
    for a in range(0, n, CHUNK):
        yield slice(a, min(a + CHUNK, n))


@dataclass(frozen=True)
class Subset:
    """Where a segment's sessions, gathered out of the whole log in index order, sit in it: with
    it the estimators add up exactly what they would with the segment as a mask over the whole
    log (the same blocks, the same cluster table, the same random keys), so a segment run on its
    own sessions gives the same figures digit for digit, at a fraction of the cost."""

    bounds: np.ndarray
    """(B + 1,) positions in the gathered arrays where each whole-log block starts, then the end."""
    units: int
    """Sessions in the whole log."""
    clusters: int
    """Size of the whole log's cluster (viewer) table: its largest code + 1."""
    cell_max: int
    """The whole log's largest cell code."""

    @classmethod
    def of(cls, index: np.ndarray, units: int, clusters: int, cell_max: int) -> Subset:
        """``index``: the segment's sessions in the whole log, ascending."""
        starts = np.arange(0, units + CHUNK, CHUNK)
        return cls(np.searchsorted(index, np.minimum(starts, units)), units, clusters, cell_max)

    def blocks(self) -> Iterator[slice]:
        for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True):
            if b > a:  # an empty block adds nothing
                yield slice(int(a), int(b))


class _ClusterSums:
    """Per-cluster sums of influences, added block by block (:func:`_cluster_se` in pieces)."""

    def __init__(self, size: int) -> None:
        self.sums = np.zeros(size)
        self.seen = np.zeros(size, bool)

    def add(self, cluster: np.ndarray, influence: np.ndarray) -> None:
        if cluster.size and cluster.min() < 0:
            raise ValueError("cluster codes must be non-negative")
        if cluster.size * 16 < self.sums.size:
            # A thin block (a small segment's share of it): sum per cluster present only. Each
            # cluster's partial sum adds the same terms in the same order, so the total is the
            # same to the last digit, without a pass over the whole table per block.
            present, at = np.unique(cluster, return_inverse=True)
            self.sums[present] += np.bincount(at, weights=influence, minlength=present.size)
        else:
            self.sums += np.bincount(cluster, weights=influence, minlength=self.sums.size)
        self.seen[cluster] = True

    def se(self) -> float:
        groups = int(np.count_nonzero(self.seen))
        if groups < 2:
            return float("nan")
        return float(np.sqrt(groups / (groups - 1) * np.sum(self.sums * self.sums)))


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    se: float
    n: int
    method: str

    @classmethod
    def from_se(cls, value: float, se: float, n: int, method: str) -> Estimate:
        return cls(float(value), float(value - Z95 * se), float(value + Z95 * se), float(se), int(n), method)

    def covers(self, x: float) -> bool:
        return self.low <= x <= self.high

    @property
    def ok(self) -> bool:
        """A value with a finite, non-degenerate interval: something a report may print."""
        return all(np.isfinite((self.value, self.low, self.high))) and self.se > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cells:
    """Sessions grouped by identical confounders: ``cell`` (n,) dense codes, and per cell the
    level of each confounder, ``levels[j]`` (C,), with ``n_levels[j]`` levels."""

    cell: np.ndarray
    levels: list[np.ndarray]
    n_levels: list[int]

    @property
    def count(self) -> int:
        return int(self.levels[0].shape[0]) if self.levels else 1


TABLE_CELLS = 1 << 24
"""Up to this many possible combinations of levels, cells are looked up in a table (O(n));
beyond it, :func:`make_cells` sorts."""


@dataclass(frozen=True)
class CellTable:
    """The cells of :func:`make_cells` without the array of a cell per session: a session's cell
    is looked up when a block of sessions needs it (:meth:`codes`), from its levels and a table
    of every possible combination. An estimator that reads cells block by block holds no
    log-sized array for them (four bytes a session; 400 MB at 100 M sessions)."""

    factors: list[np.ndarray]
    maps: list[np.ndarray | None]
    """Per factor, a table its codes go through first (``maps[j][code]``), or None."""
    sizes: list[int]
    lookup: np.ndarray
    """Dense cell code of each possible combination (one that no session has shares a
    neighbour's code: it is never looked up)."""
    levels: list[np.ndarray]
    n_levels: list[int]

    @property
    def count(self) -> int:
        return int(self.levels[0].shape[0])

    def key(self, at: slice | np.ndarray) -> np.ndarray:
        """The combined code (int64) of the sessions ``at``."""
        key: np.ndarray | None = None
        for f, m, size in zip(self.factors, self.maps, self.sizes, strict=True):
            v = f[at] if m is None else m[f[at]]
            if key is None:
                key = v.astype(np.int64)
            else:
                key *= size
                key += v
        assert key is not None
        return key

    def codes(self, at: slice | np.ndarray) -> np.ndarray:
        """Cell codes of the sessions ``at`` (a block or an index array)."""
        return self.lookup[self.key(at)]


def _levels(keys: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Per factor, the level of each combined key (the inverse of ``key = key * size + level``)."""
    levels = []
    rest = keys.copy()
    for size in reversed(sizes):
        levels.append((rest % size).astype(np.int64))
        rest //= size
    return levels[::-1]


def cell_table(factors: list[np.ndarray], maps: list[np.ndarray | None] | None = None) -> CellTable | None:
    """The cells of the combinations of ``factors`` (each (n,) ints >= 0, through ``maps`` where
    one is given), as a lookup table; None when more than :data:`TABLE_CELLS` are possible."""
    if not factors:
        raise ValueError("need at least one factor")
    factors = [np.asarray(f) for f in factors]
    maps = list(maps) if maps is not None else [None] * len(factors)
    n = factors[0].shape[0]
    sizes = []
    for f, m in zip(factors, maps, strict=True):
        if f.shape != (n,):
            raise ValueError(f"every factor must have shape ({n},), got {f.shape}")
        top = m if m is not None else f
        sizes.append(int(top.max()) + 1 if top.size else 1)
    total = int(np.prod(sizes, dtype=np.float64))
    if total > TABLE_CELLS:
        return None
    table = CellTable(factors, maps, sizes, np.zeros(0, np.int32), [], sizes)
    present = np.zeros(total, bool)
    for b in _blocks(n):
        present[table.key(b)] = True
    uniq = np.flatnonzero(present)
    lookup = (np.cumsum(present) - 1).astype(np.int32 if uniq.size < 1 << 31 else np.int64)
    del present
    return CellTable(factors, maps, sizes, lookup, _levels(uniq, sizes), sizes)


def make_cells(factors: list[np.ndarray]) -> Cells:
    """Combine factor codes (each (n,) ints >= 0) into dense cell codes."""
    table = cell_table(factors)
    n = np.asarray(factors[0]).shape[0]
    if table is not None:
        cell = np.empty(n, table.lookup.dtype)
        for b in _blocks(n):
            cell[b] = table.codes(b)
        return Cells(cell, table.levels, table.sizes)
    factors = [np.asarray(f) for f in factors]
    sizes = [int(f.max()) + 1 if n else 1 for f in factors]
    key = np.zeros(n, np.int64)
    for f, size in zip(factors, sizes, strict=True):
        key *= size
        key += f
    uniq, cell = np.unique(key, return_inverse=True)
    del key
    return Cells(cell.astype(np.int64), _levels(uniq, sizes), sizes)


def _cluster_se(influence: np.ndarray, cluster: np.ndarray) -> float:
    """Standard error of a sum of per-unit influences, clustered: sqrt(G/(G-1) sum_g (sum_i)^2).

    cluster: dense non-negative integer codes (viewer codes from the linking step).
    """
    cluster = np.asarray(cluster)
    if cluster.size and cluster.min() < 0:
        raise ValueError("cluster codes must be non-negative")
    sums = np.bincount(cluster, weights=influence)
    groups = int(np.count_nonzero(np.bincount(cluster)))
    if groups < 2:
        return float("nan")
    return float(np.sqrt(groups / (groups - 1) * np.sum(sums * sums)))


def naive(
    y: np.ndarray,
    treated: np.ndarray,
    control: np.ndarray,
    cluster: np.ndarray,
    dose: np.ndarray | None = None,
    subset: Subset | None = None,
) -> Estimate:
    """Treated mean minus control mean of ``y`` (or that over the dose difference).

    y (n,) outcome, treated/control (n,) bool masks (disjoint), cluster (n,) viewer codes,
    dose (n,) optional treatment amount (e.g. stall ratio in percent); subset: where these
    units sit in a larger log (:class:`Subset`).
    """
    y = np.asarray(y)
    t, c = np.asarray(treated, bool), np.asarray(control, bool)
    cluster = np.asarray(cluster)
    if not (y.shape == t.shape == c.shape == cluster.shape):
        raise ValueError("y, treated, control and cluster must have the same shape (n,)")
    d = None if dose is None else np.asarray(dose)
    # Block by block over the log: sums first, then each unit's influence on the difference.
    nt = nc = 0
    sum_t = sum_c = dsum_t = dsum_c = 0.0
    for b in _blocks(y.size, subset):
        tb, cb = t[b], c[b]
        if np.any(tb & cb):
            raise ValueError("treated and control overlap")
        nt, nc = nt + int(tb.sum()), nc + int(cb.sum())
        sum_t += float(y[b][tb].sum(dtype=float))
        sum_c += float(y[b][cb].sum(dtype=float))
        if d is not None:
            dsum_t += float(d[b][tb].sum(dtype=float))
            dsum_c += float(d[b][cb].sum(dtype=float))
    if nt == 0 or nc == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), float("nan"), nt + nc, "naive")
    mt, mc = sum_t / nt, sum_c / nc
    value = mt - mc
    dd = dt_ = dc_ = 0.0
    if d is not None:
        dt_, dc_ = dsum_t / nt, dsum_c / nc
        dd = dt_ - dc_
        value = value / dd
    sums = _ClusterSums(subset.clusters if subset else int(cluster.max()) + 1)
    for b in _blocks(y.size, subset):
        sel = t[b] | c[b]
        ts = t[b][sel]
        ys = y[b][sel].astype(float)
        infl = np.where(ts, (ys - mt) / nt, -(ys - mc) / nc)
        if d is not None:
            ds = d[b][sel].astype(float)
            infl_d = np.where(ts, (ds - dt_) / nt, -(ds - dc_) / nc)
            infl = (infl - value * infl_d) / dd
        sums.add(cluster[b][sel], infl)
    return Estimate.from_se(value, sums.se(), nt + nc, "naive")


def match_pairs(
    cell: np.ndarray,
    treated: np.ndarray,
    control: np.ndarray,
    rng: np.random.Generator,
    subset: Subset | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pair treated with control units of the same cell, at random, without replacement.

    cell (n,) int codes, treated/control (n,) bool. Returns index arrays ``(ti, ci)`` of equal
    length: unit ``ti[k]`` is paired with ``ci[k]``. A cell with more treated than control
    units leaves the extra treated units unmatched (and vice versa).
    """
    cell = np.asarray(cell)
    if cell.ndim != 1 or np.shape(treated) != cell.shape or np.shape(control) != cell.shape:
        raise ValueError("cell, treated and control must have the same shape (n,)")
    if not np.any(treated) or not np.any(control):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    # The random keys' width follows the whole log's size, so a subset draws the same keys.
    idx_bits = max(int(subset.units if subset else cell.size).bit_length(), 1)
    cell_max = int(subset.cell_max if subset else cell.max())
    cell_bits = max(cell_max.bit_length(), 1)
    rand_bits = 63 - idx_bits - cell_bits
    low = (1 << idx_bits) - 1
    index_type = np.int32 if cell.size < 1 << 31 else np.int64
    shift = rand_bits + idx_bits if rand_bits >= 12 else idx_bits  # from a key down to its cell

    def shuffled(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Units sorted by cell, in random order within a cell, as one int64 each that holds
        (cell, random, index) from the top bit down (no random part if it would have fewer than
        12 bits); and the units per cell.

        Only the keys are held, eight bytes a unit: each unit's cell is in its key, and where a
        cell starts in the sorted keys follows from the counts per cell. At 100 M sessions an
        index and a cell array beside the keys would be 1.2 GB more."""
        count = int(np.count_nonzero(units))
        key = np.empty(count, np.int64)
        per_cell = np.zeros(cell_max + 1, np.int64)
        at = 0
        for b in _blocks(units.size):
            sel = np.flatnonzero(units[b])
            c = cell[b][sel]
            per_cell += np.bincount(c, minlength=cell_max + 1)
            k = key[at : at + sel.size]
            np.left_shift(c, shift, out=k, dtype=np.int64)
            sel += b.start
            k |= sel
            at += sel.size
        if rand_bits < 12:  # no room for a random part: sort on a separate random draw
            return key[np.lexsort((rng.random(count), key >> shift))], per_cell
        # The random part block by block (the generator's stream is the same in pieces); sorting
        # the values is far faster than an argsort.
        for b in _blocks(count):
            r = rng.integers(0, 1 << rand_bits, b.stop - b.start, dtype=np.int64)
            r <<= idx_bits
            key[b] |= r
        key.sort()
        return key, per_cell

    kt, t_per_cell = shuffled(np.asarray(treated, bool))
    kc, c_per_cell = shuffled(np.asarray(control, bool))
    t_first = np.cumsum(t_per_cell) - t_per_cell
    c_first = np.cumsum(c_per_cell) - c_per_cell
    # Per block of treated units: the rank of each within its cell, paired with the control of
    # the same rank in the cell, if there is one.
    ti, ci = [], []
    for b in _blocks(kt.size):
        kb = kt[b]
        cb = kb >> shift
        rank = np.arange(b.start, b.stop) - t_first[cb]
        ok = rank < c_per_cell[cb]
        ti.append((kb[ok] & low).astype(index_type))
        ci.append((kc[c_first[cb[ok]] + rank[ok]] & low).astype(index_type))
    return np.concatenate(ti), np.concatenate(ci)


@dataclass(frozen=True)
class Paired:
    effect: Estimate
    pairs: int
    treated: int
    """Treated units available (matched or not)."""
    net_outcome: float
    net_low: float
    net_high: float
    worse: int
    better: int
    ties: int
    sign_p: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["effect"] = self.effect.to_dict()
        d["match_rate"] = self.pairs / self.treated if self.treated else None
        return d


def paired(
    y: np.ndarray,
    ti: np.ndarray,
    ci: np.ndarray,
    cluster: np.ndarray,
    *,
    treated: int,
    dose: np.ndarray | None = None,
    worse: str = "lower",
) -> Paired:
    """Effect, net outcome and sign test over matched pairs ``(ti, ci)`` (see module docstring).

    ``worse``: "lower" when a lower outcome is worse for the viewer or the platform (watch
    time, returning), "higher" when higher is worse (abandoning).
    """
    if worse not in ("lower", "higher"):
        raise ValueError(f"worse must be 'lower' or 'higher', got {worse!r}")
    ti, ci = np.asarray(ti), np.asarray(ci)
    if ti.shape != ci.shape or ti.ndim != 1:
        raise ValueError("ti and ci must be 1-D index arrays of equal length")
    n = ti.size
    nan = float("nan")
    if n == 0:
        e = Estimate(nan, nan, nan, nan, 0, "matched pairs")
        return Paired(e, 0, treated, nan, nan, nan, 0, 0, 0, nan)
    # Per pair, in float64, filled block by block; the influences are formed in place.
    y = np.asarray(y)
    dy = np.empty(n)
    for at in _blocks(n):
        dy[at] = y[ti[at]].astype(float) - y[ci[at]]
    lower, higher = int(np.count_nonzero(dy < 0)), int(np.count_nonzero(dy > 0))
    w, b = (higher, lower) if worse == "higher" else (lower, higher)
    if dose is None:
        value = dy.mean()
        infl = dy
        infl -= value
        infl /= n
    else:
        d = np.asarray(dose)
        dd = np.empty(n)
        for at in _blocks(n):
            dd[at] = d[ti[at]].astype(float) - d[ci[at]]
        d_sum = dd.sum()
        value = dy.sum() / d_sum
        dd *= value
        infl = dy
        infl -= dd
        infl /= d_sum
        del dd
    # Two-way clustering (Cameron, Gelbach & Miller 2011): a viewer can be treated in some pairs
    # and the control in others, so pairs sharing a viewer on either side are not independent.
    # The third term clusters by pair, each pair its own cluster.
    cl = np.asarray(cluster)
    var_t = _cluster_se(infl, cl[ti]) ** 2
    var_c = _cluster_se(infl, cl[ci]) ** 2
    var_pair = float(np.sqrt(n / (n - 1) * np.sum(infl * infl))) ** 2 if n > 1 else float("nan")
    se = float(np.sqrt(max(var_t + var_c - var_pair, var_t)))
    net = (w - b) / n
    p_w, p_b = w / n, b / n
    net_se = np.sqrt(max(p_w + p_b - (p_w - p_b) ** 2, 0.0) / n)
    p = stats.binomtest(w, w + b, 0.5).pvalue if w + b else 1.0
    return Paired(
        Estimate.from_se(value, se, n, "matched pairs"),
        n,
        treated,
        float(net),
        float(net - Z95 * net_se),
        float(net + Z95 * net_se),
        w,
        b,
        n - w - b,
        float(p),
    )


def _fe_fit(values: np.ndarray, weights: np.ndarray, cells: Cells) -> np.ndarray:
    """Weighted least-squares fit of per-cell means on additive factor dummies; fitted (C,)."""
    offsets = np.concatenate([[0], np.cumsum(cells.n_levels)])
    p = int(offsets[-1])
    cols = [lv + off for lv, off in zip(cells.levels, offsets[:-1], strict=True)]
    if p > 2000:
        return _fe_fit_iterative(values, weights, cells)
    xtx = np.zeros((p, p))
    for a in range(len(cols)):
        for b in range(a, len(cols)):
            block = np.bincount(cols[a] * p + cols[b], weights=weights, minlength=p * p).reshape(p, p)
            xtx += block if a == b else block + block.T
    xty = np.zeros(p)
    for col in cols:
        xty += np.bincount(col, weights=weights * values, minlength=p)
    beta = np.linalg.lstsq(xtx, xty, rcond=None)[0]
    return sum(beta[col] for col in cols)


def _fe_fit_iterative(
    values: np.ndarray, weights: np.ndarray, cells: Cells, sweeps: int = 2000
) -> np.ndarray:
    """The same fit by alternating projections, for factors with thousands of levels."""
    total = weights.sum()
    resid = values - np.dot(weights, values) / total
    for _ in range(sweeps):
        change = 0.0
        for lv, size in zip(cells.levels, cells.n_levels, strict=True):
            w = np.bincount(lv, weights=weights, minlength=size)
            with np.errstate(invalid="ignore", divide="ignore"):
                m = np.where(w > 0, np.bincount(lv, weights=weights * resid, minlength=size) / w, 0.0)
            resid = resid - m[lv]
            change = max(change, float(np.abs(m).max()))
        if change < 1e-10 * (1.0 + float(np.abs(values).max())):
            break
    return values - resid


def fe_regression(
    y: np.ndarray,
    dose: np.ndarray,
    sample: np.ndarray,
    cells: Cells,
    cluster: np.ndarray,
    subset: Subset | None = None,
) -> Estimate:
    """Slope of ``y`` on ``dose`` with additive fixed effects for each confounder in ``cells``.

    y, dose (n,) floats; sample (n,) bool (the units of the regression); cells from
    :func:`make_cells` over all n units (``cells.cell`` gathered like the rest with a
    ``subset``); cluster (n,) viewer codes. By Frisch-Waugh-Lovell the
    slope is that of the residuals after projecting both on the fixed effects; the fixed
    effects are constant within a cell, so the projection needs only cell sums.
    """
    sample = np.asarray(sample, bool)
    y, dose, cluster = np.asarray(y), np.asarray(dose), np.asarray(cluster)
    size = cells.count
    # Block by block (Frisch-Waugh-Lovell needs only cell sums, then one pass per sum of
    # residuals): nothing the size of the log is copied.
    w = np.zeros(size)
    y_sum, d_sum = np.zeros(size), np.zeros(size)
    for b in _blocks(sample.size, subset):
        sel = sample[b]
        cell = cells.cell[b][sel]
        w += np.bincount(cell, minlength=size)
        y_sum += np.bincount(cell, weights=y[b][sel].astype(float), minlength=size)
        d_sum += np.bincount(cell, weights=dose[b][sel].astype(float), minlength=size)
    n = int(w.sum())
    if n < 3:
        nan = float("nan")
        return Estimate(nan, nan, nan, nan, n, "fixed-effects regression")
    with np.errstate(invalid="ignore", divide="ignore"):
        y_mean = y_sum / w
        d_mean = d_sum / w
    y_mean[w == 0] = 0.0
    d_mean[w == 0] = 0.0
    y_fit = _fe_fit(y_mean, w, cells)
    d_fit = _fe_fit(d_mean, w, cells)

    def residuals(b: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sel = sample[b]
        cell = cells.cell[b][sel]
        return y[b][sel] - y_fit[cell], dose[b][sel].astype(float) - d_fit[cell], sel

    sdd = sdy = 0.0
    for b in _blocks(sample.size, subset):
        yt, dt, _ = residuals(b)
        sdd += float(np.dot(dt, dt))
        sdy += float(np.dot(dt, yt))
    if sdd <= 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, nan, n, "fixed-effects regression")
    beta = sdy / sdd
    sums = _ClusterSums(subset.clusters if subset else int(cluster.max()) + 1)
    for b in _blocks(sample.size, subset):
        yt, dt, sel = residuals(b)
        sums.add(cluster[b][sel], dt * (yt - beta * dt) / sdd)
    p = int(sum(cells.n_levels)) + 1
    se = sums.se() * np.sqrt((n - 1) / max(n - p, 1))
    return Estimate.from_se(beta, se, n, "fixed-effects regression")
