"""SLO verdicts: what passes, what fails, and that nothing passes by default."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from qoe import metrics
from qoe.errors import ConfigError, ProbeError
from qoe.fleet import expand, judge, junit_xml, parse_fleet, parse_shard, read_results, summary_table
from qoe.fleet.report import Judgement
from qoe.fleet.slo import evaluate, numeric_fields, parse_slo
from qoe.result import ProbeResult
from qoe.timeline import RunInfo, Timeline, VideoFrameEvent

FIELDS = numeric_fields(("signaling",))


def result(join: float | None = 0.5, success: bool = True, run: str = "t/none/0", **extra: object) -> dict:
    data = {
        "run": run,
        "target": "t",
        "profile": "none",
        "success": success,
        "error": None if success else {"kind": "connect", "message": "refused"},
        "join": {"total_seconds": join},
        "video": {"stall_ratio": 0.0},
    }
    data.update(extra)
    return data


@pytest.mark.parametrize(
    ("slo", "joins", "passed", "measured"),
    [
        ("join.total_seconds p95 <= 2.0", [0.5, 1.0, 1.5], True, 1.45),
        ("join.total_seconds max <= 1.2", [0.5, 1.0, 1.5], False, 1.5),
        ("join.total_seconds <= 1.2", [0.5, 1.0, 1.5], False, 1.5),  # every run
        ("join.total_seconds >= 0.6", [0.5, 1.0, 1.5], False, 0.5),
        ("join.total_seconds within [0.4, 1.6]", [0.5, 1.0, 1.55], True, 1.55),
        ("join.total_seconds mean within [0.4, 0.9]", [0.5, 1.0, 1.5], False, 1.0),
    ],
)
def test_aggregates_and_bounds(slo: str, joins: list[float], passed: bool, measured: float) -> None:
    verdict = evaluate(parse_slo(slo, FIELDS), "t", "none", [result(j) for j in joins])
    assert verdict.passed is passed
    assert verdict.measured == pytest.approx(measured)
    assert f"{'meets' if passed else 'breaks'} bound" in verdict.message


def test_a_failed_run_fails_the_slo_even_if_the_others_pass() -> None:
    verdict = evaluate(
        parse_slo("join.total_seconds p95 <= 2", FIELDS),
        "t",
        "none",
        [result(0.5), result(None, success=False)],
    )
    assert not verdict.passed
    assert verdict.message == "1 of 2 runs failed (connect: refused)"


def test_success_slos_measure_failures_instead() -> None:
    runs = [result(0.5)] * 9 + [result(None, success=False)]
    assert evaluate(parse_slo("success mean >= 0.9", FIELDS), "t", "none", runs).passed
    assert not evaluate(parse_slo("success mean >= 0.95", FIELDS), "t", "none", runs).passed


def test_an_unmeasured_figure_fails() -> None:
    verdict = evaluate(parse_slo("join.total_seconds p95 <= 2", FIELDS), "t", "none", [result(None)])
    assert not verdict.passed and "not measured in 1 of 1 runs" in verdict.message


def test_missing_runs_fail() -> None:
    slo = parse_slo("join.total_seconds p95 <= 2", FIELDS)
    assert not evaluate(slo, "t", "none", []).passed
    assert "1 of 2 planned runs have no result" in evaluate(slo, "t", "none", [result()], planned=2).message


FLEET = """\
slos = ["join.total_seconds p95 <= 2.0"]
[fleet]
count = 7
profiles = ["none", "4g", "3g"]
[[targets]]
name = "a"
url = "http://127.0.0.1:1/whep/a"
[[targets]]
name = "b"
url = "http://127.0.0.1:1/whep/b"
count = 11
[[targets]]
name = "c"
url = "http://127.0.0.1:1/whep/c"
profiles = ["none"]
"""


@pytest.mark.parametrize("shards", [1, 2, 3, 5, 7, 64])
def test_shards_cover_every_run_exactly_once(shards: int) -> None:
    fleet = parse_fleet(FLEET)
    everything = [run.id for run in expand(fleet)]
    assert len(everything) == 3 * 7 + 3 * 11 + 7 == len(set(everything))
    parts = [[run.id for run in expand(fleet, parse_shard(f"{i}/{shards}"))] for i in range(1, shards + 1)]
    assert sorted(run for part in parts for run in part) == sorted(everything)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shard_from_an_indexed_job() -> None:
    assert str(parse_shard("auto/4", {"JOB_COMPLETION_INDEX": "2"})) == "3/4"
    for bad, message in [
        ("0/3", "between 1 and 3"),
        ("4/3", "between 1 and 3"),
        ("1-3", "expected I/N"),
        ("auto/3", "needs JOB_COMPLETION_INDEX"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_shard(bad, {})


def test_report_counts_bad_lines_and_duplicates(tmp_path) -> None:
    fleet = parse_fleet(FLEET.replace("count = 7", "count = 1").replace("count = 11", "count = 1"))
    good = [result(0.3, run=run.id, target=run.target.name, profile=run.profile) for run in expand(fleet)]
    path = tmp_path / "r.jsonl"
    lines = [json.dumps(r) for r in good] + ["{not json", json.dumps({"hello": 1}), json.dumps(good[0])]
    path.write_text("\n".join(lines) + "\n")
    results, problems = read_results([path])
    assert len(results) == len(good) + 1
    assert problems == [
        f"{path}:8: not a JSON result (Expecting property name enclosed in double quotes)",
        f"{path}:9: not a fleet ProbeResult (no 'run' or 'success')",
    ]
    judgement = judge(fleet, expand(fleet), results)
    judgement.problems[:0] = problems
    assert judgement.problems[-1] == "run a/none/0 has 2 results; shards overlap or a file was merged twice"
    assert not judgement.passed
    assert all(v.passed for v in judgement.verdicts)  # the figures are fine; the data is not
    xml = junit_xml(judgement)
    assert 'name="every run has exactly one readable result"' in xml and "3 problems" in xml


def test_an_overloaded_probe_host_is_a_warning_not_a_verdict() -> None:
    fleet = parse_fleet(FLEET.replace("count = 7", "count = 1").replace("count = 11", "count = 1"))
    runs = expand(fleet)

    def host(worst: float, busy: float = 0.5) -> dict:
        lag = {"p50": 0.001, "p95": min(worst, 0.004), "max": worst}
        return {"loop_lag_seconds": lag, "cpu_busy_ratio": busy, "overloaded": worst > 0.1 or busy >= 0.85}

    results = [
        result(0.3, run=r.id, target=r.target.name, profile=r.profile, probe_host=host(0.006)) for r in runs
    ]
    calm = judge(fleet, runs, results)
    assert calm.warnings == [] and calm.passed

    # One run's loop stalled; another's loop kept time on a machine 91 % busy.
    results[1]["probe_host"], results[4]["probe_host"] = host(0.183), host(0.021, busy=0.914)
    results.append(dict(results[1]))  # a duplicate is a problem, and is not counted twice here
    judgement = judge(fleet, runs, results)
    assert judgement.warnings == [
        f"the probe host was overloaded in 2 of {len(runs)} runs (event loop up to 183 ms late, "
        "CPUs up to 91 % busy): their freezes and latencies may be the fleet's own; lower "
        "--concurrency or add shards"
    ]
    assert all(v.passed for v in judgement.verdicts)
    assert summary_table(judgement).endswith("warning: " + judgement.warnings[0])


def test_an_slo_broken_only_on_an_overloaded_host_is_flagged_not_failed() -> None:
    slo = parse_slo("video.freeze_count max <= 0", numeric_fields(()))

    def run(freezes: int, overloaded: bool) -> dict:
        return result(
            video={"stall_ratio": 0.0, "freeze_count": freezes}, probe_host={"overloaded": overloaded}
        )

    # The one freeze came on a host too busy to trust: not judged.
    flagged = evaluate(slo, "t", "none", [run(0, False), run(1, True), run(0, False)], planned=3)
    assert (flagged.passed, flagged.flagged, flagged.status) == (False, True, "flagged")
    assert flagged.message.endswith(
        "holds over the 2 runs whose host kept up, so not judged: the probe host was overloaded in 1"
    )
    # A freeze on a host that kept up fails, whatever the others did.
    failed = evaluate(slo, "t", "none", [run(1, False), run(1, True), run(0, False)], planned=3)
    assert (failed.passed, failed.flagged, failed.status) == (False, False, "FAIL")
    # With no run on a host that kept up there is nothing to judge by: it fails.
    assert evaluate(slo, "t", "none", [run(1, True)], planned=1).status == "FAIL"
    # A flagged SLO does not fail the fleet; the reports say what was not judged.
    fleet = parse_fleet(FLEET.replace("count = 7", "count = 1").replace("count = 11", "count = 1"))
    runs = expand(fleet)
    judgement = judge(fleet, runs, [])
    judgement.verdicts[:] = [flagged]
    assert judgement.passed
    assert "1 not judged, broken only by runs on an overloaded probe host" in summary_table(judgement)
    assert "<skipped " in junit_xml(judgement) and 'skipped="1"' in junit_xml(judgement)


ODD_FLEET = """\
slos = ["join.total_seconds p95 <= 2.0", "success min >= 1"]
[fleet]
count = 14
[[targets]]
name = "t"
url = "http://127.0.0.1:1/whep/t"
"""


def test_odd_result_lines_are_each_counted_and_named(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fleet_path = tmp_path / "fleet.toml"
    fleet_path.write_text(ODD_FLEET)
    good = [json.dumps(result(0.4, run=f"t/none/{i}")) for i in range(14)]
    odd: list[tuple[bytes, str]] = [
        (json.dumps(result("0.4", run="t/none/1")).encode(), "join.total_seconds is '0.4', not a number"),
        (json.dumps(result(True, run="t/none/2")).encode(), "join.total_seconds is true, not a number"),
        (good[3].replace("0.4", "NaN").encode(), "not a JSON result (a number that is not finite: NaN)"),
        (good[4].replace("0.4", "1e999").encode(), "not a JSON result (a number that is not finite: 1e999)"),
        (good[5].replace("0.4", "9" * 5000).encode(), "not a JSON result (a number too long, or nested too"),
        (b"[" * 100_000, "not a JSON result (a number too long, or nested too deeply)"),
        (good[6].encode().replace(b'"t/none/6"', b'"t/none/\xff"'), "not UTF-8 text"),
        (json.dumps({**result(run="t/none/7", success=False), "error": "boom"}).encode(), "error is not an"),
        (json.dumps(result(run="t/none/8", target=["t"])).encode(), "target is an array, not a string"),
        (json.dumps(result(run="t/none/9", video="fast")).encode(), "video is 'fast', not an object"),
        (json.dumps(result(run="t/none/10", success="yes")).encode(), "success is 'yes', not true or false"),
        (json.dumps(result(run="t/none/11", video={"fps": [30]})).encode(), "video.fps is an array, not a"),
        (b'{"run": "t/none/12", "success": true, "target": "t", "profile": "none"} trailing', "not a JSON"),
    ]
    data = b"\n".join([good[0].encode(), *(line for line, _ in odd), good[13].encode()]) + b"\n"
    results = tmp_path / "results.jsonl"
    results.write_bytes(data)
    junit = tmp_path / "junit.xml"
    done = cli("fleet", "report", "--fleet", str(fleet_path), str(results), "--junit", str(junit))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    problems = [
        line.removeprefix("problem: ") for line in done.stdout.splitlines() if line.startswith("problem:")
    ]
    assert len(problems) == len(odd), done.stdout
    for number, ((_, what), problem) in enumerate(zip(odd, problems, strict=True), start=2):
        assert problem.startswith(f"{results}:{number}: {what}"), problem
    # The 12 runs whose line was bad have no result: every SLO of the group fails for it.
    assert "12 of 14 planned runs have no result" in done.stdout
    failure = ET.parse(junit).getroot().find(".//testcase[@classname='qoe.fleet.results']/failure")
    assert failure is not None and failure.get("message") == f"{len(odd)} problems"
    assert failure.text is not None and len(failure.text.splitlines()) == len(odd)


def test_more_bad_lines_than_listed_are_counted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(["{not json"] * 25 + [json.dumps(result())]) + "\n")
    results, problems = read_results([path])
    assert len(results) == 1 and len(problems) == 21
    assert problems[19].startswith(f"{path}:20: not a JSON result")
    assert problems[20] == f"{path}: 5 more bad lines (25 in all)"


def test_results_of_other_runs_are_problems_not_dropped() -> None:
    fleet = parse_fleet(ODD_FLEET.replace("count = 14", "count = 2"))
    runs = expand(fleet)
    results = [
        result(run="t/none/0"),
        result(run="t/none/1", target="u"),  # names another target than its run's
        result(run="old/none/0"),  # a run this fleet file does not plan
        result(run="old/none/1"),
    ]
    judgement = judge(fleet, runs, results)
    assert judgement.problems == [
        "2 results are of runs the fleet file does not plan (first: 'old/none/0'); results of another "
        "fleet, or of an older version of it",
        "run t/none/1: its result names target 'u' and profile 'none', not the run's own",
    ]
    assert not judgement.passed
    assert all(v.runs == 1 for v in judgement.verdicts)


def test_junit_is_valid_xml_whatever_the_text_in_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A server's error text reaches the results file, a profile name comes from the fleet file:
    # colour codes, a NUL and a lone surrogate in either must not make the file unreadable.
    hostile = "boom \x1b[31mred\x1b[0m \x00nul \ud800 \x1b]0;title\x07"
    failed = result(None, success=False, error={"kind": "connect\x1b[31m", "message": hostile})
    slo = parse_slo("join.total_seconds p95 <= 2", FIELDS)
    verdict = evaluate(slo, "t", "evil\x1b[31m\x00.toml", [result(0.5), failed])
    judgement = Judgement([verdict], problems=[f"r.jsonl:3: {hostile}"])
    xml = junit_xml(judgement)
    root = ET.fromstring(xml.encode("utf-8"))  # parses: nothing XML 1.0 refuses is left
    assert "\x1b" not in xml and "\x00" not in xml and "\ud800" not in xml and "\x07" not in xml
    case = root.find(".//testcase/failure")
    assert case is not None
    assert case.get("message") == "1 of 2 runs failed (connect: boom red nul  )"
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "t [evil.toml]"
    (tmp_path / "junit.xml").write_text(xml, encoding="utf-8")
    assert "\x1b" not in summary_table(judgement)


def test_whole_results_as_a_fleet_writes_them_are_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Every section a probe fills, the network profile's table among them: a check of the
    # schema that refused any of it would turn every real run into a problem.
    log = Timeline(("first_frame",), start=0.0, started_at=1e9, end=3.0, role="viewer")
    log.run = RunInfo(probe="viewer", kind="whep", target="t")
    log.video = [VideoFrameEvent(i / 30, 1e9 + i / 30, i / 30, 64, 36) for i in range(90)]
    measured = metrics.result_of(log)
    measured.run, measured.profile = "t/none/0", "none"
    measured.network = {"profile": "4g", "downlink": {"delay_ms": 40, "loss": 0.01}, "trace": None}
    failed = ProbeResult(probe="viewer", kind="whep", target="t", run="t/none/1")
    failed.fail(ProbeError("connection refused"))
    path = tmp_path / "r.jsonl"
    path.write_text(measured.to_json() + "\n" + failed.to_json() + "\n")
    results, problems = read_results([path])
    assert problems == [] and [r["run"] for r in results] == ["t/none/0", "t/none/1"]
    assert results[0]["video"]["fps"] == pytest.approx(30.0, abs=0.5)
