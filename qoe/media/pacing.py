"""Release encoded packets at their timestamp plus a fixed latency.

Holding every packet, audio or video, to ``epoch + timestamp + latency`` is what keeps a
sender's RTCP reports honest: when send time minus timestamp is one constant for both media,
a receiver that lip-syncs on those reports sees exactly the A/V relation the timestamps
carry. The pacer also tells its fanout that clock (:attr:`Fanout.pts_epoch`,
:attr:`Fanout.send_lag`), so a sender's reports can say when a packet was due even when a
busy loop let it go late (:func:`qoe.rtcpatch.report_due_times`).
"""

from __future__ import annotations

import asyncio
from collections import deque

import av

from qoe import clock
from qoe.media.fanout import Fanout

__all__ = ["Pacer"]


class Pacer:
    """Hands packets to a :class:`Fanout` at ``epoch + pts + latency + delay`` (wall clock)."""

    def __init__(self, fanout: Fanout, epoch: float, latency: float, delay: float = 0.0) -> None:
        self.fanout = fanout
        self.epoch = epoch
        self.latency = latency
        self.delay = delay
        fanout.pts_epoch, fanout.send_lag = epoch, latency + delay
        self.late = 0
        """Packets whose release time had already passed when they were ready."""
        self.late_max = 0.0
        """How far past its release time the latest of those was ready (seconds)."""
        self._pending: deque[asyncio.TimerHandle] = deque()

    def release(self, kind: str, packets: list[av.Packet], codec: str | None = None, rung: int = 0) -> None:
        """Hand ``packets`` (video in ``codec``, None: the source's own, of rendition
        ``rung``) on at their time."""
        loop = asyncio.get_running_loop()
        for packet in packets:
            if packet.pts is None or packet.time_base is None:
                wait = 0.0  # an encoder that does not stamp its output: nothing to pace by
            else:
                offset = float(packet.pts * packet.time_base)
                wait = self.epoch + offset + self.latency + self.delay - clock.wall()
            if wait <= 0:
                self.late += 1
                self.late_max = max(self.late_max, -wait)
                self.fanout.push(kind, [packet], codec, rung)
            else:
                self._pending.append(loop.call_later(wait, self.fanout.push, kind, [packet], codec, rung))
        # Forget handles that are due: they have fired or are about to; cancel() need only
        # reach the ones still waiting.
        now = loop.time()
        while self._pending and self._pending[0].when() <= now:
            self._pending.popleft()

    def cancel(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
