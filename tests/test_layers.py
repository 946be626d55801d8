"""The layers hold: core <- network emulation <- probes <- room <- app, analytics beside.

The contracts live in pyproject.toml (``[tool.importlinter]``) and docs/ARCHITECTURE.md
explains them. The second test proves the check can fail: a copy of the packages with one
upward import added is refused, naming the contract it broke.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_them(tmp_path: Path) -> None:
    skip = shutil.ignore_patterns("__pycache__")
    for package in ("qoe", "probes", "sim"):
        shutil.copytree(Path(ROOT) / package, tmp_path / package, ignore=skip)
    shutil.copy(Path(ROOT) / "pyproject.toml", tmp_path)
    with (tmp_path / "qoe" / "metrics.py").open("a") as core:
        core.write("\nfrom probes import run_probe  # a core module reaching up into the probes\n")
    done = lint(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "app -> room -> probes -> network emulation -> core BROKEN" in done.stdout
    assert "qoe.metrics is not allowed to import probes" in done.stdout
