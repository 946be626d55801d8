"""One wording for every bad value, wherever it was read (qoe.checks)."""

from __future__ import annotations

import pytest

from qoe import checks


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: checks.number("3", "duration"), "duration: must be a number, got '3'"),
        (lambda: checks.number(True, "delay"), "delay: must be a number, got true"),
        (lambda: checks.number(float("nan"), "delay"), "delay: must be a finite number, got nan"),
        (lambda: checks.number(-1, "delay", minimum=0), "delay: must be >= 0, got -1"),
        (lambda: checks.number(0, "rate", above=0), "rate: must be > 0, got 0"),
        (lambda: checks.probability(1.5, "loss"), "loss: must be between 0 and 1, got 1.5"),
        (lambda: checks.whole(2.0, "count"), "count: must be a whole number, got 2.0"),
        (lambda: checks.whole(0, "count", minimum=1), "count: must be at least 1, got 0"),
        (lambda: checks.boolean("yes", "decode"), "decode: must be true or false, got 'yes'"),
        (lambda: checks.text("", "name"), "name: must be a non-empty string, got ''"),
        (lambda: checks.texts(["a", 3], ("fleet", "profiles")),
         "fleet.profiles[1]: must be a non-empty string, got 3"),
        (lambda: checks.one_of("cauchy", ("normal", "pareto"), "jitter"),
         "jitter: must be one of normal, pareto, got 'cauchy'"),
        (lambda: checks.table(5, ("targets", 0, "labels")), "targets[0].labels: must be a table, got 5"),
        (
            lambda: checks.known_keys({"cuont": 1}, {"count", "duration"}, ("targets", 1)),
            "targets[1].cuont: unknown key 'cuont'; did you mean 'count'? (known: count, duration)",
        ),
        (
            lambda: checks.known_keys({"zzz": 1}, {"rate"}, what="option for chat probes"),
            "zzz: unknown option 'zzz' for chat probes (known: rate)",
        ),
    ],
)  # fmt: skip
def test_a_bad_value_names_where_what_was_expected_and_what_was_given(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(checks.BadValue) as bad:
        call()
    assert str(bad.value) == message


def test_good_values_come_back_typed() -> None:
    assert checks.number(3, "x") == 3.0 and isinstance(checks.number(3, "x"), float)
    assert checks.whole(3, "x", minimum=1) == 3
    assert checks.texts(["a", "b"]) == ["a", "b"]
    checks.known_keys({"count": 1}, {"count"})


def test_a_problem_keeps_its_path_so_a_reader_can_locate_it() -> None:
    bad = checks.BadValue(("schedule", 0, "loss"), "must be between 0 and 1, got 3")
    assert bad.where == ("schedule", 0, "loss")
    assert str(bad.under("downlink")) == "downlink.schedule[0].loss: must be between 0 and 1, got 3"
