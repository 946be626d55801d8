"""The parallel workers' rules (tests/sharing.py), run on a small suite of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT
from tests.sharing import HEAVY_SEATS, RUN_ID

SUITE = """
    import os
    from pathlib import Path

    import pytest

    FLAGS = Path(os.environ["FLAGS"])

    @pytest.mark.slow
    def test_crowded_out_once():
        # The first attempt fails, as a figure spoiled by a neighbour would.
        flag = FLAGS / "crowded"
        if not flag.exists():
            flag.touch()
            assert 0.002 > 0.012, "the shaped path is only 2 ms slower"

    @pytest.mark.slow
    def test_wrong_alone_too():
        assert 1 + 1 == 3, "a real regression"

    @pytest.mark.slow
    @pytest.mark.heavy
    @pytest.mark.parametrize("n", range(4))
    def test_heavy(n):
        # Each notes when it ran; no more than HEAVY_SEATS of them may overlap.
        import time
        start = time.time()
        time.sleep(0.6)
        with open(FLAGS / "heavy", "a") as f:
            f.write(f"{start} {time.time()}\\n")

    def test_quick_fails_once():
        flag = FLAGS / "quick"
        if not flag.exists():
            flag.touch()
            raise AssertionError("quick tests are not measured again")
"""

CONFTEST = """
    from tests.sharing import (  # noqa: F401
        pytest_collection_modifyitems,
        pytest_runtest_logreport,
        pytest_runtest_protocol,
        pytest_terminal_summary,
    )
"""


def run_suite(where: Path, *args: str) -> str:
    (where / "test_suite.py").write_text(textwrap.dedent(SUITE))
    (where / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    markers = "".join(f"\n    {name}: {name}" for name in ("slow", "alone", "heavy"))
    (where / "pytest.ini").write_text(f"[pytest]\nmarkers ={markers}\n")
    env = {k: v for k, v in os.environ.items() if k != RUN_ID}
    env["PYTHONPATH"] = ROOT
    env["FLAGS"] = str(where)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={where / 'tmp'}", *args],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout + done.stderr


def test_a_slow_test_failing_beside_others_is_measured_again_alone_and_listed(tmp_path: Path) -> None:
    out = run_suite(tmp_path, "-n", "2")
    assert "2 failed, 5 passed" in out, out
    assert "FAILED test_suite.py::test_wrong_alone_too" in out
    assert "FAILED test_suite.py::test_quick_fails_once" in out
    assert "1 failed beside others, passed alone" in out
    assert "test_suite.py::test_crowded_out_once: AssertionError: the shaped path is only 2 ms slower" in out


def test_one_at_a_time_nothing_is_measured_twice(tmp_path: Path) -> None:
    out = run_suite(tmp_path)
    assert "3 failed, 4 passed" in out, out
    assert "passed alone" not in out


def test_no_more_heavy_tests_at_once_than_there_are_seats(tmp_path: Path) -> None:
    run_suite(tmp_path, "-n", "4")
    spans = [tuple(map(float, line.split())) for line in (tmp_path / "heavy").read_text().splitlines()]
    assert len(spans) == 4
    overlap = max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)
    assert overlap == HEAVY_SEATS, spans
