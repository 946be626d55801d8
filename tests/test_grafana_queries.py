"""grafana/queries.py: template variables, alert conditions, and every query against a scrape.

The last test feeds promtool the series a real ResultCollector exposes over half an hour of
probe runs, and checks that every dashboard and alert query returns data from them: the
offline twin of running the queries on a real Prometheus.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from grafana.queries import (
    all_queries,
    health_query,
    kinds_of,
    label_values_to_promql,
    metric_names,
    split_condition,
    substitute,
)
from qoe.exporter.metrics import ResultCollector, family_names
from qoe.result import (
    AudioSection,
    AvSyncSection,
    ChatSection,
    CohostSection,
    ErrorInfo,
    GrabSection,
    JoinSection,
    LatencySection,
    ProbeHostSection,
    ProbeResult,
    VideoSection,
)
from tests.servers import require

# --- substitute ---------------------------------------------------------------------------------


def test_substitute_escapes_values_in_regex_matchers() -> None:
    expr = 'qoe_probe_success{kind=~"$kind", target=~"${target}", profile=~"$profile"}'
    out = substitute(expr, kind="whep", target="room.eu", profile="slow-3g")
    # Grafana's escaping: a regex metacharacter gets a backslash, doubled inside the string.
    assert out == 'qoe_probe_success{kind=~"whep", target=~"room\\\\.eu", profile=~"slow-3g"}'


def test_substitute_all_is_dot_star_and_exact_matchers_widen() -> None:
    expr = 'x{kind=~"$kind", target="$target"}'
    assert substitute(expr) == 'x{kind=~".*", target=~".*"}'
    assert substitute(expr, target='a"b') == 'x{kind=~".*", target="a\\"b"}'


def test_substitute_intervals() -> None:
    expr = "rate(x[$__rate_interval]) + increase(x[$__range]) + rate(x[$window]) + x[${__interval}]"
    out = substitute(expr, rate_interval="2m", time_range="6h", window="30m", interval="30s")
    assert out == "rate(x[2m]) + increase(x[6h]) + rate(x[30m]) + x[30s]"


def test_substitute_refuses_unknown_variables() -> None:
    with pytest.raises(ValueError, match=r"\$region"):
        substitute('x{region=~"$region"}[$window]')
    with pytest.raises(ValueError, match="exclude every value"):
        substitute('x{target!="$target"}')
    with pytest.raises(ValueError, match="outside a label matcher"):
        substitute("x * $target")


def test_substitute_keeps_a_dollar_in_a_value() -> None:
    assert substitute('x{target=~"$target"}[$window]', target="a$b") == 'x{target=~"a\\\\$b"}[15m]'


def test_label_values_become_group_by() -> None:
    query = 'label_values(qoe_probe_success{kind=~"$kind"}, target)'
    assert label_values_to_promql(query) == 'group by (target) (qoe_probe_success{kind=~"$kind"})'
    with pytest.raises(ValueError):
        label_values_to_promql("query_result(up)")


# --- alert conditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "query", "evaluator", "params"),
    [
        ('up{job="qoe"} < 1', 'up{job="qoe"}', "lt", (1.0,)),
        ("time() - x > 600", "time() - x", "gt", (600.0,)),
        (
            "histogram_quantile(0.95, sum by (le) (rate(b[15m]))) > 2",
            "histogram_quantile(0.95, sum by (le) (rate(b[15m])))",
            "gt",
            (2.0,),
        ),
        ('x{q="0.5"} > 0.09 or x{q="0.5"} < -0.185', 'x{q="0.5"}', "outside_range", (-0.185, 0.09)),
        ("x < -1 or x > 1", "x", "outside_range", (-1.0, 1.0)),
        ('absent(up{job="qoe"})', 'absent(up{job="qoe"})', "gt", (0.0,)),
        ('x{a!="<"} >= 3', 'x{a!="<"}', "gte", (3.0,)),
        ("a\n  unless\nb", "a unless b", "gt", (0.0,)),
    ],
)
def test_split_condition(expr: str, query: str, evaluator: str, params: tuple[float, ...]) -> None:
    condition = split_condition(expr)
    assert (condition.query, condition.evaluator, condition.params) == (query, evaluator, params)


@pytest.mark.parametrize(
    "expr", ["x > y", "x > 1 or y < 0", "x > 1 or x > 2", "x > 1 or x < 0 or x > 5", "x > (1"]
)
def test_split_condition_refuses_what_grafana_cannot_threshold(expr: str) -> None:
    with pytest.raises(ValueError):
        split_condition(expr)


def test_health_query() -> None:
    assert health_query('absent(up{job="qoe"})') == 'up{job="qoe"}'
    assert health_query("group by (t) (max_over_time(x[6h])) unless group by (t) (x)") == (
        "group by (t) (max_over_time(x[6h]))"
    )
    assert health_query("absent(x) + absent(y)") == "absent(x) + absent(y)"
    assert health_query("time() - x") == "time() - x"


def test_metric_names_and_kinds() -> None:
    expr = 'sum(rate(qoe_video_freezes_total{kind=~"whep|whip", target="qoe_x"}[5m])) / up{job="qoe"}'
    assert metric_names(expr) == {"qoe_video_freezes_total", "up"}
    assert kinds_of(expr) == {"whep", "whip"}
    assert kinds_of('x{kind="rtmp"}') == {"rtmp"}
    assert kinds_of('x{kind=~".*"}') is None


def test_all_queries_leaves_out_what_the_scrape_cannot_answer() -> None:
    everything = all_queries()
    sources = [source for source, _ in everything]
    assert len(sources) == len(set(sources))
    assert any(s.startswith("qoe-overview.json variable $target") for s in sources)
    assert any(s == "qoe.rules.yml QoEExporterAbsent" for s in sources)
    viewer = set(family_names()) - {"qoe_chat_echo_seconds", "qoe_cohost_offset_seconds"}
    kept = all_queries(families=viewer, kinds={"whep"})
    texts = [expr for _, expr in kept]
    assert not any("qoe_chat_echo_seconds" in e or "qoe_cohost_offset_seconds" in e for e in texts)
    assert not any('kind="rtmp"' in e for e in texts)
    assert any('kind=~"whep|whip"' in e for e in texts)
    assert len(everything) > len(kept) > 40
    # "0 when none failed" still answers without a failures counter.
    no_failures = all_queries(families=viewer - {"qoe_probe_failures_total"})
    assert any("qoe_probe_failures_total" in e and "vector(0)" in e for _, e in no_failures)
    assert not any("qoe_probe_failures_total" in e and "vector(0)" not in e for _, e in no_failures)


# --- every query against a real collector's scrape ----------------------------------------------

PROBES = [("whep", "none"), ("whep", "3g"), ("rtmp", "none"), ("flv", "none"), ("hls", "none")]
"""(kind, profile) probes of one target, room-a; its whep probe under none fails every 4th run."""
MINUTES = 31


def _result(kind: str, profile: str, minute: int) -> ProbeResult:
    result = ProbeResult(probe=kind, kind=kind, target="room-a", profile=profile, labels={"region": "eu"})
    result.duration_seconds = 9.0
    if kind == "whep" and profile == "none" and minute % 4 == 1:
        result.error = ErrorInfo("timeout", "no decoded video frame within 10 s")
        return result
    wobble = 0.1 * (minute % 5)
    result.success = True
    result.join = JoinSection(
        1.2 + wobble, {"signaling": 0.2, "ice_connected": 0.5 + wobble, "first_decoded_frame": 0.5}
    )
    result.video = VideoSection(
        frames=240,
        fps=30.0,
        freeze_count=minute % 2,
        freeze_seconds=0.2 * (minute % 2),
        pause_count=0,
        pause_seconds=0.0,
        stall_ratio=0.025 * (minute % 2),
        watched_seconds=8.0,
        dropped_frames=minute % 3,
        decode_errors=0,
        stalls_over_seconds={"threshold": 0.5, "count": 0, "seconds": 0.0},
        quality={
            "psnr_db": {"p5": 33.0, "p50": 38.0 - wobble},
            "ssim": {"p5": 0.96, "p50": 0.985 - wobble / 10},
            "scored_frames": 16,
            "skipped_frames": 0,
        },
        renditions=[
            {"width": 640, "height": 360, "seconds": 6.0},
            {"width": 320, "height": 180, "seconds": 2.0},
        ],
        switches=1 + minute % 2,
        bitrate_kbps={"mean": 480.0, "p5": 300.0, "p50": 500.0},
    )
    result.latency = LatencySection({"p50": 0.2 + wobble, "p95": 0.3 + wobble, "max": 0.5})
    result.av_sync = AvSyncSection({"median": 0.02, "p95_abs": 0.05}, samples=8)
    result.chat = ChatSection({"p50": 0.1, "p95": 0.2, "max": 0.3}, sent=10, lost=minute % 2)
    dropouts = {"count": minute % 2, "seconds": 0.3 * (minute % 2), "missing_markers": 0}
    result.audio = AudioSection(
        frames=400, seconds=8.0, dropouts=dropouts, snr_db=60.0, noise_floor_dbfs=-66.0
    )
    echoed = minute % 3 == 0
    result.cohost = CohostSection(
        {"median": 0.03},
        {"median": 0.01},
        echo={
            "detected": echoed,
            "delay_seconds": 0.12 if echoed else None,
            "return_loss_db": 10.5 if echoed else None,
        },
        audio={"snr_db": 20.0, "noise_floor_dbfs": -23.0, "dropouts": dropouts},
    )
    late = 0.075 if profile == "3g" else 0.0  # every kind grabs, as every kind chats here
    result.grab = GrabSection(
        seen_after_seconds={"p50": 0.1 + late, "p95": 0.12 + late, "max": 0.13 + late},
        answer_seconds={"p50": 0.01, "p95": 0.3 + wobble * 3, "max": 0.4 + wobble * 3},
        seen=2,
        won=0 if profile == "3g" else 1,
        sold_out=2 if profile == "3g" else 1,
        unanswered=0,
    )
    lag = {"p50": 0.001, "p95": 0.004, "max": 0.01 + wobble}
    result.probe_host = ProbeHostSection(
        lag, cpu_busy_ratio=0.4 + wobble, cpu_stolen_ratio=0.01, overloaded=lag["max"] > 0.1
    )
    return result


def _scraped_series() -> dict[str, list[str]]:
    """Series text -> one value per minute ("_" when absent), as Prometheus would store them."""
    registry = CollectorRegistry()
    collector = ResultCollector(registry)
    series: dict[str, list[str]] = {'up{job="qoe", instance="127.0.0.1:9464"}': ["1"] * MINUTES}
    for minute in range(MINUTES):
        for kind, profile in PROBES:
            collector.observe(_result(kind, profile, minute), finished_at=minute * 60.0)
        text = generate_latest(registry).decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = {**sample.labels, "job": "qoe", "instance": "127.0.0.1:9464"}
                body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                values = series.setdefault(f"{sample.name}{{{body}}}", ["_"] * MINUTES)
                values[minute] = repr(float(sample.value))
    return series


def test_every_query_returns_data_from_a_real_scrape(tmp_path: Path) -> None:
    binary = require("promtool")
    series = _scraped_series()
    scraped = {name.partition("{")[0] for name in series}
    assert set(family_names()) <= scraped, "the synthetic scrape misses a family"
    queries = all_queries() + [
        (f"{source} (one probe)", expr)
        for source, expr in all_queries(target="room-a", profile="none", kind="whep", probe="whep")
    ]
    names = {f"Q{i:03d}": source for i, (source, _) in enumerate(queries)}
    rules = [
        {"alert": name, "expr": f"count({expr}) > 0"} for name, (_, expr) in zip(names, queries, strict=True)
    ]
    (tmp_path / "queries.rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))
    test = {
        "rule_files": ["queries.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": " ".join(v)} for s, v in series.items()],
                "alert_rule_test": [
                    {"eval_time": f"{MINUTES - 1}m", "alertname": name, "exp_alerts": [{"exp_labels": {}}]}
                    for name in names
                ],
            }
        ],
    }
    (tmp_path / "queries.test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run(
        [binary, "test", "rules", "queries.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    empty = sorted({names[n] for n in re.findall(r"alertname: (Q\d+)", output)})
    assert done.returncode == 0, "queries without data:\n" + "\n".join(empty or [output[-3000:]])
