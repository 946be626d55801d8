"""Linking in DuckDB: visits, return visits and repurchases from the log itself, probe QoE by an
as-of join, and the per-session arrays the estimators take.

Definitions (times in seconds, ``D`` = 86400):

- A *visit* is a run of one viewer's sessions less than ``visit_gap`` apart (default 30 min);
  its *last* session carries the visit's QoE (what a viewer last saw before the gap is what
  they come back, or not, after). Only visit-ending sessions are units of the return and repurchase analyses.
- ``return_k``: the viewer's next session starts within ``k`` days after this session's end.
- ``repurchase_k``: a later session of the viewer with an order starts within ``k`` days.
  Analysed among *customers* (viewers with an order in this or an earlier session).
- Both are undefined (``-1``) unless ``end + k D <= log_end``: a session too close to the
  log's end has not had ``k`` days to show a return, and is not counted as "no return".
- Probe QoE: each session takes the latest probe result of its room that started at or before
  the session (``ASOF JOIN`` on room and time), at most ``probe_window`` seconds old, and of the
  probe profile equal to the session's network when the probes have such profiles. The room is
  the probe's ``target``, or the label ``labels.NAME`` with ``probe_room="label:NAME"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qoe.errors import ConfigError

from .schema import BEHAVIOUR

__all__ = ["RETURN_DAYS", "Sessions", "link_sessions", "load_probes"]

RETURN_DAYS = (1, 7, 30)
REPEAT, LAPSING, HIGH_VALUE = 1, 2, 4
"""Bits of :attr:`Sessions.tier`."""
DAY = 86400.0
CATEGORIES = ("room", "device", "network", "region", "app", "arm")
BATCH_ROWS = 1 << 20
"""Rows per batch streamed from DuckDB into the arrays: the result is never held twice."""
FETCH_MEMORY = "1GB"
"""DuckDB's memory limit (at most) while the arrays fill: the sort behind the fixed row order
spills to disk, and the memory goes to the arrays, which cannot spill."""


@dataclass
class Sessions:
    """Per-session arrays, shape (n,) each; NaN where a figure is absent, -1 where undefined."""

    n: int
    viewer: np.ndarray
    """int32 dense viewer code (for clustering)."""
    codes: dict[str, np.ndarray]
    """Codes of room, device, network, region, app, arm and hour (UTC hour of day), and of each
    extra category column ``column:NAME`` asked for; the narrowest integer type that holds them."""
    levels: dict[str, list[str]]
    start: np.ndarray
    """Unix seconds."""
    is_open: np.ndarray
    """bool: no session_end, still open at the log's end (censored)."""
    joined: np.ndarray
    """int8: 1 first frame shown, 0 never shown, -1 unknown (no join_seconds column)."""
    wait: np.ndarray
    """Seconds until the first frame (joined) or until the viewer left without one, for the
    sessions whose ``join`` is NaN only, in order (for the rest it is ``join``): read it whole
    with :meth:`waits`. Four bytes a session saved; (n,) whole when every ``join`` is NaN or
    ``join`` was replaced by the probes'."""
    join: np.ndarray
    watch: np.ndarray
    """Seconds from first frame to end, or to the log's end when open (then censored)."""
    stall_ratio: np.ndarray
    av: np.ndarray
    chat: np.ndarray
    height: np.ndarray
    """Picture height the viewer mostly watched, pixels (``video_height``)."""
    bitrate: np.ndarray
    """Mean received video bitrate, kbit/s (``bitrate_kbps``)."""
    any_orders: bool
    """Some session of the log has an order (else no repurchase analysis)."""
    visit_end: np.ndarray
    customer: np.ndarray
    returned: dict[int, np.ndarray] = field(default_factory=dict)
    rebought: dict[int, np.ndarray] = field(default_factory=dict)
    probe: dict[str, np.ndarray] = field(default_factory=dict)
    tier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    """uint8 flags of the viewer tiers (:mod:`.segments`), one bit each: :data:`REPEAT` (an
    earlier session in the log), :data:`LAPSING` (at least ``lapsing_seconds`` since it) and
    :data:`HIGH_VALUE` (order value over the earlier sessions above 0 and at least
    ``high_value``): one byte a session in place of two figures of four."""
    high_value: float = math.inf
    """The order value from which a session is a high-value viewer's (``inf``: none is)."""
    behaviour: dict[str, np.ndarray] = field(default_factory=dict)
    """Per behaviour column the log has (``products_viewed``, ...): the count, NaN where empty."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where each QoE figure came from: client, probe, or client+probe (client where present)."""
    parked: dict[str, Path] = field(default_factory=dict)
    """Arrays moved to files by :meth:`park`, by name: reading one before :meth:`unpark` fails."""

    def __getattribute__(self, name: str) -> Any:
        if name in object.__getattribute__(self, "parked"):
            raise RuntimeError(f"Sessions.{name} is parked in a file: unpark it before reading it")
        return object.__getattribute__(self, name)

    def _slot(self, name: str) -> tuple[dict[Any, np.ndarray] | None, Any]:
        """Where ``name`` lives: an attribute (None, name), or an entry of a dict field such as
        ``returned[30]`` or ``behaviour[shares]`` (the dict, its key)."""
        m = re.fullmatch(r"(returned|rebought|behaviour)\[(\w+)\]", name)
        if m is None:
            if not isinstance(object.__getattribute__(self, name), np.ndarray):
                raise ValueError(f"Sessions.{name} is not an array")
            return None, name
        table = object.__getattribute__(self, m.group(1))
        return table, (int(m.group(2)) if m.group(1) != "behaviour" else m.group(2))

    def park(self, folder: str | Path, names: Sequence[str]) -> None:
        """Move the arrays ``names`` (``start``, ``returned[30]``, ...; absent dict entries are
        skipped) to ``.npy`` files in ``folder`` until a step that reads them unparks them: at
        100 M sessions, the arrays no estimator reads for a while are gigabytes the estimators
        that run meanwhile can use."""
        for name in names:
            if name in self.parked:
                continue
            table, key = self._slot(name)
            if table is not None and key not in table:
                continue
            path = Path(folder) / f"{name}.npy"
            np.save(path, table[key] if table is not None else object.__getattribute__(self, key))
            if table is not None:
                del table[key]
            else:
                object.__setattr__(self, key, np.zeros(0))
            self.parked[name] = path

    def unpark(self, names: Sequence[str]) -> None:
        """Read parked arrays back (the others of ``names`` are left as they are)."""
        for name in names:
            path = self.parked.pop(name, None)
            if path is None:
                continue
            values = np.load(path)
            path.unlink()
            table, key = self._slot(name)
            if table is not None:
                table[key] = values
            else:
                object.__setattr__(self, key, values)

    def waits(self) -> np.ndarray:
        """(n,) seconds until the first frame or until the viewer left without one."""
        if self.wait.size == self.n:
            return self.wait
        out = self.join.copy()
        out[np.isnan(out)] = self.wait
        return out

    def take(self, index: np.ndarray, days: int = 7) -> Sessions:
        """The sessions at ``index`` (ascending), with only the arrays that
        :func:`~.contrasts.run_contrasts` and a segment's QoE shares read (``returned`` and
        ``rebought`` of ``days`` only; the rest empty, so that reading them fails rather than
        misleads): a segment's share of the log, in the log's order, without a mask over the
        whole log per figure."""

        def pick(a: np.ndarray) -> np.ndarray:
            if a.ndim == 1 and a.strides == (0,):  # a figure the log lacks: one shared NaN
                return np.broadcast_to(a[:1] if a.size else np.float32(np.nan), (index.size,))
            return a[index]

        empty = np.zeros(0)
        return Sessions(
            n=int(index.size),
            viewer=pick(self.viewer),
            is_open=pick(self.is_open),
            joined=pick(self.joined),
            join=pick(self.join),
            watch=pick(self.watch),
            stall_ratio=pick(self.stall_ratio),
            av=pick(self.av),
            codes={},
            levels=self.levels,
            start=empty,
            wait=empty,
            chat=empty,
            height=empty,
            bitrate=empty,
            any_orders=self.any_orders,
            visit_end=empty,
            customer=self.customer[index],
            returned={days: self.returned[days][index]},
            rebought={days: self.rebought[days][index]},
            sources=self.sources,
        )


