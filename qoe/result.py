"""ProbeResult: the one JSON document every probe returns, whatever its protocol.

:func:`qoe.metrics.result_of` computes one from a run's event log (:mod:`qoe.timeline`).

The field paths below are a contract: the fleet's SLOs, the exporter and the impact
analytics address figures by them. Fields may be added; these are never renamed. Every section
is always present and a figure that could not be measured is ``null``, so ``video.fps`` being
``null`` means "not measured", never "zero".
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

from qoe.errors import ProbeError
from qoe.freeze import STALL_THRESHOLD_SECONDS
from qoe.redact import clean_text, redact_text

__all__ = [
    "AudioSection",
    "AvSyncSection",
    "Bitrate",
    "ChatSection",
    "CohostSection",
    "DecodeSection",
    "ErrorInfo",
    "GrabDrop",
    "GrabSection",
    "IceSection",
    "JoinSection",
    "LatencySection",
    "LowAndMedian",
    "ProbeResult",
    "PublishSection",
    "Quality",
    "Quantiles",
    "Rendition",
    "VideoSection",
    "field_paths",
    "get_path",
    "iso_time",
    "quantile_fields",
    "schema_type",
]


@dataclass(frozen=True, slots=True)
class Quantiles:
    """p50, p95 and max of a set of values (:func:`qoe.metrics.quantiles` computes them)."""

    p50: float
    p95: float
    max: float


def quantile_fields(q: Quantiles | None) -> dict[str, float | None]:
    """A result's p50/p95/max fields (all null when nothing was measured)."""
    if q is None:
        return {"p50": None, "p95": None, "max": None}
    return {"p50": q.p50, "p95": q.p95, "max": q.max}


@dataclass
class ErrorInfo:
    kind: str
    message: str


@dataclass
class JoinSection:
    total_seconds: float | None = None
    phases: dict[str, float] = field(default_factory=dict)


class LowAndMedian(TypedDict):
    p5: float
    p50: float


class Quality(TypedDict):
    """``video.quality``: luma PSNR (dB) and SSIM of the scored frames (:mod:`qoe.signal.quality`)."""

    psnr_db: LowAndMedian
    ssim: LowAndMedian
    scored_frames: int
    skipped_frames: int
    """Frames due for a score that a busy host could not score in time."""


class Rendition(TypedDict):
    width: int
    height: int
    seconds: float


class Bitrate(TypedDict):
    """``video.bitrate_kbps``: the mean over the watch, and p5/p50 over its whole seconds."""

    mean: float
    p5: float
    p50: float


@dataclass
class VideoSection:
    frames: int | None = None
    fps: float | None = None
    freeze_count: int | None = None
    freeze_seconds: float | None = None
    pause_count: int | None = None
    pause_seconds: float | None = None
    trailing_seconds: float | None = None
    """The gap from the last frame to the end of the watch, when a frame there would have closed
    a freeze or a pause (the stream stopped before the probe did), else 0. No frame closes it,
    so like Chrome's getStats() the freeze and pause figures leave it out; ``stall_ratio``
    counts it."""
    stall_ratio: float | None = None
    """(freeze_seconds + pause_seconds + trailing_seconds) / watched_seconds."""
    stalls_over_seconds: dict[str, float | int | None] = field(
        default_factory=lambda: {"threshold": STALL_THRESHOLD_SECONDS, "count": None, "seconds": None}
    )
    """Render gaps of at least ``threshold`` seconds, a fixed rule as RTC vendors count freezes
    (:func:`qoe.freeze.stalls_over`): how many, and their seconds added up."""
    watched_seconds: float | None = None
    dropped_frames: int | None = None
    repeated_frames: int | None = None
    width: int | None = None
    height: int | None = None
    signal_frames: int | None = None
    """Frames whose test-signal code was read; 0 means the stream carries no signal."""
    decode_errors: int | None = None
    """Encoded frames (WebRTC) or packets (FFmpeg) of video the decoder rejected. A player
    conceals them, so they show nowhere else: not as freezes, and not as dropped frames."""
    frames_dropped_undecodable: int | None = None
    """Frames received that a libwebrtc player would never show (WebRTC): their references
    were broken by a lost or rejected frame and no keyframe had come yet, or a keyframe that
    completed first overtook them (docs/PLAYOUT.md). Null when no player model ran."""
    quality: Quality | None = None
    """Full-reference picture quality against the test signal (docs/METRICS.md); null for a
    stream without the signal or with scoring off."""
    renditions: list[Rendition] | None = None
    """How long each resolution was shown, in order of first appearance."""
    switches: int | None = None
    """Resolution changes between consecutive frames shown."""
    bitrate_kbps: Bitrate | None = None
    """Encoded video received, kbit/s."""


