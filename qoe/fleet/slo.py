"""Service-level objectives over a fleet run: a ProbeResult field, an aggregate, a bound.

Written as ``"join.total_seconds p95 <= 2.0"`` (FIELD AGGREGATE OP BOUND) or, without an
aggregate, ``"av_sync.offset_seconds.median within [-0.185, 0.09]"``, which every run must
meet. An SLO is judged per target and network profile, over all of that group's probe runs.
It never passes by default:

- a run that failed (``success`` false) fails every SLO of its group, except SLOs on
  ``success`` itself, which exist to bound the failure rate;
- a figure that a successful run did not measure (``null``) fails the SLO: an objective on a
  figure nobody measured is a broken check, not a met one;
- a group with no runs at all (a shard's results missing from a report) fails.

One exception: a probe run whose own host was overloaded (``probe_host.overloaded``) may
show freezes and latency that are the machine's, not the stream's. An SLO that its group
breaks only because of such runs, and holds over the runs whose host kept up, is *flagged*:
neither passed nor failed, reported as not judged. Every run on a busy host, and an SLO that
the runs whose host kept up also break, still fails.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qoe.redact import clean_text
from qoe.result import ProbeResult, field_paths, get_path, schema_type

__all__ = ["AGGREGATES", "SLO", "Verdict", "evaluate", "figure_types", "numeric_fields", "parse_slo"]

EVERY_RUN = "every"
"""The implied aggregate of an SLO written without one: each run must meet the bound."""
AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "min": lambda a: float(a.min()),
    "max": lambda a: float(a.max()),
    "mean": lambda a: float(a.mean()),
    "median": lambda a: float(np.median(a)),
    "p50": lambda a: float(np.percentile(a, 50)),
    "p90": lambda a: float(np.percentile(a, 90)),
    "p95": lambda a: float(np.percentile(a, 95)),
    "p99": lambda a: float(np.percentile(a, 99)),
}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_NOT_FIGURES = {"probe", "kind", "target", "profile", "started_at", "error", "run", "labels"}
_SCALARS = frozenset({int, float, bool, str, type(None)})
_SLO = re.compile(r"^\s*(\S+)\s+(?:(\S+)\s+)?(<=|<|>=|>|within)\s+(.+?)\s*$")


def _leaf_types(hint: Any) -> frozenset[type]:
    """The Python types an annotation admits (``float | None``: float and NoneType)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return frozenset().union(*(_leaf_types(arg) for arg in typing.get_args(hint)))
    origin = typing.get_origin(hint) or hint
    return frozenset({origin}) if isinstance(origin, type) else frozenset()


@functools.cache
def figure_types() -> dict[str, frozenset[type]]:
    """Every figure's path and the JSON value types the result schema gives it (``None`` is
    "not measured"), read from :class:`~qoe.result.ProbeResult`'s annotations, so a result
    file can be checked against the schema rather than trusted."""
    out: dict[str, frozenset[type]] = {}
    for path in field_paths():
        if path in _NOT_FIGURES or path == "join.phases":
            continue
        hint: Any = ProbeResult
        for part in path.split("."):
            hint = schema_type(hint)
            if dataclasses.is_dataclass(hint) or typing.is_typeddict(hint):
                hint = typing.get_type_hints(hint)[part]
            elif typing.get_origin(hint) is dict:
                hint = typing.get_args(hint)[1]
        kinds = _leaf_types(hint)
        if kinds and kinds <= _SCALARS:  # not ``network``, a table of whatever a profile holds
            out[path] = kinds
    return out


def numeric_fields(phases: Sequence[str] = ()) -> list[str]:
    """Field paths an SLO may name: every figure of the schema that is a number (or true and
    false, as 1 and 0), and ``join.phases.NAME``. Text fields (``url``,
    ``latency.clock_domain``) cannot be compared with a bound, so no SLO may name them."""
    fields = [p for p, kinds in figure_types().items() if kinds & {int, float, bool}]
    return fields + [f"join.phases.{name}" for name in phases]


@dataclass(frozen=True)
class SLO:
    field: str
    aggregate: str
    op: str
    bound: float | tuple[float, float]
    targets: tuple[str, ...] = ()
    """Target names it applies to; empty means every target."""
    profiles: tuple[str, ...] = ()
    """Network profiles it applies to; empty means every profile."""

    @property
    def bound_text(self) -> str:
        if isinstance(self.bound, tuple):
            return f"[{self.bound[0]:g}, {self.bound[1]:g}]"
        return f"{self.bound:g}"

    def __str__(self) -> str:
        aggregate = "" if self.aggregate == EVERY_RUN else f" {self.aggregate}"
        return f"{self.field}{aggregate} {self.op} {self.bound_text}"

    def holds(self, value: float) -> bool:
        if isinstance(self.bound, tuple):
            return self.bound[0] <= value <= self.bound[1]
        return OPERATORS[self.op](value, self.bound)

    def applies_to(self, target: str, profile: str) -> bool:
        return (not self.targets or target in self.targets) and (
            not self.profiles or profile in self.profiles
        )


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_parts(field: str, aggregate: str, op: str, fields: Sequence[str]) -> None:
    """Raise ValueError with a one-line reason if a part of an SLO is unknown."""
    if field not in fields:
        raise ValueError(f"{field!r} is not a ProbeResult figure{_suggest(field, fields)}")
    if aggregate not in AGGREGATES and aggregate != EVERY_RUN:
        raise ValueError(
            f"unknown aggregate {aggregate!r}{_suggest(aggregate, list(AGGREGATES))}; "
            f"use one of {', '.join(AGGREGATES)}"
        )
    if op not in (*OPERATORS, "within"):
        raise ValueError(f"unknown comparison {op!r}; use <=, <, >=, > or within")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"bound {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"bound {text!r} is not a finite number")
    return value


