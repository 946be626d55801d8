"""WHEP viewer probe: join a room the way a viewer's player does and record what it sees.

Join milestones, in order: ``signaling`` (WHEP POST answered), ``ice_connected``,
``dtls_connected``, ``first_rtp_packet``, ``first_decoded_frame``. Every decoded frame has its
test-signal code and flash marker read and is stamped when a libwebrtc player would show it
(:mod:`probes.webrtc.playout`, docs/PLAYOUT.md), or not at all if such a player would not;
the audio is scanned for tone onsets. RTCP sender reports give both streams' mapping to the
sender's clock, which is how the A/V offset is judged as a lip-syncing player would present
it.

A join that shows no frame says why, each cause its own error kind: an answer with no video
the probe can decode (``no_common_codec``, at once, since no frame can come), no video RTP
once ICE and DTLS connected (``no_rtp``), video RTP none of which could be shown
(``undecodable``, with the packets, frames and decode errors counted), or, short of a
connection, ``no_media``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from probes.base import ProbeSpec, Watch
from probes.options import QUALITY_OPTION, WEBRTC_OPTIONS, Option
from probes.webrtc.answer import negotiated, video_problem
from probes.webrtc.interaction import InteractionLoop, chat_url_for
from probes.webrtc.light import (
    DECODE_MODES,
    SAMPLE_EVERY,
    SAMPLE_FOR,
    DecodeGate,
    GatedAudio,
    LightFrame,
    LightVideo,
    rotation,
)
from probes.webrtc.peer import (
    FrameArrival,
    LoopDecoding,
    RtpObserver,
    decode_on_loop,
    next_audio_frame,
    next_video_frame,
    prefer_codecs,
    stream_seconds,
)
from probes.webrtc.playout import EncodedFrame, Played, Playout
from probes.webrtc.session import Session
from qoe import checks, clock, rtcpatch
from qoe.errors import (
    ConfigError,
    DisconnectedError,
    NoCommonCodecError,
    NoMediaError,
    NoRtpError,
    ProbeError,
    UndecodableError,
)
from qoe.media.compose import mix_regions
from qoe.media.frames import luma
from qoe.result import ProbeResult
from qoe.signal import COHOST_TONE_HZ, HOST_TONE_HZ, ToneOnsetDetector, flash_level, read_code, unwrap_ticks
from qoe.signal.quality import QualityScorer, Score, ScoringQueue
from qoe.timeline import AudioBlock, Timeline, ToneOnset, VideoFrameEvent

__all__ = ["OPTIONS", "PHASES", "probe", "view"]

PHASES = ("signaling", "ice_connected", "dtls_connected", "first_rtp_packet", "first_decoded_frame")
WATCHDOG_PERIOD = 0.1
AUDIO_RATE = 48000
AUDIO_BATCH = 4800
"""Samples (100 ms) fed to the tone detector at a time."""
VIDEO_CODECS = ("VP8", "H264")
PLAYOUTS = ("libwebrtc", "arrival")

OPTIONS = (
    Option(
        "codecs", str, "VP8,H264", "video codecs to offer, comma-separated (H264 alone: an H.264-only viewer)"
    ),
    Option(
        "playout", str, "libwebrtc", "when a frame counts as shown (see docs/PLAYOUT.md)", choices=PLAYOUTS
    ),
    Option(
        "cohost",
        str,
        None,
        "watch a co-host too: in the room's mix or as its own tracks",
        choices=("mixed", "separate"),
    ),
    Option("tone_hz", float, HOST_TONE_HZ, "the host's tone marker frequency", "Hz", positive=True),
    Option(
        "cohost_tone_hz", float, COHOST_TONE_HZ, "the co-host's tone marker frequency", "Hz", positive=True
    ),
    Option(
        "interact_every",
        float,
        None,
        "post a chat question this often; time it to the screen",
        "s",
        positive=True,
    ),
    Option("chat_url", str, None, "the room's chat WebSocket (default: the WHEP URL with /whep/ as /chat/)"),
    Option(
        "offer",
        str,
        "client",
        "who makes the SDP offer: client, as RFC 9725 has it; server for endpoints that offer "
        "to their viewers (Janus's WHEP front end): the server answers the POST with its own "
        "offer (in a 406 or a 201), and the probe PATCHes its answer to the session",
        choices=("client", "server"),
    ),
    Option(
        "decode",
        str,
        "full",
        "how much to decode: full (every frame), sample (frames from RTP; a few seconds decoded "
        "every sample_every) or none (frames from RTP; decoded only when the process's rotating decoder "
        "visits); see docs/METRICS.md",
        choices=DECODE_MODES,
    ),
    Option(
        "sample_every",
        float,
        SAMPLE_EVERY,
        f"with decode sample: seconds from one decoding window ({SAMPLE_FOR:g} s) to the next",
        "s",
        check=lambda v: checks.number(v, minimum=SAMPLE_FOR + 1),
    ),
    Option(
        "verify",
        str,
        "rotate",
        "with decode none: rotate lets one decoder visit this process's light viewers in turn "
        "(picture code, A/V offset); off never decodes",
        choices=("rotate", "off"),
    ),
    Option(
        "remb",
        float,
        None,
        "with decode sample or none: send this bandwidth estimate (REMB) once a second instead of "
        "aiortc's delay-based one, which is some 15 % of a light viewer's CPU; for dense fleets "
        "whose path's congestion is not what they measure (the server then sends what it would "
        "to a viewer with that much bandwidth)",
        "bit/s",
        positive=True,
    ),
    QUALITY_OPTION,
    *WEBRTC_OPTIONS,
)
"""What ``options`` a WHEP viewer takes (see :mod:`probes.options`)."""


async def probe(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
    """Watch ``spec.url`` over WHEP until the run stops watching; figures go to ``result``.

    Options: ``tone_hz`` (the host's tone), ``interact_every`` (seconds between chat
    questions, see :mod:`probes.webrtc.interaction`), ``chat_url``, ``cohost``:
    ``"mixed"`` reads host and co-host from the room's mix, ``"separate"`` asks for their
    tracks separately (two pairs of m-lines), and ``codecs``: the video codecs to offer,
    ``"VP8,H264"`` by default (``"H264"`` watches as a viewer that takes H.264 only), and
    ``playout``: ``"libwebrtc"`` (default) stamps each frame when a libwebrtc player (Chrome)
    would show it and leaves out the frames it would not show (see docs/PLAYOUT.md);
    ``"arrival"`` stamps every decoded frame when it reaches the probe; ``token`` and
    ``ice_transport`` as for every WebRTC session (:mod:`probes.webrtc.session`).
    """
    await view(spec, watch)


async def view(
    spec: ProbeSpec, watch: Watch, on_shown: Callable[[VideoFrameEvent], None] | None = None
) -> None:
    """The WHEP viewer itself, for :func:`probe` and for probes that watch as a viewer does
    (the coupon grab, :mod:`probes.grab`): ``on_shown`` is handed each host frame as the
    player shows it, its code read, to act on what the screen says."""
    timeline = watch.open_log(PHASES, "viewer")
    viewer = _Viewer(spec, timeline, on_shown)
    session = Session(
        spec.url,
        timeline,
        token=spec.options["token"],
        relay=spec.options["ice_transport"] == "relay",
        network=spec.network(),
        seed=spec.seed,
        server_offer=spec.options["offer"] == "server",
        may_contact=spec.may_contact,
    )
    watch.defer(session.close)

    async def report(stopped: float) -> None:
        await viewer.stop_consumers()
        viewer.finish_light()
        timeline.finish(stopped)
        if viewer.video_decoders:
            timeline.decode_errors = sum(d.errors for d in viewer.video_decoders)
        viewer.collect_sync()
        timeline.network = session.network_snapshot()

    watch.on_close(report)
    await viewer.watch(session, watch)


def _scored(event: VideoFrameEvent, score: Score | None) -> None:
    if score is not None:
        event.psnr, event.ssim = score.psnr_db, score.ssim


def _check_video(offer: str, answer: str) -> None:
    """Refuse an answer that leaves the viewer no video it can decode, before applying it."""
    problem = video_problem(offer, answer)
    if problem is not None:
        raise NoCommonCodecError(f"no video the probe can decode: {problem}; answer: {negotiated(answer)}")


def _video_codecs(option: object) -> tuple[str, ...]:
    names = option.split(",") if isinstance(option, str) else option
    if not isinstance(names, (list, tuple)) or not names:
        raise ConfigError(f"codecs option must name VP8, H264 or both, got {option!r}")
    codecs = tuple(str(n).strip().upper() for n in names)
    if unknown := [c for c in codecs if c not in VIDEO_CODECS]:
        raise ConfigError(f"codecs option: unknown video codec {unknown[0]!r}; use VP8, H264 or both")
    return codecs


class _Participant:
    """One sender the viewer watches (the host or a co-host): its own timeline and signal."""

    def __init__(
        self,
        timeline: Timeline,
        tone_hz: float,
        other_hz: tuple[float, ...],
        slot: int,
        *,
        half: int | None,
        quality: float | None,
        echo_hz: float | None = None,
    ) -> None:
        self.timeline = timeline
        self.tone_hz = tone_hz
        self.detector = ToneOnsetDetector(tone_hz, other_hz=other_hz)
        self._other_hz = other_hz
        self._next_audio: int | None = None
        # A co-host's own track is searched for the host's tone too: its echo.
        self.echo = None if echo_hz is None else ToneOnsetDetector(echo_hz, other_hz=(tone_hz,))
        self.slot = slot
        self.half = half
        """Which half of the room's mix this participant is in (None: the whole frame)."""
        # A half of the mix is a tile the room scaled, not a frame the signal renders: it
        # has no reference, so only whole-frame participants are scored.
        scorer = QualityScorer(slot, quality)
        self.scoring = ScoringQueue(scorer) if half is None and scorer.enabled else None
        self.last_video_stream_time = 0.0
        self._pending: list[tuple[int, np.ndarray]] = []
        self._pending_samples = 0

    def read(self, event: VideoFrameEvent, y: np.ndarray | None) -> VideoFrameEvent:
        """Fill in what the frame's picture says (its code and flash marker)."""
        if y is not None:
            rect = None if self.half is None else mix_regions(event.width, event.height)[self.half]
            code = read_code(y, rect)
            if code is not None:
                event.seq = code.seq
                event.capture_wall = unwrap_ticks(code.ticks, event.wall)
                event.tag = code.tag
                if self.scoring is not None:
                    self.scoring.offer(y, event.capture_wall, code.seq, code.tag, partial(_scored, event))
            event.flash = flash_level(y, self.slot, region=rect)
        return event

    def shown(self, event: VideoFrameEvent) -> None:
        self.timeline.video.append(event)
        self.last_video_stream_time = event.stream_time

    def restart_if_gap(self, first: int) -> None:
        """Start the tone detectors afresh where the audio resumes after a gap (a light
        viewer decodes audio in windows): a detector carries filter state across calls."""
        pending = self._pending
        if pending and pending[-1][0] + len(pending[-1][1]) != first:
            self.audio(None, 0)
        if self._next_audio is not None and first != self._next_audio:
            self.detector = ToneOnsetDetector(self.detector.tone_hz, other_hz=self._other_hz)
            if self.echo is not None:
                self.echo = ToneOnsetDetector(self.echo.tone_hz, other_hz=(self.tone_hz,))
        self._next_audio = first

    def audio(self, mono: np.ndarray | None, first: int) -> None:
        """Feed the tone detector in batches of AUDIO_BATCH samples (None: flush).

        The detector re-filters the audio it carries over between calls, so a few larger
        calls cost far less than one per 20 ms frame; onset positions do not depend on it.
        """
        pending = self._pending
        contiguous = pending and pending[-1][0] + len(pending[-1][1]) == first
        if pending and (mono is None or not contiguous or self._pending_samples >= AUDIO_BATCH):
            start = pending[0][0]
            samples = np.concatenate([block for _, block in pending])
            for detector in (self.detector, self.echo):
                if detector is not None:
                    for onset, level in detector.add_with_levels(samples, start):
                        self.timeline.tones.append(ToneOnset(onset / AUDIO_RATE, detector.tone_hz, level))
            pending.clear()
            self._pending_samples = 0
        if mono is not None:
            pending.append((first, mono))
            self._pending_samples += len(mono)
            self._next_audio = first + len(mono)


