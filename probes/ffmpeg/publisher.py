"""RTMP publisher of the test signal: H.264 and AAC in FLV, as a host's streaming app sends.

The canary host of an RTMP-ingested room. :class:`RtmpPublisher` renders the test signal with
:class:`~qoe.media.SignalSource` (same wall-clock grid, knobs and pacing as the WebRTC room:
every packet leaves at capture time + a fixed latency), encodes it as H.264 (``veryfast``,
``zerolatency``, no B-frames, a keyframe every ``gop_seconds``) and AAC-LC, and muxes it into
FLV over ``rtmp://`` with FFmpeg in a writer thread of its own, so a slow uplink blocks that
thread, not the event loop. Packets a stalled uplink cannot take back up in the source's
per-subscriber queue, which drops video up to the next keyframe and asks for one (as an
encoder app does).

FLV timestamps are milliseconds from the source's epoch for both streams, so the A/V relation
the source puts in (``Knobs.av_offset``) is what a viewer reads from the container.

Join milestones (``PHASES``): ``connect`` (a TCP connect of the probe's own) and
``publishing`` (FFmpeg's RTMP handshake, connect, createStream and publish done and the FLV
header written). FFmpeg gives output no interrupt callback and no timeout, so a server that
takes the TCP connection and never answers the handshake keeps the (daemon) writer thread
blocked until it closes the connection; the probe itself still ends at its deadline, and with
``--profile`` stopping the proxy cuts the connection and frees the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import threading
from types import TracebackType
from typing import Any

import av

from probes.base import ProbeSpec, Watch
from probes.ffmpeg.failures import classify
from probes.ffmpeg.route import Route, tcp_connect
from probes.ffmpeg.target import endpoint
from probes.options import SENDER_OPTIONS, Option
from qoe import clock
from qoe.errors import ConnectError, ProbeError
from qoe.media import Fanout, Knobs, SignalSource
from qoe.media.fanout import PacketTrack
from qoe.result import ProbeResult
from qoe.signal import HOST_TONE_HZ

__all__ = ["AUDIO_BITRATE", "GOP_SECONDS", "PHASES", "RtmpPublisher", "probe"]

PHASES = ("connect", "publishing")
GOP_SECONDS = 1.0
"""Keyframe interval: short, so a viewer joins within a second and HLS can cut 1 s segments."""
AUDIO_BITRATE = 128_000
MUX_OPTIONS = {"flvflags": "no_duration_filesize", "max_interleave_delta": "1"}
"""A live FLV has no duration or size to seek back and write at the end; and packets go out
as they come (they already come in time order, paced): FFmpeg's default interleaving holds
each until the other stream has caught up, which cost 17 ms of glass-to-glass here and would
hold the audio back for as long as the ``freeze_every`` knob pauses the video."""


class _RtmpSignal(SignalSource):
    """The test signal as RTMP carries it: H.264 video and AAC audio."""

    def __init__(self, fanout: Fanout, *, fps: int, **kwargs: Any) -> None:
        super().__init__(
            fanout, codec="h264", fps=fps, audio_codec="aac", audio_bitrate=AUDIO_BITRATE, **kwargs
        )


class RtmpPublisher:
    """Publish the test signal to ``url`` until stopped; ``async with`` starts and stops it.

    ``source`` is the :class:`~qoe.media.SignalSource` (its ``injected_freezes`` are the
    ground truth of the ``freeze_every`` knob). ``publishing`` is set once the server accepted
    the stream; ``failed`` raises the :class:`~qoe.errors.ProbeError` that ended publishing.
    """

    def __init__(
        self,
        url: str,
        *,
        knobs: Knobs | None = None,
        tone_hz: float = HOST_TONE_HZ,
        slot: int = 0,
        width: int = 640,
        height: int = 360,
        fps: int = 30,
        gop_seconds: float = GOP_SECONDS,
        video_bitrate: int = 800_000,
    ) -> None:
        self.url = url
        self.fps = fps
        self.width, self.height = width, height
        self.gop_seconds = gop_seconds
        self.fanout = Fanout()
        self.source = _RtmpSignal(
            self.fanout,
            knobs=knobs or Knobs(),
            tone_hz=tone_hz,
            slot=slot,
            width=width,
            height=height,
            fps=fps,
            video_bitrate=video_bitrate,
        )
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.publishing = asyncio.Event()
        self.published_at: float | None = None
        """Monotonic time the server accepted the stream."""
        self.failed: asyncio.Future[None] = loop.create_future()
        self.frames_sent = 0
        self.audio_frames_sent = 0
        self._queue: queue.SimpleQueue[tuple[str, Any, asyncio.Future[None]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="qoe-rtmp-publish", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._tracks: tuple[PacketTrack, PacketTrack] | None = None

    async def __aenter__(self) -> RtmpPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start rendering and the writer; the connection opens with the first keyframe."""
        audio, video = self.fanout.subscribe()
        self._tracks = (audio, video)
        self._thread.start()
        await self.source.start()
        self._tasks = [
            asyncio.create_task(self._pump("video", video), name="qoe-rtmp-video"),
            asyncio.create_task(self._pump("audio", audio), name="qoe-rtmp-audio"),
            asyncio.create_task(self._keyframes(), name="qoe-rtmp-gop"),
        ]

    async def stop(self) -> None:
        """Stop the source and the writer (it closes the connection)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.source.stop()
        if self._tracks is not None:
            for track in self._tracks:
                track.stop()
        if self._thread.is_alive():
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, 2.0)
        if self.failed.done() and not self.failed.cancelled():
            self.failed.exception()  # raised to the caller already, or moot now
        elif not self.failed.done():
            self.failed.cancel()

    async def _pump(self, kind: str, track: PacketTrack) -> None:
        """Hand packets to the writer one at a time: while it is blocked, the track's queue
        takes the backlog (and drops video to the next keyframe when full)."""
        while True:
            packet = await track.recv()
            written: asyncio.Future[None] = self._loop.create_future()
            self._queue.put((kind, packet, written))
            await written

    async def _keyframes(self) -> None:
        """Ask for a keyframe every ``gop_seconds`` on the wall-clock grid."""
        while True:
            now = clock.wall()
            await asyncio.sleep((math.floor(now / self.gop_seconds) + 1) * self.gop_seconds - now)
            self.source.request_keyframe()

    # -- in the writer thread ----------------------------------------------------------------

    def _write(self) -> None:
        container: Any = None
        try:
            container = av.open(self.url, "w", format="flv", options=MUX_OPTIONS)
            video = container.add_mux_stream("h264", rate=self.fps, width=self.width, height=self.height)
            audio = container.add_stream("aac", rate=48000)
            audio.codec_context.extradata = self.source.audio_extradata
            streams = {"video": video, "audio": audio}
            while (item := self._queue.get()) is not None:
                kind, packet, written = item
                packet.stream = streams[kind]
                try:
                    container.mux(packet)
                except Exception as exc:
                    raise classify(exc, "write" if self.published_at else "open", timeout=0) from exc
                if self.published_at is None and kind == "video":
                    # PyAV holds packets until a video packet gives the H.264 extradata; that
                    # first (key)frame opens the connection and writes the FLV header.
                    self.published_at = clock.monotonic()
                    self._call(self.publishing.set)
                if kind == "video":
                    self.frames_sent += 1
                else:
                    self.audio_frames_sent += 1
                self._call(_resolve, written)
        except ProbeError as exc:
            self._call(_fail, self.failed, exc)
        except Exception as exc:
            self._call(_fail, self.failed, classify(exc, "open", timeout=0))
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()
            self._drain()

    def _drain(self) -> None:
        """Release pumps still waiting on the writer once it is gone."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._call(_resolve, item[2])

    def _call(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(fn, *args)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


OPTIONS = (
    *SENDER_OPTIONS,
    Option("fps", int, 30, "frame rate", "frames/s", positive=True),
    Option("gop_seconds", float, GOP_SECONDS, "keyframe interval", "s", positive=True),
    Option("video_bitrate", int, 800_000, "H.264 target bitrate", "bit/s", positive=True),
)
"""What ``options`` an RTMP publisher takes (see :mod:`probes.options`)."""


async def probe(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
    """Publish the test signal to ``spec.url`` over RTMP until the run stops watching.

    Options: ``knobs`` (a :class:`~qoe.media.Knobs`), ``tone_hz``, ``slot`` (flash marker
    position: 0 host, 1 co-host), ``width``, ``height``, ``fps``, ``gop_seconds``,
    ``video_bitrate``. Records the join (``connect``, ``publishing``) and the frames sent.
    """
    timeline = watch.open_log(PHASES, "publisher")
    options = spec.options
    route = Route(spec)
    publisher: RtmpPublisher | None = None

    def report(stopped: float) -> None:
        timeline.finish(stopped)
        if publisher is not None:
            timeline.published = (publisher.frames_sent, publisher.audio_frames_sent)
        timeline.network = route.stats

    async def close() -> None:
        if publisher is not None:
            await publisher.stop()
        await route.close()

    watch.on_close(report)
    watch.defer(close)
    await route.__aenter__()
    host, port = endpoint(route.url)
    budget = min(spec.join_timeout, spec.duration)
    await tcp_connect(host, port, budget)
    timeline.mark("connect")
    publisher = RtmpPublisher(
        route.url,
        knobs=options["knobs"] or Knobs(),
        tone_hz=options["tone_hz"],
        slot=options["slot"],
        width=options["width"],
        height=options["height"],
        fps=options["fps"],
        gop_seconds=options["gop_seconds"],
        video_bitrate=options["video_bitrate"],
    )
    await publisher.start()
    deadline = watch.until
    join_left = min(timeline.start + budget, deadline) - clock.monotonic()
    waiter: asyncio.Future[Any] = asyncio.ensure_future(publisher.publishing.wait())
    try:
        await asyncio.wait(
            {waiter, publisher.failed}, timeout=max(0.0, join_left), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waiter.cancel()
    if publisher.failed.done():
        publisher.failed.result()
    if publisher.published_at is None:
        raise ConnectError(f"the server did not accept the stream within {budget:g} s")
    timeline.mark("publishing", publisher.published_at)
    await asyncio.wait({publisher.failed}, timeout=max(0.0, deadline - clock.monotonic()))
    if publisher.failed.done():
        publisher.failed.result()