def no_dropouts() -> dict[str, float | int | None]:
    """``dropouts`` before anything was measured."""
    return {"count": None, "seconds": None, "missing_markers": None}


@dataclass
class AudioSection:
    frames: int | None = None
    seconds: float | None = None
    tone_onsets: int | None = None
    """Audio markers found (one a second; their identity bursts are not counted)."""
    dropouts: dict[str, float | int | None] = field(default_factory=no_dropouts)
    """Gaps in the decoded audio's media timeline (``count``, ``seconds``), and markers that
    should have sounded in audio that did arrive but were silent (``missing_markers``)."""
    snr_db: float | None = None
    """The participant's marker tone power over the noise floor's, dB."""
    noise_floor_dbfs: float | None = None
    """Median power of the audio away from the tones, dB relative to a full-scale sine (AES17)."""
    concealed_samples: int | None = None
    """Samples the decoder concealed (W3C webrtc-stats ``concealedSamples``). Null: aiortc
    and FFmpeg decode only the packets that came and conceal nothing; a loss is a gap in the
    media timeline instead, counted in ``dropouts``."""
    concealment_events: int | None = None
    """Concealment events (webrtc-stats ``concealmentEvents``); null for the same reason."""


@dataclass
class LatencySection:
    glass_to_glass_seconds: dict[str, float | None] = field(default_factory=lambda: quantile_fields(None))
    clock_domain: str | None = None
    """Which clocks glass-to-glass subtracts: ``same_host``, ``synchronised`` (corrected by
    ``clock_offset_seconds``) or ``unknown`` (see :mod:`qoe.clockdomain`)."""
    clock_offset_seconds: float | None = None
    """The publisher's clock minus this host's, as given by the user (``synchronised`` only)."""

    def correct_for(self, clock_offset: float) -> None:
        """Move glass-to-glass onto one clock: the publisher's runs ``clock_offset`` ahead."""
        self.clock_offset_seconds = clock_offset
        self.glass_to_glass_seconds = {
            k: None if v is None else v + clock_offset for k, v in self.glass_to_glass_seconds.items()
        }


@dataclass
class AvSyncSection:
    offset_seconds: dict[str, float | None] = field(default_factory=lambda: {"median": None, "p95_abs": None})
    """Flash minus tone of the same second (ITU-R BT.1359 sign), measured within +-3 s."""
    samples: int | None = None
    reason: str | None = None
    """Why ``offset_seconds`` is null, e.g. "offset beyond the +-3 s measurement range"."""


@dataclass
class ChatSection:
    echo_seconds: dict[str, float | None] = field(default_factory=lambda: quantile_fields(None))
    sent: int | None = None
    lost: int | None = None
    duplicated: int | None = None
    reordered: int | None = None
    interaction_seconds: dict[str, float | None] = field(default_factory=lambda: quantile_fields(None))
    """Chat sent until the host shows it on screen, as the viewer sees it."""


@dataclass
class CohostSection:
    offset_seconds: dict[str, float | None] = field(default_factory=lambda: {"median": None})
    """Co-host marker time minus host marker time as the viewer sees them."""
    av_offset_seconds: dict[str, float | None] = field(default_factory=lambda: {"median": None})
    """The co-host's own A/V offset (ITU-R BT.1359 sign)."""
    samples: int | None = None
    frames: int | None = None
    """Frames in which the co-host's signal was read."""
    left: bool | None = None
    """True if the co-host was seen and then left before the probe ended."""
    echo: dict[str, bool | float | None] = field(
        default_factory=lambda: {"detected": None, "delay_seconds": None, "return_loss_db": None}
    )
    """The host's tone returning in the co-host's own audio track: whether, how late (echo
    minus host, on their senders' clocks) and how much quieter (echo return loss, ITU-T G.168
    ERL, W3C webrtc-stats ``echoReturnLoss``, dB). Null when not looked for (a mix)."""
    audio: dict[str, Any] = field(
        default_factory=lambda: {"snr_db": None, "noise_floor_dbfs": None, "dropouts": no_dropouts()}
    )
    """The co-host's own audio figures, defined as ``audio``'s (its track, or the mix)."""


