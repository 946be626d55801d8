"""Live-stream quality-of-experience monitor and simulator.

The measurement path runs one way: the test signal (:mod:`qoe.signal`) leaves a publisher,
passes a room or a real server, and reaches a probe (:mod:`probes`), which records a
:class:`~qoe.timeline.Timeline`; :mod:`qoe.metrics` turns that into figures and
:mod:`qoe.result` into the one JSON schema every probe returns.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
