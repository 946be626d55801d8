"""Pushing results to a real Prometheus Pushgateway (Debian's prometheus-pushgateway)."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port, pushgateway

pytestmark = pytest.mark.slow


def pushed(gateway: str) -> list:
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name.startswith("qoe_")]


@pytest.mark.slow(seconds=35)
def test_probe_and_sharded_fleet_push_their_results(room_proc, cli, tmp_path) -> None:
    with pushgateway(tmp_path) as gateway, room_proc() as url:
        done = cli("probe", f"{url}/whep/demo", "--duration", "3", "--push-gateway", gateway)
        assert done.returncode == 0, done.stderr
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(
            f'slos = ["success min >= 1"]\n[fleet]\nduration = 3\ncount = 2\n'
            f'[[targets]]\nname = "room"\nurl = "{url}/whep/demo"\n'
        )
        for shard in ("1/2", "2/2"):
            done = cli("fleet", "run", str(fleet), "--shard", shard, "--push-gateway", gateway)
            assert done.returncode == 0, done.stdout + done.stderr
        samples = pushed(gateway)
    host = socket.gethostname()
    success = {
        (s.labels["instance"], s.labels["target"]): s.value for s in samples if s.name == "qoe_probe_success"
    }
    assert success == {
        (host, f"{url}/whep/demo"): 1.0,
        (f"{host}-shard-1-of-2", "room"): 1.0,
        (f"{host}-shard-2-of-2", "room"): 1.0,
    }
    assert all(s.labels["job"] == "qoe" for s in samples)
    runs = [s for s in samples if s.name == "qoe_probe_runs_total" and s.labels["target"] == "room"]
    assert sorted(s.value for s in runs) == [1.0, 1.0]  # one run per shard, neither replaced the other


def test_an_unreachable_gateway_is_one_line_and_exit_1(room_proc, cli) -> None:
    with room_proc() as url:
        done = cli(
            "probe",
            f"{url}/whep/demo",
            "--duration",
            "2",
            "--push-gateway",
            f"http://127.0.0.1:{free_port()}",
        )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qoe: push to http://127.0.0.1:") and "failed" in lines[0]
    assert "viewer" not in lines[0] and "Traceback" not in done.stderr
