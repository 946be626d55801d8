"""Probe fleets: a TOML fleet file, concurrent and sharded runs, SLO verdicts, JUnit reports.

``load_fleet`` reads and validates a fleet file; ``expand`` lists its probe runs (or one
shard's share); ``run_fleet`` runs them; ``judge`` turns results into SLO verdicts that
``junit_xml`` and ``summary_table`` present.
"""

from __future__ import annotations

from qoe.fleet.config import Fleet, Target, load_fleet, parse_fleet
from qoe.fleet.plan import Run, Shard, expand, parse_shard
from qoe.fleet.report import Judgement, judge, junit_xml, read_results, summary_table
from qoe.fleet.runner import Progress, get_ready, run_fleet
from qoe.fleet.slo import SLO, Verdict, parse_slo

__all__ = [
    "SLO",
    "Fleet",
    "Judgement",
    "Progress",
    "Run",
    "Shard",
    "Target",
    "Verdict",
    "expand",
    "get_ready",
    "judge",
    "junit_xml",
    "load_fleet",
    "parse_fleet",
    "parse_shard",
    "parse_slo",
    "read_results",
    "run_fleet",
    "summary_table",
]
