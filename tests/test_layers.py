"""The layers hold: core <- network emulation <- probes <- room <- app, analytics beside.

The contracts live in pyproject.toml (``[tool.importlinter]``) and docs/ARCHITECTURE.md
explains them. The other tests prove the check can fail: a copy of the packages with one
forbidden import added is refused, naming the contract it broke.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT, str(root / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env=env,
    )


def test_the_import_contracts_hold() -> None:
    done = lint(Path(ROOT))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "reason"),
    [
        (  # a core module reaching up into the probes
            "qoe/metrics.py",
            "from probes import run_probe",
            "app -> room -> probes -> network emulation -> core",
            "qoe.metrics is not allowed to import probes",
        ),
        (  # the link model reaching up into the proxy
            "sim/netem/link.py",
            "from sim.proxy import UdpProxy",
            "network emulation: proxy -> shaper -> profiles -> link model",
            "sim.netem.link -> sim.proxy",
        ),
        (  # two core modules importing each other
            "qoe/result.py",
            "import qoe.metrics",
            "no import cycle between siblings",
            "- .result -> .metrics",
        ),
        (  # the analytics running a probe
            "qoe/impact/analysis.py",
            "import probes",
            "the analytics read results, never run probes or rooms",
            "qoe.impact.analysis -> probes",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str, reason: str
) -> None:
    skip = shutil.ignore_patterns("__pycache__")
    for package in ("qoe", "probes", "sim"):
        shutil.copytree(Path(ROOT) / package, tmp_path / package, ignore=skip)
    shutil.copy(Path(ROOT) / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{line}\n")
    done = lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{contract} BROKEN" in done.stdout
    assert reason in done.stdout, done.stdout


def test_the_command_line_loads_the_heavy_modules_only_where_a_command_uses_them() -> None:
    heavy = ("aiortc", "av", "aiohttp", "probes", "sim.room", "qoe.fleet", "qoe.exporter", "qoe.media")
    code = f"import sys, qoe.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