def load_probes(con: Any, path: str | Path, *, room: str = "target") -> dict[str, Any]:
    """Read fleet results (JSON lines) into table ``probes``; return counts and exclusions."""
    if not Path(path).exists():
        raise ConfigError(f"{path}: no such file")
    if room == "target":
        key = "target"
    elif room.startswith("label:") and len(room) > 6:
        key = f"json_extract_string(labels, '$.{room[6:]}')"
    else:
        raise ConfigError(f"probe room must be 'target' or 'label:NAME', got {room!r}")
    columns = (
        "{target: 'VARCHAR', profile: 'VARCHAR', labels: 'JSON', started_at: 'VARCHAR', "
        "success: 'BOOLEAN', \"join\": 'JSON', video: 'JSON', av_sync: 'JSON', chat: 'JSON'}"
    )
    num = "TRY_CAST(json_extract_string({}, '{}') AS DOUBLE)"
    import duckdb

    from .load import literal

    try:
        with literal(Path(path)) as readable:
            p = readable.replace("'", "''")
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE __probes_raw AS SELECT
                  {key} AS room, coalesce(profile, 'none') AS profile,
                  epoch(TRY_CAST(started_at AS TIMESTAMPTZ)) AS p_at, coalesce(success, false) AS ok,
                  {num.format('"join"', "$.total_seconds")} AS p_join,
                  {num.format("video", "$.stall_ratio")} AS p_stall,
                  {num.format("av_sync", "$.offset_seconds.median")} AS p_av,
                  {num.format("chat", "$.echo_seconds.p50")} AS p_chat
                FROM read_json('{p}', format = 'newline_delimited', columns = {columns})"""
            )
    except duckdb.Error as exc:
        raise ConfigError(f"{path}: not fleet results (JSON lines): {str(exc).splitlines()[0]}") from exc
    total, no_room, no_time = con.execute(
        "SELECT count(*), count(*) FILTER (room IS NULL), "
        "count(*) FILTER (room IS NOT NULL AND p_at IS NULL) "
        "FROM __probes_raw"
    ).fetchone()
    con.execute(
        "CREATE OR REPLACE TEMP TABLE probes AS "
        "SELECT * FROM __probes_raw WHERE room IS NOT NULL AND p_at IS NOT NULL"
    )
    con.execute("DROP TABLE __probes_raw")
    return {
        "source": str(path),
        "rows": int(total),
        "used": int(total - no_room - no_time),
        "excluded": {"no_room": int(no_room), "unparseable_started_at": int(no_time)},
        "room_key": room,
    }


def link_sessions(
    con: Any,
    *,
    log_end: float,
    visit_gap: float = 1800.0,
    probes: bool = False,
    probe_window: float = 900.0,
    qoe_source: str = "auto",
    columns: list[str] | None = None,
    extra: Sequence[str] = (),
    lapsing_seconds: float = 7 * DAY,
    high_value: float | None = None,
    high_value_quantile: float = 0.9,
) -> Sessions:
    """Derive visits, returns and repurchases from table ``sessions``; fetch the arrays.

    ``extra``: the extra category columns :func:`~.load.load_sessions` kept (``x_0``, ...), in
    its order; coded as ``codes["column:NAME"]``. ``lapsing_seconds``, ``high_value`` and
    ``high_value_quantile``: the tiers' lines (:class:`~.segments.Tiers`), drawn here so that
    the tiers are flags (:attr:`Sessions.tier`); ``high_value`` None: the quantile of the order
    value before the session, among sessions with any."""
    if qoe_source not in ("auto", "client", "probe"):
        raise ConfigError(f"qoe source must be auto, client or probe, got {qoe_source!r}")
    if qoe_source == "probe" and not probes:
        raise ConfigError("qoe source 'probe' needs probe results (--probes)")
    present = set(columns or [])
    ret = []
    for k in RETURN_DAYS:
        eligible = f'"end" IS NOT NULL AND "end" + {k * DAY} <= {log_end} AND visit_end'
        ret.append(
            f'CASE WHEN NOT ({eligible}) THEN -1 WHEN next_start - "end" <= {k * DAY} THEN 1 ELSE 0 END'
            f"::TINYINT AS ret{k}"
        )
        ret.append(
            f'CASE WHEN NOT ({eligible}) THEN -1 WHEN next_order - "end" <= {k * DAY} THEN 1 ELSE 0 END'
            f"::TINYINT AS rb{k}"
        )
    categories = (*CATEGORIES, *(f"x_{i}" for i in range(len(extra))))
    for c in (*categories, "viewer"):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE __lv_{c} AS "
            f"SELECT v, (row_number() OVER (ORDER BY v) - 1)::INTEGER AS code "
            f"FROM (SELECT DISTINCT {c} AS v FROM sessions)"
        )
    joins = " ".join(
        f"JOIN __lv_{c} AS l_{c} ON s.{c} IS NOT DISTINCT FROM l_{c}.v" for c in (*categories, "viewer")
    )
    codes = ", ".join(f"l_{c}.code AS c_{c}" for c in (*categories, "viewer"))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE linked AS
        WITH w AS (
          SELECT s.*, {codes},
            lead(start) OVER v AS next_start,
            start - lag(start) OVER v AS since_last,
            coalesce(sum(value) OVER (v ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS value_before,
            sum(orders) OVER (v ROWS UNBOUNDED PRECEDING) AS orders_so_far,
            min(CASE WHEN orders > 0 THEN start END) OVER (v ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
              AS next_order
          FROM sessions s {joins}
          WINDOW v AS (PARTITION BY s.viewer ORDER BY s.start, s.row)
        ),
        e AS (SELECT *,
                (next_start IS NULL OR next_start - coalesce("end", {log_end}) > {visit_gap}) AS visit_end
              FROM w)
        SELECT * EXCLUDE (next_start, next_order, orders_so_far), orders_so_far > 0 AS customer,
          {", ".join(ret)}
        FROM e"""
    )
    con.execute("DROP TABLE sessions")
    probe_cols, probe_join = "", ""
    if probes:
        profiles = {r[0] for r in con.execute("SELECT DISTINCT profile FROM probes").fetchall()}
        networks = {r[0] for r in con.execute("SELECT DISTINCT network FROM linked").fetchall()}
        by_network = bool(profiles & networks)
        on = (
            "l.room = p.room"
            + (" AND l.network = p.profile" if by_network else "")
            + " AND l.start >= p.p_at"
        )
        con.execute(
            "CREATE OR REPLACE TEMP VIEW __pv AS "
            "SELECT room, profile, p_at, p_join, p_stall, p_av, p_chat, ok::FLOAT AS p_ok FROM probes"
        )
        probe_join = f"ASOF LEFT JOIN __pv p ON {on}"
        probe_cols = ", " + ", ".join(
            f"coalesce(CASE WHEN l.start - p.p_at <= {probe_window} THEN p.{n} END, 'NaN')::FLOAT AS {n}"
            for n in ("p_join", "p_stall", "p_av", "p_chat", "p_ok")
        )
    nan = "'NaN'"
    # The tiers as flags. The lines are compared as the arrays' float32 figures would be (a
    # float32 array against a Python float compares in float32), so the flags are the masks
    # those figures gave, digit for digit.
    if high_value is None:
        before = con.sql("SELECT value_before::FLOAT AS v FROM linked WHERE value_before::FLOAT > 0")
        earlier = before.fetchnumpy()["v"]
        hv = float(np.quantile(earlier, high_value_quantile)) if earlier.size else math.inf
        del earlier, before
    else:
        hv = float(high_value)
    high = (
        f"(l.value_before::FLOAT > 0 AND l.value_before::FLOAT >= {float(np.float32(hv))!r})"
        if math.isfinite(hv)
        else "false"
    )
    lapse = f"l.since_last::FLOAT >= {float(np.float32(lapsing_seconds))!r}"
    tier = (
        f"((l.since_last IS NOT NULL)::UTINYINT * {REPEAT} + coalesce({lapse}, false)::UTINYINT * {LAPSING}"
        f" + ({high})::UTINYINT * {HIGH_VALUE})::UTINYINT"
    )
    has_join = "join_seconds" in present
    joined = "(l.join_s IS NOT NULL)::TINYINT" if has_join else "(-1)::TINYINT"
    # Without join_seconds the whole session counts as watched (join time unknown).
    watch = f'(coalesce(l."end", {log_end}) - l.start - ' + ("l.join_s)" if has_join else "0)")
    # Only what the analysis reads, in the narrowest type that holds it: at 100 M sessions each
    # byte per session is 100 MB. A figure the log lacks is one shared NaN, not an array.
    levels = {
        c: [str(r[0]) for r in con.execute(f"SELECT v FROM __lv_{c} ORDER BY code").fetchall()]
        for c in categories
    }
    wanted = {
        "av": "av_offset_seconds" in present,
        "chat": "chat_echo_seconds" in present,
        "height": "video_height" in present,
        "kbps": "bitrate_kbps" in present and "video_height" not in present,
        **{f"b_{b}": b in present for b in BEHAVIOUR},
    }
    figures = [
        f"coalesce(CASE WHEN {watch} > 0 THEN l.stall_s / {watch} END, {nan})::FLOAT AS stall_ratio",
        *(
            f"coalesce(l.{c}, {nan})::FLOAT AS {c}"
            for c in ("av", "chat", "height", "kbps", *(f"b_{b}" for b in BEHAVIOUR))
            if wanted[c]
        ),
    ]
    query = f"""SELECT {", ".join(f"l.c_{c}" for c in ("viewer", *categories))},
        (CAST(floor(l.start / 3600) AS BIGINT) % 24)::TINYINT AS c_hour,
        l.start, (l."end" IS NULL) AS is_open, {joined} AS joined,
        coalesce(l.join_s, {nan})::FLOAT AS join_s,
        coalesce(CASE WHEN l.join_s IS NOT NULL THEN l.join_s
                      ELSE coalesce(l."end", {log_end}) - l.start END, {nan})::FLOAT
          AS wait,
        coalesce({watch}, {nan})::FLOAT AS watch,
        {", ".join(figures)},
        l.visit_end, l.customer,
        {tier} AS tier,
        {", ".join(f"l.ret{k}, l.rb{k}" for k in RETURN_DAYS)}{probe_cols}
        FROM linked l {probe_join}
        ORDER BY l.row"""  # a fixed order: with a seed, matching and jackknife groups repeat exactly
    # fetchall: a result left unfinished would stop the next query on this connection.
    n, any_orders = con.execute(
        "SELECT count(*), coalesce(bool_or(orders > 0), false) FROM linked"
    ).fetchall()[0]
    narrow = {f"c_{c}": _code_type(len(levels[c])) for c in categories}
    narrow["c_viewer"] = np.dtype(np.int32)
    a = _fetch(con, query, int(n), narrow, sparse={"wait": "join_s"})
    levels["hour"] = [f"{h:02d}" for h in range(24)]
    absent = np.broadcast_to(np.float32(np.nan), (int(n),))
    coded = {c: a[f"c_{c}"] for c in CATEGORIES} | {"hour": a["c_hour"]}
    coded |= {f"column:{name}": a[f"c_x_{i}"] for i, name in enumerate(extra)}
    for i, name in enumerate(extra):
        levels[f"column:{name}"] = levels.pop(f"x_{i}")
    s = Sessions(
        n=int(n),
        viewer=a["c_viewer"],
        codes=coded,
        levels=levels,
        start=a["start"],
        is_open=a["is_open"],
        joined=a["joined"],
        wait=a["wait"],
        join=a["join_s"],
        watch=a["watch"],
        stall_ratio=a["stall_ratio"],
        av=a.get("av", absent),
        chat=a.get("chat", absent),
        height=a.get("height", absent),
        bitrate=a.get("kbps", absent),
        any_orders=bool(any_orders),
        visit_end=a["visit_end"],
        customer=a["customer"],
        returned={k: a[f"ret{k}"] for k in RETURN_DAYS},
        rebought={k: a[f"rb{k}"] for k in RETURN_DAYS},
        tier=a["tier"],
        high_value=hv,
        behaviour={b: a[f"b_{b}"] for b in BEHAVIOUR if b in present},
    )
    if probes:
        s.probe = {k: a[f"p_{k}"] for k in ("join", "stall", "av", "chat", "ok")}
    _choose_sources(s, qoe_source, present)
    return s


