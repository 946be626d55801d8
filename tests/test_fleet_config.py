"""Fleet files: strict validation, each bad file paired with its exact message and line."""

from __future__ import annotations

import textwrap
import time

import pytest

from probes import probe_spec
from qoe.errors import ConfigError
from qoe.fleet import expand, parse_fleet
from qoe.fleet.runner import spec_for
from qoe.signal import HOST_TONE_HZ

GOOD = textwrap.dedent(
    """\
    slos = ["join.total_seconds p95 <= 2.0", "video.stall_ratio max <= 0.01"]

    [fleet]
    duration = 5
    count = 2
    profiles = ["none", "4g"]

    [[targets]]
    name = "a"
    url = "http://127.0.0.1:8080/whep/demo"
    labels = { region = "eu" }
    slos = ["av_sync.offset_seconds.median within [-0.185, 0.09]"]

    [[targets]]
    name = "b"
    url = "http://127.0.0.1:8080/whep/other"
    count = 1
    duration = 3
    clock_offset = -0.004

    [[slo]]
    field = "join.phases.first_decoded_frame"
    aggregate = "p95"
    op = "<="
    bound = 0.5
    targets = ["b"]
    """
)


def test_a_good_fleet() -> None:
    fleet = parse_fleet(GOOD, "fleet.toml")
    a, b = fleet.targets
    assert (a.kind, a.duration, a.count, a.profiles, a.labels) == (
        "whep",
        5.0,
        2,
        ("none", "4g"),
        {"region": "eu"},
    )
    assert (b.duration, b.count, b.clock_offset, a.clock_offset) == (3.0, 1, -0.004, None)
    assert [str(s) for s in fleet.slos] == [
        "av_sync.offset_seconds.median within [-0.185, 0.09]",
        "join.total_seconds p95 <= 2",
        "video.stall_ratio max <= 0.01",
        "join.phases.first_decoded_frame p95 <= 0.5",
    ]
    assert fleet.slos[0].targets == ("a",) and fleet.slos[3].targets == ("b",)
    assert [run.id for run in expand(fleet)] == [
        "a/none/0",
        "a/none/1",
        "a/4g/0",
        "a/4g/1",
        "b/none/0",
        "b/4g/0",
    ]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            '"join.total_seconds p95',
            '"join.total_second p95',
            "fleet.toml:1: slos[0]: 'join.total_second' is not a ProbeResult figure "
            "(did you mean 'join.total_seconds'?)",
        ),
        ("max <= 0.01", "maximum <= 0.01", "fleet.toml:1: slos[1]: unknown aggregate 'maximum'"),
        (
            "duration = 3",
            'duration = "3"',
            "fleet.toml:18: targets[1].duration: must be a number, got '3'",
        ),
        (
            "clock_offset = -0.004",
            'clock_offset = "4 ms"',
            "fleet.toml:19: targets[1].clock_offset: must be a number, got '4 ms'",
        ),
        ("bound = 0.5", 'bound = "0.5"', "fleet.toml:25: slo[0].bound: must be a number, got '0.5'"),
        (
            'aggregate = "p95"',
            'aggregate = "p59"',
            "fleet.toml:23: slo[0].aggregate: unknown aggregate 'p59'",
        ),
        ("count = 1\n", "cuont = 1\n", "fleet.toml:17: targets[1].cuont: unknown key"),
        (
            "[-0.185, 0.09]",
            "[0.09, -0.185]",
            "fleet.toml:12: targets[0].slos[0]: 'within' range [0.09, -0.185] is empty",
        ),
        ('"4g"]', '"5g"]', "fleet.toml:6: fleet.profiles[1]: unknown network profile '5g'"),
        ('name = "b"', 'name = "a"', "fleet.toml:15: targets[1].name: duplicate target name 'a'"),
        ('targets = ["b"]', 'targets = ["c"]', "fleet.toml:26: slo[0].targets[0]: no target named 'c'"),
        ("count = 2", "count = 0", "fleet.toml:5: fleet.count: must be at least 1, got 0"),
        ("duration = 5", "duration = -5", "fleet.toml:4: fleet.duration: must be > 0, got -5"),
        (
            '"video.stall_ratio max <= 0.01"',
            '"video.stall_ratio max <= one"',
            "fleet.toml:1: slos[1]: bound 'one' is not a number",
        ),
    ],
)
def test_bad_fleet_files_name_file_line_and_key(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as error:
        parse_fleet(GOOD.replace(old, new, 1), "fleet.toml")
    assert str(error.value).startswith(message), str(error.value)


def test_not_toml_at_all() -> None:
    with pytest.raises(ConfigError, match=r"^fleet.toml: not valid TOML: Invalid value"):
        parse_fleet("slos = [", "fleet.toml")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        ("join.total_second", "'join.total_second' is not a ProbeResult figure"),
        ("p96", "unknown aggregate 'p96'"),
        ("string", "must be a number, got '"),
    ],
)
def test_fleet_check_exits_2_with_one_line(cli, tmp_path, error: str, line: str) -> None:
    text = {
        "join.total_second": GOOD.replace('"join.total_seconds p95', '"join.total_second p95'),
        "p96": GOOD.replace('aggregate = "p95"', 'aggregate = "p96"'),
        "string": GOOD.replace("bound = 0.5", 'bound = "0.5"'),
    }[error]
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    done = cli("fleet", "check", str(path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and line in lines[0]
    assert f"{path}:" in lines[0] and "Traceback" not in done.stderr
    path.write_text(GOOD)
    ok = cli("fleet", "check", str(path))
    assert ok.returncode == 0 and "6 probe runs, 4 SLOs" in ok.stdout


# One misspelled key and one value of the wrong type for every probe kind.
OPTION_CASES = [
    ("whep", "http://h/whep/shop", "playot = 'arrival'", "playout", "tone_hz = 'high'", "number"),
    ("whip", "http://h/whip/shop", "widht = 640", "width", "slot = 0.5", "whole number"),
    ("chat", "ws://h/chat/shop", "rates = 5", "rate", "count = true", "whole number"),
    ("rtmp", "rtmp://h/live/shop", "tone = 1000", "tone_hz", "slot = '1'", "whole number"),
    ("flv", "http://h/live/shop.flv", "slots = 1", "slot", "tone_hz = [1000]", "number"),
    ("hls", "http://h/hls/shop.m3u8", "tone_hzz = 1000", "tone_hz", "tone_hz = true", "number"),
    ("rtsp", "rtsp://h/shop", "slot_ = 1", "slot", "slot = 'host'", "whole number"),
    ("rtmp-publish", "rtmp://h/live/shop", "gop_second = 2", "gop_seconds", "fps = 29.97", "whole number"),
]


def option_fleet(kind: str, url: str, option: str) -> str:
    return textwrap.dedent(
        f"""\
        [[targets]]
        name = "t"
        url = "{url}"
        kind = "{kind}"
        options = {{ {option} }}
        """
    )


@pytest.mark.parametrize(("kind", "url", "typo", "meant", "wrong", "expected"), OPTION_CASES)
def test_every_kinds_options_are_checked_with_file_line_and_a_suggestion(
    kind: str, url: str, typo: str, meant: str, wrong: str, expected: str
) -> None:
    key = typo.split(" = ")[0]
    with pytest.raises(ConfigError) as misspelled:
        parse_fleet(option_fleet(kind, url, typo), "fleet.toml")
    assert str(misspelled.value).startswith(f"fleet.toml:5: targets[0].options.{key}: unknown option {key!r}")
    assert f"did you mean {meant!r}?" in str(misspelled.value)
    bad = wrong.split(" = ")[0]
    with pytest.raises(ConfigError) as mistyped:
        parse_fleet(option_fleet(kind, url, wrong), "fleet.toml")
    assert str(mistyped.value).startswith(
        f"fleet.toml:5: targets[0].options.{bad}: option {bad!r} of {kind} probes: must be a {expected}, got"
    )


def test_fleet_check_names_a_misspelled_option(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "fleet.toml"
    path.write_text(option_fleet("whep", "http://h/whep/shop", 'cohst = "mixed"'))
    done = cli("fleet", "check", str(path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"qoe fleet check: error: {path}:5: targets[0].options.cohst: unknown option 'cohst' for whep "
        "probes; did you mean 'cohost'? (known: chat_url, codecs, cohost, cohost_tone_hz, decode, "
        "ice_transport, interact_every, offer, playout, quality, remb, sample_every, token, tone_hz, verify)"
    ]


def test_qoe_probe_lists_a_kinds_options_and_checks_them(cli) -> None:  # type: ignore[no-untyped-def]
    listed = cli("probe", "--options", "rtmp-publish")
    assert listed.returncode == 0
    assert "video_bitrate: whole number (bit/s) [default 800000]: H.264 target bitrate" in listed.stdout
    done = cli("probe", "ws://127.0.0.1:9/chat/x", "--option", "rate=fast")
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "qoe probe: error: option 'rate' of chat probes: must be a number, got 'fast'",
    )


def test_a_fleet_run_and_the_command_line_make_the_same_spec() -> None:
    """Every field a target sets reaches its runs, through the builder the CLI uses too."""
    fleet = parse_fleet(
        textwrap.dedent(
            """\
            [[targets]]
            name = "t"
            url = "http://h/whep/shop"
            duration = 4
            join_timeout = 3
            media_timeout = 2
            decode = false
            seed = 7
            clock_offset = -0.004
            options = { playout = "arrival" }
            """
        ),
        "fleet.toml",
    )
    [run] = expand(fleet)
    spec = spec_for(run)
    assert spec == probe_spec(
        "http://h/whep/shop",
        duration=4,
        name="whep",
        join_timeout=3,
        media_timeout=2,
        decode=False,
        seed=7,
        clock_offset=-0.004,
        options={"playout": "arrival"},
    )
    assert (spec.kind, spec.media_timeout, spec.decode, spec.seed) == ("whep", 2.0, False, 7)
    assert spec.options["playout"] == "arrival" and spec.options["tone_hz"] == HOST_TONE_HZ  # defaults filled


@pytest.mark.parametrize(
    ("url", "fields", "message"),
    [
        ("http://h/whep/x", {"duration": 0}, "duration: must be > 0, got 0"),
        ("http://h/whep/x", {"media_timeout": -1.0}, "media_timeout: must be > 0, got -1.0"),
        ("http://h/whep/x", {"profile": "5g"}, "unknown profile '5g'"),
        ("http://h/whep/x", {"kind": "webrtc"}, "unknown probe kind 'webrtc'"),
        ("ftp://h/x", {}, "cannot tell the probe kind of 'ftp://h/x'"),
        ("http://h/whep/x", {"options": {"playot": "arrival"}}, "unknown option 'playot' for whep probes"),
    ],
)
def test_a_spec_that_could_not_run_is_refused_before_anything_starts(
    url: str, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        probe_spec(url, **fields)  # type: ignore[arg-type]
    assert str(refused.value).startswith(message), str(refused.value)


TARGET = '[[targets]]\nname = "d"\nurl = "http://127.0.0.1:8080/whep/demo"\n'
NESTED = "[" * 20 + "1" + "]" * 20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            b'[[targets]]\nname = "d\xff"\nurl = "http://127.0.0.1:8080/whep/demo"\n',
            "fleet.toml:2: not UTF-8 text (byte 0xff); TOML files are UTF-8",
        ),
        ("a = " + "[" * 5000 + "]" * 5000, "fleet.toml: arrays or tables nested too deeply (at most 16)"),
        ("a = " + "{b=" * 5000 + "1" + "}" * 5000, "fleet.toml: arrays or tables nested too deeply"),
        (
            TARGET + f"options = {{ a = {NESTED} }}\n",
            "fleet.toml:4: targets[0].options.a[0][0][0][0][0][0][0][0][0][0][0][0]: nested deeper than 16",
        ),
        ("slo = 5\n" + TARGET, "fleet.toml:1: slo: must be [[slo]] tables, got 5"),
        ("targets = [5]\n", "fleet.toml:1: targets[0]: must be a [[targets]] table, got 5"),
        (
            "[fleet]\ncount = 30000000\n" + TARGET,
            "fleet.toml:2: fleet.count: must be at most 10,000, got 30000000",
        ),
        (
            "[fleet]\ncount = 9223372036854775807\n" + TARGET,
            "fleet.toml:2: fleet.count: must be at most 10,000, got 9223372036854775807",
        ),
        (
            "[fleet]\ncount = 10000\n" + "".join(TARGET.replace('"d"', f'"d{i}"') for i in range(11)),
            "fleet.toml: the fleet plans 110,000 probe runs (targets x profiles x count); at most 100,000",
        ),
        (
            '[fleet]\nprofiles = ["none", "4g", "none"]\n' + TARGET,
            "fleet.toml:2: fleet.profiles[2]: profile 'none' is listed twice",
        ),
        ("[fleet]\ninterval = 1e-9\n" + TARGET, "fleet.toml:2: fleet.interval: must be >= 1, got 1e-09"),
        (TARGET + "interval = 0.5\n", "fleet.toml:4: targets[0].interval: must be >= 1, got 0.5"),
        # A text field has no order: an SLO on it could only crash the report that judged it.
        ('slos = ["url <= 1"]\n' + TARGET, "fleet.toml:1: slos[0]: 'url' is not a ProbeResult figure"),
    ],
)
def test_hostile_fleet_files_are_one_line_and_exit_2(cli, tmp_path, text: str | bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "fleet.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    started = time.monotonic()
    done = cli("fleet", "check", str(path), timeout=30)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"qoe fleet check: error: {path}"), lines[0]
    assert message.replace("fleet.toml", str(path), 1) in lines[0], lines[0]
    assert took < 10  # a count of 2**63 is refused, not planned


def test_the_bounds_themselves_are_allowed() -> None:
    text = '[fleet]\ncount = 10000\ninterval = 1\nprofiles = ["none", "4g"]\n' + TARGET
    fleet = parse_fleet(text, "fleet.toml")
    assert (fleet.targets[0].count, fleet.targets[0].interval) == (10000, 1.0)
    assert len(expand(fleet)) == 20000
