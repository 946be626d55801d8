"""How the suite's parallel workers share the machine: most tests side by side, a few alone.

``scripts/test.sh`` runs the suite on four pytest-xdist workers: most of its time is
real media played in real time, which waits far more than it computes. Three kinds of test:

- ``alone``: those that load the machine on purpose (a flood of viewers, six rooms at once),
  those that check this host's own timing (the emulator's scheduling, the proxy's rate), and
  two long ones that a neighbour's load would spoil and a second run would cost dearly
  (Prometheus's "no alert fires for the clean room", Chromium's exact freeze counts). No
  ``slow`` test runs beside one, nor another ``alone`` one;
- ``slow``: the end-to-end tests, which run rooms, probes and browsers; they run side by side,
  but those also marked ``heavy`` (a room, its publisher and its viewers in one process, a
  browser, a fleet: half a core or more while they play) only :data:`HEAVY_SEATS` at a time,
  so the other workers spend the spare cores on tests that mostly wait;
- the rest, quick and in one process, run beside anything and take no lock. At worst two of
  them beside an ``alone`` test are two busy cores, which every timing test is held to
  (it must pass with two CPU burners beside it, or say its host was overloaded).

A ``slow`` test whose figures fail beside others is measured once more, alone
(:func:`pytest_runtest_protocol`): what it asserts is held on a host with two busy cores,
not on one where four real-time tests play media at once, and no ``alone`` mark can
foresee every pair of tests that crowd each other out. A test that fails alone too fails
the run; one that passes alone is listed at the end of the run with its first failure, so
the crowding stays in view.

The lock is a readers-writer lock of two files, and seats for the heavy tests:

- a ``slow`` test holds the *room* lock shared while it runs; an ``alone`` test holds it alone;
- both pass a *door* lock on their way to the room lock, and hold it until they have the
  room: an ``alone`` test waiting for the room thus keeps new slow tests from slipping in
  ahead of it (otherwise the workers' back-to-back tests could keep it waiting to the end);
- a ``heavy`` slow test first takes one of :data:`HEAVY_SEATS` seat files, holding nothing
  else while it waits for one, so no lock is ever waited for by a holder of another the
  waiter needs.

:func:`order` hands the workers the ``alone`` tests spread among the quick ones, so that the
other workers have quick tests to run meanwhile, and the slow tests after them, the longest
first (those of 10 s or more say so: ``@pytest.mark.slow(seconds=N)``), so that no long test
starts when the others are nearly done, the heavy ones spread among the others.
Outside xdist nothing is locked or reordered: the tests run one at a time anyway.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest
from _pytest.runner import runtestprotocol

RUN_ID = "PYTEST_XDIST_TESTRUNUID"
"""Set by pytest-xdist to one value for every worker of one run."""


HEAVY_SEATS = 2
"""How many ``heavy`` tests run at once: with the suite's four workers, at least two cores'
worth of the machine stays with tests that mostly wait."""


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
def share_machine(item: pytest.Item, what: Kind | None = None) -> Iterator[None]:
    """Hold the machine as ``item``'s kind needs (or as ``what`` says) while it runs (see the
    module doc)."""
    where = lock_dir()
    what = what or kind(item)
    if where is None or what == "quick":
        yield
        return
    where.mkdir(exist_ok=True)
    seat = _seat(where) if what == "slow" and item.get_closest_marker("heavy") else None
    try:
        door = _locked(where / "door", fcntl.LOCK_EX)
        try:
            room = _locked(where / "room", fcntl.LOCK_EX if what == "alone" else fcntl.LOCK_SH)
        finally:
            os.close(door)
        try:
            yield
        finally:
            os.close(room)
    finally:
        if seat is not None:
            os.close(seat)


def _seat(where: Path) -> int:
    """An open descriptor holding one of the heavy tests' seats; waits until one is free."""
    while True:
        for number in range(HEAVY_SEATS):
            fd = os.open(where / f"seat-{number}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
            else:
                return fd
        time.sleep(0.1)


REMEASURED = "failed beside others, passed alone"
"""The user property a test measured again alone carries, with its first failure."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    """The test protocol under parallel workers (None outside them: pytest's own runs it).

    Runs ``item`` holding the machine as its kind needs; a ``slow`` test whose call failed
    runs again from its setup holding the machine alone, and only that second run's reports
    count (if it passes, each carries :data:`REMEASURED` with the first failure's message).
    """
    if lock_dir() is None:
        return None
    hook = item.ihook
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    with share_machine(item):
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
    failed = next((r for r in reports if r.when == "call" and r.failed), None)
    if failed is not None and kind(item) == "slow":
        if isinstance(item, pytest.Function):
            item._initrequest()  # fresh fixture values, as for a test never run
        with share_machine(item, "alone"):
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
        if not any(r.failed for r in reports):
            for report in reports:
                report.user_properties.append((REMEASURED, _crash(failed)))
    for report in reports:
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _crash(report: pytest.TestReport) -> str:
    """The one line that says why ``report`` failed."""
    crash = getattr(report.longrepr, "reprcrash", None)
    message = str(getattr(crash, "message", "") or report.longreprtext)
    return " ".join(message.split())[:300]


def expected_seconds(item: pytest.Item) -> float:
    """What a slow test says it takes (``@pytest.mark.slow(seconds=N)``, for those of 10 s
    or more), else 0."""
    mark = item.get_closest_marker("slow")
    return float(mark.kwargs.get("seconds", 0)) if mark else 0.0


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
    items[:] = mixed + _heavy_beside_light(slow)


UNSTATED_SECONDS = 5.0
"""What a slow test that states no duration is taken to last, for the order."""


def _heavy_beside_light(slow: list[pytest.Item]) -> list[pytest.Item]:
    """The slow tests, each kind longest first (no long tail), heavy and light interleaved in
    proportion to the lanes each has: a worker that takes a heavy test while both seats are
    held waits for one, doing nothing, so the heavy tests come no faster than their seats
    free up."""

    def seconds(item: pytest.Item) -> float:
        return expected_seconds(item) or UNSTATED_SECONDS

    heavy = sorted((i for i in slow if i.get_closest_marker("heavy")), key=lambda i: -seconds(i))
    light = sorted((i for i in slow if not i.get_closest_marker("heavy")), key=lambda i: -seconds(i))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    lanes = {"heavy": float(HEAVY_SEATS), "light": float(max(1, workers - HEAVY_SEATS))}
    queued = {"heavy": 0.0, "light": 0.0}
    ordered: list[pytest.Item] = []
    while heavy or light:
        take = (
            "heavy"
            if heavy and (not light or queued["heavy"] / lanes["heavy"] <= queued["light"] / lanes["light"])
            else "light"
        )
        item = (heavy if take == "heavy" else light).pop(0)
        queued[take] += seconds(item)
        ordered.append(item)
    return ordered


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under parallel workers, the order :func:`order` gives."""
    if lock_dir() is not None:
        order(items)


_remeasured: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _remeasured.extend(
            (report.nodeid, str(why)) for key, why in report.user_properties if key == REMEASURED
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the tests that failed beside others and passed alone, with their first failure."""
    if _remeasured:
        terminalreporter.write_sep("=", f"{len(_remeasured)} {REMEASURED}")
        for nodeid, why in _remeasured:
            terminalreporter.write_line(f"{nodeid}: {why}")