def _code_type(levels: int) -> np.dtype[Any]:
    """The narrowest signed integer type for codes ``0 .. levels - 1``."""
    for t in (np.int8, np.int16, np.int32):
        if levels <= np.iinfo(t).max + 1:
            return np.dtype(t)
    return np.dtype(np.int64)


def _bytes(size: str) -> float:
    """``"3.7 GiB"`` (DuckDB's way of showing a memory limit) or ``"1GB"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?i?B)?\s*", size, re.IGNORECASE)
    if not m:
        return math.inf
    unit = (m.group(2) or "B").upper()
    power = "BKMGT".index(unit[0])
    return float(m.group(1)) * (1024 if "I" in unit else 1000) ** power


def _fetch(
    con: Any,
    query: str,
    n: int,
    narrow: dict[str, np.dtype[Any]],
    sparse: dict[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """The result of ``query`` (``n`` rows) as one array per column, filled batch by batch so
    that neither DuckDB nor Arrow holds the whole result beside the arrays. ``sparse``: column
    -> another (earlier in the query): the column's values kept only where the other is NaN."""
    sparse = sparse or {}
    kept: dict[str, list[np.ndarray]] = {name: [] for name in sparse}
    limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    if _bytes(limit) > _bytes(FETCH_MEMORY):
        con.execute(f"SET memory_limit = '{FETCH_MEMORY}'")
    try:
        reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
        out: dict[str, np.ndarray] = {}
        at = 0
        for batch in reader:
            m = batch.num_rows
            for name, column in zip(batch.schema.names, batch.columns, strict=True):
                values = column.to_numpy(zero_copy_only=False)
                if name in sparse:
                    kept[name].append(values[np.isnan(out[sparse[name]][at : at + m])].copy())
                    continue
                if name not in out:
                    out[name] = np.empty(n, narrow.get(name, values.dtype))
                out[name][at : at + m] = values
            at += m
    finally:
        con.execute(f"SET memory_limit = '{limit}'")
    if at != n:
        raise RuntimeError(f"fetched {at} of {n} sessions")
    for name, parts in kept.items():
        out[name] = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return out


