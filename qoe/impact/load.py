"""Read a session log into DuckDB, validate every row, and keep the valid ones as table ``sessions``.

Nothing is dropped silently: each excluded row has exactly one reason (the first rule of
:data:`~qoe.impact.schema.REASONS` it fails), and :class:`Validation` carries the count and up
to five example rows (their 1-based data row number, header not counted, and raw values) per
reason. A missing required column excludes every row and makes the log unusable.

Table ``sessions`` (one row per valid session; times are Unix seconds, UTC):
``row, sid, viewer, room, start, "end" (NULL: open at the log's end), join_s (NULL: no first
frame), stall_s, stall_n, av, chat, height (video_height), kbps (bitrate_kbps), orders, value,
device, network, region, app``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from qoe.errors import ConfigError

from .schema import COLUMNS, HEIGHT_RANGE, REASONS, REQUIRED, Column

__all__ = ["Problem", "Validation", "connect", "literal", "load_sessions", "partitions", "quote"]

EXAMPLES = 5
NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
    "REAL",
)
TEMPORAL = ("TIMESTAMP", "DATE")
TIMESTAMP_RANGE = (0.0, 253402300800.0)
"""Unix seconds a session time may hold: 1970-01-01 up to the end of 9999 (UTC). Outside it a
value is excluded as an unparseable timestamp, and so is ``--log-end``."""
FLOAT_LIMIT = 3.4028234e38
"""Largest magnitude a number column may hold: the analysis keeps figures in single precision,
where anything larger is infinite; such a value is excluded as the wrong type."""
GLOB = re.compile(r"[*?\[\]{}]")
"""Characters DuckDB's readers expand as a file pattern."""


@dataclass
class Problem:
    reason: str
    count: int
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)
    """``{"row": 1-based data row, "column": the offending column, "values": {column: raw text}}``."""


