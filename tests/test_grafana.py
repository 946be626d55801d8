"""grafana/: alert rules under promtool, dashboards, the Grafana alert twin, provisioning.

promtool is Debian's (``prometheus`` package); under CI a missing promtool fails these tests
rather than skipping them (tests/servers.py ``require``).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from grafana.alerting import grafana_template
from grafana.queries import (
    DASHBOARD_DIR,
    RULES_FILE,
    alert_rules,
    all_queries,
    metric_names,
)
from tests.servers import require, unavailable

ROOT = Path(__file__).resolve().parent.parent
ALERTS = RULES_FILE.parent
RULE_TESTS = sorted((ALERTS / "tests").glob("*.test.yml"))
GRAFANA_ALERTS = ALERTS / "grafana-alerting.yaml"
RUNBOOK = ALERTS / "RUNBOOK.md"
PROVISIONING = ROOT / "grafana" / "provisioning"
DASHBOARD_FILES = ("qoe-overview.json", "qoe-probe-detail.json", "qoe-profiles.json")
PROMETHEUS_DS = {"type": "prometheus", "uid": "${datasource}"}


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = require("promtool")
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARD_DIR / name).read_text()) for name in DASHBOARD_FILES}


# --- Prometheus rules ---------------------------------------------------------------------------


def test_promtool_check_rules_passes() -> None:
    done = promtool("check", "rules", RULES_FILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no grafana/alerts/tests/*.test.yml"
    done = promtool("test", "rules", *RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), done.stdout


def test_promtool_fails_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: claim a failing probe is silent when it fires."""
    doc = yaml.safe_load((ALERTS / "tests" / "availability.test.yml").read_text())
    doc["rule_files"] = [str(RULES_FILE)]
    case = next(t for t in doc["tests"] if t["name"] == "probe failing")
    firing = next(c for c in case["alert_rule_test"] if c["exp_alerts"])
    firing["exp_alerts"] = []
    wrong = tmp_path / "wrong.test.yml"
    wrong.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = promtool("test", "rules", wrong)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "QoEProbeFailing" in done.stdout + done.stderr


