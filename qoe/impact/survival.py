"""Kaplan-Meier curves from binned counts, standardised over strata, and the hinge (knee) fit.

Pure numpy over arrays. Times are seconds. Binning: ``edges`` (K+1,) are
increasing bin bounds starting at 0; a time ``t`` falls in bin ``k`` when
``edges[k] <= t < edges[k+1]``; times at or past ``edges[-1]`` go to an overflow bin ``K`` that
only removes them from the risk set after the last bin. Ties within a bin follow the usual
Kaplan-Meier convention: events happen before censorings. The survival ``S[k]`` is the
probability of lasting past ``edges[k+1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Hinge",
    "binned_counts",
    "hinge_fit",
    "km_from_counts",
    "median_time",
    "restricted_mean",
    "standardised",
]


def _check_1d(name: str, a: np.ndarray, n: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} values, expected {n}")
    return a


def binned_counts(
    times: np.ndarray,
    event: np.ndarray,
    edges: np.ndarray,
    strata: np.ndarray | None = None,
    n_strata: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Events and censorings per stratum and bin.

    times (n,) seconds, event (n,) bool (False: censored), edges (K+1,), strata (n,) int codes
    in ``[0, n_strata)``. Returns ``d, c`` of shape (n_strata, K+1) (last column: overflow).
    NaN times are ignored.
    """
    times = _check_1d("times", times)
    n = times.shape[0]
    event = _check_1d("event", event, n).astype(bool)
    edges = _check_1d("edges", edges)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be at least two increasing bounds")
    strata = np.zeros(n, np.int64) if strata is None else _check_1d("strata", strata, n).astype(np.int64)
    ok = np.isfinite(times)
    k = edges.size - 1
    b = np.clip(np.searchsorted(edges, times[ok], side="right") - 1, 0, k)
    idx = strata[ok] * (k + 1) + b
    size = n_strata * (k + 1)
    d = np.bincount(idx[event[ok]], minlength=size).reshape(n_strata, k + 1)
    c = np.bincount(idx[~event[ok]], minlength=size).reshape(n_strata, k + 1)
    return d.astype(np.float64), c.astype(np.float64)


def km_from_counts(d: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Product-limit survival and numbers at risk along the last axis.

    d, c (..., K+1) events and censorings per bin (overflow last). Returns ``S, at_risk`` of
    shape (..., K): survival past each bin's upper edge, and sessions at risk entering it.
    """
    d, c = np.asarray(d, float), np.asarray(c, float)
    if d.shape != c.shape or d.shape[-1] < 2:
        raise ValueError(f"d and c must have the same shape (..., K+1), got {d.shape} and {c.shape}")
    total = (d + c).sum(axis=-1, keepdims=True)
    removed = np.cumsum(d + c, axis=-1) - (d + c)
    at_risk = (total - removed)[..., :-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        hazard = np.where(at_risk > 0, d[..., :-1] / at_risk, 0.0)
    return np.cumprod(1.0 - hazard, axis=-1), at_risk


def standardised(d: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Survival standardised to the whole population: sum over strata of (stratum share) x S_s.

    d, c (S, K+1). Each stratum's curve comes from its own risk set, so a variable that
    drives both the waiting time and the censoring is held fixed within a stratum (the
    matched design's exact-match idea, for a censored outcome). Returns ``S, at_risk`` (K,).
    """
    s, at_risk = km_from_counts(d, c)
    n = (d + c).sum(axis=-1)
    if n.sum() <= 0:
        raise ValueError("no sessions in any stratum")
    w = n / n.sum()
    return (w[:, None] * s).sum(axis=0), at_risk.sum(axis=0)


def restricted_mean(survival: np.ndarray, edges: np.ndarray) -> float:
    """Area under the survival step curve up to ``edges[-1]`` (seconds): restricted mean time."""
    survival, edges = np.asarray(survival, float), np.asarray(edges, float)
    if survival.shape != (edges.size - 1,):
        raise ValueError(f"survival must have shape ({edges.size - 1},), got {survival.shape}")
    before = np.concatenate([[1.0], survival[:-1]])
    return float(np.sum(before * np.diff(edges)))


def median_time(survival: np.ndarray, edges: np.ndarray) -> float | None:
    """First bin edge where survival drops to 0.5 or below (seconds), None if it never does."""
    idx = np.flatnonzero(np.asarray(survival) <= 0.5)
    return float(edges[idx[0] + 1]) if idx.size else None


@dataclass(frozen=True)
class Hinge:
    """``y = level + slope * max(0, x - knee)``: flat up to the knee, linear past it."""

    knee: float
    level: float
    slope: float
    sse: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.level + self.slope * np.maximum(np.asarray(x, float) - self.knee, 0.0)


def hinge_fit(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, knees: np.ndarray | None = None
) -> Hinge:
    """Weighted least-squares hinge: the knee minimising the residual sum of squares over ``knees``.

    x, y, w (n,); knees (m,) candidate knees (default: 200 points across the range of x,
    keeping at least 3 points on each side). Points with zero weight or NaN are ignored.
    """
    x, y = _check_1d("x", x), _check_1d("y", y, np.asarray(x).shape[0])
    w = np.ones_like(x, float) if w is None else _check_1d("w", w, x.shape[0]).astype(float)
    ok = np.isfinite(x) & np.isfinite(y) & (w > 0)
    x, y, w = x[ok].astype(float), y[ok].astype(float), w[ok]
    if x.size < 6:
        raise ValueError(f"need at least 6 points for a hinge, got {x.size}")
    if knees is None:
        xs = np.sort(x)
        knees = np.linspace(xs[2], xs[-4], 200)
    knees = _check_1d("knees", knees).astype(float)
    z = np.maximum(x[None, :] - knees[:, None], 0.0)  # (m, n)
    sw = w.sum()
    my = (w * y).sum() / sw
    mz = (z * w).sum(axis=1) / sw
    zc = z - mz[:, None]
    szz = (w * zc * zc).sum(axis=1)
    szy = (w * zc * (y - my)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(szz > 0, szy / szz, 0.0)
    level = my - slope * mz
    resid = y[None, :] - level[:, None] - slope[:, None] * z
    sse = (w * resid * resid).sum(axis=1)
    best = int(np.argmin(sse))
    return Hinge(float(knees[best]), float(level[best]), float(slope[best]), float(sse[best]))
