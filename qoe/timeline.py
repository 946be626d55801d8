"""What a probe run records: its event log.

A :class:`Timeline` is the one record of a run: phase instants, decoded frames and tone onsets
(each participant's in its own timeline), chat messages sent and echoed, interaction questions
asked, the loop's lateness ticks and CPU readings, the watch window and the teardown, what the
network emulation did, the ICE candidate pair selected, and the failure if there was one.
Probes only record; every figure of a :class:`~qoe.result.ProbeResult` is computed from the
log by :func:`qoe.metrics.result_of`, so a log saved with :mod:`qoe.eventlog` gives the same
result without a probe running. Times come in three kinds, and every field says which:

- *monotonic* seconds (:func:`qoe.clock.monotonic`), for intervals on the probe's side;
- *wall* seconds (Unix time), to compare with the sender's capture time in the test signal;
- *stream* seconds, a stream's own media timeline (RTP timestamps for WebRTC, container
  timestamps for FFmpeg-read streams). Audio and video stream times only become comparable
  through :class:`ClockPoint` pairs that map them onto the sender's clock (RTCP sender reports
  for RTP, RFC 3550 section 6.4.1; the container's shared time base for FLV and MPEG-TS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qoe import clock

__all__ = [
    "AudioBlock",
    "ChatReceived",
    "ChatSent",
    "ClockPoint",
    "CpuReading",
    "Failure",
    "Grab",
    "HttpExchange",
    "IcePair",
    "InteractionAsked",
    "LoopTick",
    "RunInfo",
    "Timeline",
    "ToneOnset",
    "VideoFrameEvent",
]


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
    encoded_bytes: int | None = None
    """Encoded video bytes received since the previous frame shown, this frame's included
    (what the received bitrate is summed from); None where the probe does not see them."""
    psnr: float | None = None
    """Luma PSNR (dB) against the test-signal frame its code names; None if not scored
    (:mod:`qoe.signal.quality`)."""
    ssim: float | None = None
    """Luma SSIM against the same reference; None if not scored."""


@dataclass(slots=True)
class ToneOnset:
    """The start of a test-signal tone found in the received audio."""

    stream_time: float
    """Onset on the audio stream's media timeline, seconds (sub-sample precision)."""
    tone_hz: float
    level: float | None = None
    """The tone's plateau: its envelope 10..30 ms after the onset, half its amplitude
    (full scale 1.0); None where the detector did not say."""


@dataclass(slots=True)
class AudioBlock:
    """One block of decoded audio as it came out of the decoder (a 20 ms Opus frame)."""

    at: float
    """Monotonic seconds when the probe had it."""
    stream_time: float
    """Its first sample on the audio stream's media timeline, seconds."""
    seconds: float
    """Its length."""
    power: float
    """Mean square of its samples (full scale 1.0; a full-scale sine is 0.5)."""


@dataclass(slots=True)
class ClockPoint:
    """One correspondence between a stream's media timeline and the sender's clock."""

    stream_time: float
    """Seconds on the stream's media timeline."""
    sender_time: float
    """The same instant on the sender's clock, Unix seconds."""


@dataclass(slots=True)
class ChatSent:
    """A chat message the probe sent, as the n-th of its run."""

    key: str
    """The message's nonce, which the echo carries back."""
    index: int
    wall: float
    """Unix seconds when it was sent."""


@dataclass(slots=True)
class ChatReceived:
    """One of the probe's own messages seen by its receiving client (again, if duplicated)."""

    key: str
    wall: float
    """Unix seconds when it arrived."""


@dataclass(slots=True)
class InteractionAsked:
    """A question posted to the room's chat, for the host to show as the code's tag."""

    nonce: int
    wall: float
    """Unix seconds when it was posted."""


@dataclass(slots=True)
class Grab:
    """A coupon drop the probe saw, and its grab of it (:mod:`probes.grab`)."""

    drop: str
    """The drop's id as the signal gave it."""
    seen_wall: float
    """Unix seconds when the probe saw the drop: the frame announcing it was shown (or the
    drop signal matched, in generic mode)."""
    opened_wall: float | None = None
    """Unix seconds the drop opened, on the sender's clock (the room's answer or the drop
    signal says; None where neither did)."""
    sent: float | None = None
    """Monotonic seconds the grab request was sent (None: not sent)."""
    answered: float | None = None
    """Monotonic seconds its answer came (None: none came)."""
    outcome: str | None = None
    """``won`` or ``sold_out``; None without an answer that says."""
    sold_out_wall: float | None = None
    """Unix seconds the drop sold out, as the answer says (None: not yet, or not said)."""
    status: int | None = None
    """The answer's HTTP status."""


@dataclass(slots=True)
class LoopTick:
    """One wake-up of the loop-lag ticker (see :mod:`qoe.looplag`)."""

    at: float
    """Monotonic seconds of the wake-up."""
    late: float
    """Seconds later than it was due."""


@dataclass(slots=True)
class CpuReading:
    """The machine's cumulative CPU times (clock ticks), read from ``/proc/stat``."""

    at: float
    """Monotonic seconds of the reading."""
    busy: int
    total: int
    stolen: int = 0
    """Of ``busy``, the time a hypervisor gave to other guests (0 where none is read)."""
    loop: float | None = None
    """CPU seconds the probe's event-loop thread had used (``time.thread_time``); None where
    not read."""


@dataclass(slots=True)
class IcePair:
    """The candidate pair ICE selected: the path the media takes."""

    at: float
    """Monotonic seconds when ICE connected on it."""
    local_type: str
    """The probe's candidate: ``host``, ``srflx``, ``prflx`` or ``relay`` (through TURN)."""
    remote_type: str
    """The server's candidate, of the same types."""


