"""Property-based fuzzing of what the project reads from outside: SDP offers posted to the room,
fleet files, network profile files, session logs for ``qoe impact``, and FLV and HLS bytes
read by the FFmpeg viewers.

Each input is made by Hypothesis, which shrinks a failing one to the least that still fails,
so a finding reads as the one line, field or byte that matters. The properties are the
contracts each reader states: the room answers 201 or a 4xx, never a 5xx, and stays up; a
bad fleet or profile file is a :class:`~qoe.errors.ConfigError` with a one-line message; every
row of a session log is either used or counted with its reason; a mangled stream is a
classified failed result within the run's deadline, never ``internal``.

In the suite the runs are short and derandomised: the same examples every run, so a test
here fails for a change to the code, never for a new draw. ``python bench/fuzz.py --examples
N`` runs the same properties longer, with fresh draws (``QOE_FUZZ_EXAMPLES``,
``QOE_FUZZ_RANDOM``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import io
import math
import os
import tempfile
import time
import tomllib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes import probe_spec, run_probe
from qoe.errors import ConfigError
from qoe.fleet.config import parse_fleet
from qoe.impact.load import connect, load_sessions
from sim.profiles.loader import load_profiles
from sim.room.server import LiveRoom
from tests.servers import aiohttp_app
from tests.test_room_http import SDP, recvonly_offer

ROOT = Path(__file__).resolve().parent.parent

SCALE = int(os.environ.get("QOE_FUZZ_EXAMPLES", "0"))
"""Examples per property when set (bench/fuzz.py); each test's own small count otherwise."""
RANDOM = os.environ.get("QOE_FUZZ_RANDOM", "") not in ("", "0")
"""Fresh draws (bench/fuzz.py); the suite's are derandomised."""


def fuzz(examples: int) -> settings:
    """Settings that cannot flake: no per-example deadline (a busy machine slows an example,
    which is no finding), derandomised in the suite, no example database left behind."""
    return settings(
        max_examples=SCALE or examples,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, repr(message)
    return message


# -- text mutations -------------------------------------------------------------------------

NASTY = st.sampled_from(
    ["", "0", "-1", "65536", "4294967296", "1e309", "nan", "x" * 300, "\x00", "é", " ", ":", "/", "="]
)


@st.composite
def mutated_lines(draw: st.DrawFn, lines: list[str]) -> list[str]:
    """``lines`` with some deleted, duplicated, swapped, cut short or overwritten."""
    out = list(lines)
    for _ in range(draw(st.integers(1, 6))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "truncate", "field", "insert"]))
        if op == "delete":
            del out[i]
        elif op == "duplicate":
            out.insert(i, out[i])
        elif op == "swap":
            j = draw(st.integers(0, len(out) - 1))
            out[i], out[j] = out[j], out[i]
        elif op == "truncate":
            out[i] = out[i][: draw(st.integers(0, len(out[i])))]
        elif op == "field":
            parts = out[i].split(" ")
            k = draw(st.integers(0, len(parts) - 1))
            parts[k] = draw(NASTY | st.text(max_size=20))
            out[i] = " ".join(parts)
        else:
            out.insert(i, draw(st.text(max_size=40)))
    return out


# -- SDP offers to the room -----------------------------------------------------------------


@contextlib.contextmanager
def room_on_its_own_loop() -> Iterator[tuple[asyncio.Runner, LiveRoom, aiohttp.ClientSession]]:
    """An in-process room (its host at the smallest size) on a loop of the test's own, so
    Hypothesis, which calls a plain function per example, can run each request on it."""
    with asyncio.Runner() as loop:
        live = LiveRoom("127.0.0.1", 0, host_options={"width": 320, "height": 180})
        loop.run(live.start())
        http = loop.run(_session())
        try:
            yield loop, live, http
        finally:
            loop.run(http.close())
            loop.run(live.stop())


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


async def _tasks_after_settling() -> collections.Counter[str]:
    """The loop's tasks by what they run, aiohttp's handlers of kept-alive connections aside
    (the client's pool keeps as many as the fuzzing's requests happened to open)."""
    await asyncio.sleep(0.5)
    names = (task.get_coro().__qualname__ for task in asyncio.all_tasks())
    return collections.Counter(n for n in names if n != "RequestHandler.start")


