"""Video frames from RTP packets alone: timestamps, sequence numbers and marker bits.

A light viewer (``decode = "none"``) never decodes, yet its freezes must be counted on the
same frames a player would show. A frame is the run of packets that share an RTP timestamp;
its last packet has the marker bit set (RFC 3550 section 5.1; RFC 7741 for VP8, RFC 6184
for H.264). It starts right after the previous frame's marker packet, where the timestamp
changes, or where its payload header says so (VP8's start bit), which alone tells a frame's
start after a lost packet. It is complete once every sequence number from its first packet to its
marker packet has arrived, as libwebrtc's packet buffer completes a frame
(``modules/video_coding/packet_buffer.cc``), and then released, in sequence order.

A frame with a packet missing holds back the frames after it, complete or not, while the
missing packet may still be retransmitted. It is given up, with the frames it held back
that are not whole from their first packet, when the hole falls more than
:data:`WAIT_PACKETS` behind the newest packet (the NACK window: aiortc's NACK generator
forgets packets 128 behind the newest, as the sender's history does), or at once when a
keyframe after it is complete (libwebrtc decodes such a keyframe at once and drops the
frames before it). The first frame released after a hole is not ``continuous``: its
references may be broken, and a player shows nothing more until an intact keyframe.

Frames lost for good are counted (:attr:`FrameAssembler.frames_lost`): those of which some
packets came, and those of which none came, from the RTP timestamps on either side of the
hole and the stream's usual frame interval. A sender that stops sending (a frozen camera)
leaves no hole in the sequence numbers, so it loses no frame.

Sequence numbers (16 bits) and timestamps (32 bits) are unwrapped, so a stream may run
through their wraparound. Everything here is a plain object with no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["WAIT_PACKETS", "FrameAssembler", "RtpFrame", "Unwrapper"]

WAIT_PACKETS = 128
"""How far (packets) behind the newest a missing packet is still waited for."""


class Unwrapper:
    """Unwraps an n-bit counter (RTP sequence numbers, timestamps) onto a line: each value is
    placed at the point nearest the previous one."""

    def __init__(self, bits: int) -> None:
        self.modulus = 1 << bits
        self._last: int | None = None

    def unwrap(self, value: int) -> int:
        if self._last is None:
            self._last = value
            return value
        half = self.modulus >> 1
        step = (value - self._last) % self.modulus
        if step >= half:
            step -= self.modulus
        self._last += step
        return self._last


@dataclass(slots=True)
class _Packet:
    timestamp: int
    marker: bool
    arrival: float
    size: int
    late: bool
    keyframe: bool
    starts: bool
    first_bytes: bytes
    capture: float | None
    payload: bytes | None


@dataclass(slots=True)
class RtpFrame:
    """One video frame assembled from its RTP packets."""

    rtp: int
    """Its RTP timestamp, unwrapped (90 kHz ticks)."""
    first_seq: int
    last_seq: int
    """Unwrapped sequence numbers of its first and last (marker) packet."""
    complete: float
    """When its last packet arrived (monotonic seconds)."""
    size: int
    """Payload bytes."""
    keyframe: bool
    continuous: bool
    """No packet is missing between the previous frame released and this one."""
    retransmitted: bool
    """A packet of it arrived after a later-numbered one (a retransmission, or reordering)."""
    first_bytes: bytes
    """The start of its first packet's payload (what tells a keyframe)."""
    capture: float | None
    """Capture time (Unix seconds) from an ``abs-capture-time`` extension of one of its
    packets; None where none carried it."""
    payloads: list[bytes] | None = field(default=None)
    """Its packets' payloads in order, when the assembler kept every one of them."""


