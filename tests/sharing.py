"""How the suite's parallel workers share the machine: most tests side by side, a few alone.

``scripts/test.sh -n 3`` runs the suite on three pytest-xdist workers: most of its time is
real media played in real time, which waits far more than it computes. Three kinds of test:

- ``alone``: those that load the machine on purpose (a flood of viewers), those whose ground
  truth a busy host would move (a room or a publisher that must send on time, a reference
  player that must not freeze for want of CPU) and those that check this host's own timing
  (the emulator's scheduling). No ``slow`` test runs beside one, nor another ``alone`` one;
- ``slow``: the end-to-end tests, which run rooms, probes and browsers; they run side by side;
- the rest, quick and in one process, run beside anything and take no lock. At worst two of
  them beside an ``alone`` test are two busy cores, which every timing test is held to
  (it must pass with two CPU burners beside it, or say its host was overloaded).

The lock is a readers-writer lock of two files:

- a ``slow`` test holds the *room* lock shared while it runs; an ``alone`` test holds it alone;
- both pass a *door* lock on their way to the room lock, and hold it until they have the
  room: an ``alone`` test waiting for the room thus keeps new slow tests from slipping in
  ahead of it (otherwise the workers' back-to-back tests could keep it waiting to the end).

:func:`order` hands the workers the ``alone`` tests spread among the quick ones, so that the
other workers have quick tests to run meanwhile, and the slow tests after them.
Outside xdist nothing is locked or reordered: the tests run one at a time anyway.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest

RUN_ID = "PYTEST_XDIST_TESTRUNUID"
"""Set by pytest-xdist to one value for every worker of one run."""


def lock_dir() -> Path | None:
    """Where this run's lock files live, or None outside a parallel run."""
    run = os.environ.get(RUN_ID)
    return Path(tempfile.gettempdir()) / f"qoe-tests-{run}" if run else None


def _locked(path: Path, operation: int) -> int:
    """An open descriptor of ``path`` holding an flock ``operation``; closing it unlocks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
    except BaseException:
        os.close(fd)
        raise
    return fd


Kind = Literal["alone", "slow", "quick"]


def kind(item: pytest.Item) -> Kind:
    if item.get_closest_marker("alone"):
        return "alone"
    return "slow" if item.get_closest_marker("slow") else "quick"


@contextmanager
def share_machine(item: pytest.Item) -> Iterator[None]:
    """Hold the machine as ``item``'s kind needs while it runs (see the module doc)."""
    where = lock_dir()
    what = kind(item)
    if where is None or what == "quick":
        yield
        return
    where.mkdir(exist_ok=True)
    door = _locked(where / "door", fcntl.LOCK_EX)
    try:
        room = _locked(where / "room", fcntl.LOCK_EX if what == "alone" else fcntl.LOCK_SH)
    finally:
        os.close(door)
    try:
        yield
    finally:
        os.close(room)


def order(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place for parallel workers: each ``alone`` test after an even
    share of the quick ones, then the slow tests (see the module doc)."""
    groups: dict[Kind, list[pytest.Item]] = {"alone": [], "quick": [], "slow": []}
    for item in items:
        groups[kind(item)].append(item)
    alone, quick, slow = groups["alone"], groups["quick"], groups["slow"]
    share = len(quick) // max(1, len(alone))
    mixed: list[pytest.Item] = []
    for i, item in enumerate(alone):
        mixed.append(item)
        mixed.extend(quick[i * share : (i + 1) * share])
    mixed.extend(quick[len(alone) * share :])
    items[:] = mixed + slow
