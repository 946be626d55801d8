"""The built-in profiles and the profile loader's strict validation (sim.profiles).

Each bad file is paired with its exact message: configuration is strict."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from qoe.errors import ConfigError
from sim.netem import LinkConfig, simulate
from sim.profiles import Profile, list_profiles, load_profile

PROFILES_DIR = Path(__file__).resolve().parent.parent / "sim" / "profiles"
REQUIRED = [
    "none", "wifi", "4g", "4g-congested", "3g", "slow-3g", "lossy-wifi", "subway",
    "att-lte-driving", "tmobile-umts-driving", "verizon-lte-short",
]  # fmt: skip


def test_builtin_names() -> None:
    names = list_profiles()
    assert set(REQUIRED) <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", REQUIRED)
def test_every_builtin_profile_loads_and_says_where_its_numbers_come_from(name: str) -> None:
    profile = load_profile(name)
    assert isinstance(profile, Profile) and profile.name == name
    assert profile.description and profile.source


def test_devtools_latency_is_converted_to_one_way_packet_delay() -> None:
    # docs/SOURCES.md: Chrome "Fast 3G" 562.5 ms per request -> 150 ms RTT -> 75 ms one way.
    fast3g = load_profile("3g")
    assert fast3g.downlink.delay == pytest.approx(0.075)
    assert (fast3g.downlink.rate, fast3g.uplink.rate) == (1_440_000, 675_000)
    assert "one-way per packet" in fast3g.source
    slow3g = load_profile("slow-3g")
    assert slow3g.downlink.delay == pytest.approx(2.0 / 3.75 / 2, abs=1e-4)
    assert load_profile("wifi").downlink.delay == pytest.approx(0.001)


def test_none_is_a_perfect_link() -> None:
    profile = load_profile("none")
    times = np.arange(1000) * 0.001
    for link in (profile.downlink, profile.uplink):
        fates = simulate(link, times, 1200, np.random.default_rng(0))
        assert np.array_equal(fates.departures, times)


def test_special_profiles_use_their_features() -> None:
    lossy = load_profile("lossy-wifi")
    assert lossy.downlink.burst_length is not None and lossy.downlink.loss > 0
    subway = load_profile("subway")
    assert subway.downlink.trace is not None and subway.downlink.outages
    assert load_profile("4g-congested").downlink.schedule


@pytest.mark.parametrize(
    ("name", "down", "up"),
    [
        ("att-lte-driving", "ATT-LTE-driving-2016.down", "ATT-LTE-driving-2016.up"),
        ("tmobile-umts-driving", "TMobile-UMTS-driving.down", "TMobile-UMTS-driving.up"),
        ("verizon-lte-short", "Verizon-LTE-short.down", "Verizon-LTE-short.up"),
    ],
)
def test_trace_profiles_replay_the_shipped_traces(name: str, down: str, up: str) -> None:
    profile = load_profile(name)
    assert profile.downlink.trace is not None and profile.uplink.trace is not None
    assert Path(profile.downlink.trace.name).name == down
    assert Path(profile.uplink.trace.name).name == up
    assert "Winstein" in profile.source


def test_traces_ship_with_their_attribution() -> None:
    readme = (PROFILES_DIR / "traces" / "README.md").read_text()
    assert "Winstein" in readme and "Mahimahi" in readme


def test_3g_downlink_capacity() -> None:
    link = load_profile("3g").downlink
    size, rate = 1200, 1_440_000
    per_second = 2 * rate / 8 / size
    times = np.arange(int(per_second * 6)) / per_second
    fates = simulate(link, times, size, np.random.default_rng(1))
    served = fates.served
    bits = np.sum((served >= 1.0) & (served < 6.0)) * size * 8
    assert bits / 5.0 == pytest.approx(rate, rel=0.03)


def _file(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_user_file_with_one_profile_at_top_level(tmp_path: Path) -> None:
    (tmp_path / "cap.down").write_text("0\n5\n10\n")
    path = _file(
        tmp_path,
        'description = "mine"\n[downlink]\ndelay = 0.01\ntrace = "cap.down"\n'
        "outages = [[1, 2]]\n"
        "schedule = [{at = 5, loss = 0.1}]\n",
        name="edge.toml",
    )
    profile = load_profile(str(path))
    assert profile.name == "edge" and profile.description == "mine" and profile.source == ""
    assert profile.downlink.delay == 0.01 and profile.downlink.outages == ((1.0, 2.0),)
    assert profile.downlink.trace is not None
    assert profile.downlink.trace.times_ms.tolist() == [0, 5, 10]
    assert profile.downlink.schedule[0][0] == 5.0
    assert profile.uplink == profile.uplink.__class__()  # absent direction: no impairment


def test_user_file_with_a_table_of_profiles(tmp_path: Path) -> None:
    path = _file(tmp_path, "[a.downlink]\ndelay = 0.1\n[b.uplink]\nloss = 0.2\n")
    assert load_profile(f"{path}#b").uplink.loss == 0.2
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    assert str(info.value) == f"{path}: holds 2 profiles (a, b); choose one with {path}#NAME"
    with pytest.raises(ConfigError) as info:
        load_profile(f"{path}#c")
    assert str(info.value) == f"{path}: no profile 'c' (has: a, b)"


def test_unknown_builtin_name() -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("5g")
    assert str(info.value).startswith("unknown profile '5g' (built-in: none, wifi, ")


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_profile(str(missing))
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"
    broken = _file(tmp_path, "[x\n")
    with pytest.raises(ConfigError) as info:
        load_profile(str(broken))
    assert str(info.value).startswith(f"{broken}: invalid TOML: ")
    empty = _file(tmp_path, "", name="empty.toml")
    with pytest.raises(ConfigError) as info:
        load_profile(str(empty))
    assert str(info.value) == f"{empty}: no profiles in file"


SCHEDULABLE = "delay, jitter, loss, burst_length, rate, duplicate"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('colour = "red"', "colour: unknown key 'colour' (known: description, downlink, source, uplink)"),
        ("description = 3", "description: must be a string, got 3"),
        ("downlink = 5", "downlink: must be a table, got 5"),
        ("[x.downlink]\nlossy = 0.1", "downlink.lossy: unknown key 'lossy'; did you mean 'loss'? (known: "
         f"{', '.join(sorted(f.name for f in dataclasses.fields(LinkConfig)))})"),
        ('[x.downlink]\ndelay = "50ms"', "downlink.delay: must be a number, got '50ms'"),
        ('[x.downlink]\nreorder = "yes"', "downlink.reorder: must be true or false, got 'yes'"),
        ("[x.downlink]\nrate = 1e6\nqueue_packets = 1.5",
         "downlink.queue_packets: must be a whole number, got 1.5"),
        ("[x.downlink]\ndelay = -0.01", "downlink.delay: must be >= 0, got -0.01"),
        ("[x.uplink]\njitter = -1", "uplink.jitter: must be >= 0, got -1"),
        ("[x.downlink]\nloss = 1.5", "downlink.loss: must be between 0 and 1, got 1.5"),
        ("[x.downlink]\nloss = -0.1", "downlink.loss: must be between 0 and 1, got -0.1"),
        ("[x.uplink]\nburst_length = 0.5", "uplink.burst_length: must be >= 1, got 0.5"),
        ("[x.downlink]\nrate = 0", "downlink.rate: must be > 0, got 0"),
        ("[x.downlink]\nrate = -1_000", "downlink.rate: must be > 0, got -1000"),
        ("[x.downlink]\nduplicate = 2", "downlink.duplicate: must be between 0 and 1, got 2"),
        ("[x.downlink]\noutages = 5",
         "downlink.outages: must be an array of [start, duration] pairs"),
        ("[x.downlink]\noutages = [[1, -2]]", "downlink.outages[0].duration: must be > 0, got -2"),
        ("[x.downlink]\nschedule = [{loss = 0.1}]",
         "downlink.schedule[0]: must be a table with 'at' and the fields to change"),
        ("[x.downlink]\nschedule = [{at = 1, colour = 1}]",
         f"downlink.schedule[0].colour: cannot be scheduled (schedulable: {SCHEDULABLE})"),
        ("[x.downlink]\nschedule = [{at = 1, loss = 3}]",
         "downlink.schedule[0].loss: must be between 0 and 1, got 3"),
        ("[x.downlink]\ntrace = 5", "downlink.trace: must be a non-empty string, got 5"),
        ('[x.downlink]\ntrace = "t.down"\nrate = 1e6',
         "downlink.rate: cannot be combined with trace (the trace sets the capacity)"),
    ],
)  # fmt: skip
def test_bad_profile(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "t.down").write_text("0\n10\n")
    if not body.startswith("["):
        body = f"[x]\n{body}"
    path = _file(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    assert str(info.value) == f"profile 'x': {message}"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read: No such file or directory"),
        ("", "empty trace"),
        ("0\nten\n", "line 2: not a non-negative integer: 'ten'"),
        ("0\n10\n5\n", "line 3: timestamps must not decrease, got 5 after 10"),
    ],
)
def test_bad_trace_in_profile(tmp_path: Path, content: str | None, problem: str) -> None:
    trace = tmp_path / "cap.down"
    if content is not None:
        trace.write_text(content)
    path = _file(tmp_path, '[x.uplink]\ntrace = "cap.down"\n')
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    assert str(info.value) == f"profile 'x': uplink.trace: trace file {trace}: {problem}"
