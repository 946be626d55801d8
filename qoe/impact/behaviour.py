"""Behaviour by QoE: do viewers who stall, wait or watch SD chat less, look at fewer products,
share less and grab fewer coupons?

For each optional behaviour column the log has (``products_viewed``, ``chat_messages``,
``shares``, ``coupon_grabs``; counts per session, see SCHEMA.md), over joined sessions:

- the mean per session in each stall-ratio band and each join-time band, with a 95 % interval
  clustered by viewer (descriptive, confounded like any band table);
- contrasts on the same controls, designs, minimum support and fallback as the watch-time
  ones (:mod:`.contrasts`): a session stalled above the threshold vs one not; a join past the
  knee + 1 s vs one within the knee; an SD picture vs HD (neither stalled). Effects are
  differences in the count per session (treated minus control).

A column absent from the log is not reported; empty values are left out of that column's
figures; malformed values exclude their row like any other bad figure (SCHEMA.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .bands import join_bands, stall_bands
from .causal import Z95, Cells, _cluster_se
from .contrasts import ContrastResult, Picture, _contrast
from .link import Sessions

__all__ = ["BehaviourResult", "behaviour"]


@dataclass
class BehaviourResult:
    column: str
    bands: dict[str, dict[str, list[Any]]]
    """QoE band table name -> {"labels", "sessions", "mean", "low", "high"} (lists per band)."""
    contrasts: list[ContrastResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "bands": self.bands,
            "contrasts": [c.to_dict() for c in self.contrasts],
        }


def _band_means(
    y: np.ndarray, code: np.ndarray, labels: list[str], cluster: np.ndarray
) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"labels": labels, "sessions": [], "mean": [], "low": [], "high": []}
    for i in range(len(labels)):
        sel = (code == i) & np.isfinite(y)
        n = int(sel.sum())
        out["sessions"].append(n)
        if n < 2:
            out["mean"].append(None)
            out["low"].append(None)
            out["high"].append(None)
            continue
        m = float(y[sel].mean())
        se = _cluster_se((y[sel] - m) / n, cluster[sel])
        ok = np.isfinite(se)
        out["mean"].append(m)
        out["low"].append(m - Z95 * se if ok else None)
        out["high"].append(m + Z95 * se if ok else None)
    return out


def behaviour(
    s: Sessions,
    cells: Cells,
    rng: np.random.Generator,
    *,
    stall_threshold: float,
    knee: float | None,
    picture: Picture | None,
) -> list[BehaviourResult]:
    """Per behaviour column of the log: band means and controlled contrasts (module docstring)."""
    out = []
    joined = s.joined == 1
    has_stall = np.isfinite(s.stall_ratio)
    stalled = joined & has_stall & (s.stall_ratio > stall_threshold)
    smooth = joined & has_stall & ~stalled
    for column, values in s.behaviour.items():
        y = np.where(joined, np.asarray(values, float), np.nan)
        bands = {}
        if has_stall[joined].any():
            code, labels = stall_bands(np.where(joined, s.stall_ratio, np.nan))
            bands["stall ratio"] = _band_means(y, code, labels, s.viewer)
        if np.isfinite(s.join[joined]).any():
            code, labels = join_bands(s.join, s.joined)
            bands["join time"] = _band_means(y, code - 1, labels[1:], s.viewer)  # joined: no band 0
        results = []
        common = {"y": y, "cells": cells, "cluster": s.viewer, "rng": rng}
        if stalled.any():
            results.append(
                _contrast(
                    f"{column}_stall",
                    f"a session stalled above {100 * stall_threshold:g} %",
                    column.replace("_", " "),
                    "count",
                    treated=stalled.copy(),  # narrowed in place by _contrast
                    control=smooth.copy(),
                    **common,  # type: ignore[arg-type]
                )
            )
        if knee is not None and np.isfinite(s.join[joined]).any():
            results.append(
                _contrast(
                    f"{column}_slow_join",
                    f"a join beyond {knee + 1:.1f} s",
                    column.replace("_", " "),
                    "count",
                    treated=joined & (s.join > knee + 1.0),
                    control=joined & (s.join <= knee),
                    **common,  # type: ignore[arg-type]
                )
            )
        if picture is not None and (smooth & picture.sd).any():
            results.append(
                _contrast(
                    f"{column}_sd",
                    f"an SD picture ({picture.rule})",
                    column.replace("_", " "),
                    "count",
                    treated=smooth & picture.sd,
                    control=smooth & picture.hd,
                    **common,  # type: ignore[arg-type]
                )
            )
        out.append(BehaviourResult(column, bands, results))
    return out