async def _real_offers() -> tuple[str, str]:
    """A WHEP offer (receive only) and a WHIP one (the same, sending), as aiortc makes them."""
    pc, offer = await recvonly_offer()
    await pc.close()
    return offer, offer.replace("a=recvonly", "a=sendonly")


@st.composite
def sdp_offers(draw: st.DrawFn, real: str) -> str:
    lines = draw(mutated_lines(real.split("\r\n")))
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    return newline.join(lines)


async def _post_and_clean(http: aiohttp.ClientSession, url: str, path: str, body: str) -> tuple[int, str]:
    async with http.post(f"{url}{path}", data=body.encode("utf-8", "surrogatepass"), headers=SDP) as r:
        status, text = r.status, await r.text()
        location = r.headers.get("Location")
    if status == 201 and location:
        async with http.delete(f"{url}{location}") as r:
            assert r.status == 200, (r.status, await r.text())
    return status, text


def test_sdp_offers_get_201_or_a_4xx_never_a_5xx_and_the_room_stays_up() -> None:
    with room_on_its_own_loop() as (loop, live, http):
        whep, whip = loop.run(_real_offers())
        tasks = loop.run(_tasks_after_settling())
        seen: dict[int, int] = {}

        @fuzz(120)
        @given(
            role=st.sampled_from(["whep", "whip"]),
            data=st.data(),
        )
        def check(role: str, data: st.DataObject) -> None:
            real = whep if role == "whep" else whip
            body = data.draw(sdp_offers(real) | st.text(max_size=200).map(lambda t: f"v=0\r\nm={t}"))
            path = "/whep/demo" if role == "whep" else "/whip/fuzz"
            status, text = loop.run(_post_and_clean(http, live.url, path, body))
            seen[status] = seen.get(status, 0) + 1
            assert status == 201 or 400 <= status < 500, (status, text)
            if status != 201:
                assert len(text.strip().splitlines()) == 1, text

        check()

        async def still_serves() -> tuple[int, int]:
            async with http.get(f"{live.url}/healthz") as r:
                health = r.status
            status, _ = await _post_and_clean(http, live.url, "/whep/demo", whep)
            return health, status

        assert loop.run(still_serves()) == (200, 201)
        assert live._sessions() == 0  # every accepted session was ended by its DELETE
        left = loop.run(_tasks_after_settling()) - tasks
        assert not left, f"tasks left behind by ended sessions: {dict(left)}"
        # The mutations must reach both answers, or the property was never put to the test.
        assert seen.get(201, 0) > 0 and sum(n for s, n in seen.items() if s != 201) > 0, seen


# -- fleet files ----------------------------------------------------------------------------

FLEET = (ROOT / "examples" / "fleet.toml").read_text()

TOML_VALUES = st.recursive(
    st.none().map(lambda _: '""')
    | st.integers(-(2**70), 2**70).map(str)
    | st.floats(allow_nan=True).map(lambda f: "nan" if math.isnan(f) else repr(f))
    | st.booleans().map(lambda b: "true" if b else "false")
    | st.text(max_size=30).map(lambda t: '"' + t.encode("unicode_escape").decode().replace('"', '\\"') + '"'),
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]")
        | st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), inner, max_size=3).map(
            lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"
        )
    ),
    max_leaves=6,
)
"""TOML value texts of every type, nested a little: what a mistyped file holds."""


@st.composite
def fleet_texts(draw: st.DrawFn) -> str:
    """The example fleet with some values replaced by others of any type, or lines mangled."""
    lines = FLEET.splitlines()
    if draw(st.booleans()):
        return "\n".join(draw(mutated_lines(lines)))
    for _ in range(draw(st.integers(1, 4))):
        assignable = [i for i, line in enumerate(lines) if " = " in line and not line.startswith("#")]
        i = draw(st.sampled_from(assignable))
        key = lines[i].split(" = ", 1)[0]
        lines[i] = f"{key} = {draw(TOML_VALUES)}"
    return "\n".join(lines)


