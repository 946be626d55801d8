"""The demux-and-decode loop of one FFmpeg viewer, in a thread of its own.

PyAV blocks in every read and releases the GIL while it demuxes and decodes, so each viewer
runs this loop in a dedicated thread and any number of them (and WebRTC probes) share one
process and one event loop. The thread stamps every event where it happens (monotonic and
wall clock, :mod:`qoe.clock`) and keeps it in its own lists; the event loop only reads a few
scalars while it watches (the time of the last packet) and hears about the first frame and
the end through ``call_soon_threadsafe``. Once the probe stops watching it takes a snapshot
(:meth:`Reader.snapshot`), after which the thread records nothing more.

Frames are stamped with the render time a player would show them at (:mod:`.playout`);
glass-to-glass latency is taken at that instant too, as that is when the viewer sees the
frame. Audio is decoded and scanned for tone onsets on the container's timeline.

Stopping: the thread checks a stop flag between packets; for RTMP and HTTP-FLV the bridge to
the transport also returns end-of-stream once it is set. A read blocked inside FFmpeg ends at
the latest after the media timeout (PyAV's interrupt callback), or at once when the route's
proxy cuts the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any

import av
import numpy as np

from probes.ffmpeg.failures import classify
from probes.ffmpeg.inputs import Limits, MediaInput, open_input
from probes.ffmpeg.playout import Playout
from probes.ffmpeg.tones import ToneScanner
from qoe import clock
from qoe.errors import CorruptStreamError, NoMediaError, ProbeError, StreamEndedError
from qoe.media.frames import luma
from qoe.signal import flash_level, read_code, unwrap_ticks
from qoe.signal.quality import QualityScorer, Score, ScoringQueue
from qoe.timeline import Timeline, ToneOnset, VideoFrameEvent

__all__ = ["Reader", "ReaderConfig"]

_PLANAR_LUMA = ("yuv", "yuvj", "nv12", "nv21", "gray")


@dataclass(frozen=True)
class ReaderConfig:
    kind: str
    url: str
    limits: Limits
    decode: bool = True
    """Read the test signal: the code and flash from the video, the tones from the audio
    (both are decoded either way)."""
    tone_hz: float = 1000.0
    slot: int = 0
    """Flash marker slot to read (0 host, 1 co-host)."""
    quality: float | None = 0.0
    """Frames a second scored for picture quality (None: every one; 0: none)."""
    host_header: str | None = None


def _scored(event: VideoFrameEvent, score: Score | None) -> None:
    if score is not None:
        event.psnr, event.ssim = score.psnr_db, score.ssim


class Reader:
    """Opens, demuxes and decodes one stream in a thread; see the module docstring."""

    def __init__(self, config: ReaderConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self._loop = loop
        self._stop = threading.Event()
        self._closed = False
        self.first_frame = asyncio.Event()
        self.done: asyncio.Future[None] = loop.create_future()
        """Resolves when the thread ends: None when stopped, the ProbeError that ended it
        otherwise (the stream ending on its own is a :class:`StreamEndedError`)."""
        self.milestones: dict[str, float] = {}
        self.video: list[VideoFrameEvent] = []
        self.tones: list[ToneOnset] = []
        self.audio_frames = 0
        self.audio_seconds = 0.0
        self.last_packet_at: float | None = None
        self.corrupt_packets = 0
        self.corrupt_video_packets = 0
        self._playout = Playout()
        self._scanner = ToneScanner(config.tone_hz)
        self._video_bytes = 0
        scorer = QualityScorer(config.slot, config.quality)
        self._scoring = ScoringQueue(scorer) if config.decode and scorer.enabled else None
        self._thread = threading.Thread(target=self._main, name=f"qoe-ffmpeg-{config.kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does between packets)."""
        self._stop.set()

    async def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the thread to end; True if it has. A thread still
        blocked in a read afterwards closes its stream itself when the read returns."""
        if not self.done.done():
            await asyncio.wait({self.done}, timeout=timeout)
        if self.done.done() and not self.done.cancelled():
            self.done.exception()  # raised to the probe already, or moot once it stopped
        return self.done.done()

    def snapshot(self, timeline: Timeline, end: float) -> None:
        """Copy what was recorded up to ``end`` (monotonic) into ``timeline``; record no more."""
        self._closed = True
        for name, at in list(self.milestones.items()):
            if at <= end:
                timeline.mark(name, at)
        timeline.video = [f for f in list(self.video) if f.at <= end]
        timeline.tones = list(self.tones)
        timeline.audio_frames = self.audio_frames
        timeline.audio_seconds = self.audio_seconds
        timeline.decode_errors = self.corrupt_video_packets

    async def settle_scoring(self) -> int:
        """Wait a moment for the frames being scored; how many due went unscored in all."""
        return 0 if self._scoring is None else await self._scoring.settle()

    # -- in the thread -------------------------------------------------------------------

    def _main(self) -> None:
        error: BaseException | None = None
        try:
            self._run()
        except ProbeError as exc:
            error = exc
        except Exception as exc:  # mapped, so the probe reports a kind instead of a crash
            limit = self.config.limits.read
            last = self.last_packet_at
            # FFmpeg's RTMP turns an interrupted read (our read timeout) into EIO.
            timed_out = last is not None and clock.monotonic() - last >= 0.9 * limit
            error = classify(TimeoutError() if timed_out else exc, "read", timeout=limit)
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(self._finish, error)

    def _finish(self, error: BaseException | None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)

    def _mark(self, milestone: str, at: float | None = None) -> None:
        if not self._closed:
            self.milestones.setdefault(milestone, clock.monotonic() if at is None else at)

    def _run(self) -> None:
        config = self.config
        media = open_input(
            config.kind, config.url, config.limits, self._mark, self._stop, host_header=config.host_header
        )
        try:
            self._demux(media)
        finally:
            media.close()

    def _demux(self, media: MediaInput) -> None:
        container = media.container
        video = next((s for s in container.streams if s.type == "video"), None)
        audio = next((s for s in container.streams if s.type == "audio"), None)
        if video is None:
            found = ", ".join(s.type for s in container.streams) or "no streams"
            raise NoMediaError(f"the stream has no video ({found})")
        for stream in (video, audio):
            if stream is not None and stream.codec_context is not None:
                # One thread: frame threading holds frames back (latency), and a viewer's
                # cost stays in its own thread, where the benchmark measures it.
                stream.codec_context.thread_count = 1
        streams = [s for s in (video, audio) if s is not None]
        try:
            for packet in container.demux(streams):
                if self._stop.is_set():
                    return
                self._on_packet(packet, video.index)
        except IndexError as exc:
            # PyAV's demux indexes its list of streams by FFmpeg's stream count, which grows
            # when damaged FLV bytes parse as a tag of a new kind.
            raise CorruptStreamError("damaged data: a stream of a new kind appeared mid-stream") from exc
        if self._stop.is_set():
            return
        self._keep_onsets(self._scanner.flush())
        if self.corrupt_packets:
            raise CorruptStreamError(
                f"the stream ended after {self.corrupt_packets} packets that could not be decoded"
            )
        raise StreamEndedError("the server ended the stream")

    def _on_packet(self, packet: Any, video_index: int) -> None:
        arrival = clock.monotonic()
        self.last_packet_at = arrival
        is_video = packet.stream_index == video_index
        if packet.size:
            self._mark("first_packet", arrival)
            if is_video:
                self._video_bytes += packet.size
            if is_video and packet.is_keyframe:
                self._mark("first_keyframe", arrival)
        for frame in self._decode(packet, is_video):
            if is_video:
                self._on_video(frame)
            else:
                self._on_audio(frame)

    def _decode(self, packet: Any, is_video: bool) -> list[Any]:
        try:
            return list(packet.decode())
        except (av.InvalidDataError, av.EOFError, ValueError):
            # A damaged packet: a player skips it and shows what the decoder conceals.
            self.corrupt_packets += 1
            self.corrupt_video_packets += is_video
            return []

    def _on_video(self, frame: Any) -> None:
        arrival, arrival_wall = clock.monotonic(), clock.wall()
        if self._closed:
            return
        pts = frame.time
        at = self._playout.render(arrival, pts)
        wall = arrival_wall + (at - arrival)
        event = VideoFrameEvent(
            at=at,
            wall=wall,
            stream_time=float(pts) if pts is not None else 0.0,
            width=frame.width,
            height=frame.height,
            arrival=arrival,
            encoded_bytes=self._video_bytes,
        )
        self._video_bytes = 0
        if self.config.decode:
            name = frame.format.name
            y = luma(frame if name.startswith(_PLANAR_LUMA) else frame.reformat(format="gray"))
            code = read_code(y)
            if code is not None:
                event.seq = code.seq
                event.capture_wall = unwrap_ticks(code.ticks, wall)
                event.tag = code.tag
                if self._scoring is not None:
                    self._scoring.offer(y, event.capture_wall, code.seq, code.tag, partial(_scored, event))
            event.flash = flash_level(y, self.config.slot)
        self.video.append(event)
        if "first_decoded_frame" not in self.milestones:
            self._mark("first_decoded_frame", arrival)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.first_frame.set)

    def _on_audio(self, frame: Any) -> None:
        if self._closed:
            return
        self.audio_frames += 1
        self.audio_seconds += frame.samples / frame.sample_rate
        if not self.config.decode:
            return
        pcm = frame.to_ndarray()
        channels = len(frame.layout.channels)
        mono = pcm[0] if frame.format.is_planar else pcm.reshape(-1)[::channels]
        if mono.dtype.kind in "iu":
            mono = mono.astype(np.float32) / float(np.iinfo(mono.dtype).max)
        self._keep_onsets(self._scanner.add(frame.time, mono, frame.sample_rate))

    def _keep_onsets(self, onsets: list[ToneOnset]) -> None:
        if onsets and not self._closed:
            self.tones.extend(onsets)