@dataclass(slots=True)
class HttpExchange:
    """One signaling request and what came back (a WHIP or WHEP POST, a PATCH, a DELETE),
    kept for the engineer who reads a failed run: what was asked, what the server said.

    Secrets are masked when it is recorded, never later: the URL as :func:`qoe.redact.
    redact_url` shows it, the bearer token and TURN credentials as ``***``, the ICE
    password of each SDP too. Headers are ``Name: value`` lines, in the order sent or
    received, so repeated headers (``Link``) stay apart.
    """

    at: float
    """Monotonic seconds when the request was sent."""
    method: str
    url: str
    request_headers: str
    request_body: str
    status: int | None = None
    """The HTTP status; None when no answer came (refused, reset, timed out)."""
    response_headers: str = ""
    response_body: str = ""
    seconds: float | None = None
    """How long the answer took (None: none came)."""
    error: str = ""
    """Why no answer came, in one line."""


@dataclass(slots=True)
class Failure:
    """Why the run failed: an error kind of :mod:`qoe.errors` and a one-line message."""

    kind: str
    message: str


@dataclass(slots=True)
class RunInfo:
    """Who ran, against what: the fields of a result that no event measures."""

    probe: str = ""
    kind: str = ""
    target: str = ""
    """The probed URL with its secrets masked."""
    profile: str = "none"
    clock_domain: str = ""
    """Whose clocks glass-to-glass compares (see :mod:`qoe.clockdomain`)."""
    clock_offset: float | None = None
    """The publisher's clock minus the probe host's, seconds, when the user gave it."""


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
    audio_blocks: list[AudioBlock] = field(default_factory=list)
    """Each decoded audio block, in the order decoded: gaps between them are dropouts, and
    their power away from the tones is the noise floor."""
    decode_errors: int | None = None
    """Encoded video the decoder rejected (None: the probe's decoder does not say)."""
    quality_skipped: int = 0
    """Frames due for a quality score that a busy host could not score in time."""
    frames_dropped_undecodable: int | None = None
    """Video frames received but never shown by the modelled player, their references broken
    (None: no player model ran)."""
    decode_mode: str = "full"
    """How the viewer read its video: ``full`` (every frame decoded), ``sample`` or ``none``
    (frames assembled from RTP; pictures decoded only in :attr:`decode_windows`)."""
    decode_windows: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) monotonic seconds of each stretch a light viewer decoded in."""
    frames_lost: int | None = None
    """A light viewer's dropped frames: from gaps in the RTP sequence numbers, plus frames
    the modelled player dropped, from the first frame shown on (None: not counted so)."""
    sampled_frames: int = 0
    """Video frames a light viewer decoded in its windows."""
    capture_source: str | None = None
    """Where the capture times of the frames' glass-to-glass came from: ``picture_code``
    (each decoded frame's code), ``abs_capture_time`` (the RTP header extension) or
    ``sampled_picture_code`` (the code of the frames decoded in windows); None: nowhere."""
    role: str = ""
    """What the run did, and so which sections its figures fill: ``viewer`` (video, audio,
    latency, A/V sync, co-host, interaction), ``publisher`` (publish), ``chat`` (chat), or
    empty (join and the run's own figures only)."""
    tone_hz: float | None = None
    """The tone this timeline's audio markers use (None: any test-signal tone)."""
    echo_hz: float | None = None
    """The far end's tone (the host's) that this participant's own audio track was searched
    for, its echo (None: not searched, as in a mix, where the host's own tone sounds)."""
    participants: dict[str, Timeline] = field(default_factory=dict)
    """Other participants seen in the same stream, each in its own timeline, by id
    (``cohost``): their frames, tones and clock points."""
    chat_sent: list[ChatSent] = field(default_factory=list)
    chat_received: list[ChatReceived] = field(default_factory=list)
    asked: list[InteractionAsked] = field(default_factory=list)
    grabs: list[Grab] = field(default_factory=list)
    """Coupon drops seen and grabbed, in the order seen."""
    loop_ticks: list[LoopTick] = field(default_factory=list)
    cpu: list[CpuReading] = field(default_factory=list)
    published: tuple[int, int] | None = None
    """(video frames, audio frames) a publishing probe sent; None for a viewer."""
    network: dict[str, Any] = field(default_factory=dict)
    """What the network emulation did to the run's packets, per direction (empty: none)."""
    ice_pairs: list[IcePair] = field(default_factory=list)
    """The candidate pairs ICE selected (WebRTC), in order."""
    http: list[HttpExchange] = field(default_factory=list)
    """The signaling requests of a WebRTC run and their answers, in order."""
    run: RunInfo = field(default_factory=RunInfo)
    failure: Failure | None = None
    body_end: float | None = None
    """Monotonic seconds when the probe's body returned or failed: the teardown starts."""
    teardown_end: float | None = None
    """Monotonic seconds when the run had closed its peers and sessions."""

    def mark(self, milestone: str, at: float | None = None) -> None:
        """Record ``milestone`` now (or at ``at``), unless it was already recorded."""
        if milestone not in self.phases:
            raise ValueError(f"unknown milestone {milestone!r}; expected one of {self.phases}")
        self.milestones.setdefault(milestone, clock.monotonic() if at is None else at)

    def finish(self, at: float | None = None) -> None:
        """Close the timeline: the probe stopped watching."""
        if self.end is None:
            self.end = clock.monotonic() if at is None else at
