"""``qoe fleet`` end to end against a ``qoe room`` process, as CI would run it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT, room_process
from tests.servers import free_port, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.heavy]  # fleets of six viewers

AV_SLO = "av_sync.offset_seconds.median within [-0.185, 0.09]"
FLEET = """\
slos = [
  "success min >= 1",
  "join.total_seconds p95 <= 2.0",
  "video.freeze_count max <= 0",
  "{av_slo}",
]
[fleet]
duration = 4
count = 3
concurrency = 6

[[targets]]
name = "room-a"
url = "{url}/whep/demo"
labels = {{ region = "local" }}

[[targets]]
name = "room-b"
url = "{url}/whep/demo"
"""


def write_fleet(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET.format(url=url, av_slo=AV_SLO))
    return path


def cases(junit: Path) -> dict[tuple[str, str], str | None]:
    """(classname, name) -> failure message, or None for a passing case."""
    root = ET.parse(junit).getroot()
    out = {}
    for case in root.iter("testcase"):
        failure = case.find("failure")
        out[(case.get("classname", ""), case.get("name", ""))] = (
            None if failure is None else failure.get("message")
        )
    return out


@pytest.mark.slow(seconds=35)
def test_fleet_passes_on_a_clean_room_and_fails_exactly_the_broken_slo(room_proc, cli, tmp_path) -> None:
    with room_proc() as url:
        fleet = write_fleet(tmp_path, url)
        done = cli(
            "fleet",
            "run",
            str(fleet),
            "--json-out",
            str(tmp_path / "ok.jsonl"),
            "--junit",
            str(tmp_path / "ok.xml"),
        )
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in (tmp_path / "ok.jsonl").read_text().splitlines()]
    assert sorted(r["run"] for r in results) == sorted(f"room-{t}/none/{i}" for t in "ab" for i in range(3))
    assert all(r["success"] and r["target"] in ("room-a", "room-b") for r in results)
    assert results[0]["labels"] in ({"region": "local"}, {})
    ok = cases(tmp_path / "ok.xml")
    assert len(ok) == 8 and all(message is None for message in ok.values())
    assert "8 of 8 SLOs hold" in done.stdout

    with room_proc("--av-offset", "0.15") as url:
        fleet = write_fleet(tmp_path, url)
        done = cli("fleet", "run", str(fleet), "--junit", str(tmp_path / "bad.xml"), "--workers", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    failing = {key: message for key, message in cases(tmp_path / "bad.xml").items() if message}
    assert {name for _, name in failing} == {AV_SLO}
    assert {cls for cls, _ in failing} == {"qoe.fleet.room-a.none", "qoe.fleet.room-b.none"}
    for message in failing.values():
        assert message is not None
        assert "breaks bound within [-0.185, 0.09]" in message
        measured = float(message.split("measured worst run ")[1].split()[0])
        assert measured == pytest.approx(0.15, abs=0.01)
    assert "6 of 8 SLOs hold" in done.stdout


@pytest.mark.slow(seconds=28)
async def test_shards_merge_to_the_unsharded_verdict(room_proc, tmp_path) -> None:
    async def qoe(*args: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qoe",
            *args,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        return await asyncio.wait_for(proc.wait(), 120)

    # A room whose av offset breaks one SLO, so the verdict has both passes and failures.
    with room_proc("--av-offset", "0.15") as url:
        fleet = str(write_fleet(tmp_path, url))
        whole = await qoe(
            "fleet",
            "run",
            fleet,
            "--json-out",
            str(tmp_path / "all.jsonl"),
            "--junit",
            str(tmp_path / "all.xml"),
        )
        codes = await asyncio.gather(
            *(
                qoe("fleet", "run", fleet, "--shard", f"{i}/3", "--json-out", str(tmp_path / f"s{i}.jsonl"))
                for i in (1, 2, 3)
            )
        )
    results = {
        name: [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        for name in ("all", "s1", "s2", "s3")
    }
    runs = [[r["run"] for r in results[f"s{i}"]] for i in (1, 2, 3)]
    assert sorted(run for shard in runs for run in shard) == sorted(
        f"room-{t}/none/{i}" for t in "ab" for i in range(3)
    )
    assert all(len(r) == 2 for r in runs)
    merged = await qoe(
        "fleet",
        "report",
        "--fleet",
        fleet,
        *(str(tmp_path / f"s{i}.jsonl") for i in (1, 2, 3)),
        "--junit",
        str(tmp_path / "merged.xml"),
    )
    assert whole == merged == 1
    assert codes == [1, 1, 1]  # each shard alone breaks the av SLO for its own runs
    whole_cases, merged_cases = cases(tmp_path / "all.xml"), cases(tmp_path / "merged.xml")
    assert whole_cases.keys() == merged_cases.keys()
    # The two are separate runs: on a machine a run said was overloaded, a freeze in one and
    # not the other is that machine's, so the stutter SLOs are compared only on a calm one.
    busy = any(r["probe_host"]["overloaded"] for shard in results.values() for r in shard)

    def verdict_of(found: dict[tuple[str, str], str | None]) -> dict[tuple[str, str], bool]:
        return {key: message is None for key, message in found.items() if not (busy and "freeze" in key[1])}

    verdict = verdict_of(whole_cases)
    assert verdict == verdict_of(merged_cases)
    assert sum(not passed for passed in verdict.values()) == 2


@pytest.mark.slow(seconds=14)
def test_the_fleet_waits_for_a_room_started_after_it_and_warms_up_unscored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A CI job that starts the room and the fleet together gets a verdict on the room, not
    connection errors for the runs that came first, nor the start-up of either side."""
    port = free_port()
    fleet = tmp_path / "fleet.toml"
    text = FLEET.format(url=f"http://127.0.0.1:{port}", av_slo=AV_SLO)
    fleet.write_text(text.replace("count = 3", "count = 1\nwait = 20\nwarmup = 1"))
    runner = subprocess.Popen(
        [sys.executable, "-m", "qoe", "fleet", "run", str(fleet)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.0)  # the fleet is waiting before the room exists
        with room_process("--port", str(port)):
            out, err = runner.communicate(timeout=90)
    finally:
        stop_process(runner)
    assert runner.returncode == 0, out + err
    assert "qoe fleet: waiting up to 20 s for 1 target server(s) to answer" in err
    assert "qoe fleet: warming up: watching 2 target(s) for 1 s, unscored" in err
    assert "[2/2]" in err and "8 of 8 SLOs hold" in out
