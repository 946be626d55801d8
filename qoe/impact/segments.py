"""Segments: the headline effects per tier of viewer and per category, and which segment's QoE
explains a drop in returns (dimension attribution).

**Tiers**, derived from the log itself (a session may be in several):

- ``first-time``: the viewer's first session in the log (the log cannot see earlier ones);
- ``repeat``: any later session;
- ``high-value``: the viewer's order value over their *earlier* sessions in the log reaches
  ``high_value`` (default: the 90th percentile of that figure among sessions of customers
  with any order value before them; :class:`Tiers`);
- ``lapsing``: at least ``lapsing_days`` (default 7) since the viewer's previous session.

**Categories**: every level of each column named in ``segment_by``: the schema's
``region``, ``device``, ``network``, ``app_version``, ``arm`` and ``room_id``, or any column of
the log outside the schema, read as text (an empty value is ``unknown``).

Per segment every contrast of :mod:`.contrasts` is run on the segment's sessions alone, with
the same controls and the same designs, minimum support and fallback: a segment too small for a
design falls back or is "not estimable", with the reason.

**Attribution**: for each category dimension, the 7-day returns each level lost to QoE beyond
what the other levels' QoE would have cost it: ``sum_k effect_k x (exposed_k,s - rate_k,rest x
visits_s)`` over the return contrasts ``k`` (a visit ending without a first frame, above the
stall threshold, on an SD picture), with the whole log's headline effect of each (more precise
than a segment's own). Levels are ranked by it, largest first; the interval propagates the
effects' intervals (independent, normal). The level ranked first is the one whose QoE best
explains a drop in returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qoe.errors import ConfigError

from .causal import Z95, Cells, Subset
from .contrasts import ContrastResult, Picture, run_contrasts
from .link import HIGH_VALUE, LAPSING, REPEAT, Sessions
from .schema import COLUMNS

__all__ = [
    "DIMENSIONS",
    "Mask",
    "SegmentResult",
    "Tiers",
    "attribution",
    "check_segment_by",
    "code_key",
    "extra_columns",
    "segment_masks",
    "segments",
]

DIMENSIONS = {
    "region": "region",
    "device": "device",
    "network": "network",
    "app_version": "app",
    "room_id": "room",
    "arm": "arm",
}
"""Schema columns ``--segment-by`` takes -> their category code in :class:`~.link.Sessions`;
any column outside the schema is taken too, as ``column:NAME`` (:func:`code_key`)."""
DAY = 86400.0
GATHER_SHARE = 0.3
"""Largest share of the log a segment may hold to be gathered out of it (see :func:`segments`):
its arrays are about 35 bytes a session, on top of the whole log's."""
SCHEMA_COLUMNS = {c.name: c.kind for c in COLUMNS}
Mask = Callable[[], np.ndarray]
"""A segment's sessions, (n,) bool, made when asked for: with a segment per room there may be
thousands, and at 100 M sessions each mask is 100 MB."""


def check_segment_by(names: Sequence[str]) -> None:
    """ConfigError for a schema column that is no category (an id, a time, a figure)."""
    for name in names:
        if name in SCHEMA_COLUMNS and name not in DIMENSIONS:
            kind = SCHEMA_COLUMNS[name]
            raise ConfigError(
                f"--segment-by {name}: a{'n' if kind[0] in 'aeiou' else ''} {kind} column, not a category; "
                f"choose {', '.join(DIMENSIONS)} or a column of the log outside the schema"
            )


def code_key(name: str) -> str:
    """The key of column ``name``'s codes in :attr:`~.link.Sessions.codes`."""
    return DIMENSIONS.get(name, f"column:{name}")


def extra_columns(names: Sequence[str]) -> list[str]:
    """The columns among ``names`` outside the schema, each once, in order."""
    return list(dict.fromkeys(n for n in names if n not in DIMENSIONS))