def parse_slo(text: str, fields: Sequence[str]) -> SLO:
    """Parse ``"FIELD AGGREGATE OP BOUND"``; ValueError with a one-line reason otherwise."""
    match = _SLO.match(text)
    if not match:
        raise ValueError(
            f"cannot read SLO {text!r}: expected 'FIELD [AGGREGATE] OP BOUND', e.g. "
            "'join.total_seconds p95 <= 2.0' or 'av_sync.offset_seconds.median within [-0.185, 0.09]'"
        )
    field, aggregate, op, bound_text = match.groups()
    aggregate = aggregate or EVERY_RUN
    check_parts(field, aggregate, op, fields)
    bound: float | tuple[float, float]
    if op == "within":
        inner = re.match(r"^\[\s*([^,\]]+)\s*,\s*([^,\]]+)\s*\]$", bound_text)
        if not inner:
            raise ValueError(f"'within' needs [LOW, HIGH], got {bound_text!r}")
        low, high = _number(inner.group(1)), _number(inner.group(2))
        if low > high:
            raise ValueError(f"'within' range [{low:g}, {high:g}] is empty")
        bound = (low, high)
    else:
        bound = _number(bound_text)
    return SLO(field, aggregate, op, bound)


@dataclass(frozen=True)
class Verdict:
    slo: SLO
    target: str
    profile: str
    passed: bool
    measured: float | None
    runs: int
    message: str
    flagged: bool = False
    """Broken only by runs whose probe host was overloaded: not judged (see the module doc)."""

    @property
    def status(self) -> str:
        return "pass" if self.passed else "flagged" if self.flagged else "FAIL"


def evaluate(
    slo: SLO, target: str, profile: str, results: Sequence[dict], planned: int | None = None
) -> Verdict:
    """Judge ``slo`` over one group's results (ProbeResult dicts); see the module docstring."""
    verdict = _evaluate(slo, target, profile, results, planned)
    if verdict.passed or (planned or 0) > len(results):
        return verdict
    kept_up = [r for r in results if get_path(r, "probe_host.overloaded") is not True]
    busy = len(results) - len(kept_up)
    if not busy or not kept_up or not _evaluate(slo, target, profile, kept_up, None).passed:
        return verdict
    return replace(
        verdict,
        flagged=True,
        message=f"{verdict.message}; holds over the {len(kept_up)} runs whose host kept up, so "
        f"not judged: the probe host was overloaded in {busy}",
    )


def _evaluate(slo: SLO, target: str, profile: str, results: Sequence[dict], planned: int | None) -> Verdict:

    def verdict(passed: bool, measured: float | None, message: str) -> Verdict:
        return Verdict(slo, target, profile, passed, measured, len(results), message)

    if not results:
        return verdict(False, None, "no probe runs to judge")
    missing = (planned or 0) - len(results)
    if missing > 0:
        return verdict(False, None, f"{missing} of {planned} planned runs have no result")
    if slo.field != "success":
        failed = [r for r in results if not r.get("success")]
        if failed:
            error = failed[0].get("error") or {}
            return verdict(
                False,
                None,
                f"{len(failed)} of {len(results)} runs failed "
                # A result file is input: its text may hold escapes or XML-breaking controls.
                f"({clean_text(str(error.get('kind', '?')))}: {clean_text(str(error.get('message', '')))})",
            )
    values = [get_path(r, slo.field) for r in results]
    unmeasured = sum(1 for v in values if v is None)
    if unmeasured:
        return verdict(False, None, f"{slo.field} not measured in {unmeasured} of {len(values)} runs")
    array = np.asarray(values, dtype=float)
    if slo.aggregate == EVERY_RUN:
        measured, what = _worst(slo, array), "worst run"
    else:
        measured, what = AGGREGATES[slo.aggregate](array), slo.aggregate
    passed = slo.holds(measured)
    message = (
        f"measured {what} {measured:.6g} over {len(values)} runs, "
        f"{'meets' if passed else 'breaks'} bound {slo.op} {slo.bound_text}"
    )
    return verdict(passed, measured, message)


def _worst(slo: SLO, values: np.ndarray) -> float:
    """The run value that decides an every-run SLO: the one nearest to (or furthest past) it."""
    low, high = float(values.min()), float(values.max())
    if isinstance(slo.bound, tuple):
        lo, hi = slo.bound
        return high if high - hi >= lo - low else low
    return high if slo.op in ("<=", "<") else low
