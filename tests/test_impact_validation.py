"""Bad input to ``qoe impact``: every excluded row is counted, with its reason and example rows;
and the probe as-of join on small hand-made files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qoe.cli.analytics import impact_command, parse_time
from qoe.errors import ConfigError
from qoe.impact.analysis import Options
from qoe.impact.link import link_sessions, load_probes
from qoe.impact.load import connect, load_sessions
from sim.audience import simulate

HEADER = "session_id,viewer_id,room_id,session_start,session_end,join_seconds,stall_seconds,order_count"
GOOD = [
    "1,v1,r1,2026-03-02T20:00:00Z,2026-03-02T20:10:00Z,1.2,3.0,0",
    "2,v1,r1,2026-03-03T20:00:00Z,2026-03-03T20:05:00Z,0.8,0,1",
    "3,v2,r1,2026-03-02T21:00:00Z,2026-03-02T21:00:07Z,,,0",
    "4,v2,r2,2026-03-02T21:00:30+01:00,,0.9,0,0",
]
BAD = {
    "unparseable_timestamp": ("5,v3,r1,not a time,2026-03-02T20:10:00Z,1.0,0,0", "session_start"),
    "wrong_type": ("6,v3,r1,2026-03-02T20:00:00Z,2026-03-02T20:10:00Z,fast,0,0", "join_seconds"),
    "end_before_start": ("7,v3,r1,2026-03-02T20:00:00Z,2026-03-02T19:00:00Z,1.0,0,0", "session_end"),
    "duplicate_session_id": ("2,v9,r1,2026-03-05T20:00:00Z,2026-03-05T20:05:00Z,0.8,0,0", "session_id"),
    "missing_value": (",v3,r1,2026-03-02T20:00:00Z,2026-03-02T20:10:00Z,1.0,0,0", "session_id"),
    "out_of_range": ("8,v3,r1,2026-03-02T20:00:00Z,2026-03-02T20:00:05Z,30.0,0,0", "join_seconds"),
}


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_each_problem_is_counted_with_example_rows(tmp_path: Path) -> None:
    rows = GOOD + [row for row, _ in BAD.values()] + [BAD["wrong_type"][0].replace("6,", "9,", 1)]
    v = load_sessions(connect(1), write_csv(tmp_path / "s.csv", rows))
    problems = {p.reason: p for p in v.problems}
    assert set(problems) == set(BAD)
    assert problems["wrong_type"].count == 2 and all(
        p.count == 1 for k, p in problems.items() if k != "wrong_type"
    )
    for reason, (row, column) in BAD.items():
        example = problems[reason].examples[0]
        assert example["row"] == rows.index(row) + 1  # 1-based data row, header not counted
        assert example["column"].startswith(column)
        assert example["values"]["viewer_id"] == row.split(",")[1]  # raw values as read
    assert "first in row 2" in problems["duplicate_session_id"].examples[0]["column"]
    assert v.rows == len(rows) and v.valid == len(GOOD) and v.excluded == len(rows) - len(GOOD)
    assert "6 " not in v.summary() and "7 excluded" in v.summary()


def test_missing_required_columns_exclude_every_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("viewer_id,room_id,session_start\nv1,r1,2026-03-02T20:00:00Z\n")
    v = load_sessions(connect(1), path)
    assert not v.usable and v.valid == 0
    [p] = v.problems
    assert p.reason == "missing_column" and p.count == 1
    assert "session_end" in p.message and p.examples[0]["row"] == 1


def test_command_reports_exclusions_and_exits_2_when_nothing_is_usable(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"viewer_id": [1, 2], "session_start": [0.0, 1.0]}), path)
    args = _args(path, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"no usable sessions \(2 missing column\)"):
        impact_command(args)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "2 used" not in html and "0 used, 2 excluded" in html and "missing column" in html
    doc = json.loads((tmp_path / "out" / "impact.json").read_text())
    assert doc["validation"]["excluded"] == 2


def test_a_small_log_with_bad_rows_still_gets_a_report(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    simulate(good, viewers=400, days=10, rooms=4, rng=np.random.default_rng(3))
    lines = good.read_text().splitlines()
    header = [h.strip('"') for h in lines[0].split(",")]
    rows = lines[1:]

    def set_(i: int, column: str, value: str) -> None:
        parts = rows[i].split(",")
        parts[header.index(column)] = value
        rows[i] = ",".join(parts)

    set_(4, "session_start", "yesterday")
    set_(7, "stall_seconds", "n/a")
    set_(9, "session_end", "2026-03-01 00:00:00Z")
    rows.append(rows[20])
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], *rows]) + "\n")
    assert impact_command(_args(bad, tmp_path / "out")) == 0
    doc = json.loads((tmp_path / "out" / "impact.json").read_text())
    v = doc["validation"]
    assert v["excluded"] == 4 and v["valid"] == len(rows) - 4
    assert {p["reason"]: p["count"] for p in v["problems"]} == {
        "unparseable_timestamp": 1,
        "wrong_type": 1,
        "end_before_start": 1,
        "duplicate_session_id": 1,
    }
    html = (tmp_path / "out" / "report.html").read_text()
    assert f"{len(rows) - 4} used, 4 excluded" in html and "row 5: <code>session_start</code>" in html


def test_parquet_column_of_the_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    pq.write_table(
        pa.table(
            {
                "viewer_id": [1, 2, 3],
                "room_id": ["a", "a", "b"],
                "session_start": pa.array([0, 60_000, 120_000], pa.timestamp("ms", tz="UTC")),
                "session_end": pa.array([30_000, 90_000, None], pa.timestamp("ms", tz="UTC")),
                "join_seconds": [True, None, False],
            }
        ),
        path,
    )
    v = load_sessions(connect(1), path)
    assert {p.reason: p.count for p in v.problems} == {"wrong_type": 2}
    assert v.valid == 1 and v.derived_session_id


def test_probe_as_of_join_takes_the_latest_earlier_result_of_the_room(tmp_path: Path) -> None:
    sessions = write_csv(
        tmp_path / "s.csv",
        [
            "1,v1,r1,2026-03-02T20:10:00Z,2026-03-02T20:20:00Z,1.0,0,0",  # probes at 20:00 and 20:05 -> 20:05
            "2,v2,r1,2026-03-02T19:59:00Z,2026-03-02T20:20:00Z,1.0,0,0",  # before any probe -> none
            "3,v3,r2,2026-03-02T21:00:00Z,2026-03-02T21:20:00Z,1.0,0,0",  # r2 probe is 2 h old -> none
        ],
    )
    probes = tmp_path / "p.jsonl"
    lines = [
        ("r1", "2026-03-02T20:00:00Z", 1.5),
        ("r1", "2026-03-02T20:05:00Z", 2.5),
        ("r1", "2026-03-02T20:30:00Z", 9.0),
        ("r2", "2026-03-02T19:00:00Z", 3.0),
        ("r2", "garbage", 1.0),
    ]
    probes.write_text(
        "".join(
            json.dumps(
                {
                    "target": "x",
                    "labels": {"room": room},
                    "profile": "none",
                    "started_at": at,
                    "success": True,
                    "join": {"total_seconds": j},
                    "video": {"stall_ratio": 0.02},
                }
            )
            + "\n"
            for room, at, j in lines
        )
    )
    con = connect(1)
    v = load_sessions(con, sessions)
    info = load_probes(con, probes, room="label:room")
    assert info["rows"] == 5 and info["used"] == 4 and info["excluded"]["unparseable_started_at"] == 1
    s = link_sessions(con, log_end=v.log_end or 0.0, probes=True, probe_window=900, columns=v.columns)
    join = dict(zip(s.start.tolist(), s.probe["join"].tolist(), strict=True))
    assert join[min(join)] != join[min(join)]  # NaN: the 19:59 session has no earlier probe
    values = sorted(join.values(), key=lambda x: (x != x, x))
    assert values[0] == pytest.approx(2.5) and all(x != x for x in values[1:])
    assert s.sources["stall_ratio"] == "client+probe"


def _args(path: Path, out: Path) -> argparse.Namespace:
    return argparse.Namespace(
        sessions=str(path),
        probes=None,
        out=str(out),
        json=False,
        seed=0,
        log_end=None,
        visit_gap=1800.0,
        stall_threshold=0.01,
        watch_loss_budget=0.05,
        controls=None,
        probe_room="target",
        probe_window=900.0,
        qoe_source="auto",
        truth=None,
        jackknife_groups=5,
        threads=1,
        memory_limit="1GB",
    )


OUT_OF_RANGE = {
    "1e308": "5,v3,r1,1e308,1e308,1.0,0,0",
    "NaN": "6,v3,r1,nan,2026-03-02T20:10:00Z,1.0,0,0",
    "infinite end": "7,v3,r1,2026-03-02T20:00:00Z,inf,1.0,0,0",
    "before 1970": "8,v3,r1,-1,5,1.0,0,0",
    "Parquet-sized": "9,v3,r1,1772481600,1e20,1.0,0,0",
}


@pytest.mark.parametrize("derived", [False, True], ids=["session_id", "derived id"])
def test_timestamps_that_are_no_time_are_counted_not_crashed_on(tmp_path: Path, derived: bool) -> None:
    # NaN and 1e308 parse as numbers; before they were excluded, they reached the hour of day
    # (a BIGINT cast) and the derived session id, and DuckDB stopped the whole analysis.
    rows = GOOD + list(OUT_OF_RANGE.values())
    path = write_csv(tmp_path / "s.csv", rows)
    if derived:
        lines = path.read_text().splitlines()
        path.write_text("\n".join(line.split(",", 1)[1] for line in lines) + "\n")
    assert impact_command(_args(path, tmp_path / "out")) == 0
    v = json.loads((tmp_path / "out" / "impact.json").read_text())["validation"]
    assert (v["rows"], v["valid"]) == (len(rows), len(GOOD))
    [problem] = v["problems"]
    assert problem["reason"] == "unparseable_timestamp" and problem["count"] == len(OUT_OF_RANGE)
    assert [e["row"] for e in problem["examples"]] == [len(GOOD) + i for i in range(1, 6)]
    assert v["log_end"] == pytest.approx(1772481600 + 24 * 3600 + 300)  # the latest valid time


def test_numbers_beyond_single_precision_are_the_wrong_type(tmp_path: Path) -> None:
    header = HEADER + ",chat_echo_seconds,order_value"
    good = [row + ",0.2,1" for row in GOOD]
    bad = GOOD[0].replace("1,", "5,", 1) + ",1e308,1"
    path = tmp_path / "s.csv"
    path.write_text(
        "\n".join([header, *good, bad, bad.replace("5,", "6,", 1).replace(",1e308,1", ",0.2,-1e39")])
    )
    assert impact_command(_args(path, tmp_path / "out")) == 0
    v = json.loads((tmp_path / "out" / "impact.json").read_text())["validation"]
    assert {p["reason"]: p["count"] for p in v["problems"]} == {"wrong_type": 2}
    assert [e["column"] for p in v["problems"] for e in p["examples"]] == ["chat_echo_seconds", "order_value"]


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e308", "-5", "10000-01-01T00:00:00Z"])
def test_a_log_end_that_is_no_time_is_refused(cli, tmp_path: Path, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"^--log-end: expected an ISO 8601 time or Unix seconds \(1970"):
        parse_time(text)
    if text == "nan":
        path = write_csv(tmp_path / "s.csv", GOOD)
        done = cli("impact", str(path), "--out", str(tmp_path / "out"), "--log-end", text)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines() == [
            "qoe impact: error: --log-end: expected an ISO 8601 time or Unix seconds (1970 to 9999), "
            "got 'nan'"
        ]
    with pytest.raises(ConfigError, match="log end must be Unix seconds from 1970 to 9999, got nan"):
        Options(log_end=float("nan")).check()
    assert parse_time("2026-03-02T20:00:00Z") == 1772481600.0


def test_a_file_name_with_pattern_characters_is_that_file(tmp_path: Path) -> None:
    # DuckDB reads 'glob[1].csv' as a pattern matching glob1.csv: the wrong log, silently.
    literal = write_csv(tmp_path / "glob[1].csv", GOOD[:2])
    write_csv(tmp_path / "glob1.csv", GOOD)
    probes = tmp_path / "p[1].jsonl"
    probes.write_text(
        json.dumps({"target": "r1", "started_at": "2026-03-02T19:00:00Z", "success": True}) + "\n"
    )
    (tmp_path / "p1.jsonl").write_text(probes.read_text() * 3)
    con = connect(1)
    v = load_sessions(con, literal)
    assert (v.source, v.rows, v.valid) == (str(literal), 2, 2)
    assert load_probes(con, probes)["rows"] == 1
    with pytest.raises(ConfigError, match=r"glob\*\.csv: no such file"):
        load_sessions(connect(1), tmp_path / "glob*.csv")


PICTURE_HEADER = HEADER + ",video_height,bitrate_kbps"
PICTURE_GOOD = [
    GOOD[0] + ",720,2500",
    GOOD[1] + ",360,800.5",
    GOOD[2] + ",,",  # no first frame: no picture either
    GOOD[3] + ",1080,",  # a height without a bitrate is a height
    "10,v4,r1,2026-03-02T20:00:00Z,2026-03-02T20:10:00Z,1.0,0,0,90,0",  # the range's ends are in it
    "11,v4,r1,2026-03-03T20:00:00Z,2026-03-03T20:10:00Z,1.0,0,0,4320,90000",
]
PICTURE_BAD = {
    "720.5,2500": ("wrong_type", "video_height"),  # a fraction of a pixel, as in a count
    "720p,2500": ("wrong_type", "video_height"),
    "720,fast": ("wrong_type", "bitrate_kbps"),
    "720,inf": ("wrong_type", "bitrate_kbps"),
    "0,2500": ("out_of_range", "video_height"),
    "-360,2500": ("out_of_range", "video_height"),
    "10000,2500": ("out_of_range", "video_height"),
    "720,-1": ("out_of_range", "bitrate_kbps"),
}


def test_bad_picture_figures_are_counted_with_their_reason(tmp_path: Path) -> None:
    bad = [
        f"{20 + i},v5,r1,2026-03-02T20:00:00Z,2026-03-02T20:10:00Z,1.0,0,0,{cells}"
        for i, cells in enumerate(PICTURE_BAD)
    ]
    rows = PICTURE_GOOD + bad
    path = tmp_path / "s.csv"
    path.write_text("\n".join([PICTURE_HEADER, *rows]) + "\n")
    v = load_sessions(connect(1), path)
    assert (v.rows, v.valid) == (len(rows), len(PICTURE_GOOD))
    problems = {p.reason: p for p in v.problems}
    assert {r: p.count for r, p in problems.items()} == {"wrong_type": 4, "out_of_range": 4}
    for row, (cells, (reason, column)) in zip(bad, PICTURE_BAD.items(), strict=True):
        [example] = [e for e in problems[reason].examples if e["row"] == rows.index(row) + 1]
        assert example["column"] == column
        assert example["values"]["video_height"] == cells.split(",")[0]  # the raw value, as read
    assert "90..4320" in problems["out_of_range"].message


def test_a_log_without_picture_columns_gets_a_note_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    note = "no video_height or bitrate_kbps column: picture-quality (SD vs HD) analyses skipped"
    assert impact_command(_args(write_csv(tmp_path / "s.csv", GOOD), tmp_path / "out")) == 0
    assert f"note: {note}" in capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "impact.json").read_text())
    assert note in doc["notes"]
    assert not [c for c in doc["contrasts"] if c["key"].endswith("_sd")]
    assert not [b for b in doc["bands"] if b["name"].startswith("picture")]
    assert note in (tmp_path / "out" / "report.html").read_text()
    # The same tiny log with the columns: a picture band, no note, and still no crash.
    path = tmp_path / "p.csv"
    path.write_text("\n".join([PICTURE_HEADER, *PICTURE_GOOD]) + "\n")
    assert impact_command(_args(path, tmp_path / "with")) == 0
    doc = json.loads((tmp_path / "with" / "impact.json").read_text())
    assert not any("picture" in n or "video_height" in n for n in doc["notes"])
    [band] = [b for b in doc["bands"] if b["name"] == "picture height"]
    assert band["sessions"] == [2, 0, 1, 2]  # 90 and 360; none; 720; 1080 and 4320 (no frame: none)


def test_a_temp_dir_that_is_no_folder_is_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(tmp_path / "s.csv", GOOD)
    done = cli("impact", str(path), "--out", str(tmp_path / "out"), "--temp-dir", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"qoe impact: error: --temp-dir {tmp_path / 'nowhere'}: no such folder"
    ]
    assert not (tmp_path / "out").exists()
    done = cli("impact", str(path), "--out", str(tmp_path / "out"), "--temp-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("qoe-impact-")] == []  # cleaned up
