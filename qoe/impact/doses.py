"""Dose-response estimates: what each unit of a continuous exposure does to watch time.

A yes/no contrast needs sessions on both sides of a line; a log in which almost every session
stalls has few on one side. The dose-response design needs none: it is the slope of log watch
time on the exposure itself, with the same fixed effects (room, device, network, region, hour)
and viewer-clustered standard errors as :func:`~.causal.fe_regression`, over every closed,
joined session with the exposure measured. Read as a relative change per unit, ``exp(b) - 1``.

=================================  ===========================  ============================
key                                exposure                     unit
=================================  ===========================  ============================
dose_watch_per_stall_percent       stall ratio                  1 percentage point
dose_watch_per_join_second         join time                    1 s
dose_watch_per_av_100ms            abs(A/V offset)              100 ms
dose_watch_per_100px               picture height               100 pixels
dose_watch_per_chat_echo_second    chat echo time               1 s
=================================  ===========================  ============================

Minimum support: :data:`~.contrasts.MIN_DOSE_SESSIONS` sessions and more than one distinct
dose; below it the estimate is "not estimable", with the reason. The slope is linear on the log
scale: a constant relative change per unit, which is the model of a stall's cost (Krishnan &
Sitaraman, IMC 2012) and a first-order summary for the others (A/V offset and picture act as
steps; their yes/no contrasts are the primary figures).

Chat echo time is the placebo in the simulator: it has no effect on viewers there, so its slope
must come out null; a significant slope on real logs says the controls miss a confounder.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from .causal import Cells, Estimate, fe_regression
from .contrasts import MIN_DOSE_SESSIONS, NOT_ESTIMABLE, log_watch_of
from .link import Sessions

__all__ = ["DoseResponse", "dose_response", "dose_responses"]


@dataclass(frozen=True)
class DoseResponse:
    key: str
    exposure: str
    per: str
    """The unit of exposure the effect is per: "1 percentage point", "1 s", ..."""
    estimate: Estimate | None
    """None when not estimable."""
    reason: str
    """Why not estimable; empty when estimable."""

    @property
    def design(self) -> str:
        return "dose-response regression" if self.estimate is not None else NOT_ESTIMABLE

    def shown(self) -> tuple[float, float, float]:
        """(value, low, high) as relative changes of watch time per unit of exposure."""
        e = self.estimate
        if e is None:
            raise ValueError(f"{self.key} is not estimable: {self.reason}")
        return float(np.expm1(e.value)), float(np.expm1(e.low)), float(np.expm1(e.high))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "exposure": self.exposure,
            "per": self.per,
            "outcome": "watch time",
            "design": self.design,
        }
        if self.estimate is None:
            return out | {"estimable": False, "reason": self.reason}
        v, lo, hi = self.shown()
        return out | {
            "estimable": True,
            "value": v,
            "low": lo,
            "high": hi,
            "sessions": self.estimate.n,
            "estimate": self.estimate.to_dict(),
        }


def dose_response(
    key: str,
    exposure: str,
    per: str,
    log_watch: np.ndarray,
    dose: np.ndarray,
    cells: Cells,
    cluster: np.ndarray,
) -> DoseResponse:
    """Slope of ``log_watch`` (n,) on ``dose`` (n,, NaN = not in the sample), fixed effects in
    ``cells``, clustered by ``cluster`` (n,); "not estimable" below the minimum support."""
    log_watch, dose = np.asarray(log_watch), np.asarray(dose)
    if log_watch.shape != dose.shape or dose.shape != np.shape(cluster):
        raise ValueError("log_watch, dose and cluster must have the same shape (n,)")
    sample = np.isfinite(log_watch) & np.isfinite(dose)
    n = int(sample.sum())
    if n < MIN_DOSE_SESSIONS:
        return DoseResponse(
            key, exposure, per, None, f"{n} sessions with {exposure}, needs {MIN_DOSE_SESSIONS}"
        )
    if np.ptp(dose[sample]) <= 0:
        return DoseResponse(key, exposure, per, None, f"every session has the same {exposure}")
    e = fe_regression(log_watch, dose, sample, cells, np.asarray(cluster))
    if not e.ok:
        return DoseResponse(key, exposure, per, None, f"no {exposure} variation left within the controls")
    return DoseResponse(key, exposure, per, e, "")


def dose_responses(
    s: Sessions, cells: Cells, columns: Collection[str], *, picture_value: np.ndarray | None = None
) -> list[DoseResponse]:
    """Every dose-response the log supports (an exposure absent from the log is left out)."""
    joined = s.joined == 1
    closed = joined & ~s.is_open & (s.watch > 0)
    log_watch = log_watch_of(s.watch, closed)
    exposures: list[tuple[str, str, str, Callable[[], np.ndarray]]] = []
    # Each exposure is made when its turn comes: at 100 M sessions one is 400 MB.
    if np.isfinite(s.stall_ratio[closed]).any():
        exposures.append(
            (
                "dose_watch_per_stall_percent",
                "stall ratio",
                "1 percentage point",
                lambda: np.float32(100.0) * s.stall_ratio,
            )
        )
    if np.isfinite(s.join[closed]).any():
        exposures.append(("dose_watch_per_join_second", "join time", "1 s", lambda: s.join.copy()))
    if np.isfinite(s.av[closed]).any():
        exposures.append(
            (
                "dose_watch_per_av_100ms",
                "A/V offset (either way)",
                "100 ms",
                lambda: np.abs(s.av) * np.float32(10.0),
            )
        )
    if picture_value is not None and "video_height" in columns and np.isfinite(picture_value[closed]).any():
        pv = picture_value
        exposures.append(
            ("dose_watch_per_100px", "picture height", "100 pixels", lambda: pv / np.float32(100.0))
        )
    if np.isfinite(s.chat[closed]).any():
        exposures.append(("dose_watch_per_chat_echo_second", "chat echo time", "1 s", lambda: s.chat.copy()))
    out = []
    for key, what, per, make in exposures:
        d = make()
        d[~closed] = np.nan
        out.append(dose_response(key, what, per, log_watch, d, cells, s.viewer))
        del d
    return out
