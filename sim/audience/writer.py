"""Write simulated sessions (Parquet, or CSV when the name ends in .csv), the ground truth beside
them, and optionally the probe results a fleet watching the same rooms would have produced."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from qoe.errors import ConfigError

from .model import APP_VERSIONS, DEVICES, NETWORKS, REGIONS, AudienceModel
from .population import World

__all__ = ["SCHEMA", "SessionWriter", "truth_path", "write_probes"]


def _dictionary() -> pa.DataType:
    return pa.dictionary(pa.int8(), pa.string())


TIMESTAMP = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema(
    [
        ("session_id", pa.int64()),
        ("viewer_id", pa.int64()),
        ("room_id", pa.dictionary(pa.int32(), pa.string())),
        ("session_start", TIMESTAMP),
        ("session_end", TIMESTAMP),
        ("join_seconds", pa.float64()),
        ("stall_seconds", pa.float64()),
        ("stall_count", pa.int32()),
        ("av_offset_seconds", pa.float64()),
        ("chat_echo_seconds", pa.float64()),
        ("video_height", pa.int32()),
        ("bitrate_kbps", pa.float64()),
        ("order_count", pa.int32()),
        ("order_value", pa.float64()),
        ("device", _dictionary()),
        ("network", _dictionary()),
        ("region", _dictionary()),
        ("app_version", _dictionary()),
    ]
)


def truth_path(out: str | Path) -> Path:
    """``sessions.parquet`` -> ``sessions.truth.json``, beside the data."""
    out = Path(out)
    return out.with_name(out.name.split(".")[0] + ".truth.json")


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _categorical(
    codes: np.ndarray, names: tuple[str, ...] | list[str], index: pa.DataType | None = None
) -> pa.Array:
    index = index or pa.int8()
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(index.to_pandas_dtype())), pa.array(names))


class SessionWriter:
    """Appends chunks of simulated sessions to one Parquet or CSV file."""

    def __init__(self, path: str | Path, world: World, *, arm: bool = False) -> None:
        self.path = Path(path)
        self.world = world
        self.csv = self.path.suffix.lower() == ".csv"
        self.next_id = 1
        self.arm = arm
        """Write the A/B test's ``arm`` column (A, B; empty before the test starts)."""
        schema = SCHEMA.append(pa.field("arm", _dictionary())) if arm else SCHEMA
        meta = {"log_start": _iso(world.start_epoch), "log_end": _iso(world.start_epoch + world.horizon)}
        self.schema = schema.with_metadata({k.encode(): v.encode() for k, v in meta.items()})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.csv:
                self._plain_schema = pa.schema([pa.field(f.name, self._plain(f.type)) for f in schema])
                self._writer: Any = pacsv.CSVWriter(str(self.path), self._plain_schema)
            else:
                self._writer = pq.ParquetWriter(str(self.path), self.schema, compression="zstd")
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc

    @staticmethod
    def _plain(t: pa.DataType) -> pa.DataType:
        return pa.string() if pa.types.is_dictionary(t) else t

    def write(self, cols: dict[str, np.ndarray]) -> None:
        if not cols:
            return
        w = self.world
        n = cols["start"].size
        ms = lambda s: np.round((w.start_epoch + s) * 1000.0).astype(np.int64)  # noqa: E731
        is_open = cols["end"] > w.horizon
        end = pa.array(ms(np.where(is_open, 0.0, cols["end"])), TIMESTAMP, mask=is_open)
        arrays = [
            pa.array(np.arange(self.next_id, self.next_id + n, dtype=np.int64)),
            pa.array(cols["viewer_id"]),
            _categorical(cols["room"], w.room_ids, pa.int32()),
            pa.array(ms(cols["start"]), TIMESTAMP),
            end,
            pa.array(np.round(cols["join"], 3), from_pandas=True),
            pa.array(np.round(cols["stall_seconds"], 3), from_pandas=True),
            pa.array(cols["stall_count"].astype(np.int32), mask=cols["stall_count"] < 0),
            pa.array(np.round(cols["av"], 4), from_pandas=True),
            pa.array(np.round(cols["chat"], 3), from_pandas=True),
            pa.array(np.nan_to_num(cols["height"]).astype(np.int32), mask=np.isnan(cols["height"])),
            pa.array(np.round(cols["kbps"], 1), from_pandas=True),
            pa.array(cols["orders"].astype(np.int32)),
            pa.array(np.round(cols["value"], 2)),
            _categorical(cols["device"], DEVICES),
            _categorical(cols["network"], NETWORKS),
            _categorical(cols["region"], REGIONS),
            _categorical(cols["app"], APP_VERSIONS),
        ]
        if self.arm:
            arm = cols["arm"]
            arrays.append(
                pa.DictionaryArray.from_arrays(
                    pa.array(np.maximum(arm - 1, 0).astype(np.int8), mask=arm == 0), pa.array(["A", "B"])
                )
            )
        self.next_id += n
        if self.csv:
            arrays = [a.dictionary_decode() if isinstance(a, pa.DictionaryArray) else a for a in arrays]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._plain_schema))
        else:
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