@fuzz(300)
@given(text=fleet_texts())
def test_a_bad_fleet_file_is_a_config_error_of_one_line(text: str) -> None:
    try:
        parse_fleet(text, "fleet.toml")
    except ConfigError as exc:
        assert one_line(exc).startswith("fleet.toml")


# -- network profile files ------------------------------------------------------------------

PROFILE = """\
[weak]
description = "a weak link"
source = "made up"
[weak.downlink]
rate = 1_500_000
delay = 0.05
jitter = 0.01
loss = 0.01
outages = [[3.0, 1.0]]
schedule = [{at = 2.0, rate = 500_000}, {at = 4.0, loss = 0.1}]
[weak.uplink]
rate = 750_000
delay = 0.05
"""


@st.composite
def profile_texts(draw: st.DrawFn) -> str:
    lines = PROFILE.splitlines()
    if draw(st.booleans()):
        return "\n".join(draw(mutated_lines(lines)))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.sampled_from([i for i, line in enumerate(lines) if " = " in line]))
        lines[i] = f"{lines[i].split(' = ', 1)[0]} = {draw(TOML_VALUES)}"
    if draw(st.booleans()):
        key = draw(st.sampled_from(["trace", "queue", "burst_loss", "capacity", "reorder", "rate"]))
        lines.append(f"{key} = {draw(TOML_VALUES)}")
    return "\n".join(lines)


@fuzz(300)
@given(text=profile_texts())
def test_a_bad_profile_file_is_a_config_error_of_one_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weak.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_profiles(path)
        except ConfigError as exc:
            one_line(exc)


# -- session logs for qoe impact ------------------------------------------------------------

SESSION_COLUMNS = [
    "session_id",
    "viewer_id",
    "room_id",
    "session_start",
    "session_end",
    "join_seconds",
    "stall_seconds",
    "stall_count",
    "order_count",
    "device",
]

CELLS = (
    st.sampled_from(
        [
            "",
            " ",
            "nan",
            "inf",
            "-inf",
            "1e308",
            "-1",
            "0",
            "1.5",
            "3",
            "abc",
            "2026-03-02T20:15:00Z",
            "2026-13-45",
            "1772482500",
            "1772482500.25",
            "9" * 30,
            "NULL",
            '"',
            ",",
            "\n",
            "1,5",
        ]
    )
    | st.text(max_size=12)
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.integers(-(2**65), 2**65).map(str)
)


@st.composite
def session_logs(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A CSV log: the required columns (a column sometimes left out) and rows of any cells."""
    columns = list(SESSION_COLUMNS)
    if draw(st.integers(0, 9)) == 0:
        columns.remove(draw(st.sampled_from(columns)))
    good = ["s{}", "v{}", "r{}", "1772482500", "1772483100", "2.5", "0.5", "1", "0", "ios"]
    rows = []
    for n in range(draw(st.integers(1, 12))):
        row = [g.format(n) for g, c in zip(good, SESSION_COLUMNS, strict=True) if c in columns]
        for _ in range(draw(st.integers(0, 3))):
            row[draw(st.integers(0, len(row) - 1))] = draw(CELLS)
        rows.append(row)
    return columns, rows


@fuzz(60)
@given(log=session_logs())
def test_every_row_of_a_session_log_is_used_or_counted(log: tuple[list[str], list[list[str]]]) -> None:
    columns, rows = log
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sessions.csv"
        with open(path, "w", newline="", encoding="utf-8", errors="surrogatepass") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(rows)
        con = connect(threads=1)
        try:
            validation = load_sessions(con, path)
        except ConfigError as exc:
            one_line(exc)  # a file DuckDB cannot read as CSV at all: refused whole, in one line
            return
        finally:
            con.close()
    counted = sum(p.count for p in validation.problems)
    assert validation.rows == len(rows), (validation.rows, len(rows))
    if any(p.reason == "missing_column" for p in validation.problems):
        assert validation.valid == 0 and not validation.usable
    else:
        assert validation.valid + counted == len(rows), validation.summary()


# -- FLV and HLS bytes read by the FFmpeg viewers -------------------------------------------


def _encoded(fmt: str, seconds: float = 2.0) -> bytes:
    """A short H.264 + AAC stream in ``fmt`` (flv or mpegts), keyframes every half second."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        video = container.add_stream("libx264", rate=15)
        video.width, video.height, video.pix_fmt = 160, 96, "yuv420p"
        video.options = {"g": "8", "preset": "ultrafast", "tune": "zerolatency"}
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        frames = int(seconds * 15)
        for i in range(frames):
            picture = np.full((96, 160, 3), (i * 8) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 15)
            container.mux(video.encode(frame))
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(int(seconds * 48000 / 1024)):
            block = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            block.sample_rate, block.pts, block.time_base = 48000, i * 1024, Fraction(1, 48000)
            container.mux(audio.encode(block))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    return out.getvalue()


FLV, TS = _encoded("flv"), _encoded("mpegts")
PLAYLIST = (
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\nseg0.ts\n"
)


@st.composite
def mangled(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with bytes overwritten, a span cut out or repeated, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "repeat", "truncate", "garbage"]))
        i = draw(st.integers(0, max(0, len(out) - 1)))
        n = draw(st.integers(1, 4096))
        if op == "flip":
            for k in range(i, min(len(out), i + draw(st.integers(1, 16)))):
                out[k] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[i : i + n]
        elif op == "repeat":
            out[i:i] = out[i : i + n]
        elif op == "truncate":
            del out[i:]
        else:
            out[i:i] = draw(st.binary(min_size=1, max_size=64))
    return bytes(out)