class GrabDrop(TypedDict):
    """One coupon drop a grab probe saw (``grab.drops``)."""

    drop: str
    seen_after_seconds: float | None
    """Drop opened (sender's clock) to seen on screen (the viewer's clock)."""
    answer_seconds: float | None
    """Grab request sent to its answer."""
    won: bool | None
    """True won, False sold out, None no answer that said."""
    sold_out_at: float | None
    """Unix seconds the drop sold out, as the grab's answer said (None: not yet, or not said)."""


@dataclass
class GrabSection:
    """Coupon grabs (docs/METRICS.md): how soon each drop was seen and answered, who won."""

    seen_after_seconds: dict[str, float | None] = field(default_factory=lambda: quantile_fields(None))
    """Over the drops seen whose opening time is known: opened -> seen on screen."""
    answer_seconds: dict[str, float | None] = field(default_factory=lambda: quantile_fields(None))
    """Over the grabs answered: request sent -> answer."""
    seen: int | None = None
    """Drops seen."""
    won: int | None = None
    """Drops won (a coupon each)."""
    sold_out: int | None = None
    """Grabs answered sold out: a normal outcome, not an error."""
    unanswered: int | None = None
    """Grabs sent that got no answer within the watch."""
    drops: list[GrabDrop] | None = None
    """Each drop seen, in order."""


@dataclass
class PublishSection:
    """Figures of a publishing probe (WHIP, RTMP publish)."""

    frames_sent: int | None = None
    audio_frames_sent: int | None = None


@dataclass
class IceSection:
    """The path a WebRTC probe's media took: the candidate pair ICE selected."""

    local_candidate_type: str | None = None
    """The probe's side: ``host``, ``srflx`` (through a NAT), ``prflx`` or ``relay`` (TURN)."""
    remote_candidate_type: str | None = None
    """The server's side, of the same types."""


@dataclass
class ProbeHostSection:
    """The probe's own machine while the run watched (see :mod:`qoe.looplag`)."""

    loop_lag_seconds: dict[str, float | None] = field(default_factory=lambda: quantile_fields(None))
    """How late the probe's event loop woke for a 50 ms timer: p50, p95 and max."""
    cpu_busy_ratio: float | None = None
    """Share of the machine's CPU time (all cores) that was busy while the run watched."""
    cpu_stolen_ratio: float | None = None
    """Of that time, the share a hypervisor gave to other guests (counted in busy too): a
    virtual machine's CPUs vanish for milliseconds at a time while it looks idle inside."""
    loop_busy_ratio: float | None = None
    """Share of the wall time the probe's event-loop thread was on a CPU: near 1, the loop
    never waits, and packets wait in the kernel for it."""
    overloaded: bool | None = None
    """The loop ran more than 100 ms late, the CPUs were 85 % busy or more, or the loop's
    thread was on a CPU 90 % of the time or more: the run's stutter and latency figures may be
    its host's own."""


