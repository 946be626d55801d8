"""QoE bands and what happens in each: Kaplan-Meier watch time, early exits, return visits and
repurchases within 1, 7 and 30 days (descriptive; the causal figures are in :mod:`.contrasts`).

Watch time is measured from the first frame; a session still open at the log's end is
censored at the log's end, never counted as an exit. Rates come with Wilson 95 % intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .causal import Z95, _blocks
from .contrasts import AV_ACCEPTABLE, Picture
from .link import RETURN_DAYS, Sessions
from .survival import binned_counts, km_from_counts, median_time, restricted_mean

__all__ = ["BandTable", "av_bands", "band_table", "join_bands", "picture_bands", "stall_bands", "wilson"]

WATCH_EDGES = np.concatenate([np.arange(0.0, 600.0, 10.0), np.arange(600.0, 7200.0 + 1, 60.0)])
"""Watch-time bins, seconds: 10 s to 10 min, then 1 min to 2 h (the restricted-mean horizon)."""


def _codes(n: int, code: Callable[[slice], np.ndarray]) -> np.ndarray:
    """(n,) int8 band codes, ``code(block)`` block by block: the intermediates (int64 per
    session) stay the size of a block."""
    out = np.empty(n, np.int8)
    for b in _blocks(n):
        out[b] = code(b)
    return out


def stall_bands(stall_ratio: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Band codes (n,), -1 where unknown, and labels: 0, (0, 0.5 %], ..., > 5 %."""
    r = np.asarray(stall_ratio)
    edges = np.array([0.0, 0.005, 0.01, 0.02, 0.05])

    def code(b: slice) -> np.ndarray:
        c = np.where(r[b] <= 0, 0, np.searchsorted(edges, r[b], side="left"))
        return np.where(np.isfinite(r[b]), c, -1)

    return _codes(r.size, code), ["0", "0-0.5 %", "0.5-1 %", "1-2 %", "2-5 %", "> 5 %"]