def _choose_sources(s: Sessions, mode: str, present: set[str]) -> None:
    """Let probe figures stand in for (``probe``) or fill gaps in (``auto``) client QoE."""
    pairs = {
        "stall_ratio": ("stall_seconds", "stall"),
        "av": ("av_offset_seconds", "av"),
        "chat": ("chat_echo_seconds", "chat"),
    }
    for attr, (column, key) in pairs.items():
        has_client = column in present
        has_probe = key in s.probe
        if mode == "probe" or (mode == "auto" and not has_client and has_probe):
            setattr(s, attr, np.where(s.joined != 0, s.probe[key], np.nan).astype(np.float32))
            s.sources[attr] = "probe"
        elif mode == "auto" and has_probe:
            client = getattr(s, attr)
            setattr(
                s, attr, np.where(np.isnan(client) & (s.joined != 0), s.probe[key], client).astype(np.float32)
            )
            s.sources[attr] = "client+probe"
        else:
            s.sources[attr] = "client" if has_client else "absent"
    s.sources["join"] = "client" if "join_seconds" in present else "absent"
    if mode == "probe" and "join" in s.probe:
        s.wait = s.waits()  # whole: the waits of the sessions with a client join are those joins
        s.join = np.where(s.joined != 0, s.probe["join"], np.nan).astype(np.float32)
        s.sources["join"] = "probe"
