"""The repository explains itself: it cites only documents it has, and no issue tracker.

A user has the repository, not the notes it was built from: a docstring pointing at a file
that is not here, or at an issue number, explains nothing. Definitions live in ``docs/``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(
    r"\.\./shared/|(?<![\w/])(?:DESIGN|STYLE|SERVERS|REFERENCES)\.md\b|\bissue\s+#?\d+|\bthe brief\b",
    re.IGNORECASE,
)
DOC_LINK = re.compile(r"\bdocs/[\w./-]+\.md\b")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = []
    for name in filter(None, listed):
        path = ROOT / name.decode()
        if path.suffix in {".png", ".jpg", ".parquet"} or not path.is_file():
            continue
        files.append(path)
    return files


def test_no_file_cites_a_document_outside_the_repository_or_an_issue() -> None:
    me = Path(__file__).resolve()
    hits = []
    for path in tracked_text_files():
        if path == me:
            continue
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "cites what the repository lacks:\n" + "\n".join(hits)


def test_every_cited_doc_exists() -> None:
    missing = set()
    for path in tracked_text_files():
        for link in DOC_LINK.findall(path.read_text(errors="replace")):
            if not (ROOT / link).is_file():
                missing.add(f"{path.relative_to(ROOT)} -> {link}")
    assert not missing, sorted(missing)


def test_the_scan_catches_what_it_is_for() -> None:
    for line in ("see ../shared/DESIGN.md", "as STYLE.md says", "(issue 5)", "Issue #12", "per the brief"):
        assert OUTSIDE.search(line), line
    for line in ("docs/SOURCES.md, 'Burst loss'", "see docs/METRICS.md", "a known issue with x"):
        assert not OUTSIDE.search(line), line
