"""A probe-only install (no ``[impact]`` extra): the analytics commands say how to get it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Runs the CLI as if the analytics stack were not installed: a module set to None in
# sys.modules cannot be imported.
WITHOUT_EXTRA = (
    "import sys\n"
    "for name in ('duckdb', 'pyarrow', 'scipy', 'matplotlib'):\n"
    "    sys.modules[name] = None\n"
    "from qoe.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["impact", "--help"], None),
        (["impact", "sessions.parquet", "--out", "out"], "qoe impact"),
        (["audience", "simulate", "--out", "out"], "qoe audience simulate"),
    ],
)
def test_without_the_extra_the_command_names_the_install(
    args: list[str], command: str | None, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"},
    )
    if command is None:  # help needs nothing beyond the core install
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{command}: error: {command} needs the analytics extra (duckdb, pyarrow")
    assert lines[0].endswith("pip install 'qoe-probe[impact]'")