class _Viewer:
    def __init__(
        self,
        spec: ProbeSpec,
        timeline: Timeline,
        on_shown: Callable[[VideoFrameEvent], None] | None = None,
    ) -> None:
        self.spec = spec
        self.timeline = timeline
        self.on_shown = on_shown
        self.first_frame = asyncio.Event()
        self.observers: dict[tuple[str, int], RtpObserver] = {}
        self.video_decoders: list[LoopDecoding] = []
        self.consumers: list[asyncio.Task[None]] = []
        options = spec.options
        self.video_codecs = _video_codecs(options["codecs"])
        self.playout = options["playout"]
        self.cohost_mode = options["cohost"]
        host_hz, cohost_hz = options["tone_hz"], options["cohost_tone_hz"]
        mixed = self.cohost_mode == "mixed"
        others = (cohost_hz,) if self.cohost_mode else ()
        quality = None if options["quality"] == "all" else options["quality"]
        self.decode_mode: str = options["decode"]
        self.light = self.decode_mode != "full"
        if options["remb"] is not None and not self.light:
            raise ConfigError("remb option: only light viewers (decode sample or none) send a fixed estimate")
        timeline.decode_mode = self.decode_mode
        if self.light:
            timeline.frames_dropped_undecodable = 0  # the player model runs from the start
        self.gate = DecodeGate()
        self.lights: list[LightVideo] = []
        self.gated_audio: list[GatedAudio] = []
        self.rotating = self.decode_mode == "none" and options["verify"] == "rotate"
        self._capture_seen: set[str] = set()
        if not spec.decode or self.light:
            quality = 0.0  # a light viewer scores no picture: it decodes a few frames only
        self.host = _Participant(timeline, host_hz, others, 0, half=0 if mixed else None, quality=quality)
        self.cohost = None
        if self.cohost_mode:
            echo_hz = None if mixed else host_hz
            cohost = timeline.participants["cohost"] = Timeline(PHASES, tone_hz=cohost_hz, echo_hz=echo_hz)
            self.cohost = _Participant(
                cohost, cohost_hz, (host_hz,), 1, half=1 if mixed else None, quality=quality, echo_hz=echo_hz
            )
        every = options["interact_every"]
        self.interaction = (
            InteractionLoop(options["chat_url"] or chat_url_for(spec.url), timeline, every) if every else None
        )

    def participants_of(self, pair: int) -> list[_Participant]:
        """Who a track pair carries: the host, the co-host, or both (the mix)."""
        if self.cohost is None:
            return [self.host]
        if self.cohost_mode == "mixed":
            return [self.host, self.cohost]
        return [self.host] if pair == 0 else [self.cohost]

    async def watch(self, session: Session, watch: Watch) -> None:
        spec, pc = self.spec, session.pc
        pairs = 2 if self.cohost_mode == "separate" else 1
        for pair in range(pairs):
            for kind, codecs in (("video", self.video_codecs), ("audio", ("opus",))):
                transceiver = pc.addTransceiver(kind, direction="recvonly")
                prefer_codecs(transceiver, kind, codecs)
                if self.light and kind == "video":
                    light = LightVideo(
                        transceiver.receiver,
                        self.gate,
                        partial(self._light_played, pair),
                        remb=spec.options["remb"],
                    )
                    self.lights.append(light)
                    self.video_decoders.append(light)
                elif self.light:
                    self.gated_audio.append(GatedAudio(transceiver.receiver, self.gate))
                else:
                    decoding = decode_on_loop(transceiver.receiver)
                    if kind == "video":
                        self.video_decoders.append(decoding)
                rate = 90000 if kind == "video" else 48000
                self.observers[(kind, pair)] = RtpObserver(transceiver.receiver, rate, self._on_packet)
        pc.on("track", lambda track: self._on_track(session, track))

        deadline = watch.until
        if self.decode_mode == "sample":
            self.consumers.append(asyncio.create_task(self._sample(), name="whep-sample"))
        elif self.rotating:
            shared = rotation()
            shared.join(self.gate)
            watch.defer(lambda: shared.leave(self.gate))
        await session.negotiate(timeout=min(spec.join_timeout, spec.duration), check_answer=_check_video)
        if self.light:
            # BUNDLE has chosen the transport: its packets skip the event loop's queue.
            rtcpatch.receive_directly(pc.getTransceivers()[0].receiver.transport)
        join_left = min(self.timeline.start + spec.join_timeout, deadline) - clock.monotonic()
        if not await session.wait(self.first_frame, max(0.0, join_left)):
            raise self._no_video(session)
        if self.interaction is not None:
            self.consumers.append(asyncio.create_task(self.interaction.run(deadline), name="whep-interact"))
        host_observers = [o for (_, pair), o in self.observers.items() if pair == 0]
        while (left := deadline - clock.monotonic()) > 0:
            await session.wait(asyncio.sleep(min(left, WATCHDOG_PERIOD)), left + 1)
            last = max((o.last_packet_at or 0.0) for o in host_observers)
            if clock.monotonic() - last > spec.media_timeout:
                raise DisconnectedError(f"no media for {spec.media_timeout:g} s; the sender is gone")

    def _no_video(self, session: Session) -> ProbeError:
        """Why no frame was shown within the join timeout, as specific as the log allows."""
        within = f"within {self.spec.join_timeout:g} s"
        if "dtls_connected" not in self.timeline.milestones:
            reached = [p for p in PHASES if p in self.timeline.milestones]
            return NoMediaError(
                f"no decoded video frame {within} (reached: {', '.join(reached) or 'nothing'})"
            )
        agreed = negotiated(session.agreed) if session.agreed is not None else "nothing"
        video, audio = self.observers[("video", 0)], self.observers[("audio", 0)]
        if video.packets == 0:
            return NoRtpError(
                f"connected, but no video RTP arrived {within} "
                f"({audio.packets} audio packets; negotiated {agreed})"
            )
        decoder = self.video_decoders[0]
        silent = clock.monotonic() - max(o.last_packet_at or 0.0 for o in self.observers.values())
        if silent > self.spec.media_timeout:
            # Packets came, then none: the sender went away mid-join, which no codec explains.
            return DisconnectedError(
                f"no media for {self.spec.media_timeout:g} s after {video.packets} video packets, "
                "before a frame could be shown; the sender is gone"
            )
        return UndecodableError(
            f"video RTP arrived but no frame could be shown {within}: {video.packets} packets, "
            f"{decoder.frames} frames ({decoder.keyframes} keyframes), {decoder.errors} decode errors "
            f"(negotiated {agreed})"
        )

    def _on_packet(self) -> None:
        self.timeline.mark("first_rtp_packet")

    async def _sample(self) -> None:
        """``decode = "sample"``: a decoding window every ``sample_every`` seconds, the first
        at a random point of the first ``sample_every - SAMPLE_FOR``: viewers that joined
        together do not all decode at once (which is all the load of full decoding, in
        bursts), and a run of ``sample_every`` seconds still decodes one whole window."""
        every = self.spec.options["sample_every"]
        rng = np.random.default_rng(self.spec.seed)
        await asyncio.sleep(float(rng.uniform(0.0, every - SAMPLE_FOR)))
        while True:
            self.gate.open(SAMPLE_FOR)
            await asyncio.sleep(every)

    def _light_played(self, pair: int, played: Played, noted: LightFrame | None) -> None:
        """A light viewer's frame as the player model settled it: shown at its render time
        (glass-to-glass from its abs-capture-time, its code read if it was decoded), or not."""
        participants = self.participants_of(pair)
        if played.render_at is None:
            _count_undecodable(participants)
            return
        if noted is None:
            return
        wall = clock.wall() + (played.render_at - clock.monotonic())
        y = luma(noted.picture) if noted.picture is not None else None
        events = []
        for participant in participants:
            event = VideoFrameEvent(
                at=played.render_at,
                wall=wall,
                stream_time=noted.stream_time,
                width=noted.width,
                height=noted.height,
                arrival=noted.complete,
                encoded_bytes=noted.size,
            )
            if y is not None:
                participant.read(event, y)
                participant.timeline.sampled_frames += 1
                if event.capture_wall is not None:
                    self._capture_seen.add("sampled_picture_code")
            if noted.capture is not None:
                event.capture_wall = noted.capture  # one clock for every frame: the sender's
                self._capture_seen.add("abs_capture_time")
            events.append(event)
        self._show(pair, participants, events)

    def finish_light(self) -> None:
        """Settle a light viewer's last frames and note how it read its video."""
        if not self.light:
            return
        for light in self.lights:
            light.flush()
        self.timeline.decode_windows = list(self.gate.windows)
        lost = [light.frames_lost for light in self.lights[:1]]
        self.timeline.frames_lost = lost[0] if lost else None
        for source in ("abs_capture_time", "sampled_picture_code"):
            if source in self._capture_seen:
                self.timeline.capture_source = source
                break
        for participant in (self.host, self.cohost):
            if participant is not None and participant.timeline is not self.timeline:
                participant.timeline.decode_mode = self.decode_mode
                participant.timeline.decode_windows = self.timeline.decode_windows

    def _on_track(self, session: Session, track: MediaStreamTrack) -> None:
        transceivers = session.pc.getTransceivers()
        index = next((i for i, t in enumerate(transceivers) if t.receiver.track is track), 0)
        pair = index // 2
        if self.light and track.kind == "video":
            return  # its frames come from RTP (LightVideo), never through the track
        consume = self._consume_video if track.kind == "video" else self._consume_audio
        task = asyncio.create_task(consume(track, pair), name=f"whep-{track.kind}-{pair}")
        self.consumers.append(task)

    async def _consume_video(self, track: MediaStreamTrack, pair: int) -> None:
        """Read each decoded frame; record it when (and if) the player would show it.

        With the libwebrtc model, a frame's events wait in ``held`` (by pts) until the model
        settles it, usually when the next frame comes; the rest are settled when the track
        ends or the probe stops watching.
        """
        participants = self.participants_of(pair)
        decoding = self.video_decoders[pair] if pair < len(self.video_decoders) else None
        playout = Playout() if self.playout == "libwebrtc" and decoding is not None else None
        if playout is not None:
            for participant in participants:
                participant.timeline.frames_dropped_undecodable = 0
        held: dict[int, list[VideoFrameEvent]] = {}
        try:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await next_video_frame(track)
                    at, wall = clock.monotonic(), clock.wall()
                    y = luma(frame) if self.spec.decode else None
                    events = [
                        participant.read(
                            VideoFrameEvent(
                                at=at,
                                wall=wall,
                                stream_time=stream_seconds(frame),
                                width=frame.width,
                                height=frame.height,
                            ),
                            y,
                        )
                        for participant in participants
                    ]
                    arrivals = [] if decoding is None else decoding.arrivals_through(int(frame.pts or 0))
                    if arrivals:
                        for event in events:
                            event.encoded_bytes = sum(arrival.size for arrival in arrivals)
                    if playout is None or not arrivals or arrivals[-1].timestamp != frame.pts:
                        self._show(pair, participants, events)  # as it came: no arrival noted
                        continue
                    held[arrivals[-1].timestamp] = events
                    for arrival in arrivals:
                        for played in playout.add(_encoded(arrival)):
                            self._settle(pair, participants, played, held)
        finally:
            if playout is not None:
                for played in playout.flush():
                    self._settle(pair, participants, played, held)

    def _settle(
        self,
        pair: int,
        participants: list[_Participant],
        played: Played,
        held: dict[int, list[VideoFrameEvent]],
    ) -> None:
        events = held.pop(played.frame.rtp, None)
        if played.render_at is None:
            _count_undecodable(participants)
            return
        if events is None:
            return  # the decoder put out no picture for it
        for event in events:
            event.arrival = event.at
            event.wall += played.render_at - event.at
            event.at = played.render_at
        self._show(pair, participants, events)

    def _show(self, pair: int, participants: list[_Participant], events: list[VideoFrameEvent]) -> None:
        for participant, event in zip(participants, events, strict=True):
            participant.shown(event)
        if pair == 0 and self.on_shown is not None:
            self.on_shown(events[0])
        if pair == 0 and not self.first_frame.is_set():
            first = events[0]
            self.timeline.mark("first_decoded_frame", first.at if first.arrival is None else first.arrival)
            self.first_frame.set()

    async def _consume_audio(self, track: MediaStreamTrack, pair: int) -> None:
        participants = self.participants_of(pair)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await next_audio_frame(track)
                pcm = frame.to_ndarray()
                channels = len(frame.layout.channels)
                mono = pcm.reshape(-1)[::channels] if pcm.shape[0] == 1 else pcm[0]
                scale = 32768.0 if mono.dtype == np.int16 else 1.0
                block = AudioBlock(
                    at=clock.monotonic(),
                    stream_time=stream_seconds(frame),
                    seconds=frame.samples / frame.sample_rate,
                    power=float(np.mean(np.square(mono / scale))) if len(mono) else 0.0,
                )
                for participant in participants:
                    participant.timeline.audio_frames += 1
                    participant.timeline.audio_seconds += frame.samples / frame.sample_rate
                    if self.light:
                        # Decoded in windows only: the gaps between them are no dropouts.
                        participant.restart_if_gap(int(frame.pts or 0))
                    else:
                        participant.timeline.audio_blocks.append(block)
                    participant.audio(mono, int(frame.pts or 0))
        for participant in participants:
            participant.audio(None, 0)

    async def stop_consumers(self) -> None:
        for task in self.consumers:
            task.cancel()
        await asyncio.gather(*self.consumers, return_exceptions=True)
        for participant in (self.host, self.cohost):
            if participant is not None and participant.scoring is not None:
                participant.timeline.quality_skipped = await participant.scoring.settle()

    def collect_sync(self) -> None:
        """Each participant's clock points, from the track pair that carries it."""
        for participant in (self.host, self.cohost):
            if participant is None:
                continue
            pair = 1 if participant is self.cohost and self.cohost_mode == "separate" else 0
            video, audio = self.observers.get(("video", pair)), self.observers.get(("audio", pair))
            if video is not None and pair < len(self.lights):
                video.origin = self.lights[pair].origin
            timeline = participant.timeline
            if video is not None:
                timeline.sync["video"] = video.clock_points(participant.last_video_stream_time)
            if audio is not None:
                near = timeline.tones[-1].stream_time if timeline.tones else 0.0
                timeline.sync["audio"] = audio.clock_points(near)


def _encoded(arrival: FrameArrival) -> EncodedFrame:
    """What the player model takes of a frame's arrival; a frame that came after skipped
    packets, or that the decoder rejected, is not intact."""
    return EncodedFrame(
        rtp=arrival.timestamp,
        complete=arrival.complete,
        keyframe=arrival.keyframe,
        intact=arrival.continuous and arrival.decoded,
        retransmitted=arrival.retransmitted,
        size=arrival.size,
        decode_seconds=arrival.decode_seconds,
    )


def _count_undecodable(participants: list[_Participant]) -> None:
    """A frame the player model dropped (never renderable): one more for each participant."""
    for participant in participants:
        participant.timeline.frames_dropped_undecodable = (
            participant.timeline.frames_dropped_undecodable or 0
        ) + 1
