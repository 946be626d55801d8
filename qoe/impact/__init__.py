"""QoE impact analytics: what a second of join time, a percent of stall, an out-of-sync host or
an SD picture costs in drop-off, watch time, return visits and repurchases (``qoe impact``).

Input: a session log (Parquet or CSV; schema in :mod:`.schema` and SCHEMA.md) and optionally
the fleet's probe results (JSON lines), linked in DuckDB (:mod:`.load`, :mod:`.link`).
Estimators are numpy/scipy functions over arrays (:mod:`.survival`, :mod:`.dropoff`,
:mod:`.causal`); :mod:`.contrasts` and :mod:`.bands` apply them; :mod:`.rules` turns the
result into SLO thresholds and Prometheus alert rules; :mod:`.report` writes HTML, PNG, JSON.

    import numpy as np
    from qoe.impact import Options, analyse, write_report
    impact = analyse("sessions.parquet", np.random.default_rng(0), Options(probes="results.jsonl"))
    write_report(impact, "impact-report")
"""

from __future__ import annotations

from .analysis import Impact, Options, analyse
from .causal import Estimate, fe_regression, make_cells, match_pairs, naive, paired
from .dropoff import AbandonCurve, abandonment, early_exit_curve
from .report import write_report
from .schema import COLUMNS, CONTROLS, REASONS, REQUIRED
from .survival import Hinge, binned_counts, hinge_fit, km_from_counts, standardised

__all__ = [
    "COLUMNS",
    "CONTROLS",
    "REASONS",
    "REQUIRED",
    "AbandonCurve",
    "Estimate",
    "Hinge",
    "Impact",
    "Options",
    "abandonment",
    "analyse",
    "binned_counts",
    "early_exit_curve",
    "fe_regression",
    "hinge_fit",
    "km_from_counts",
    "make_cells",
    "match_pairs",
    "naive",
    "paired",
    "standardised",
    "write_report",
]
