"""Dashboards and alerts against a real Prometheus scraping ``qoe serve`` (Debian packages).

Two embedded rooms, one clean and one whose knobs break the QoE thresholds, plus a target
that refuses connections, are probed by ``qoe serve``; Prometheus scrapes it with the
project's alert rules loaded. Every dashboard panel and alert query the scraped probes can
answer must return data (a query that returns nothing is a broken panel), and each alert
whose condition the broken room injects must fire for that room and not for the clean one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from grafana.queries import RULES_FILE, all_queries
from tests.conftest import ROOT
from tests.servers import free_port, prometheus, wait_http

pytestmark = pytest.mark.slow

# The broken room: joins over 2 s (it holds each answer), glass-to-glass over 1 s, audio
# 200 ms early, and a 0.4 s freeze every 2 s. The alerts these must trip, by target.
BROKEN = (
    "--join-delay",
    "2.3",
    "--delay",
    "1.2",
    "--av-offset",
    "0.2",
    "--freeze-every",
    "2",
    "--freeze-for",
    "0.4",
)
EXPECTED_FIRING = {
    "QoEJoinSlow": "broken",
    "QoEStallRatioHigh": "broken",
    "QoEAVOffsetOutsideAcceptable": "broken",
    "QoEGlassToGlassHighWebRTC": "broken",
    "QoEProbeFailing": "dead",
}


def alert_exprs() -> dict[str, str]:
    import yaml

    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


@pytest.mark.alone  # no alert may fire for the clean room, the host-overload alert included
def test_every_panel_and_alert_query_returns_data(room_proc, tmp_path: Path) -> None:
    with room_proc() as clean, room_proc(*BROKEN) as broken:
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(
            f"""\
[fleet]
duration = 6
interval = 7
profiles = ["none"]
[[targets]]
name = "clean"
url = "{clean}/whep/demo"
profiles = ["none", "4g"]
labels = {{ region = "local" }}
[[targets]]
name = "broken"
url = "{broken}/whep/demo"
labels = {{ region = "local" }}
[[targets]]
name = "dead"
url = "http://127.0.0.1:{free_port()}/whep/demo"
duration = 2
interval = 3
labels = {{ region = "nowhere" }}
"""
        )
        port = free_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "qoe", "serve", "--fleet", str(fleet), "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            with prometheus(tmp_path, f"127.0.0.1:{port}", interval="1s", rules=[RULES_FILE]) as prom:
                # Two finished rounds of every probe, so every rate() has two samples.
                groups = (("clean", "none"), ("clean", "4g"), ("broken", "none"), ("dead", "none"))
                for target, profile in groups:
                    prom.wait_for(
                        f'qoe_probe_runs_total{{target="{target}",profile="{profile}"}} >= 2', timeout=90
                    )
                prom.wait_for("count(qoe_probe_success) >= 4", timeout=30)
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    scraped = response.read().decode()
                families = {s.name for f in text_string_to_metric_families(scraped) for s in f.samples}
                queries = all_queries(families=families, kinds={"whep"})
                assert len(queries) > 40
                empty = [(source, q) for source, q in queries if not prom.query(q)]
                assert empty == [], "queries without data:\n" + "\n".join(f"{s}: {q}" for s, q in empty)

                firing = {}
                for name, expr in alert_exprs().items():
                    firing[name] = {sample["metric"].get("target") for sample in prom.query(expr)}
        finally:
            os.kill(serve.pid, signal.SIGTERM)
            serve.wait(timeout=15)
    for name, target in EXPECTED_FIRING.items():
        assert target in firing[name], f"{name} did not fire for {target}: {firing[name]}"
    for name, targets in firing.items():
        assert "clean" not in targets, f"{name} fired for the clean room"
    unexpected = {n for n, t in firing.items() if t and n not in EXPECTED_FIRING}
    assert unexpected <= {"QoEProbeStale", "QoEProbeVanished"} and not unexpected, unexpected
    assert re.search(r'qoe_target_info\{region="local",target="clean"\}', scraped)
