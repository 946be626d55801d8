"""Where logs live: a directory of Parquet partitions reads as the one file they add up to, and
any category column of the log, in the schema or not, can be a segment.

The partitions are hive-style (``date=YYYY-MM-DD/part-K.parquet``), two per day; the single file
is the same rows in the partitions' name order, with ``date`` as a column. The figures must be
the same to the last digit: the rows are numbered through the files in name order, so matching
and the jackknife draw exactly the same sessions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from qoe.cli.analytics import Steps
from qoe.errors import ConfigError
from qoe.impact import Options, analyse
from qoe.impact.report import clean
from sim.audience import simulate


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(single file, directory of partitions) holding the same sessions in the same order."""
    out = tmp_path_factory.mktemp("partitions")
    simulate(out / "s.parquet", viewers=2500, days=10, rooms=6, rng=np.random.default_rng(5))
    table = pq.read_table(out / "s.parquet")
    meta = table.schema.metadata
    day = pc.strftime(table["session_start"], format="%Y-%m-%d")
    table = table.append_column("date", day)
    pieces = []
    for d in sorted(set(day.to_pylist())):
        part = table.filter(pc.equal(table["date"], d))
        half = part.num_rows // 2
        for k, piece in enumerate((part.slice(0, half), part.slice(half))):
            path = out / "sessions" / f"date={d}" / f"part-{k}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(piece.drop_columns(["date"]).replace_schema_metadata(meta), path)
            pieces.append(piece)
    single = out / "single.parquet"
    pq.write_table(pa.concat_tables(pieces).replace_schema_metadata(meta), single)
    return single, out / "sessions"


def figures(path: Path, **options: Any) -> dict[str, Any]:
    doc = clean(analyse(path, np.random.default_rng(0), Options(threads=2, **options)).to_dict())
    for key in ("source", "timings_seconds"):
        doc.pop(key)
    doc["validation"].pop("source")
    return doc


def test_partitions_give_the_figures_of_the_single_file(logs: tuple[Path, Path]) -> None:
    single, folder = logs
    assert len(list(folder.rglob("*.parquet"))) >= 20
    one, parts = figures(single, segment_by=("region",)), figures(folder, segment_by=("region",))
    assert parts["validation"]["columns"][-1] == "date"  # the folder names' key, as a column
    assert parts["validation"]["log_end_from"] == "parquet metadata"
    assert json.dumps(parts, sort_keys=True) == json.dumps(one, sort_keys=True)


def test_a_partition_column_and_any_other_column_can_be_a_segment(logs: tuple[Path, Path]) -> None:
    _, folder = logs
    doc = figures(folder, segment_by=("date", "device"))
    dates = sorted(p.name.split("=", 1)[1] for p in folder.iterdir())
    by_date = [g for g in doc["segments"] if g["dimension"] == "date"]
    assert [g["level"] for g in by_date] == dates
    assert sum(g["sessions"] for g in by_date) == doc["counts"]["sessions"]
    assert {a["dimension"] for a in doc["attribution"]} == {"date", "device"}


def test_a_missing_segment_column_is_named_in_one_line(logs: tuple[Path, Path]) -> None:
    single, _ = logs
    with pytest.raises(ConfigError) as caught:
        analyse(single, np.random.default_rng(0), Options(threads=1, segment_by=("region", "planet")))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"--segment-by planet: {single} has no column 'planet' (its columns: session_id,"
    )
    with pytest.raises(ConfigError, match="--segment-by session_start: a timestamp column, not a category"):
        Options(segment_by=("session_start",)).check()


def test_a_folder_without_parquet_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"a directory with no \*\.parquet file under it"):
        analyse(tmp_path, np.random.default_rng(0), Options(threads=1))


class Stream:
    def __init__(self, tty: bool) -> None:
        self.text, self.tty = "", tty

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_is_a_rewritten_line_on_a_terminal_and_plain_lines_in_a_log(tty: bool) -> None:
    stream = Stream(tty)
    steps = Steps("qoe impact", every=0.0, after=0.0, stream=stream)  # type: ignore[arg-type]
    steps("reading and validating the log")
    steps("contrasts")
    steps.close()
    if tty:
        assert "\n" not in stream.text and stream.text.count("\r") >= 3
        assert "qoe impact: contrasts (0 s)" in stream.text and stream.text.endswith("\r")
    else:
        assert stream.text.splitlines() == [
            "qoe impact: reading and validating the log (0 s)",
            "qoe impact: contrasts (0 s)",
        ]
    quiet = Stream(tty)
    Steps("qoe impact", every=0.0, after=5.0, stream=quiet)("early")  # type: ignore[arg-type]
    assert quiet.text == ""  # a quick run (or an early error) prints no progress