@dataclass(frozen=True)
class Tiers:
    high_value: float | None = None
    """Order value before the session from which a viewer is high-value (any currency);
    None: the ``high_value_quantile`` of that value among sessions of earlier customers."""
    high_value_quantile: float = 0.9
    lapsing_days: float = 7.0
    """Days since the previous session from which a session is a lapsing viewer's."""

    def check(self) -> Tiers:
        if self.high_value is not None and not (math.isfinite(self.high_value) and self.high_value > 0):
            raise ConfigError(f"high-value threshold must be a positive order value, got {self.high_value}")
        if not 0 < self.high_value_quantile < 1:
            raise ConfigError(f"high-value quantile must be between 0 and 1, got {self.high_value_quantile}")
        if not (math.isfinite(self.lapsing_days) and self.lapsing_days > 0):
            raise ConfigError(f"lapsing days must be a positive number of days, got {self.lapsing_days}")
        return self


@dataclass
class SegmentResult:
    dimension: str
    level: str
    sessions: int
    viewers: int
    contrasts: list[ContrastResult]
    qoe: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        effects = []
        for c in self.contrasts:
            design, e, note = c.headline()
            row: dict[str, Any] = {"key": c.key, "design": design, "support": c.support()}
            if e is None:
                row["reason"] = note
            else:
                row |= dict(zip(("value", "low", "high"), c.shown(e), strict=True))
            effects.append(row)
        return {
            "dimension": self.dimension,
            "level": self.level,
            "sessions": self.sessions,
            "viewers": self.viewers,
            "qoe": self.qoe,
            "effects": effects,
        }


def segment_masks(
    s: Sessions, by: list[str], tiers: Tiers
) -> tuple[list[tuple[str, str, Mask]], dict[str, Any]]:
    """(dimension, level, mask) for every tier and every level of ``by``; and the tier
    thresholds used."""
    check_segment_by(by)
    missing = [b for b in by if code_key(b) not in s.codes]
    if missing:
        raise ConfigError(f"--segment-by {missing[0]}: the log has no column {missing[0]!r}")
    # The lines were drawn when the log was linked (link_sessions(lapsing_seconds=...,
    # high_value=...)): the tiers are flags.
    hv = s.high_value
    out: list[tuple[str, str, Mask]] = [
        ("tier", "first-time", lambda: s.tier & REPEAT == 0),
        ("tier", "repeat", lambda: s.tier & REPEAT != 0),
        ("tier", "high-value", lambda: s.tier & HIGH_VALUE != 0),
        ("tier", "lapsing", lambda: s.tier & LAPSING != 0),
    ]
    for b in by:
        code = s.codes[code_key(b)]
        for i, level in enumerate(s.levels[code_key(b)]):
            out.append((b, level, _level_mask(code, i)))
    used = {
        "high_value": hv if math.isfinite(hv) else None,
        "high_value_from": "given"
        if tiers.high_value is not None
        else f"quantile {tiers.high_value_quantile:g}",
        "lapsing_days": tiers.lapsing_days,
    }
    return out, used


def _level_mask(code: np.ndarray, level: int) -> Mask:
    return lambda: code == level


def _qoe(s: Sessions, mask: np.ndarray | None, stall_threshold: float) -> dict[str, float | None]:
    """A segment's QoE shares: ``mask`` over ``s``, or None for all of ``s``."""
    if mask is None:
        mask = np.ones(s.n, bool)
    joined = mask & (s.joined == 1)
    ended = mask & (s.returned[7] >= 0)

    def share(num: np.ndarray, den: np.ndarray) -> float | None:
        n = int(den.sum())
        return float(num[den].mean()) if n else None

    return {
        "stalled_share": share(s.stall_ratio > stall_threshold, joined & np.isfinite(s.stall_ratio)),
        "no_first_frame_share": share(s.joined == 0, mask & (s.joined >= 0)),
        "return7": share(s.returned[7] == 1, ended),
    }


