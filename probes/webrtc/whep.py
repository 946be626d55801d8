"""WHEP viewer probe: join a room the way a viewer's player does and record what it sees.

Join milestones, in order: ``signaling`` (WHEP POST answered), ``ice_connected``,
``dtls_connected``, ``first_rtp_packet``, ``first_decoded_frame``. Every decoded frame is
stamped on arrival and its test-signal code and flash marker read; the audio is scanned for
tone onsets. RTCP sender reports give both streams' mapping to the sender's clock, which is
how the A/V offset is judged as a lip-syncing player would present it.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from probes.base import ProbeSpec
from probes.webrtc.interaction import InteractionLoop, chat_url_for
from probes.webrtc.peer import (
    RtpObserver,
    next_audio_frame,
    next_video_frame,
    prefer_codecs,
    stream_seconds,
)
from probes.webrtc.session import Session
from qoe import clock, metrics
from qoe.errors import DisconnectedError, NoMediaError
from qoe.media.frames import luma
from qoe.result import ProbeResult
from qoe.signal import HOST_TONE_HZ, ToneOnsetDetector, flash_level, read_code, unwrap_ticks
from qoe.timeline import Timeline, ToneOnset, VideoFrameEvent

__all__ = ["PHASES", "probe"]

PHASES = ("signaling", "ice_connected", "dtls_connected", "first_rtp_packet", "first_decoded_frame")
WATCHDOG_PERIOD = 0.1
AUDIO_RATE = 48000
AUDIO_BATCH = 4800
"""Samples (100 ms) fed to the tone detector at a time."""


async def probe(spec: ProbeSpec, result: ProbeResult) -> None:
    """Watch ``spec.url`` over WHEP for ``spec.duration`` seconds; fill ``result``."""
    timeline = Timeline(PHASES)
    viewer = _Viewer(spec, timeline)
    session: Session | None = None
    try:
        session = Session(spec.url, timeline, network=spec.network(), seed=spec.seed)
        async with session:
            await viewer.watch(session)
    finally:
        await viewer.stop_consumers()
        timeline.finish()
        viewer.collect_sync()
        result.fill_from(timeline)
        if viewer.interaction is not None:
            q = metrics.quantiles(viewer.interaction.latencies())
            if q is not None:
                result.chat.interaction_seconds = {"p50": q.p50, "p95": q.p95, "max": q.max}
        if session is not None:
            result.network = session.network_stats


class _Viewer:
    def __init__(self, spec: ProbeSpec, timeline: Timeline) -> None:
        self.spec = spec
        self.timeline = timeline
        self.first_frame = asyncio.Event()
        self.observers: dict[str, RtpObserver] = {}
        self.consumers: list[asyncio.Task[None]] = []
        self.tone_hz = float(spec.options.get("tone_hz", HOST_TONE_HZ))
        self.detector = ToneOnsetDetector(self.tone_hz)
        self.last_video_stream_time = 0.0
        every = spec.options.get("interact_every")
        self.interaction = (
            InteractionLoop(str(spec.options.get("chat_url") or chat_url_for(spec.url)), float(every))
            if every
            else None
        )
        self._audio_pending: list[tuple[int, np.ndarray]] = []
        self._audio_pending_samples = 0

    async def watch(self, session: Session) -> None:
        spec, pc = self.spec, session.pc
        for kind, codecs in (("video", ("VP8", "H264")), ("audio", ("opus",))):
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            prefer_codecs(transceiver, kind, codecs)
            rate = 90000 if kind == "video" else 48000
            self.observers[kind] = RtpObserver(transceiver.receiver, rate, self._on_packet)
        pc.on("track", self._on_track)

        deadline = self.timeline.start + spec.duration
        await session.negotiate(timeout=min(spec.join_timeout, spec.duration))
        join_left = min(self.timeline.start + spec.join_timeout, deadline) - clock.monotonic()
        if not await session.wait(self.first_frame, max(0.0, join_left)):
            reached = [p for p in PHASES if p in self.timeline.milestones]
            raise NoMediaError(
                f"no decoded video frame within {spec.join_timeout:g} s "
                f"(reached: {', '.join(reached) or 'nothing'})"
            )
        if self.interaction is not None:
            self.consumers.append(asyncio.create_task(self.interaction.run(deadline), name="whep-interact"))
        while (left := deadline - clock.monotonic()) > 0:
            await session.wait(asyncio.sleep(min(left, WATCHDOG_PERIOD)), left + 1)
            last = max((o.last_packet_at or 0.0) for o in self.observers.values())
            if clock.monotonic() - last > spec.media_timeout:
                raise DisconnectedError(f"no media for {spec.media_timeout:g} s; the sender is gone")

    def _on_packet(self) -> None:
        self.timeline.mark("first_rtp_packet")

    def _on_track(self, track: MediaStreamTrack) -> None:
        consume = self._consume_video if track.kind == "video" else self._consume_audio
        self.consumers.append(asyncio.create_task(consume(track), name=f"whep-{track.kind}"))

    async def _consume_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await next_video_frame(track)
                at, wall = clock.monotonic(), clock.wall()
                event = VideoFrameEvent(
                    at=at,
                    wall=wall,
                    stream_time=stream_seconds(frame),
                    width=frame.width,
                    height=frame.height,
                )
                if self.spec.decode:
                    y = luma(frame)
                    code = read_code(y)
                    if code is not None:
                        event.seq = code.seq
                        event.capture_wall = unwrap_ticks(code.ticks, wall)
                        event.tag = code.tag
                    event.flash = flash_level(y, 0)
                self.timeline.video.append(event)
                if self.interaction is not None:
                    self.interaction.frame(event.tag, wall)
                self.last_video_stream_time = event.stream_time
                if not self.first_frame.is_set():
                    self.timeline.mark("first_decoded_frame", at)
                    self.first_frame.set()

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await next_audio_frame(track)
                pcm = frame.to_ndarray()
                channels = len(frame.layout.channels)
                mono = pcm.reshape(-1)[::channels] if pcm.shape[0] == 1 else pcm[0]
                self.timeline.audio_frames += 1
                self.timeline.audio_seconds += frame.samples / frame.sample_rate
                self._scan_audio(mono, int(frame.pts or 0))
        self._scan_audio(None, 0)

    def _scan_audio(self, mono: np.ndarray | None, first: int) -> None:
        """Feed the tone detector in batches of AUDIO_BATCH samples (None: flush).

        The detector re-filters the audio it carries over between calls, so a few larger
        calls cost far less than one per 20 ms frame; onset positions do not depend on it.
        """
        pending = self._audio_pending
        contiguous = pending and pending[-1][0] + len(pending[-1][1]) == first
        if pending and (mono is None or not contiguous or self._audio_pending_samples >= AUDIO_BATCH):
            start = pending[0][0]
            samples = np.concatenate([block for _, block in pending])
            for onset in self.detector.add(samples, start):
                self.timeline.tones.append(ToneOnset(onset / AUDIO_RATE, self.tone_hz))
            pending.clear()
            self._audio_pending_samples = 0
        if mono is not None:
            pending.append((first, mono))
            self._audio_pending_samples += len(mono)

    async def stop_consumers(self) -> None:
        for task in self.consumers:
            task.cancel()
        await asyncio.gather(*self.consumers, return_exceptions=True)

    def collect_sync(self) -> None:
        video = self.observers.get("video")
        audio = self.observers.get("audio")
        if video is not None:
            self.timeline.sync["video"] = video.clock_points(self.last_video_stream_time)
        if audio is not None:
            near = self.timeline.tones[-1].stream_time if self.timeline.tones else 0.0
            self.timeline.sync["audio"] = audio.clock_points(near)
