"""What a probe records while it watches: phase instants and per-frame and per-tone events.

A probe only records; :mod:`qoe.metrics` turns a finished :class:`Timeline` into figures. Times
come in three kinds, and every field says which:

- *monotonic* seconds (:func:`qoe.clock.monotonic`), for intervals on the probe's side;
- *wall* seconds (Unix time), to compare with the sender's capture time in the test signal;
- *stream* seconds, a stream's own media timeline (RTP timestamps for WebRTC, container
  timestamps for FFmpeg-read streams). Audio and video stream times only become comparable
  through :class:`ClockPoint` pairs that map them onto the sender's clock (RTCP sender reports
  for RTP, RFC 3550 section 6.4.1; the container's shared time base for FLV and MPEG-TS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qoe import clock

__all__ = ["ClockPoint", "Timeline", "ToneOnset", "VideoFrameEvent"]


@dataclass(slots=True)
class VideoFrameEvent:
    """One decoded video frame as the probe received it (a "rendered" frame)."""

    at: float
    """Monotonic seconds when the frame was rendered: when a libwebrtc player would show it
    (WebRTC, :mod:`probes.webrtc.playout`; with the ``arrival`` playout option, when the
    decoded frame reached the probe), or when a player pacing frames by their timestamps would
    show it (FFmpeg-read streams, which can hand over a whole HLS segment at once)."""
    wall: float
    """Wall-clock seconds at the same instant."""
    stream_time: float
    """The frame's timestamp on the video stream's media timeline, seconds."""
    width: int
    height: int
    seq: int | None = None
    """Sequence number from the test-signal code (mod 2**16), None without a readable code."""
    capture_wall: float | None = None
    """The sender's capture time from the code, Unix seconds."""
    tag: int | None = None
    """The code's free field (a chat nonce the host shows), None without a readable code."""
    flash: float | None = None
    """Mean luma of the flash marker region, None when not measured."""
    arrival: float | None = None
    """Monotonic seconds when the decoded frame reached the probe, where that differs from
    ``at`` (a modelled player shows frames later); None where it does not."""


@dataclass(slots=True)
class ToneOnset:
    """The start of a test-signal tone found in the received audio."""

    stream_time: float
    """Onset on the audio stream's media timeline, seconds (sub-sample precision)."""
    tone_hz: float


@dataclass(slots=True)
class ClockPoint:
    """One correspondence between a stream's media timeline and the sender's clock."""

    stream_time: float
    """Seconds on the stream's media timeline."""
    sender_time: float
    """The same instant on the sender's clock, Unix seconds."""


@dataclass
class Timeline:
    """Everything one probe run observed, in the order it happened.

    ``phases`` names the join milestones in the order they are expected; each milestone is
    recorded once, at the first time it happens.
    """

    phases: tuple[str, ...]
    start: float = field(default_factory=clock.monotonic)
    started_at: float = field(default_factory=clock.wall)
    end: float | None = None
    milestones: dict[str, float] = field(default_factory=dict)
    video: list[VideoFrameEvent] = field(default_factory=list)
    tones: list[ToneOnset] = field(default_factory=list)
    sync: dict[str, list[ClockPoint]] = field(default_factory=lambda: {"audio": [], "video": []})
    audio_frames: int = 0
    audio_seconds: float = 0.0
    decode_errors: int | None = None
    """Encoded video the decoder rejected (None: the probe's decoder does not say)."""
    frames_dropped_undecodable: int | None = None
    """Video frames received but never shown by the modelled player, their references broken
    (None: no player model ran)."""

    def mark(self, milestone: str, at: float | None = None) -> None:
        """Record ``milestone`` now (or at ``at``), unless it was already recorded."""
        if milestone not in self.phases:
            raise ValueError(f"unknown milestone {milestone!r}; expected one of {self.phases}")
        self.milestones.setdefault(milestone, clock.monotonic() if at is None else at)

    def finish(self, at: float | None = None) -> None:
        """Close the timeline: the probe stopped watching."""
        if self.end is None:
            self.end = clock.monotonic() if at is None else at