def _series_key(series: str) -> tuple[str, frozenset[tuple[str, str]]]:
    name, _, labels = series.partition("{")
    pairs = re.findall(r'(\w+)\s*=\s*"([^"]*)"', labels)
    keep = {"probe", "kind", "target", "profile", "job", "instance"}
    return name.strip(), frozenset((k, v) for k, v in pairs if k in keep)


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has an evaluation where it fires, and one where it stays silent: an empty
    expectation, or an input series it reads that is not among the expected alerts."""
    fired: set[str] = set()
    silent: set[str] = set()
    reads = {rule["alert"]: metric_names(rule["expr"]) for rule in alert_rules()}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            inputs = [_series_key(s["series"]) for s in case.get("input_series", [])]
            for check in case.get("alert_rule_test", []):
                name = check["alertname"]
                assert name in reads, f"{path.name}: tests unknown alert {name}"
                expected = check.get("exp_alerts") or []
                if not expected:
                    silent.add(name)
                    continue
                fired.add(name)
                alerted = {frozenset(a["exp_labels"].items()) for a in expected}
                for metric, key in inputs:
                    if metric in reads[name] and not any(key <= labels for labels in alerted):
                        silent.add(name)
    assert set(reads) - fired == set(), "alerts never shown firing"
    assert set(reads) - silent == set(), "alerts never shown silent"


def test_alerts_have_severity_summary_description_and_runbook() -> None:
    headings = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (ROOT / path).resolve() == RUNBOOK, name
        assert anchor in headings, f"{name}: no heading for #{anchor} in RUNBOOK.md"
        assert name.lower().startswith(anchor), f"{name}: runbook anchor #{anchor}"


def test_every_experience_threshold_cites_its_source() -> None:
    """The comment block above each alert names where its number comes from."""
    text = RULES_FILE.read_text()
    sources = {
        "QoEJoinSlow": "Krishnan & Sitaraman",
        "QoEStallRatioHigh": "Dobrian",
        "QoEAVOffsetOutsideAcceptable": "ITU-R BT.1359",
        "QoEGlassToGlassHighWebRTC": "docs/SOURCES.md",
        "QoEChatEchoSlow": "Chat and interaction",
        "QoEProbeStale": "DEFAULTS",
        "QoEProbeFailing": "Krishnan & Sitaraman",
    }
    blocks = re.split(r"\n\s*\n", text)
    for alert, source in sources.items():
        block = next(b for b in blocks if f"alert: {alert}\n" in b)
        assert source in block, f"{alert}: comment does not cite {source}"


# --- dashboards ---------------------------------------------------------------------------------


def test_dashboards_are_valid_with_unique_ids_datasources_and_queries() -> None:
    uids = set()
    for name, board in load_dashboards().items():
        assert board["uid"] not in uids, name
        uids.add(board["uid"])
        assert board["schemaVersion"] >= 39, f"{name}: not a Grafana 11 schema"
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids {ids}"
        assert all(isinstance(i, int) and i > 0 for i in ids), name
        for panel in board["panels"]:
            where = f"{name} panel {panel['id']} {panel['title']!r}"
            if panel["type"] == "row":  # a heading over the panels below it, with no query
                assert "targets" not in panel, where
                continue
            assert panel["datasource"] == PROMETHEUS_DS, where
            assert panel["targets"], f"{where}: no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)) and all(refs), f"{where}: refIds {refs}"
            for target in panel["targets"]:
                assert target["datasource"] == PROMETHEUS_DS, where
                assert target["expr"].strip(), where
            assert panel.get("description"), f"{where}: no description"


def test_dashboards_have_the_variables() -> None:
    for name, board in load_dashboards().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        ds = variables["datasource"]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus", name
        assert {"kind", "target", "profile", "window"} <= set(variables), name
        for label in ("kind", "target", "profile"):
            v = variables[label]
            assert v["type"] == "query" and v["datasource"] == PROMETHEUS_DS, f"{name} ${label}"
            assert v["query"].startswith("label_values(") and v["query"].endswith(f", {label})"), name
        used = {m for t in _targets(board) for m in re.findall(r"\$\{?(\w+)", t["expr"])}
        assert used - {"__range", "__rate_interval", "__interval"} <= set(variables), name


def _targets(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for panel in board["panels"] for t in panel.get("targets", ())]


def test_dashboard_and_alert_queries_parse(tmp_path: Path) -> None:
    """Every query, variables filled in, as a recording rule through ``promtool check rules``."""
    queries = all_queries(target="demo-room", profile="3g", kind="whep", probe="whep")
    assert len(queries) > 40
    for source, expr in queries:
        assert "$" not in expr, f"{source}: unsubstituted variable in {expr!r}"
    rules = [{"record": f"qoe_check:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    done = promtool("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_a_broken_query_fails_the_parse_check(tmp_path: Path) -> None:
    path = tmp_path / "broken.rules.yml"
    broken = {"record": "qoe_check:broken", "expr": "sum by (target (qoe_probe_success)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [broken]}]}))
    assert promtool("check", "rules", path).returncode == 1


def test_committed_build_is_fresh() -> None:
    """The committed JSON and YAML equal a fresh ``python3 -m grafana.build``."""
    try:
        from grafana.build import build_all
    except ModuleNotFoundError as exc:
        if exc.name != "grafana_foundation_sdk":
            raise
        unavailable("grafana-foundation-sdk is not installed (pip install -e '.[test]')")
    for path, text in build_all().items():
        assert path.read_text() == text, f"{path} is stale: run python3 -m grafana.build"


# --- the Grafana twin of the alert rules --------------------------------------------------------

OPS = {"gt": ">", "lt": "<", "gte": ">=", "lte": "<=", "eq": "==", "ne": "!="}


def _same_number(text: str, value: float) -> bool:
    return float(text) == value


def _twin_matches(prom_expr: str, query: str, evaluator: str, params: list[float]) -> bool:
    """Whether ``query`` thresholded by ``evaluator(params)`` is ``prom_expr``, read afresh."""
    expr, q = " ".join(prom_expr.split()), re.escape(query)
    number = r"([+-]?[\d.]+(?:[eE][+-]?\d+)?)"
    if evaluator == "outside_range":
        low, high = params
        for pattern, order in (
            (rf"{q} > {number} or {q} < {number}", (high, low)),
            (rf"{q} < {number} or {q} > {number}", (low, high)),
        ):
            m = re.fullmatch(pattern, expr)
            if m:
                return all(_same_number(g, v) for g, v in zip(m.groups(), order, strict=True))
        return False
    if evaluator == "gt" and params == [0] and expr == query:
        return True  # no comparison: alerts on any series the query returns
    m = re.fullmatch(rf"{q} {re.escape(OPS[evaluator])} {number}", expr)
    return m is not None and _same_number(m.group(1), params[0])


def test_grafana_alerts_match_the_prometheus_rules() -> None:
    doc = yaml.safe_load(GRAFANA_ALERTS.read_text())
    assert doc["apiVersion"] == 1
    twins = {rule["title"]: (group, rule) for group in doc["groups"] for rule in group["rules"]}
    prom = {rule["alert"]: rule for rule in alert_rules()}
    assert set(twins) == set(prom)
    for name, rule in prom.items():
        group, twin = twins[name]
        assert group["name"] == rule["group"], name
        steps = {d["refId"]: d for d in twin["data"]}
        assert twin["condition"] == "C", name
        a, b, c = steps["A"], steps["B"], steps["C"]
        assert a["datasourceUid"] == "prometheus" and a["model"]["instant"] is True, name
        assert b["model"]["type"] == "reduce" and b["model"]["expression"] == "A", name
        assert c["model"]["type"] == "threshold" and c["model"]["expression"] == "B", name
        (condition,) = c["model"]["conditions"]
        evaluator = condition["evaluator"]
        assert _twin_matches(rule["expr"], a["model"]["expr"], evaluator["type"], evaluator["params"]), (
            f"{name}: Grafana {a['model']['expr']!r} {evaluator} is not {rule['expr']!r}"
        )
        assert twin["for"] == rule.get("for", "0s"), name
        assert twin["labels"] == rule["labels"], name
        assert twin["annotations"] == {k: grafana_template(v) for k, v in rule["annotations"].items()}, name
        assert twin["noDataState"] == "OK", name


def test_twin_check_catches_a_different_threshold() -> None:
    expr = 'qoe_chat_echo_seconds{quantile="0.95"} > 1'
    query = 'qoe_chat_echo_seconds{quantile="0.95"}'
    assert _twin_matches(expr, query, "gt", [1])
    assert not _twin_matches(expr, query, "gt", [2])
    assert not _twin_matches(expr, query, "lt", [1])
    assert not _twin_matches(expr, query + " * 2", "gt", [1])
    av = "x > 0.09 or x < -0.185"
    assert _twin_matches(av, "x", "outside_range", [-0.185, 0.09])
    assert not _twin_matches(av, "x", "outside_range", [-0.18, 0.09])


# --- provisioning -------------------------------------------------------------------------------


def _env_vars(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", text))


def test_datasource_provisioning() -> None:
    text = (PROVISIONING / "datasources" / "prometheus.yml").read_text()
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["uid"] == "prometheus" and ds["type"] == "prometheus"
    assert ds["url"] == "${QOE_PROMETHEUS_URL}"


def test_dashboard_provider_points_at_the_dashboards() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "qoe.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "${QOE_GRAFANA_DASHBOARDS}"


def test_every_provisioning_variable_has_a_default() -> None:
    defaults = {}
    for line in (PROVISIONING / "defaults.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            defaults[key] = value
    assert defaults["QOE_PROMETHEUS_URL"].startswith("http://127.0.0.1:")
    used: set[str] = set()
    for path in PROVISIONING.rglob("*.yml"):
        body = "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
        used |= _env_vars(body)
    assert used == set(defaults), f"used {sorted(used)}, defaults for {sorted(defaults)}"
