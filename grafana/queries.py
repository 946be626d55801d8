"""Every PromQL query the dashboards and alert rules run, ready for a real Prometheus.

``all_queries()`` lists ``(source, promql)`` pairs: each dashboard variable (``label_values``
rewritten as the equivalent ``group by``), each panel query, and each alert rule's data query
(the part before its threshold: an alert expression itself returns nothing while all is well).
Grafana's template variables are filled in by :func:`substitute` the way Grafana's Prometheus
data source does it, so a query that returns data here returns data on the dashboard.

It also holds the small PromQL reading the build and the tests share: splitting an alert
expression into query and threshold (:func:`split_condition`), and naming the metrics and
probe kinds a query needs (:func:`metric_names`, :func:`kinds_of`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DASHBOARD_DIR",
    "RULES_FILE",
    "Condition",
    "alert_rules",
    "all_queries",
    "dashboard_queries",
    "health_query",
    "kinds_of",
    "label_values_to_promql",
    "metric_names",
    "split_condition",
    "substitute",
]

ROOT = Path(__file__).resolve().parent
DASHBOARD_DIR = ROOT / "dashboards"
RULES_FILE = ROOT / "alerts" / "qoe.rules.yml"

LABEL_VARIABLES = ("target", "profile", "kind", "probe")
"""Dashboard variables that stand for label values (the rest are intervals)."""

_MATCHER = re.compile(r'(?P<label>[A-Za-z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"')
_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))")
_REGEX_SPECIAL = re.compile(r"([\\$^*{}\[\]'+?.()|])")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$", re.S)


def _regex_literal(value: str) -> str:
    """``value`` as a regex matching only itself, written inside a PromQL string.

    Grafana escapes multi-value and include-all variables like this before putting them
    into ``=~`` matchers: regex metacharacters get a backslash, and the backslash is doubled
    because the regex sits in a double-quoted PromQL string.
    """
    return _REGEX_SPECIAL.sub(r"\\\\\1", value).replace('"', '\\"')


def _string_literal(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def substitute(
    expr: str,
    *,
    target: str | None = None,
    profile: str | None = None,
    kind: str | None = None,
    probe: str | None = None,
    rate_interval: str = "1m",
    interval: str = "15s",
    time_range: str = "1h",
    window: str = "15m",
) -> str:
    """``expr`` with Grafana's template variables replaced by concrete values.

    ``target``, ``profile``, ``kind`` and ``probe`` are label values (literal, not regexes);
    None means every value, as Grafana's "All" option does. In a ``=~``/``!~`` matcher a value
    is regex-escaped and "All" becomes ``.*``; in a ``=`` matcher "All" turns the matcher into
    ``=~".*"``. The intervals replace ``$__rate_interval``, ``$__interval``, ``$__range`` and
    the dashboards' own ``$window``. Raises ValueError on a variable it does not know.
    """
    values: dict[str, str | None] = dict(zip(LABEL_VARIABLES, (target, profile, kind, probe), strict=True))
    durations = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__range": time_range,
        "window": window,
    }
    for v in _VARIABLE.finditer(expr):
        name = v["braced"] or v["plain"]
        if name not in values and name not in durations:
            raise ValueError(f"unknown template variable ${name} in {expr!r}")
    outside = _MATCHER.sub("", expr)
    if any((v["braced"] or v["plain"]) in values for v in _VARIABLE.finditer(outside)):
        raise ValueError(f"a label variable outside a label matcher in {expr!r}")

    def duration(v: re.Match[str]) -> str:
        return durations.get(v["braced"] or v["plain"], v.group(0))

    def matcher(m: re.Match[str]) -> str:
        label, op, value = m["label"], m["op"], m["value"]
        regex = op in ("=~", "!~")
        whole = _VARIABLE.fullmatch(value.strip())
        if not regex and whole and values.get(whole["braced"] or whole["plain"], "") is None:
            if op == "!=":
                raise ValueError(f"{m.group(0)!r}: cannot exclude every value")
            return f'{label}=~".*"'

        def one(v: re.Match[str]) -> str:
            name = v["braced"] or v["plain"]
            if name not in values:
                return v.group(0)
            chosen = values[name]
            if chosen is None:
                if not regex:
                    raise ValueError(f"{m.group(0)!r}: ${name} is part of an exact match, give a value")
                return ".*"
            return _regex_literal(chosen) if regex else _string_literal(chosen)

        return f'{label}{op}"{_VARIABLE.sub(one, value)}"'

    # Intervals first: label values put in afterwards may contain a "$" of their own.
    return _MATCHER.sub(matcher, _VARIABLE.sub(duration, expr))


def label_values_to_promql(query: str) -> str:
    """A Grafana ``label_values(selector, label)`` variable query as an instant PromQL query."""
    m = _LABEL_VALUES.match(query)
    if m is None:
        raise ValueError(f"not a label_values(selector, label) query: {query!r}")
    return f"group by ({m['label']}) ({m['selector']})"


# --- reading PromQL at its top level ----------------------------------------------------------

_OPEN, _CLOSE = "([{", ")]}"
GRAFANA_EVALUATORS = {">": "gt", "<": "lt", ">=": "gte", "<=": "lte", "==": "eq", "!=": "ne"}
"""PromQL comparison -> Grafana threshold evaluator type."""
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _mask(expr: str) -> str:
    """``expr`` with everything inside brackets and string literals blanked out.

    What is left is the top level of the expression, at the same offsets, so a regex over it
    finds top-level operators only.
    """
    out, depth, quote, escaped = [], 0, "", False
    for c in expr:
        top = depth == 0 and not quote
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced {c!r} in {expr!r}")
        out.append(c if top and not quote and c not in _OPEN else " ")
    if depth or quote:
        raise ValueError(f"unbalanced brackets or quotes in {expr!r}")
    return "".join(out)


def _split_keyword(expr: str, word: str) -> list[str]:
    """``expr`` split at the top-level binary operator ``word`` (``or``, ``unless``)."""
    parts, start = [], 0
    for m in re.finditer(rf"(?<![\w:]){word}(?![\w:])", _mask(expr)):
        parts.append(expr[start : m.start()].strip())
        start = m.end()
    parts.append(expr[start:].strip())
    return parts


def _split_comparison(expr: str) -> tuple[str, str, str] | None:
    """``(left, op, right)`` at the last top-level comparison of ``expr``, or None."""
    found = list(re.finditer(r">=|<=|==|!=|>|<", _mask(expr)))
    if not found:
        return None
    m = found[-1]
    return expr[: m.start()].strip(), m.group(0), expr[m.end() :].strip()


def _threshold(expr: str) -> tuple[str, str, float] | None:
    """``(query, op, number)`` for ``query op number``; None without a top-level comparison."""
    split = _split_comparison(expr)
    if split is None:
        return None
    query, op, right = split
    if not _NUMBER.match(right):
        raise ValueError(f"a comparison must have a number on its right: {expr!r}")
    return query, op, float(right)


@dataclass(frozen=True)
class Condition:
    """An alert expression as Grafana splits it: a data query and a threshold on its values."""

    query: str
    evaluator: str
    """Grafana threshold evaluator: gt, lt, gte, lte, eq, ne or outside_range."""
    params: tuple[float, ...]


def split_condition(expr: str) -> Condition:
    """Split an alert expression into query and threshold.

    Understands ``Q OP N``; ``Q > HIGH or Q < LOW`` with the same ``Q`` (outside a range,
    either order); and an expression without a top-level comparison, which alerts on any
    series it returns (``absent()``, ``unless``): threshold ``gt 0``.
    """
    expr = " ".join(expr.split())
    parts = _split_keyword(expr, "or")
    if len(parts) == 2:
        sides = [_threshold(p) for p in parts]
        if sides[0] and sides[1]:
            (q1, op1, n1), (q2, op2, n2) = sides[0], sides[1]
            bounds = {op1: n1, op2: n2}
            if q1 == q2 and set(bounds) == {">", "<"} and bounds["<"] < bounds[">"]:
                return Condition(q1, "outside_range", (bounds["<"], bounds[">"]))
        raise ValueError(f"an 'or' of comparisons must read Q > HIGH or Q < LOW: {expr!r}")
    if len(parts) > 2:
        raise ValueError(f"too many top-level 'or's for one Grafana threshold: {expr!r}")
    split = _threshold(expr)
    if split is None:
        return Condition(expr, "gt", (0.0,))
    query, op, number = split
    return Condition(query, GRAFANA_EVALUATORS[op], (number,))


def health_query(query: str) -> str:
    """The part of an alert's data query that returns data while all is well.

    ``absent(X)`` returns nothing while ``X`` exists, so the check is ``X``; ``A unless B``
    returns nothing while ``B`` covers ``A``, so the check is ``A``.
    """
    query = " ".join(query.split())
    parts = _split_keyword(query, "unless")
    if len(parts) > 1:
        return parts[0]
    m = re.fullmatch(r"absent\((?P<inner>.*)\)", query)
    if m and _mask(query).strip() == "absent":
        return m["inner"].strip()
    return query


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names ``expr`` reads: the ``qoe_*`` families, and ``up``."""
    code = _strip_strings(expr)
    names = set(re.findall(r"(?<![\w:])(qoe_\w+)", code))
    if re.search(r"(?<![\w:])up\s*\{", code):
        names.add("up")
    return names


