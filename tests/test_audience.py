"""sim.audience: seeded, schema-conformant sessions with confounding, and a ground truth beside them."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from qoe.cli.analytics import simulate_command
from qoe.errors import ConfigError
from qoe.impact.schema import COLUMNS
from sim.audience import NETWORKS, load_model, simulate, truth_path
from sim.profiles import list_profiles


def digest(path: Path) -> str:
    return hashlib.sha256(
        pq.read_table(path).to_string(show_metadata=False, preview_cols=0).encode()
        + str(pq.read_table(path).to_pylist()[:2000]).encode()
    ).hexdigest()


def test_same_seed_same_sessions_and_truth_beside_them(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    for path, seed in ((a, 1), (b, 1), (c, 2)):
        simulate(path, viewers=500, days=10, rooms=5, rng=np.random.default_rng(seed))
    assert digest(a) == digest(b) != digest(c)
    truth = json.loads(truth_path(a).read_text())
    assert truth_path(a).name == "a.truth.json"
    effects = truth["effects"]
    assert effects["abandon_knee_seconds"] == 2.0
    assert effects["abandon_per_second"] == pytest.approx(0.058, rel=0.05)  # session mix, calibrated to 5.8 %
    assert effects["watch_change_per_stall_percent"] == -0.05
    assert effects["return7_failed"] == pytest.approx(-0.023)  # exact by construction (docs/SOURCES.md)
    assert truth["counts"]["sessions"] == pq.read_metadata(a).num_rows


def test_schema_is_the_one_qoe_impact_reads(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    simulate(path, viewers=300, days=5, rooms=4, rng=np.random.default_rng(3))
    schema = pq.read_schema(path)
    assert sorted(schema.names) == sorted(c.name for c in COLUMNS)
    assert b"log_end" in (schema.metadata or {})
    assert set(NETWORKS) <= set(list_profiles())  # the network categories are sim/profiles names


def test_csv_when_the_name_ends_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    simulate(path, viewers=200, days=5, rooms=4, rng=np.random.default_rng(4))
    header = path.read_text().splitlines()[0]
    assert sorted(header.replace('"', "").split(",")) == sorted(c.name for c in COLUMNS)


def test_weak_networks_differ_in_qoe_and_in_baseline_behaviour(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    simulate(path, viewers=3000, days=20, rooms=6, rng=np.random.default_rng(5))
    rows = dict(
        (r[0], r[1:])
        for r in duckdb.connect()
        .execute(
            f"""SELECT network, avg((join_seconds IS NULL)::INT), avg((stall_seconds / (epoch(session_end)
                - epoch(session_start) - join_seconds) > 0.01)::INT), avg(order_count)
                FROM '{path}' GROUP BY 1"""
        )
        .fetchall()
    )
    wifi, slow = rows["wifi"], rows["slow-3g"]
    assert slow[0] > 5 * wifi[0]  # no first frame
    assert slow[1] > 5 * wifi[1]  # stall above 1 %
    assert slow[2] < wifi[2]  # fewer orders: purchasing is confounded with the network


def test_model_file_overrides_and_rejects_unknown_keys(tmp_path: Path) -> None:
    good = tmp_path / "m.toml"
    good.write_text("[behaviour]\nabandon_per_second = 0.03\n[qoe]\nfailure = [0.0, 0.0, 0.0, 0.0]\n")
    model = load_model(good)
    assert model.behaviour.abandon_per_second == 0.03 and model.qoe.failure == (0.0, 0.0, 0.0, 0.0)
    bad = tmp_path / "bad.toml"
    bad.write_text("[behaviour]\nabandon_slope = 0.03\n")
    with pytest.raises(ConfigError) as unknown:
        load_model(bad)
    assert str(unknown.value).startswith(
        f"{bad}: behaviour.abandon_slope: unknown key 'abandon_slope'; did you mean 'abandon_per_second'?"
    )
    bad.write_text("[population]\nnetwork_share = [0.5, 0.5]\n")
    with pytest.raises(ConfigError, match="network_share must be 4 non-negative shares summing to 1"):
        load_model(bad)
    bad.write_text("[behaviour]\nmax_retries = 1.5\n")
    with pytest.raises(ConfigError, match=r"behaviour\.max_retries: must be a whole number, got 1\.5$"):
        load_model(bad)
    bad.write_text('[qoe]\nfailure = [0.0, "x", 0.0, 0.0]\n')
    with pytest.raises(ConfigError, match=r"qoe\.failure\[1\]: must be a number, got 'x'$"):
        load_model(bad)


def test_command_with_small_chunks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.parquet"
    args = argparse.Namespace(
        viewers=2500,
        days=3,
        seed=7,
        out=str(out),
        rooms=None,
        model=None,
        probes=None,
        probe_interval=None,
        start=None,
        chunk=1000,
        quiet=True,
    )
    assert simulate_command(args) == 0
    assert "sessions of 2500 viewers" in capsys.readouterr().out
    ids = pq.read_table(out, columns=["session_id", "viewer_id"])
    assert ids.num_rows == len(set(ids.column("session_id").to_pylist()))  # unique across chunks
    assert max(ids.column("viewer_id").to_pylist()) <= 2500
    args.out = str(tmp_path / "s.json")
    with pytest.raises(ConfigError, match=r"--out must end in \.parquet or \.csv"):
        simulate_command(args)