def iso_time(unix_seconds: float) -> str:
    """Unix seconds as an ISO 8601 UTC timestamp with milliseconds."""
    t = _dt.datetime.fromtimestamp(unix_seconds, tz=_dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


DECODE_FIGURES = ("freezes", "dropped_frames", "glass_to_glass", "av_sync", "picture_quality")
"""The figures whose source :attr:`DecodeSection.sources` names."""


def no_sources() -> dict[str, str | None]:
    return dict.fromkeys(DECODE_FIGURES)


@dataclass
class DecodeSection:
    """How a viewer read its video, and so where each figure came from (docs/METRICS.md)."""

    mode: str | None = None
    """``full``: every frame decoded; ``sample``: frames from RTP, pictures decoded a few
    seconds at a time on the viewer's own schedule; ``none``: frames from RTP, pictures
    decoded only when a fleet's rotating decoder visits (or never); None: not a viewer."""
    sampled_seconds: float | None = None
    """Seconds a light viewer decoded (null with ``full``)."""
    sampled_frames: int | None = None
    """Frames it decoded in them."""
    sources: dict[str, str | None] = field(default_factory=no_sources)
    """Per figure, what it was measured from: ``freezes`` (``decoded_frames``,
    ``rtp_frames``), ``dropped_frames`` (``picture_code``, ``rtp_sequence``),
    ``glass_to_glass`` (``picture_code``, ``abs_capture_time``, ``sampled_picture_code``),
    ``av_sync`` and ``picture_quality`` (``decoded_frames``, ``sampled_frames``); null where
    the figure was not measured."""


@dataclass
class ProbeResult:
    probe: str
    kind: str
    target: str
    profile: str = "none"
    run: str = ""
    """The fleet run this result belongs to (``target/profile/index``); empty outside a fleet."""
    url: str = ""
    """The probed URL with its secrets masked."""
    labels: dict[str, str] = field(default_factory=dict)
    """The target's own labels from the fleet file (region, ISP, ...)."""
    started_at: str = ""
    duration_seconds: float = 0.0
    """Seconds the run watched: from its start until it stopped watching (see
    :class:`probes.base.Watch`); teardown is not part of it."""
    teardown_seconds: float | None = None
    """Seconds from stopping watching until the run had closed its peers and sessions."""
    success: bool = False
    error: ErrorInfo | None = None
    join: JoinSection = field(default_factory=JoinSection)
    video: VideoSection = field(default_factory=VideoSection)
    audio: AudioSection = field(default_factory=AudioSection)
    latency: LatencySection = field(default_factory=LatencySection)
    av_sync: AvSyncSection = field(default_factory=AvSyncSection)
    chat: ChatSection = field(default_factory=ChatSection)
    cohost: CohostSection = field(default_factory=CohostSection)
    publish: PublishSection = field(default_factory=PublishSection)
    grab: GrabSection = field(default_factory=GrabSection)
    ice: IceSection = field(default_factory=IceSection)
    probe_host: ProbeHostSection = field(default_factory=ProbeHostSection)
    decode: DecodeSection = field(default_factory=DecodeSection)
    network: dict[str, Any] = field(default_factory=dict)
    """What the network emulation did to this probe's packets, per direction (empty: none)."""

    def fail(self, error: BaseException) -> None:
        """Mark the result failed with the error's kind; figures measured so far stay."""
        self.success = False
        kind = error.kind if isinstance(error, ProbeError) else "internal"
        message = str(error) or type(error).__name__
        # An error's text may quote a URL with its secrets, or a server's hostile body.
        self.error = ErrorInfo(kind, clean_text(redact_text(message.splitlines()[0])))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        """Rebuild a result from its JSON form; unknown top-level fields are ignored."""
        sections: dict[str, type[Any]] = {
            "join": JoinSection,
            "video": VideoSection,
            "audio": AudioSection,
            "latency": LatencySection,
            "av_sync": AvSyncSection,
            "chat": ChatSection,
            "cohost": CohostSection,
            "publish": PublishSection,
            "grab": GrabSection,
            "ice": IceSection,
            "probe_host": ProbeHostSection,
            "decode": DecodeSection,
        }
        kwargs: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name not in data:
                continue
            value = data[name]
            if name in sections and isinstance(value, dict):
                known = sections[name].__dataclass_fields__
                value = sections[name](**{k: v for k, v in value.items() if k in known})
            elif name == "error" and isinstance(value, dict):
                value = ErrorInfo(str(value.get("kind", "")), str(value.get("message", "")))
            kwargs[name] = value
        return cls(**kwargs)


def get_path(data: dict[str, Any], path: str) -> Any:
    """The value at a dotted field path (``"join.total_seconds"``), None when absent."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def field_paths() -> list[str]:
    """Every leaf field path of the schema, e.g. ``latency.glass_to_glass_seconds.p95``.

    ``join.phases`` holds one entry per phase of the probe's kind and is listed as itself.
    """
    paths: list[str] = []

    def walk(prefix: str, value: Any, hint: Any) -> None:
        hint = schema_type(hint)
        if typing.is_typeddict(hint):  # a section that is null until measured: its fields
            for key, sub in typing.get_type_hints(hint).items():
                walk(f"{prefix}.{key}", None, sub)
        elif isinstance(value, dict) and value and prefix != "join.phases":
            hints = typing.get_type_hints(hint) if dataclasses.is_dataclass(hint) else {}
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub, hints.get(key))
        else:
            paths.append(prefix)

    walk("", ProbeResult(probe="", kind="", target="").to_dict(), ProbeResult)
    return paths


def schema_type(hint: Any) -> Any:
    """``hint`` without its ``| None``, where it is one type or None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint
