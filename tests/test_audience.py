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
from qoe.impact.schema import BEHAVIOUR, COLUMNS
from sim.audience import NETWORKS, load_model, simulate, truth_path
from sim.profiles import list_profiles

WRITTEN = sorted(c.name for c in COLUMNS if c.name not in (*BEHAVIOUR, "arm"))
"""Every column but the behaviour counts (not modelled) and the arm (only in an A/B test)."""


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
    assert effects["watch_change_sd"] == -0.1
    assert effects["return7_sd"] == pytest.approx(-0.02)  # the SD drop alone, even after a stall too
    assert truth["counts"]["sessions"] == pq.read_metadata(a).num_rows


def test_schema_is_the_one_qoe_impact_reads(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    simulate(path, viewers=300, days=5, rooms=4, rng=np.random.default_rng(3))
    schema = pq.read_schema(path)
    assert sorted(schema.names) == WRITTEN
    assert b"log_end" in (schema.metadata or {})
    assert set(NETWORKS) <= set(list_profiles())  # the network categories are sim/profiles names


def test_csv_when_the_name_ends_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    simulate(path, viewers=200, days=5, rooms=4, rng=np.random.default_rng(4))
    header = path.read_text().splitlines()[0]
    assert sorted(header.replace('"', "").split(",")) == WRITTEN


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
    picture = (
        duckdb.connect()
        .execute(
            f"""SELECT network, avg((video_height < 720)::INT),
                list(DISTINCT video_height ORDER BY video_height) FILTER (video_height IS NOT NULL),
                count(*) FILTER ((video_height IS NULL) <> (join_seconds IS NULL)),
                count(*) FILTER ((video_height < 720) <> (bitrate_kbps < 1500))
            FROM '{path}' GROUP BY 1"""
        )
        .fetchall()
    )
    sd = {r[0]: r[1] for r in picture}
    assert sd["wifi"] < 0.25 < sd["4g"] < 0.55 < sd["3g"] < 0.8 < sd["slow-3g"]  # weak networks: more SD
    assert all(r[2] == [360, 540, 720, 1080] for r in picture)  # the ladder
    assert all(r[3] == 0 for r in picture)  # a picture exactly when a first frame showed
    assert all(r[4] == 0 for r in picture)  # SD below 1500 kbit/s, HD above: the bitrate line agrees


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


def test_model_picture_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        "[behaviour]\nwatch_loss_sd = 0.2\nreturn_drop_sd = 0.0\n[qoe]\nhd_share = [1, 1, 0.5, 0]\n"
    )
    model = load_model(path)
    assert (model.behaviour.watch_loss_sd, model.behaviour.return_drop_sd) == (0.2, 0.0)
    bad = {
        "[behaviour]\nwatch_loss_sd = 1.0": r"behaviour\.watch_loss_sd must be in \[0, 1\), got 1\.0",
        "[qoe]\nhd_share = [0.5, 0.5]": r"qoe\.hd_share needs one value per network",
        "[qoe]\nhd_share = [1.5, 0.5, 0.5, 0.5]": r"qoe\.hd_share must be probabilities 0\.\.1",
        "[qoe]\nheights = [360, 540]\nheight_bitrate_kbps = [800, 1200]": r"one at 720 or above \(HD\)",
        "[qoe]\nheights = [720, 360, 1080, 540]": r"qoe\.heights must be whole numbers of pixels "
        r"from 90 to 4320, ascending",
        "[qoe]\nheights = [360, 540.5, 720, 1080]": r"qoe\.heights must be whole numbers",
        "[qoe]\nheights = [60, 540, 720, 1080]": r"qoe\.heights must be whole numbers",
        "[qoe]\nheight_bitrate_kbps = [800, 1200, 2500]": r"qoe\.height_bitrate_kbps needs one "
        r"positive bitrate per height",
    }
    for text, message in bad.items():
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=message):
            load_model(path)


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