DURATION, JOIN = 2.0, 1.5
DEADLINE = DURATION + 5.0  # the run's own: duration + teardown (probes.base.TEARDOWN_SECONDS)


async def _watch(kind: str, files: dict[str, bytes]) -> tuple[Any, float]:
    """Serve ``files`` once each (then the connection ends, as a server that gave up) and run
    a viewer of ``kind`` on them; the result and the seconds it took."""

    async def serve(request: web.Request) -> web.Response:
        body = files.get(request.match_info["name"])
        return web.Response(body=body) if body is not None else web.Response(status=404)

    app = web.Application()
    app.add_routes([web.get("/{name}", serve)])
    async with aiohttp_app(app) as url:
        path = "live.flv" if kind == "flv" else "index.m3u8"
        spec = probe_spec(f"{url}/{path}", duration=DURATION, join_timeout=JOIN, media_timeout=1.0)
        began = time.monotonic()
        result = await run_probe(spec)
        return result, time.monotonic() - began


def _classified(result: Any, took: float) -> None:
    assert took < DEADLINE + 1.0, took
    if not result.success:
        assert result.error is not None and result.error.kind not in ("internal", "deadline"), result.error
        one_line(Exception(result.error.message))


@fuzz(12)
@given(data=mangled(FLV))
def test_a_mangled_flv_stream_is_a_classified_result_in_time(data: bytes) -> None:
    result, took = asyncio.run(_watch("flv", {"live.flv": data}))
    _classified(result, took)


@fuzz(8)
@given(
    playlist=st.one_of(st.just(PLAYLIST.encode()), mangled(PLAYLIST.encode())),
    segment=mangled(TS),
)
def test_a_mangled_hls_stream_is_a_classified_result_in_time(playlist: bytes, segment: bytes) -> None:
    result, took = asyncio.run(_watch("hls", {"index.m3u8": playlist, "seg0.ts": segment}))
    _classified(result, took)


def test_the_unmangled_streams_play() -> None:
    """The fuzzed streams start from ones the viewers read, so a mangling is what fails."""
    for kind, files in (
        ("flv", {"live.flv": FLV}),
        ("hls", {"index.m3u8": PLAYLIST.encode(), "seg0.ts": TS}),
    ):
        result, _ = asyncio.run(_watch(kind, files))
        assert (result.video.frames or 0) >= 10, (kind, result.error)


def test_the_sample_fleet_and_profile_parse() -> None:
    """The mutations start from valid files, so a refusal comes from what was mutated."""
    assert parse_fleet(FLEET).targets
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weak.toml"
        path.write_text(PROFILE)
        assert list(load_profiles(path)) == ["weak"]
    assert tomllib.loads(PROFILE)