@dataclass
class Validation:
    """What was read, what was excluded and why."""

    source: str
    format: str
    rows: int
    valid: int
    problems: list[Problem]
    columns: list[str]
    missing_optional: list[str]
    derived_session_id: bool
    log_start: float | None = None
    log_end: float | None = None
    log_end_from: str = ""

    @property
    def excluded(self) -> int:
        return self.rows - self.valid

    @property
    def usable(self) -> bool:
        return self.valid > 0 and not any(p.reason == "missing_column" for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["excluded"] = self.excluded
        d["usable"] = self.usable
        return d

    def summary(self) -> str:
        """One line: rows read, kept and excluded by reason."""
        parts = ", ".join(f"{p.count} {p.reason.replace('_', ' ')}" for p in self.problems)
        text = f"{self.source}: {self.rows} rows, {self.valid} used, {self.excluded} excluded"
        return text + (f" ({parts})" if parts else "")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(threads: int | None = None, memory_limit: str | None = None, temp_dir: str | None = None) -> Any:
    """A DuckDB connection in UTC with bounded threads and memory; spills to ``temp_dir``."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if temp_dir:
        con.execute(f"SET temp_directory = '{temp_dir}'")
    con.execute("SET preserve_insertion_order = false")
    # Its bar would go to stdout, where `qoe impact --json` writes; the program shows progress.
    con.execute("SET enable_progress_bar = false")
    return con


@contextlib.contextmanager
def literal(path: Path) -> Iterator[str]:
    """``path`` as a DuckDB reader must be given it to read exactly that one file.

    DuckDB expands ``*``, ``?`` and ``[...]`` in a file name as a pattern: ``glob[1].csv``
    read ``glob1.csv``. A name holding them is read through a link with a plain name, so the
    file named is the file read; no input of ``qoe impact`` is ever a pattern."""
    if not GLOB.search(str(path)):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="qoe-impact-") as folder:
        link = Path(folder) / f"input{path.suffix.lower()}"
        try:
            link.symlink_to(path.resolve())
        except OSError as exc:
            raise ConfigError(
                f"{path}: cannot read a file whose name holds * ? [ ] {{ }} here ({exc.strerror or exc}); "
                "rename it"
            ) from exc
        yield str(link)


def _source(con: Any, path: Path, readable: str) -> tuple[str, str]:
    """Register the file as view ``src`` with a 1-based ``__row``; return (format, row expression).
    ``readable`` is the name DuckDB reads it by (see :func:`literal`)."""
    p = readable.replace("'", "''")
    if path.is_dir():
        # Partitions (hive-style key=value folders become columns), read in parallel by DuckDB;
        # rows are numbered through the files in name order, as if they were one file.
        files = partitions(path)
        names = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        counts = con.execute(
            f"SELECT file_name, any_value(num_rows) FROM parquet_file_metadata([{names}]) GROUP BY 1"
        ).fetchall()
        rows = dict(counts)
        offsets, at = [], 0
        for f in files:
            offsets.append((str(f), at))
            at += int(rows[str(f)])
        con.execute("CREATE OR REPLACE TEMP TABLE __offsets (f VARCHAR, o BIGINT)")
        con.executemany("INSERT INTO __offsets VALUES (?, ?)", offsets)
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW src AS "
            f"SELECT r.file_row_number + o.o + 1 AS __row, r.* EXCLUDE (file_row_number, filename) "
            f"FROM read_parquet([{names}], file_row_number = true, filename = true, "
            f"hive_partitioning = true, union_by_name = true) r JOIN __offsets o ON r.filename = o.f"
        )
        return "parquet", "__row"
    if path.suffix.lower() == ".csv":
        con.execute("SET preserve_insertion_order = true")  # rowid must follow the file's order
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __raw AS "
            f"SELECT * FROM read_csv('{p}', all_varchar = true, header = true)"
        )
        con.execute("SET preserve_insertion_order = false")
        con.execute("CREATE OR REPLACE TEMP VIEW src AS SELECT rowid + 1 AS __row, * FROM __raw")
        return "csv", "rowid + 1"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW src AS "
        f"SELECT file_row_number + 1 AS __row, * EXCLUDE (file_row_number) "
        f"FROM read_parquet('{p}', file_row_number = true)"
    )
    return "parquet", "file_row_number + 1"


def _value(c: Column, typ: str | None) -> tuple[str, str]:
    """SQL for the typed value of column ``c`` stored as ``typ``, and for "present but bad"."""
    q = quote(c.name)
    if typ is None:
        return ("'unknown'" if c.kind == "category" else "NULL"), "false"
    base = typ.split("(")[0].upper()
    text = base == "VARCHAR"
    if c.kind == "id":
        return (f"NULLIF(trim({q}), '')" if text else q), "false"
    if c.kind == "category":
        return f"coalesce(NULLIF(trim(CAST({q} AS VARCHAR)), ''), 'unknown')", "false"
    if c.kind == "timestamp":
        # NaN, infinity and 1e308 parse as numbers but are no time: out of the range, they
        # are excluded (and counted) before any arithmetic could overflow on them.
        lo, hi = TIMESTAMP_RANGE
        present = f"{q} IS NOT NULL"
        if base.startswith(TEMPORAL):
            v = f"epoch(CAST({q} AS TIMESTAMPTZ))"
        elif base in NUMERIC:
            v = f"CAST({q} AS DOUBLE)"
        elif text:
            v = f"coalesce(epoch(TRY_CAST(trim({q}) AS TIMESTAMPTZ)), TRY_CAST(trim({q}) AS DOUBLE))"
            present += f" AND trim({q}) <> ''"
        else:
            return "NULL", f"({q} IS NOT NULL)"
        outside = f"({v}) IS NULL OR NOT isfinite({v}) OR ({v}) < {lo:.0f} OR ({v}) >= {hi:.0f}"
        return v, f"({present} AND ({outside}))"
    if base in NUMERIC:
        v = f"CAST({q} AS DOUBLE)"
    elif text:
        v = f"TRY_CAST(NULLIF(trim({q}), '') AS DOUBLE)"
    else:
        return "NULL", f"({q} IS NOT NULL)"
    present = f"NULLIF(trim({q}), '') IS NOT NULL" if text else f"{q} IS NOT NULL"
    # Beyond FLOAT_LIMIT a figure would be infinite in the analysis's single-precision columns.
    wrong = f"({v}) IS NULL OR NOT isfinite({v}) OR abs({v}) > {FLOAT_LIMIT:.8g}"
    if c.kind == "integer":
        wrong += f" OR ({v}) <> round({v})"
    return v, f"({present} AND ({wrong}))"


OUT = {
    "viewer_id": "viewer",
    "room_id": "room",
    "session_start": "start",
    "session_end": '"end"',
    "join_seconds": "join_s",
    "stall_seconds": "stall_s",
    "stall_count": "stall_n",
    "av_offset_seconds": "av",
    "chat_echo_seconds": "chat",
    "video_height": "height",
    "bitrate_kbps": "kbps",
    "order_count": "orders",
    "order_value": "value",
    "products_viewed": "b_products_viewed",
    "chat_messages": "b_chat_messages",
    "shares": "b_shares",
    "coupon_grabs": "b_coupon_grabs",
    "device": "device",
    "network": "network",
    "region": "region",
    "app_version": "app",
    "arm": "arm",
}


def load_sessions(
    con: Any, path: str | Path, *, log_end: float | None = None, extra: Sequence[str] = ()
) -> Validation:
    """Validate ``path`` (Parquet, or CSV by its .csv suffix) and create table ``sessions``.

    ``extra``: columns outside the schema to keep as categories (``x_0``, ``x_1``, ... in this
    order; empty = ``unknown``), e.g. for ``--segment-by``; ConfigError naming the first the
    log lacks, before any row is read."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    if path.is_dir():
        return _load(con, path, "", log_end, list(extra))
    with literal(path) as readable:
        return _load(con, path, readable, log_end, list(extra))


def partitions(folder: Path) -> list[Path]:
    """The Parquet files under ``folder``, in name order (the order their rows are numbered in);
    ConfigError when there are none, or when a name would be read as a pattern."""
    files = sorted(f for f in folder.rglob("*.parquet") if f.is_file())
    if not files:
        raise ConfigError(f"{folder}: a directory with no *.parquet file under it")
    for f in files:
        if GLOB.search(str(f)):
            raise ConfigError(
                f"{f}: a partition whose name holds * ? [ ] {{ }} would be read as a pattern; rename it"
            )
    return files


def _load(con: Any, path: Path, readable: str, log_end: float | None, extra: list[str]) -> Validation:
    try:
        fmt, _ = _source(con, path, readable)
        described = con.execute("DESCRIBE SELECT * FROM src").fetchall()
    except duckdb.Error as exc:
        raise ConfigError(
            f"{path}: cannot read as {path.suffix.lstrip('.') or 'parquet'}: {str(exc).splitlines()[0]}"
        ) from exc
    types = {name: typ for name, typ, *_ in described if name != "__row"}
    for name in extra:
        if name not in types:
            raise ConfigError(
                f"--segment-by {name}: {path} has no column {name!r} "
                f"(its columns: {', '.join(types) or 'none'})"
            )
    rows = con.execute("SELECT count(*) FROM src").fetchone()[0]
    missing = [c for c in REQUIRED if c not in types]
    found = list(types)
    optional_missing = [
        c.name for c in COLUMNS if not c.required and c.name not in types and c.name != "session_id"
    ]
    if missing:
        sample = _examples(con, "SELECT __row FROM src ORDER BY __row LIMIT 3", found)
        for e in sample:
            e["column"] = ", ".join(missing)
        problem = Problem(
            "missing_column",
            rows,
            f"required column(s) {', '.join(missing)} missing; found: {', '.join(found) or 'none'}",
            sample,
        )
        return Validation(
            str(path), fmt, rows, 0, [problem], found, optional_missing, "session_id" not in types
        )

    vals, bads = {}, {}
    for c in COLUMNS:
        vals[c.name], bads[c.name] = _value(c, types.get(c.name))
    derived = "session_id" not in types
    sid = (
        # Only for rows kept: an excluded row's start may be out of BIGINT's range.
        "CASE WHEN reason IS NULL THEN concat_ws('/', CAST(viewer AS VARCHAR), CAST(room AS VARCHAR), "
        "CAST(round(start * 1000) AS BIGINT)) END"
        if derived
        else "sid_raw"
    )
    vals["room_id"] = f"CAST({vals['room_id']} AS VARCHAR)"  # probes name rooms as text
    select = [f"{vals[c.name]} AS {OUT[c.name]}" for c in COLUMNS if c.name in OUT]
    select.append(f"{vals['session_id']} AS sid_raw")
    select += [
        f"coalesce(NULLIF(trim(CAST({quote(name)} AS VARCHAR)), ''), 'unknown') AS x_{i}"
        for i, name in enumerate(extra)
    ]
    for c in COLUMNS:
        if bads[c.name] != "false":
            select.append(f"{bads[c.name]} AS {quote('bad_' + c.name)}")
    ts_bad = [f"{quote('bad_' + n)}" for n in ("session_start", "session_end") if bads[n] != "false"]
    num_bad = [c.name for c in COLUMNS if c.kind in ("number", "integer") and bads[c.name] != "false"]
    no_start = "(start IS NULL AND NOT coalesce(" + (ts_bad[0] if ts_bad else "false") + ", false))"
    no_sid = "false" if derived else "sid_raw IS NULL"
    reason = [f"WHEN viewer IS NULL OR room IS NULL OR {no_start} OR {no_sid} THEN 'missing_value'"]
    detail = [
        f"WHEN viewer IS NULL THEN 'viewer_id' WHEN room IS NULL THEN 'room_id' "
        f"WHEN {no_start} THEN 'session_start' WHEN {no_sid} THEN 'session_id'"
    ]
    for n in ("session_start", "session_end"):
        if bads[n] != "false":
            reason.append(f"WHEN {quote('bad_' + n)} THEN 'unparseable_timestamp'")
            detail.append(f"WHEN {quote('bad_' + n)} THEN '{n}'")
    for n in num_bad:
        reason.append(f"WHEN {quote('bad_' + n)} THEN 'wrong_type'")
        detail.append(f"WHEN {quote('bad_' + n)} THEN '{n}'")
    reason.append("WHEN \"end\" < start THEN 'end_before_start'")
    detail.append("WHEN \"end\" < start THEN 'session_end'")
    ranges = {
        "join_seconds": 'join_s < 0 OR join_s > "end" - start + 1',
        "stall_seconds": 'stall_s < 0 OR stall_s > "end" - start - coalesce(join_s, 0) + 1',
        "stall_count": "stall_n < 0",
        "chat_echo_seconds": "chat < 0",
        "video_height": f"height < {HEIGHT_RANGE[0]} OR height > {HEIGHT_RANGE[1]}",
        "bitrate_kbps": "kbps < 0",
        "order_count": "orders < 0",
        "order_value": "value < 0",
        **{n: f"b_{n} < 0" for n in ("products_viewed", "chat_messages", "shares", "coupon_grabs")},
    }
    for n, cond in ranges.items():
        if n in types:
            reason.append(f"WHEN {cond} THEN 'out_of_range'")
            detail.append(f"WHEN {cond} THEN '{n}'")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE __checked AS
        WITH typed AS (SELECT __row, {", ".join(select)} FROM src),
        reasoned AS (
            SELECT *, CASE {" ".join(reason)} END AS reason, CASE {" ".join(detail)} END AS detail FROM typed
        ),
        keyed AS (SELECT * EXCLUDE (sid_raw), {sid} AS sid FROM reasoned)
        SELECT * EXCLUDE (reason, detail),
            CASE WHEN reason IS NULL AND row_number() OVER dup > 1 THEN 'duplicate_session_id'
                 ELSE reason END AS reason,
            CASE WHEN reason IS NULL AND row_number() OVER dup > 1
                 THEN 'session_id (first in row ' || min(__row) OVER dup || ')' ELSE detail END AS detail
        FROM keyed WINDOW dup AS (PARTITION BY reason IS NULL, sid ORDER BY __row)"""
    )
    problems = []
    counts = dict(
        con.execute("SELECT reason, count(*) FROM __checked WHERE reason IS NOT NULL GROUP BY 1").fetchall()
    )
    for r in REASONS:
        if r in counts:
            examples = _examples(
                con,
                f"SELECT __row, detail FROM __checked WHERE reason = '{r}' ORDER BY __row LIMIT {EXAMPLES}",
                found,
            )
            problems.append(Problem(r, counts[r], REASONS[r], examples))
    valid = rows - sum(counts.values())
    cols = [
        "__row AS row",
        "sid",
        "viewer",
        "room",
        "start",
        '"end"',
        "join_s",
        "stall_s",
        "stall_n",
        "av",
        "chat",
        "height",
        "kbps",
        "coalesce(orders, 0) AS orders",
        "coalesce(value, 0) AS value",
        "b_products_viewed",
        "b_chat_messages",
        "b_shares",
        "b_coupon_grabs",
        "device",
        "network",
        "region",
        "app",
        "arm",
        *(f"x_{i}" for i in range(len(extra))),
    ]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE sessions AS "
        f"SELECT {', '.join(cols)} FROM __checked WHERE reason IS NULL"
    )
    con.execute("DROP TABLE __checked")
    if fmt == "csv":
        con.execute("DROP TABLE __raw")
    v = Validation(str(path), fmt, rows, valid, problems, found, optional_missing, derived)
    if valid:
        first, last = con.execute(
            'SELECT min(start), max(greatest(start, coalesce("end", start))) FROM sessions'
        ).fetchone()
        v.log_start = float(first)
        if log_end is not None:
            v.log_end, v.log_end_from = float(log_end), "option"
        elif (meta := _parquet_log_end(path) if fmt == "parquet" else None) is not None and meta >= last:
            v.log_end, v.log_end_from = meta, "parquet metadata"
        else:
            v.log_end, v.log_end_from = float(last), "latest timestamp"
    return v


def _examples(con: Any, query: str, found: list[str]) -> list[dict[str, Any]]:
    """Rows picked by ``query`` (``__row`` and optionally ``detail``), with raw values from ``src``."""
    picked = con.execute(query).fetchall()
    if not picked:
        return []
    rows = ", ".join(str(int(p[0])) for p in picked)
    cols = ", ".join(f"CAST({quote(c)} AS VARCHAR) AS {quote(c)}" for c in found)
    raw = {
        int(r[0]): r[1:]
        for r in con.execute(f"SELECT __row, {cols} FROM src WHERE __row IN ({rows})").fetchall()
    }
    out = []
    for p in picked:
        values = dict(zip(found, raw.get(int(p[0]), ()), strict=False))
        out.append({"row": int(p[0]), "column": p[1] if len(p) > 1 else "", "values": values})
    return out


def _parquet_log_end(path: Path) -> float | None:
    """``log_end`` from the file's key-value metadata (the simulator writes it), if any; for
    partitions, the latest any of them holds."""
    import pyarrow.parquet as pq

    if path.is_dir():
        ends = [e for f in partitions(path) if (e := _parquet_log_end(f)) is not None]
        return max(ends) if ends else None
    try:
        meta = pq.read_schema(path).metadata or {}
        text = meta.get(b"log_end")
        return dt.datetime.fromisoformat(text.decode().replace("Z", "+00:00")).timestamp() if text else None
    except (OSError, ValueError):
        return None