def write_probes(
    path: str | Path, model: AudienceModel, world: World, interval: float, rng: np.random.Generator
) -> int:
    """Probe results (JSON lines, the fleet's ProbeResult schema) for every room while it is live,
    under each network profile, every ``interval`` seconds. Target = room id, ``labels.room``
    too. Their QoE follows the room's delivery and incidents as sessions do, without the
    device and viewer parts. Returns the number of lines."""
    q = model.qoe
    times = np.arange(0.0, world.horizon, interval)
    slot = world.hour_of_week(times)
    hod = world.hour_of_day(times)
    hour = world.log_hour(times)
    lines = 0
    try:
        f = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    with f:
        for r, room_id in enumerate(world.room_ids):
            on = world.live[slot, r]
            t, h, d = times[on], hour[on], hod[on]
            prime = (d >= model.population.prime_hours[0]) & (d <= model.population.prime_hours[1])
            for p, profile in enumerate(NETWORKS):
                n = t.size
                inc_j, inc_s = world.join_incident[r, h], world.stall_incident[r, h]
                join = np.exp(np.log(q.join_median_seconds[p]) + world.join_shift[r] + rng.normal(0, 0.2, n))
                join *= np.where(inc_j, q.incident_join_factor, 1.0)
                ok = rng.random(n) >= q.failure[p] * np.where(inc_j, q.incident_failure_factor, 1.0)
                stall = (
                    (rng.random(n) < q.stall_any[p])
                    * q.stall_median[p]
                    * world.stall_factor[r]
                    * np.where(prime, q.stall_prime_factor, 1.0)
                    * np.where(inc_s, q.incident_stall_factor, 1.0)
                    * np.exp(rng.normal(0.0, q.stall_sigma, n))
                )
                av = rng.normal(0.0, 0.02, n)
                chat = np.exp(np.log(q.chat_median_seconds[p]) + rng.normal(0.0, q.chat_sigma, n))
                for i in range(n):
                    f.write(
                        json.dumps(
                            _probe(
                                room_id,
                                profile,
                                world.start_epoch + t[i],
                                bool(ok[i]),
                                join[i],
                                min(stall[i], q.stall_max),
                                av[i],
                                chat[i],
                            )
                        )
                    )
                    f.write("\n")
                lines += n
    return lines


def _probe(
    room: str, profile: str, at: float, ok: bool, join: float, stall: float, av: float, chat: float
) -> dict:
    watched = 30.0 - join if ok else None
    return {
        "probe": "whep",
        "kind": "whep",
        "target": room,
        "profile": profile,
        "run": f"{room}/{profile}/0",
        "labels": {"room": room},
        "started_at": _iso(round(at, 3)),
        "duration_seconds": 30.0,
        "success": ok,
        "error": None if ok else {"kind": "no_media", "message": "no media arrived in time"},
        "join": {"total_seconds": round(join, 3) if ok else None, "phases": {}},
        "video": {
            "stall_ratio": round(stall, 5) if ok else None,
            "freeze_seconds": round(stall * watched, 3) if watched else None,
            "watched_seconds": round(watched, 3) if watched else None,
        },
        "av_sync": {"offset_seconds": {"median": round(av, 4) if ok else None, "p95_abs": None}},
        "chat": {"echo_seconds": {"p50": round(chat, 3) if ok else None, "p95": None, "max": None}},
    }