def av_bands(av: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """ITU-R BT.1359-1: undetectable (+45/-125 ms), acceptable (+90/-185 ms), outside."""
    av = np.asarray(av)
    lo, hi = AV_ACCEPTABLE

    def code(b: slice) -> np.ndarray:
        a = av[b]
        c = np.where((a >= -0.125) & (a <= 0.045), 0, np.where((a >= lo) & (a <= hi), 1, 2))
        return np.where(np.isfinite(a), c, -1)

    return _codes(av.size, code), ["within +45/-125 ms", "within +90/-185 ms", "outside +90/-185 ms"]


def join_bands(join: np.ndarray, joined: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """No first frame, then join time bands."""
    join, joined = np.asarray(join), np.asarray(joined)
    edges = np.array([1.0, 2.0, 3.0, 5.0, 10.0])

    def code(b: slice) -> np.ndarray:
        j = join[b]
        c = np.searchsorted(edges, j, side="left") + 1
        return np.where(joined[b] == 0, 0, np.where(np.isfinite(j), c, -1))

    return _codes(join.size, code), [
        "no first frame",
        "<= 1 s",
        "1-2 s",
        "2-3 s",
        "3-5 s",
        "5-10 s",
        "> 10 s",
    ]


def picture_bands(picture: Picture) -> tuple[np.ndarray, list[str]]:
    """Two SD and two HD bands around the SD/HD line ``h`` of :class:`~.contrasts.Picture`:
    below 2/3 h, up to h, up to 1.5 h, above. For heights with h = 720 that is < 480p,
    480-719p, 720-1079p and >= 1080p; for bitrates with h = 1500 kbit/s, < 1000, 1000-1500,
    1500-2250 and >= 2250 kbit/s. The line itself is the contrast's, so the table and the
    causal estimate split the sessions the same way."""
    v = np.asarray(picture.value)
    h = picture.hd_from
    height = picture.basis == "video_height"
    edges = np.array([2 * h / 3, h, 1.5 * h])
    if height:
        edges = np.round(edges)  # whole pixels, so every label below is exact
    code = _codes(
        v.size, lambda b: np.where(np.isfinite(v[b]), np.searchsorted(edges, v[b], side="right"), -1)
    )
    a, b = (f"{x:g}" for x in edges[[0, 2]])
    if height:
        # "480-719p", not "480-720p": a height of 720 belongs to one band only.
        labels = [f"SD < {a}p", f"SD {a}-{h - 1:g}p", f"HD {h:g}-{edges[2] - 1:g}p", f"HD >= {b}p"]
    else:
        labels = [
            f"SD < {a} kbit/s",
            f"SD {a}-{h:g} kbit/s",
            f"HD {h:g}-{b} kbit/s",
            f"HD >= {b} kbit/s",
        ]
    return code, labels


def wilson(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Share k/n and its Wilson 95 % interval; arrays of the same shape, NaN where n == 0."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z2 = Z95 * Z95
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return p, centre - half, centre + half


@dataclass
class BandTable:
    name: str
    labels: list[str]
    sessions: np.ndarray
    watch_median: list[float | None]
    watch_mean_2h: list[float | None]
    survival: np.ndarray
    """(bands, K) Kaplan-Meier survival of watch time past WATCH_EDGES[1:]."""
    rates: dict[str, dict[str, np.ndarray]]
    """``rates["return7"] = {"n", "share", "low", "high"}`` per band (visit-ending sessions)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": self.labels,
            "sessions": self.sessions.tolist(),
            "watch_median_seconds": self.watch_median,
            "watch_restricted_mean_2h_seconds": self.watch_mean_2h,
            "survival_t": WATCH_EDGES[1:].tolist(),
            "survival": [[round(float(x), 5) for x in row] for row in self.survival],
            "rates": {
                k: {m: [None if not np.isfinite(x) else float(x) for x in v] for m, v in r.items()}
                for k, r in self.rates.items()
            },
        }


def band_table(name: str, code: np.ndarray, labels: list[str], s: Sessions) -> BandTable:
    """Watch-time survival, early exit, returns and repurchases per band of ``code`` (n,)."""
    code = np.asarray(code)
    nb = len(labels)
    # Counts block by block (whole numbers: the same in any order), so that nothing per session
    # outgrows a block.
    blocks = list(_blocks(code.size)) or [slice(0, 0)]
    d = np.zeros((nb, WATCH_EDGES.size))
    c = np.zeros((nb, WATCH_EDGES.size))
    sessions = np.zeros(nb, np.int64)
    for blk in blocks:
        cb = code[blk]
        joined = (cb >= 0) & (s.joined[blk] != 0) & np.isfinite(s.watch[blk])
        db, cc = binned_counts(
            s.watch[blk][joined], ~s.is_open[blk][joined], WATCH_EDGES, cb[joined].astype(np.int64), nb
        )
        d, c = d + db, c + cc
        sessions = sessions + np.bincount(cb[cb >= 0], minlength=nb)
        del joined
    surv, _ = km_from_counts(d, c)
    has = (d + c).sum(axis=1) > 0
    med = [median_time(surv[b], WATCH_EDGES) if has[b] else None for b in range(nb)]
    rmst = [restricted_mean(surv[b], WATCH_EDGES) if has[b] else None for b in range(nb)]
    rates: dict[str, dict[str, np.ndarray]] = {}
    for days in RETURN_DAYS:
        for what, flag, extra in (
            ("return", s.returned[days], None),
            ("repurchase", s.rebought[days], s.customer),
        ):
            n, k = np.zeros(nb, np.int64), np.zeros(nb)
            for blk in blocks:
                cb, fb = code[blk], flag[blk]
                units = (cb >= 0) & (fb >= 0)
                if extra is not None:
                    units &= extra[blk]
                n = n + np.bincount(cb[units], minlength=nb)
                k = k + np.bincount(cb[units], weights=(fb[units] == 1).astype(float), minlength=nb)
            p, lo, hi = wilson(k, n)
            rates[f"{what}{days}"] = {"n": n.astype(float), "share": p, "low": lo, "high": hi}
    return BandTable(name, labels, sessions, med, rmst, surv, rates)
