"""A/B arms: QoE and outcomes per arm, their differences, a sample-ratio check and CUPED.

The arm is read from the ``arm`` column (or ``--arm-from COLUMN``, any category column of the
schema); an empty value means the session was not in the test. The test starts at the first
session with an arm; sessions before it are the *pre-period*.

- **Per arm**: sessions and viewers; QoE (mean join time of joined sessions, share without a
  first frame, mean stall ratio); outcomes (log watch time of closed joined sessions, read as a
  relative change; 7-day return of visit-ending sessions; 7-day repurchase among customers).
  Each arm's difference from the first (the control: the first named in ``--arm-split``'s
  order, i.e. the arms sorted by name) with a 95 % interval clustered by viewer (the unit of
  randomisation). Randomisation makes the plain difference causal; no controls are needed.
- **Sample ratio mismatch** (Fabijan et al., KDD 2019): a chi-square goodness-of-fit test of the
  viewers per arm against the intended split (default equal). p < :data:`SRM_ALPHA` raises the
  warning: the split is not what was intended, and every difference is suspect (a bug in
  assignment or in logging), whatever its interval says.
- **CUPED** (Deng, Xu, Kohavi & Walker, WSDM 2013): per viewer, the outcome's mean in the test
  ``Y`` adjusted by the same outcome's mean in the pre-period ``X``: ``Y - theta (X - mean X)``
  with ``theta = cov(X, Y) / var(X)`` pooled over arms; viewers without a pre-period get ``X =
  mean X`` (no adjustment). Reported with the variance reduction achieved, ``1 - var(Y_cuped) /
  var(Y)``; used as the headline only where it helps (a reduction of at least
  :data:`CUPED_MIN_REDUCTION`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from qoe.errors import ConfigError

from .causal import Estimate, naive
from .link import Sessions

__all__ = ["CUPED_MIN_REDUCTION", "SRM_ALPHA", "arms", "cuped", "parse_split", "srm"]

SRM_ALPHA = 0.001
"""p-value below which the split is called a mismatch: strict, since a test runs on many
experiments and a false alarm stops one (Fabijan et al. 2019 use 0.0005 and 0.001)."""
CUPED_MIN_REDUCTION = 0.01
"""Smallest variance reduction for which the CUPED estimate becomes the headline."""


def parse_split(text: str) -> tuple[float, ...]:
    """``"50/50"`` or ``"48/52"`` or ``"1/1/2"`` -> shares summing to 1; ConfigError otherwise."""
    try:
        parts = tuple(float(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"arm split must be numbers separated by '/', like 50/50, got {text!r}") from None
    if len(parts) < 2 or not all(math.isfinite(p) and p > 0 for p in parts):
        raise ConfigError(f"arm split needs two or more positive numbers, like 50/50, got {text!r}")
    total = sum(parts)
    return tuple(p / total for p in parts)


def srm(counts: np.ndarray, split: np.ndarray) -> dict[str, Any]:
    """Chi-square test of ``counts`` (k,) units per arm against the intended ``split`` (k,)."""
    counts, split = np.asarray(counts, float), np.asarray(split, float)
    if counts.shape != split.shape or counts.ndim != 1 or counts.size < 2:
        raise ValueError("counts and split must be 1-D of the same length, at least 2")
    expected = counts.sum() * split / split.sum()
    chi2, p = stats.chisquare(counts, expected)
    return {
        "observed": counts.astype(int).tolist(),
        "expected": expected.tolist(),
        "chi2": float(chi2),
        "p_value": float(p),
        "alpha": SRM_ALPHA,
        "mismatch": bool(p < SRM_ALPHA),
    }


def cuped(y: np.ndarray, x: np.ndarray, arm: np.ndarray, control: int, treated: int) -> dict[str, Any]:
    """CUPED difference ``treated - control`` of per-viewer means ``y`` (m,), covariate ``x``
    (m,, NaN = no pre-period), arm codes ``arm`` (m,); with the plain difference beside it."""
    y, x, arm = np.asarray(y, float), np.asarray(x, float), np.asarray(arm)
    keep = np.isfinite(y) & ((arm == control) | (arm == treated))
    y, x, arm = y[keep], x[keep], arm[keep]
    has = np.isfinite(x)
    x = np.where(has, x, x[has].mean() if has.any() else 0.0)
    theta = float(np.cov(x, y)[0, 1] / np.var(x, ddof=1)) if has.sum() > 2 and np.var(x) > 0 else 0.0
    adj = y - theta * (x - x.mean())

    def diff(v: np.ndarray) -> Estimate:
        a, b = v[arm == control], v[arm == treated]
        if a.size < 2 or b.size < 2:
            nan = float("nan")
            return Estimate(nan, nan, nan, nan, int(a.size + b.size), "difference of means")
        se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        return Estimate.from_se(b.mean() - a.mean(), se, int(a.size + b.size), "difference of viewer means")

    plain, adjusted = diff(y), diff(adj)
    reduction = 1.0 - float(np.var(adj) / np.var(y)) if np.var(y) > 0 else 0.0
    return {
        "theta": theta,
        "viewers_with_pre_period": int(has.sum()),
        "viewers": int(y.size),
        "variance_reduction": reduction,
        "plain": plain,
        "cuped": adjusted,
        "helps": reduction >= CUPED_MIN_REDUCTION and adjusted.ok,
    }


def _viewer_mean(values: np.ndarray, mask: np.ndarray, viewer: np.ndarray, m: int) -> np.ndarray:
    sel = mask & np.isfinite(values)
    n = np.bincount(viewer[sel], minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.bincount(viewer[sel], weights=values[sel], minlength=m) / n, np.nan)


def _est(e: Estimate, log: bool = False) -> dict[str, Any]:
    if not e.ok:
        return {"estimable": False, "reason": "too few sessions in an arm for an interval"}
    f = np.expm1 if log else (lambda v: v)
    return {"value": float(f(e.value)), "low": float(f(e.low)), "high": float(f(e.high)), "se": e.se}


def arms(
    s: Sessions, code: np.ndarray, levels: list[str], *, split: tuple[float, ...] | None, source: str
) -> dict[str, Any]:
    """Everything in the module docstring for the arms in ``code`` (n,) with names ``levels``;
    a level named ``unknown`` (an empty value) is out of the test."""
    names = [lv for lv in levels if lv != "unknown"]
    if len(names) < 2:
        return {"source": source, "note": f"column {source} holds {len(names)} arm(s); an A/B test needs 2"}
    arm_codes = [levels.index(n) for n in names]
    in_test = np.isin(code, arm_codes)
    start = float(s.start[in_test].min())
    pre = s.start < start
    m = int(s.viewer.max()) + 1
    # A viewer's arm: their first session in the test (viewers are the unit of randomisation).
    order = np.flatnonzero(in_test)[np.argsort(s.start[in_test], kind="stable")]
    viewer_arm = np.full(m, -1)
    first = np.unique(s.viewer[order], return_index=True)
    viewer_arm[first[0]] = code[order][first[1]]
    mixed = int(np.unique(s.viewer[in_test][code[in_test] != viewer_arm[s.viewer[in_test]]]).size)
    if split is not None and len(split) != len(names):
        raise ConfigError(
            f"--arm-split has {len(split)} shares but {source} holds {len(names)} arms: {', '.join(names)}"
        )
    shares = np.asarray(split if split is not None else [1.0 / len(names)] * len(names))
    viewers = np.array([int((viewer_arm == c).sum()) for c in arm_codes])
    joined = s.joined == 1
    closed = joined & ~s.is_open & (s.watch > 0)
    log_watch = np.where(closed, np.log(np.maximum(s.watch, 1e-3)), np.nan)
    ret = np.where(s.returned[7] >= 0, (s.returned[7] == 1).astype(float), np.nan)
    rebuy = np.where((s.rebought[7] >= 0) & s.customer, (s.rebought[7] == 1).astype(float), np.nan)
    figures = {
        "join_seconds": (np.where(joined, s.join, np.nan), False),
        "no_first_frame": (np.where(s.joined >= 0, (s.joined == 0).astype(float), np.nan), False),
        "stall_ratio": (np.where(joined, s.stall_ratio, np.nan), False),
        "watch": (log_watch, True),
        "return7": (ret, False),
        "repurchase7": (rebuy, False),
    }
    per_arm = []
    for name, c in zip(names, arm_codes, strict=True):
        sel = code == c
        row: dict[str, Any] = {
            "arm": name,
            "sessions": int(sel.sum()),
            "viewers": int((viewer_arm == c).sum()),
        }
        for key, (y, log) in figures.items():
            ok = sel & np.isfinite(y)
            mean = float(y[ok].mean()) if ok.any() else None
            row[key] = None if mean is None else (float(np.exp(mean)) if log else mean)
        per_arm.append(row)
    control = arm_codes[0]
    differences = []
    for name, c in zip(names[1:], arm_codes[1:], strict=True):
        d: dict[str, Any] = {"arm": name, "against": names[0]}
        for key, (y, log) in figures.items():
            t_mask, c_mask = (code == c) & np.isfinite(y), (code == control) & np.isfinite(y)
            e = naive(np.where(t_mask | c_mask, y, 0.0), t_mask, c_mask, s.viewer)
            d[key] = _est(e, log) | {"sessions": [int(t_mask.sum()), int(c_mask.sum())]}
        cup = {}
        for key in ("watch", "return7"):
            y, log = figures[key]
            yv = _viewer_mean(y, in_test, s.viewer, m)
            xv = _viewer_mean(y, pre, s.viewer, m)
            r = cuped(yv, xv, viewer_arm, control, c)
            cup[key] = {
                "theta": r["theta"],
                "variance_reduction": r["variance_reduction"],
                "viewers": r["viewers"],
                "viewers_with_pre_period": r["viewers_with_pre_period"],
                "plain": _est(r["plain"], log),
                "cuped": _est(r["cuped"], log),
                "headline": "cuped" if r["helps"] else "plain",
            }
        d["cuped"] = cup
        differences.append(d)
    out: dict[str, Any] = {
        "source": source,
        "arms": names,
        "start": start,
        "pre_period_sessions": int(pre.sum()),
        "viewers_in_several_arms": mixed,
        "per_arm": per_arm,
        "differences": differences,
        "srm": srm(viewers, shares) | {"unit": "viewers", "intended": shares.tolist()},
    }
    if out["srm"]["mismatch"]:
        out["warning"] = (
            f"sample ratio mismatch: {', '.join(f'{n} {v}' for n, v in zip(names, viewers, strict=True))} "
            f"viewers against an intended {'/'.join(f'{100 * x:g}' for x in shares)} split "
            f"(chi-square p = {out['srm']['p_value']:.2g}); the arms' differences are suspect"
        )
    return out