class FrameAssembler:
    """Assembles frames from RTP packets (see the module); ``add`` each packet as it arrives,
    and it returns the frames that packet released, in sequence order.

    The first frame released is a keyframe, or a frame known to start where it does (after a
    packet with the marker bit): a viewer that joins mid-frame never takes a frame's tail for
    a frame.
    """

    def __init__(self, wait_packets: int = WAIT_PACKETS) -> None:
        self.wait_packets = wait_packets
        self.keep_payloads = False
        """Keep each packet's payload, so released frames carry theirs (for decoding)."""
        self._seqs = Unwrapper(16)
        self._stamps = Unwrapper(32)
        self._packets: dict[int, _Packet] = {}
        self._next: int | None = None
        """Sequence number the next frame to release starts at."""
        self._known = False
        """``_next`` is known to start a frame."""
        self._highest: int | None = None
        self._broken = False
        """The next frame released follows a hole."""
        self._last_rtp: int | None = None
        """Timestamp of the last frame released or given up."""
        self._intervals: deque[int] = deque(maxlen=32)
        self.frames_lost = 0
        """Frames given up (some packets came) or never seen (none came)."""
        self.packets_lost = 0
        """Sequence numbers never received, in the holes given up."""
        self.holes = 0
        """Times the assembler gave up waiting."""

    def add(
        self,
        seq: int,
        timestamp: int,
        marker: bool,
        arrival: float,
        size: int,
        *,
        keyframe: bool = False,
        starts: bool = False,
        first_bytes: bytes = b"",
        capture: float | None = None,
        payload: bytes | None = None,
    ) -> list[RtpFrame]:
        """Take one packet: its 16-bit sequence number, 32-bit timestamp, marker bit,
        arrival (monotonic seconds) and payload size; ``starts``: its payload header says it
        begins a frame (VP8's start bit on partition 0, RFC 7741 section 4.2; False where the
        payload does not say); ``keyframe``: a frame that starts with it is a keyframe
        (``starts`` is implied); ``first_bytes``: the start of its depayloaded payload; ``capture``:
        its abs-capture-time (Unix seconds); ``payload``: kept while :attr:`keep_payloads`."""
        n = self._seqs.unwrap(seq)
        if self._next is None:
            self._next = n
        if n < self._next or n in self._packets:
            return []  # released or given up already, or a duplicate
        late = self._highest is not None and n < self._highest
        if self._highest is None or n > self._highest:
            self._highest = n
        kept = payload if self.keep_payloads else None
        self._packets[n] = _Packet(
            self._stamps.unwrap(timestamp),
            marker,
            arrival,
            size,
            late,
            keyframe,
            starts or keyframe,
            first_bytes,
            capture,
            kept,
        )
        released: list[RtpFrame] = []
        while True:
            frame = self._take()
            if frame is not None:
                released.append(frame)
            elif not self._give_up():
                return released

    def _take(self) -> RtpFrame | None:
        """The whole frame starting at ``_next``, removed, if all its packets are here."""
        start = self._next
        if start is None or (first := self._packets.get(start)) is None:
            return None
        if not (self._known or first.starts):
            return None
        end = start
        while True:
            packet = self._packets.get(end)
            if packet is None or packet.timestamp != first.timestamp:
                return None
            if packet.marker:
                break
            end += 1
        taken = [self._packets.pop(s) for s in range(start, end + 1)]
        self._next, self._known = end + 1, True
        frame = RtpFrame(
            rtp=first.timestamp,
            first_seq=start,
            last_seq=end,
            complete=max(p.arrival for p in taken),
            size=sum(p.size for p in taken),
            keyframe=first.keyframe,
            continuous=not self._broken,
            retransmitted=any(p.late for p in taken),
            first_bytes=first.first_bytes,
            capture=next((p.capture for p in taken if p.capture is not None), None),
            payloads=_payloads(taken) if self.keep_payloads else None,
        )
        self._broken = False
        self._note_interval(frame.rtp)
        return frame

    def _note_interval(self, rtp: int) -> None:
        if self._last_rtp is not None and rtp > self._last_rtp:
            self._intervals.append(rtp - self._last_rtp)
        self._last_rtp = rtp if self._last_rtp is None else max(rtp, self._last_rtp)

    def _give_up(self) -> bool:
        """Skip what ``_next`` waits for, if it is waited for no longer; True if it skipped."""
        assert self._next is not None and self._highest is not None
        held = self._packets
        if (
            self._known
            and held
            and len(held) == self._highest - self._next + 1
            and held[self._highest].timestamp == held[self._next].timestamp
        ):
            return False  # one frame, no packet missing: still arriving, nothing to give up
        restart = self._keyframe_after(self._next)
        if restart is None and not self._known:
            # The frame at _next started before the viewer joined: nothing to wait for.
            restart = self._start_after(self._next)
        if restart is None:
            if self._highest - self._next <= self.wait_packets:
                return False
            restart = self._start_after(self._next)
            if restart is None:
                restart = self._highest + 1  # nothing held is known to start a frame: drop it all
        self._skip(self._next, restart)
        return True

    def _keyframe_after(self, hole: int) -> int | None:
        """The first packet of a complete keyframe past ``hole``, if one is here."""
        for seq in sorted(s for s, p in self._packets.items() if p.keyframe and s > hole):
            if self._starts(seq) and self._whole(seq):
                return seq
        return None

    def _starts(self, seq: int) -> bool:
        """Whether ``seq`` is known to start a frame: its payload header says so, or the
        packet before it ended one (its marker bit) or carried another timestamp."""
        here, before = self._packets[seq], self._packets.get(seq - 1)
        if here.starts:
            return True
        return before is not None and (before.marker or before.timestamp != here.timestamp)

    def _whole(self, start: int) -> bool:
        first = self._packets[start]
        seq = start
        while (packet := self._packets.get(seq)) is not None and packet.timestamp == first.timestamp:
            if packet.marker:
                return True
            seq += 1
        return False

    def _start_after(self, hole: int) -> int | None:
        """The first packet past ``hole`` known to start a frame."""
        for seq in sorted(s for s in self._packets if s > hole):
            if self._starts(seq):
                return seq
        return None

    def _skip(self, start: int, restart: int) -> None:
        """Give up the packets from ``start`` up to ``restart`` and count what was lost."""
        dropped = [self._packets.pop(s) for s in sorted(s for s in self._packets if s < restart)]
        after = self._packets.get(restart)
        if self._known:  # a hole in a stream already followed, not the tail of a frame at join
            self.packets_lost += (restart - start) - len(dropped)
            seen = sorted({p.timestamp for p in dropped})
            stamps = seen + ([after.timestamp] if after is not None else [])
            self.frames_lost += len(seen) + self._unseen(self._last_rtp, stamps)
            for stamp in seen:
                self._note_interval(stamp)
            self._broken = True
            self.holes += 1
        self._next, self._known = restart, after is not None

    def _unseen(self, before: int | None, stamps: list[int]) -> int:
        """Frames of which no packet came: timestamp steps across the hole longer than the
        stream's usual frame interval hold the frames missing from them."""
        if before is None or not self._intervals or not stamps:
            return 0
        interval = sorted(self._intervals)[len(self._intervals) // 2]
        if interval <= 0:
            return 0
        missing, previous = 0, before
        for stamp in stamps:
            if stamp > previous:
                missing += max(0, round((stamp - previous) / interval) - 1)
                previous = stamp
        return missing


def _payloads(taken: list[_Packet]) -> list[bytes] | None:
    """The payloads of a frame's packets, or None if any was not kept: :attr:`keep_payloads`
    turned on while the frame's first packets were already in (a decoding window opening
    mid-frame). Decoding the rest would fail, and a player model fed that failure would drop
    every frame to the next keyframe, a freeze the stream never had."""
    payloads = [p.payload for p in taken if p.payload is not None]
    return payloads if len(payloads) == len(taken) else None