def kinds_of(expr: str) -> set[str] | None:
    """Probe kinds ``expr`` is limited to by literal ``kind`` matchers, or None if any kind."""
    kinds: set[str] | None = None
    for m in _MATCHER.finditer(expr):
        if m["label"] != "kind" or m["op"] not in ("=", "=~"):
            continue
        value = m["value"]
        if m["op"] == "=":
            found = {value}
        elif re.fullmatch(r"[\w-]+(\|[\w-]+)*", value):
            found = set(value.split("|"))
        else:
            continue
        kinds = found if kinds is None else kinds & found
    return kinds


# --- where the queries live ------------------------------------------------------------------


def _load_dashboards() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(DASHBOARD_DIR.glob("*.json"))]


def dashboard_queries() -> list[tuple[str, str]]:
    """``(source, expression)`` for every variable and panel query, variables not filled in."""
    out: list[tuple[str, str]] = []
    for name, dashboard in _load_dashboards():
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                query = variable["query"]
                text = query["query"] if isinstance(query, dict) else query
                out.append((f"{name} variable ${variable['name']}", label_values_to_promql(text)))
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                source = f"{name} panel {panel['id']} {panel.get('title', '')!r} {target.get('refId', '')}"
                out.append((source, target["expr"]))
    return out


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of ``qoe.rules.yml``, each with its ``group`` name added."""
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [
        {**rule, "group": group["name"]}
        for group in doc["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def all_queries(
    *,
    families: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
    target: str | None = None,
    profile: str | None = None,
    kind: str | None = None,
    probe: str | None = None,
) -> list[tuple[str, str]]:
    """``(source, promql)`` for every dashboard and alert query, variables filled in.

    Not every figure exists for every probe (chat echo on a WebRTC viewer, A/V offset without
    the test signal), so a query can rightly return nothing. To check only the queries the
    scraped probes can answer, pass ``families`` (the metric names in the scrape: sample
    names such as ``qoe_video_freezes_total``) and ``kinds`` (the probe kinds scraped);
    queries reading another metric, or limited to other kinds, are left out (for ``A or B``:
    when neither side can answer). ``up`` counts as present. ``target``, ``profile``,
    ``kind`` and ``probe`` fill the dashboard variables (None: every value), as in
    :func:`substitute`.
    """
    out = [
        (source, substitute(expr, target=target, profile=profile, kind=kind, probe=probe))
        for source, expr in dashboard_queries()
    ]
    for rule in alert_rules():
        query = health_query(split_condition(rule["expr"]).query)
        out.append((f"{RULES_FILE.name} {rule['alert']}", query))
    present = None if families is None else {*families, "up"}
    wanted = None if kinds is None else set(kinds)

    def answerable(expr: str) -> bool:
        # A top-level `or` answers when any one of its sides does.
        for side in _split_keyword(expr, "or"):
            limited = kinds_of(side)
            if present is not None and not metric_names(side) <= present:
                continue
            if wanted is not None and limited is not None and not limited & wanted:
                continue
            return True
        return False

    return [(source, expr) for source, expr in out if answerable(expr)]
