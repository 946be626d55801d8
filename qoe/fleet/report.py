"""Verdicts over a fleet's results: read JSON lines, judge SLOs, write JUnit XML and a table.

The same code judges one unsharded run and the merge of N shards' files, so both give the
same verdict. Results that cannot be read, and runs that appear twice, are never dropped in
silence: each is a problem, reported by file and line, and a report with problems fails. A
line is read as a result only if it is one: UTF-8 JSON, finite numbers, and every figure of
the type the result schema gives it; anything else is a problem, not a figure, so an SLO is
never judged on a value no probe wrote.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qoe.errors import ConfigError
from qoe.fleet.config import Fleet
from qoe.fleet.plan import Run
from qoe.fleet.slo import Verdict, evaluate, figure_types
from qoe.redact import clean_text
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


JUNIT_TEXT_LIMIT = 2000
"""Characters of one message kept in JUnit (a verdict's message is one line)."""
LISTED_PER_FILE = 20
"""Bad lines of one results file listed one by one; the rest are counted in one more line."""
SECTIONS = (
    "join",
    "video",
    "audio",
    "latency",
    "av_sync",
    "chat",
    "cohost",
    "publish",
    "grab",
    "ice",
    "probe_host",
)


class _NotFinite(ValueError):
    """JSON's NaN, Infinity or a number too large for a float: not a figure a probe writes."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _no_constant(text: str) -> float:
    raise _NotFinite(text)


def _described(value: Any) -> str:
    """A bad value, short and safe to print (it came from a file)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "an array"
    return clean_text(repr(value), 40)


def _wrong_type(value: Any, kinds: frozenset[type]) -> bool:
    """Whether a figure's ``value`` is of none of the schema's ``kinds``."""
    if value is None:
        return False
    if isinstance(value, bool):
        return bool not in kinds
    if isinstance(value, int | float):
        try:
            finite = math.isfinite(float(value))
        except OverflowError:  # an integer of 400 digits
            return True
        return not finite or not kinds & {int, float}
    return not (isinstance(value, str) and str in kinds)


def malformed(data: Any) -> str | None:
    """What keeps one parsed line from being a fleet result, or None if it is one."""
    if not isinstance(data, dict) or not isinstance(data.get("run"), str) or "success" not in data:
        return "not a fleet ProbeResult (no 'run' or 'success')"
    if not isinstance(data["success"], bool):
        return f"success is {_described(data['success'])}, not true or false"
    for key in ("target", "profile"):
        if not isinstance(data.get(key), str):
            return f"{key} is {_described(data.get(key))}, not a string"
    error = data.get("error")
    if error is not None and not (
        isinstance(error, dict) and all(isinstance(error.get(k, ""), str) for k in ("kind", "message"))
    ):
        return "error is not an object of text kind and message"
    for section in SECTIONS:
        if not isinstance(data.get(section, {}), dict | None):
            return f"{section} is {_described(data[section])}, not an object"
    for path, kinds in figure_types().items():
        value = get_path(data, path)
        if _wrong_type(value, kinds):
            wanted = "a number" if kinds & {int, float} else "true or false" if bool in kinds else "text"
            return f"{path} is {_described(value)}, not {wanted}"
    phases = get_path(data, "join.phases")
    if phases is not None:
        if not isinstance(phases, dict):
            return f"join.phases is {_described(phases)}, not an object"
        for name, value in phases.items():
            if _wrong_type(value, frozenset({float})):
                return f"join.phases.{clean_text(str(name), 40)} is {_described(value)}, not a number"
    return None


def read_results(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ProbeResult in the JSON-lines files, and a problem line for each bad line (the
    first :data:`LISTED_PER_FILE` of a file one by one, the rest counted)."""
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    for path in paths:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read results: {exc.strerror or exc}") from exc
        name = clean_text(str(path))
        bad = 0
        for number, chunk in enumerate(raw.split(b"\n"), start=1):
            problem = None
            try:
                line = chunk.decode("utf-8")
            except UnicodeDecodeError:
                problem = "not UTF-8 text"
            else:
                if not line.strip():
                    continue
                try:
                    data = json.loads(line, parse_float=_finite, parse_constant=_no_constant)
                except json.JSONDecodeError as exc:
                    problem = f"not a JSON result ({exc.msg})"
                except _NotFinite as exc:
                    problem = f"not a JSON result (a number that is not finite: {clean_text(str(exc), 40)})"
                except (ValueError, RecursionError):  # an integer of thousands of digits; nesting
                    problem = "not a JSON result (a number too long, or nested too deeply)"
                else:
                    problem = malformed(data)
            if problem is None:
                results.append(data)
                continue
            bad += 1
            if bad <= LISTED_PER_FILE:
                problems.append(f"{name}:{number}: {problem}")
        if bad > LISTED_PER_FILE:
            problems.append(f"{name}: {bad - LISTED_PER_FILE} more bad lines ({bad} in all)")
    return results, problems


def judge(fleet: Fleet, runs: Sequence[Run], results: Iterable[dict[str, Any]]) -> Judgement:
    """Judge every SLO for every (target, profile) group that ``runs`` plans."""
    problems: list[str] = []
    results = list(results)
    planned = {run.id: (run.target.name, run.profile) for run in runs}
    counts = Counter(r.get("run") for r in results if r.get("run") in planned)
    for run_id, n in sorted(counts.items()):
        if n > 1:
            problems.append(f"run {run_id} has {n} results; shards overlap or a file was merged twice")
    unplanned = [str(r.get("run")) for r in results if r.get("run") not in planned]
    if unplanned:
        problems.append(
            f"{len(unplanned)} results are of runs the fleet file does not plan (first: "
            f"{clean_text(unplanned[0], 80)!r}); results of another fleet, or of an older version of it"
        )
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    seen: set[str] = set()
    for result in results:
        run_id = result.get("run")
        if run_id not in planned or run_id in seen:
            continue
        seen.add(run_id)
        group = planned[run_id]
        if (result.get("target"), result.get("profile")) != group:
            problems.append(
                f"run {run_id}: its result names target {clean_text(str(result.get('target')), 40)!r} "
                f"and profile {clean_text(str(result.get('profile')), 40)!r}, not the run's own"
            )
            continue
        groups[group].append(result)
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


def _text(text: str) -> str:
    """``text`` as JUnit may hold it: XML 1.0 refuses control characters (a NUL, an ESC of a
    colour code) outright, and a CI server that cannot parse the file shows no result at all."""
    return clean_text(text, JUNIT_TEXT_LIMIT)


def junit_xml(judgement: Judgement, *, name: str = "qoe fleet") -> str:
    """JUnit XML: one test suite per target and profile, one test case per SLO. Every text in
    it is cleaned (:func:`qoe.redact.clean_text`): names come from the fleet file and
    messages from results files, and either may hold what XML cannot."""
    suites = ET.Element("testsuites", name=_text(name))
    by_group: dict[tuple[str, str], list[Verdict]] = defaultdict(list)
    for verdict in judgement.verdicts:
        by_group[(verdict.target, verdict.profile)].append(verdict)
    for (target, profile), verdicts in by_group.items():
        failures = sum(v.status == "FAIL" for v in verdicts)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=_text(f"{target} [{profile}]"),
            tests=str(len(verdicts)),
            failures=str(failures),
            errors="0",
            skipped=str(sum(v.flagged for v in verdicts)),
        )
        for verdict in verdicts:
            case = ET.SubElement(
                suite, "testcase", classname=_text(_case_class(verdict)), name=_text(str(verdict.slo))
            )
            message = _text(verdict.message)
            if verdict.flagged:
                ET.SubElement(case, "skipped", message=message)
            elif not verdict.passed:
                failure = ET.SubElement(case, "failure", message=message, type="SLO")
                failure.text = _text(f"{target} [{profile}] {verdict.slo}: {verdict.message}")
            else:
                ET.SubElement(case, "system-out").text = message
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
        failure.text = "\n".join(_text(problem) for problem in judgement.problems)
    total = len(judgement.verdicts) + bool(judgement.problems)
    suites.set("tests", str(total))
    failed = sum(v.status == "FAIL" for v in judgement.verdicts)
    suites.set("failures", str(failed + bool(judgement.problems)))
    suites.set("skipped", str(sum(v.flagged for v in judgement.verdicts)))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def summary_table(judgement: Judgement) -> str:
    """One row per SLO per target and profile, failing rows first; its text cleaned for a
    terminal as JUnit's is for XML."""
    rows = [("target", "profile", "slo", "verdict", "detail")]
    order = {"FAIL": 0, "flagged": 1, "pass": 2}
    for v in sorted(judgement.verdicts, key=lambda v: (order[v.status], v.target, v.profile)):
        rows.append((_text(v.target), _text(v.profile), _text(str(v.slo)), v.status, _text(v.message)))
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
    lines += [f"problem: {_text(p)}" for p in judgement.problems]
    lines += [f"warning: {_text(w)}" for w in judgement.warnings]
    return "\n".join(lines)
