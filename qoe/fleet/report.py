"""Verdicts over a fleet's results: read JSON lines, judge SLOs, write JUnit XML and a table.

The same code judges one unsharded run and the merge of N shards' files, so both give the
same verdict. Results that cannot be read, and runs that appear twice, are never dropped in
silence: each is a problem, reported by file and line, and a report with problems fails.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qoe.errors import ConfigError
from qoe.fleet.config import Fleet
from qoe.fleet.plan import Run
from qoe.fleet.slo import Verdict, evaluate
from qoe.result import get_path

__all__ = ["Judgement", "judge", "junit_xml", "read_results", "summary_table"]


@dataclass
class Judgement:
    verdicts: list[Verdict]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What the reader should know but does not change the verdict (an overloaded host)."""

    @property
    def passed(self) -> bool:
        return not self.problems and all(v.passed or v.flagged for v in self.verdicts)


def read_results(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ProbeResult in the JSON-lines files, and a problem line for each bad line."""
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read results: {exc.strerror or exc}") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}: not a JSON result ({exc.msg})")
                continue
            if not isinstance(data, dict) or not isinstance(data.get("run"), str) or "success" not in data:
                problems.append(f"{path}:{number}: not a fleet ProbeResult (no 'run' or 'success')")
                continue
            results.append(data)
    return results, problems


def judge(fleet: Fleet, runs: Sequence[Run], results: Iterable[dict[str, Any]]) -> Judgement:
    """Judge every SLO for every (target, profile) group that ``runs`` plans."""
    problems: list[str] = []
    planned = {run.id for run in runs}
    counts = Counter(r.get("run") for r in results if r.get("run") in planned)
    for run_id, n in sorted(counts.items()):
        if n > 1:
            problems.append(f"run {run_id} has {n} results; shards overlap or a file was merged twice")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    seen: set[str] = set()
    for result in results:
        run_id = result.get("run")
        if run_id in planned and run_id not in seen:
            seen.add(run_id)
            groups[(str(result.get("target")), str(result.get("profile")))].append(result)
    sizes = Counter((run.target.name, run.profile) for run in runs)
    verdicts = [
        evaluate(slo, target, profile, groups.get((target, profile), []), planned=size)
        for (target, profile), size in sizes.items()
        for slo in fleet.slos
        if slo.applies_to(target, profile)
    ]
    judged = [result for group in groups.values() for result in group]
    return Judgement(verdicts, problems, _overload_warnings(judged))


def _overload_warnings(results: Sequence[dict[str, Any]]) -> list[str]:
    """A warning when the probes' own host fell behind (see :mod:`qoe.looplag`)."""
    late = [r for r in results if get_path(r, "probe_host.overloaded") is True]
    if not late:
        return []
    lag = max(get_path(r, "probe_host.loop_lag_seconds.max") or 0.0 for r in late)
    busy = max(get_path(r, "probe_host.cpu_busy_ratio") or 0.0 for r in late)
    return [
        f"the probe host was overloaded in {len(late)} of {len(results)} runs (event loop up to "
        f"{1000 * lag:.0f} ms late, CPUs up to {100 * busy:.0f} % busy): their freezes and "
        "latencies may be the fleet's own; lower --concurrency or add shards"
    ]


def _case_class(verdict: Verdict) -> str:
    return f"qoe.fleet.{verdict.target}.{verdict.profile}"


def junit_xml(judgement: Judgement, *, name: str = "qoe fleet") -> str:
    """JUnit XML: one test suite per target and profile, one test case per SLO."""
    suites = ET.Element("testsuites", name=name)
    by_group: dict[tuple[str, str], list[Verdict]] = defaultdict(list)
    for verdict in judgement.verdicts:
        by_group[(verdict.target, verdict.profile)].append(verdict)
    for (target, profile), verdicts in by_group.items():
        failures = sum(v.status == "FAIL" for v in verdicts)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{target} [{profile}]",
            tests=str(len(verdicts)),
            failures=str(failures),
            errors="0",
            skipped=str(sum(v.flagged for v in verdicts)),
        )
        for verdict in verdicts:
            case = ET.SubElement(suite, "testcase", classname=_case_class(verdict), name=str(verdict.slo))
            if verdict.flagged:
                ET.SubElement(case, "skipped", message=verdict.message)
            elif not verdict.passed:
                failure = ET.SubElement(case, "failure", message=verdict.message, type="SLO")
                failure.text = f"{target} [{profile}] {verdict.slo}: {verdict.message}"
            else:
                ET.SubElement(case, "system-out").text = verdict.message
    if judgement.problems:
        suite = ET.SubElement(suites, "testsuite", name="results", tests="1", failures="1", errors="0")
        case = ET.SubElement(
            suite,
            "testcase",
            classname="qoe.fleet.results",
            name="every run has exactly one readable result",
        )
        failure = ET.SubElement(
            case, "failure", message=f"{len(judgement.problems)} problems", type="integrity"
        )
        failure.text = "\n".join(judgement.problems)
    total = len(judgement.verdicts) + bool(judgement.problems)
    suites.set("tests", str(total))
    failed = sum(v.status == "FAIL" for v in judgement.verdicts)
    suites.set("failures", str(failed + bool(judgement.problems)))
    suites.set("skipped", str(sum(v.flagged for v in judgement.verdicts)))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def summary_table(judgement: Judgement) -> str:
    """One row per SLO per target and profile, failing rows first."""
    rows = [("target", "profile", "slo", "verdict", "detail")]
    order = {"FAIL": 0, "flagged": 1, "pass": 2}
    for v in sorted(judgement.verdicts, key=lambda v: (order[v.status], v.target, v.profile)):
        rows.append((v.target, v.profile, str(v.slo), v.status, v.message))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ------")
    held = sum(v.passed for v in judgement.verdicts)
    flagged = sum(v.flagged for v in judgement.verdicts)
    lines.append(
        f"\n{held} of {len(judgement.verdicts)} SLOs hold"
        + (f"; {flagged} not judged, broken only by runs on an overloaded probe host" if flagged else "")
    )
    lines += [f"problem: {p}" for p in judgement.problems]
    lines += [f"warning: {w}" for w in judgement.warnings]
    return "\n".join(lines)
