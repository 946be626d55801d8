"""Mahimahi-format capacity traces: parsing and the delivery-opportunity schedule.

A trace file has one line per opportunity to deliver one 1500-byte packet, as an integer
number of milliseconds since the start of the trace; a timestamp repeats when several
packets may pass in the same millisecond, and the trace loops when it ends (format as
published with the Mahimahi emulator; see ``sim/profiles/traces/README.md`` and
docs/SOURCES.md, "Mahimahi's traces").

Looping follows Mahimahi: the schedule repeats with a period equal to the *last* timestamp,
so the opportunity at index ``i`` of loop ``j`` happens at ``j * period + times[i]``. A trace
whose last timestamp is 0 would repeat forever within one instant (infinite capacity), so it
is rejected, as Mahimahi rejects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qoe.errors import ConfigError

__all__ = ["OPPORTUNITY_BYTES", "Trace", "load_trace", "parse_trace"]

#: Bytes one delivery opportunity carries: one Ethernet-MTU packet (Mahimahi trace format).
OPPORTUNITY_BYTES = 1500


def load_trace(path: str | Path) -> np.ndarray:
    """Read a Mahimahi trace file into a 1-D ``int64`` array of milliseconds.

    Raises :class:`~qoe.errors.ConfigError` naming the file (and the line, 1-based, where
    one is at fault) for an unreadable file, an empty trace, a line that is not a
    non-negative integer, a timestamp smaller than the one before it, or a trace whose last
    timestamp is 0 (it would loop with a zero period).
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"trace file {name}: cannot read: {_reason(exc)}") from None
    return parse_trace(text, name)


def parse_trace(text: str, name: str) -> np.ndarray:
    """Parse the text of a trace file (see :func:`load_trace`); ``name`` is for messages."""
    lines = text.splitlines()
    if not lines:
        raise ConfigError(f"trace file {name}: empty trace")
    values = np.empty(len(lines), dtype=np.int64)
    previous = 0
    for number, line in enumerate(lines, start=1):
        # int() would also accept "+5", "1_000" and "-3"; a trace line is plain digits only.
        stripped = line.strip()
        if not (stripped.isascii() and stripped.isdigit()):
            raise ConfigError(f"trace file {name}: line {number}: not a non-negative integer: {line!r}")
        value = int(stripped)
        if value < previous:
            raise ConfigError(
                f"trace file {name}: line {number}: timestamps must not decrease, "
                f"got {value} after {previous}"
            )
        values[number - 1] = value
        previous = value
    if previous == 0:
        raise ConfigError(f"trace file {name}: trace must span a nonzero time (last timestamp is 0)")
    return values


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@dataclass(frozen=True, eq=False)
class Trace:
    """A capacity trace: delivery opportunities in milliseconds, looped with period = last.

    ``name`` is for messages and reprs only (usually the file path). Build one from a file
    with :meth:`from_file`, or from an array (tests, generated traces) with the constructor;
    both validate like :func:`load_trace`. Compared by identity (it wraps an array).
    """

    name: str
    times_ms: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        arr = np.asarray(self.times_ms)
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError(f"trace {self.name}: empty trace")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(f"trace {self.name}: timestamps must be integers (milliseconds)")
        if arr[0] < 0:
            raise ConfigError(f"trace {self.name}: timestamps must be >= 0, got {int(arr[0])}")
        steps = np.diff(arr)
        if steps.size and steps.min() < 0:
            index = int(np.argmax(steps < 0)) + 1
            raise ConfigError(
                f"trace {self.name}: entry {index}: timestamps must not decrease, "
                f"got {int(arr[index])} after {int(arr[index - 1])}"
            )
        if arr[-1] == 0:
            raise ConfigError(f"trace {self.name}: trace must span a nonzero time (last timestamp is 0)")
        frozen = arr.astype(np.int64, copy=True)
        frozen.setflags(write=False)
        object.__setattr__(self, "times_ms", frozen)

    @classmethod
    def from_file(cls, path: str | Path) -> Trace:
        """Load and validate a trace file (see :func:`load_trace`)."""
        return cls(name=str(path), times_ms=load_trace(path))

    @property
    def period(self) -> float:
        """Loop period in seconds (the last timestamp, as Mahimahi loops)."""
        return float(self.times_ms[-1]) / 1000.0

    @property
    def opportunities(self) -> int:
        """Delivery opportunities per loop."""
        return int(self.times_ms.size)

    @property
    def mean_rate(self) -> float:
        """Mean capacity over one loop, in bits per second."""
        return self.opportunities * OPPORTUNITY_BYTES * 8 / self.period

    def bytes_between(self, start: float, end: float) -> int:
        """Bytes the trace can deliver in ``[start, end)`` seconds from its origin (looped).

        The reference figure for capacity tests: with a saturating input every opportunity
        in the window is used in full.
        """
        if end <= start:
            return 0
        return OPPORTUNITY_BYTES * (self._count_before(end) - self._count_before(start))

    def _count_before(self, t: float) -> int:
        """Opportunities strictly before ``t`` seconds (counted across loops)."""
        period_ms = int(self.times_ms[-1])
        t_ms = t * 1000.0
        if t_ms <= 0:
            return 0
        loops = int(t_ms // period_ms)
        # Loop j's last opportunity (at (j + 1) * period) can coincide with the start of
        # loop j + 1, so the loop before the current one may be only partly before t.
        count = 0
        for j in range(max(loops - 1, 0), loops + 1):
            count += int(np.searchsorted(self.times_ms, t_ms - j * period_ms, side="left"))
        return count + max(loops - 1, 0) * self.opportunities