def segments(
    s: Sessions,
    cells: Cells,
    rng: np.random.Generator,
    masks: list[tuple[str, str, Mask]],
    *,
    stall_threshold: float,
    knee: float | None,
    picture: Picture | None,
    progress: Callable[[str], None] | None = None,
) -> list[SegmentResult]:
    """Every contrast per segment (see the module docstring).

    A segment holding at most :data:`GATHER_SHARE` of the sessions is gathered out of the log
    (:meth:`~.link.Sessions.take`) and its contrasts run on its own sessions, placed in the log
    by a :class:`~.causal.Subset` so that every sum, pair and interval is the one a mask over
    the whole log gives, digit for digit; a larger one runs as such a mask (gathering it would
    cost more memory than it saves time)."""
    out = []
    clusters = int(s.viewer.max()) + 1 if s.n else 0
    cell_max = int(cells.cell.max()) if s.n else 0
    for k, ((dimension, level, make), r) in enumerate(zip(masks, rng.spawn(len(masks)), strict=True)):
        if progress:
            progress(f"segment {k + 1}/{len(masks)}: {dimension} {level}")
        mask = make()
        n = int(mask.sum())
        viewers = int(np.unique(s.viewer[mask]).size) if n else 0
        if n and n <= GATHER_SHARE * s.n:
            index = np.flatnonzero(mask)
            del mask
            part = s.take(index)
            pic = None
            if picture is not None:
                pic = Picture(picture.basis, picture.value[index], picture.hd_from)
            part_cells = Cells(cells.cell[index], cells.levels, cells.n_levels)
            where = Subset.of(index, s.n, clusters, cell_max)
            del index
            results = run_contrasts(
                part,
                part_cells,
                r,
                stall_threshold=stall_threshold,
                knee=knee,
                picture=pic,
                subset=where,
            )
            qoe = _qoe(part, None, stall_threshold)
            del part, part_cells, pic
        else:
            results = (
                run_contrasts(
                    s, cells, r, stall_threshold=stall_threshold, knee=knee, picture=picture, within=mask
                )
                if n
                else []
            )
            qoe = _qoe(s, mask, stall_threshold)
            del mask
        out.append(SegmentResult(dimension, level, n, viewers, results, qoe))
    return out


def attribution(
    s: Sessions,
    masks: list[tuple[str, str, Mask]],
    pooled: dict[str, ContrastResult],
    *,
    stall_threshold: float,
    picture: Picture | None,
    days: int = 7,
) -> list[dict[str, Any]]:
    """Per category dimension, its levels ranked by the returns their QoE lost beyond the other
    levels' (see the module docstring); tiers are not attributed (they are who, not where)."""
    flag = s.returned[days]
    units = flag >= 0
    joined = s.joined == 1
    stalled = joined & np.isfinite(s.stall_ratio) & (s.stall_ratio > stall_threshold)
    exposures = {
        f"return{days}_failed": units & (s.joined == 0),
        f"return{days}_stall": units & stalled,
    }
    if picture is not None:
        # Stalled or not: in a degraded segment stalled visits would otherwise crowd out SD ones
        # and read as a gain; the drops add up (each contrast holds the others apart).
        exposures[f"return{days}_sd"] = units & joined & picture.sd
    effects = {}
    for key in exposures:
        c = pooled.get(key)
        e = c.headline()[1] if c is not None else None
        if e is not None:
            effects[key] = e
    out = []
    for dimension in dict.fromkeys(d for d, _, _ in masks if d != "tier"):
        rows: list[dict[str, Any]] = []
        for _, level, make in (m for m in masks if m[0] == dimension):
            mask = make()
            visits = int((units & mask).sum())
            rest = units & ~mask
            lost, var = 0.0, 0.0
            parts = {}
            for key, e in effects.items():
                exposed = int((exposures[key] & mask).sum())
                rate_rest = float(exposures[key][rest].mean()) if rest.any() else 0.0
                excess = exposed - rate_rest * visits
                # effect < 0 is a loss: returns lost = -effect x excess exposed visits
                lost += -e.value * excess
                var += (e.se * excess) ** 2
                parts[key] = {"exposed": exposed, "excess_exposed": excess, "returns_lost": -e.value * excess}
            se = math.sqrt(var)
            rows.append(
                {
                    "level": level,
                    "visits": visits,
                    "returns_lost": lost,
                    "low": lost - Z95 * se,
                    "high": lost + Z95 * se,
                    "per_1000_visits": 1000 * lost / visits if visits else 0.0,
                    "by_effect": parts,
                }
            )
        rows.sort(key=lambda r: -r["returns_lost"])
        for rank, r in enumerate(rows, 1):
            r["rank"] = rank
        out.append({"dimension": dimension, "effects_used": sorted(effects), "levels": rows})
    return out
