"""A WHIP publisher's media, re-encoded once per codec viewers take and fanned out to them.

The room decodes the publisher's tracks (aiortc does), places every frame on the publisher's
own clock through its RTCP sender reports, and re-encodes it with timestamps from that clock,
as a transcoding media server keeps lip sync. Frames that arrive before the first sender
report of their stream cannot be placed and are not forwarded (about the first second).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from probes.webrtc.peer import RtpObserver, next_audio_frame, next_video_frame, stream_seconds
from qoe import clock
from qoe.media import AudioEncoder, Fanout
from qoe.media.compose import RawTap
from qoe.media.pacing import Pacer
from qoe.media.renditions import Renditions
from qoe.metrics import to_sender_time
from sim.room.impair import CohostImpairment

__all__ = ["RELAY_LATENCY", "RelaySource"]

RELAY_LATENCY = 0.150
"""Publisher send time to room send time, seconds. It must cover aiortc's receive path: the
video jitter buffer holds a frame until the next one starts (33 ms at 30 fps) and the audio
one prefetches four packets (80 ms); a packet released late would skew the room's own sender
reports and with them the A/V offset viewers measure."""


class RelaySource:
    """Feeds a :class:`Fanout` from a publisher's remote tracks until stopped."""

    def __init__(self, fanout: Fanout, *, latency: float = RELAY_LATENCY, delay: float = 0.0) -> None:
        self.fanout = fanout
        self.epoch = math.floor(clock.wall())
        # A frame's pts is its time on the publisher's clock (its sender reports) less the
        # epoch; the pacer hands that clock to the fanout for the room's own reports.
        self._pacer = Pacer(fanout, self.epoch, latency, delay)
        self._video = Renditions(fanout)
        """Sized by the publisher's first frame."""
        self._audio = AudioEncoder()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qoe-relay")
        self._tasks: list[asyncio.Task[None]] = []
        self.frames_sent = 0
        self.audio_frames_sent = 0
        self.tap: RawTap | None = None
        """Receives every decoded frame and audio block on the publisher's send clock."""
        self.unplaced = 0
        """Frames dropped because no sender report had arrived for their stream yet."""
        self.impairment: CohostImpairment | None = None
        """Changes the audio before it is re-encoded and tapped (the room's co-host knobs)."""

    @property
    def video_codecs(self) -> tuple[str, ...]:
        """The codecs the latest frame was re-encoded in (VP8, then any other a viewer takes)."""
        return self._video.codecs

    def request_keyframe(self, codec: str | None = None) -> None:
        self._video.request_keyframe(codec)

    def attach(self, track: MediaStreamTrack, observer: RtpObserver) -> None:
        run = self._run_video if track.kind == "video" else self._run_audio
        self._tasks.append(asyncio.create_task(run(track, observer), name=f"relay-{track.kind}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._pacer.cancel()
        self._executor.shutdown(wait=True)
        self._video.close()

    def _place(self, observer: RtpObserver, stream_time: float) -> float | None:
        sender_time = to_sender_time(observer.clock_points(stream_time), stream_time)
        if sender_time is None:
            self.unplaced += 1
        return sender_time

    async def _run_video(self, track: MediaStreamTrack, observer: RtpObserver) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await next_video_frame(track)
                sender_time = self._place(observer, stream_seconds(frame))
                if sender_time is None:
                    continue
                if self.tap is not None:
                    image = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
                    planes = np.asarray(image.to_ndarray(), dtype=np.uint8)
                    self.tap.video(sender_time, planes, frame.width, frame.height)
                pts = round((sender_time - self.epoch) * 90000)
                for codec, _, packets in await self._video.encode(self._executor, frame, pts, sender_time):
                    self._pacer.release("video", packets, codec)
                self.frames_sent += 1

    async def _run_audio(self, track: MediaStreamTrack, observer: RtpObserver) -> None:
        expected: int | None = None  # the pts the next block has if none is missing
        with contextlib.suppress(MediaStreamError):
            while True:
                audio = await next_audio_frame(track)
                sender_time = self._place(observer, stream_seconds(audio))
                if sender_time is None:
                    continue
                pcm = None
                if self.tap is not None or self.impairment is not None:
                    s16 = audio.to_ndarray().reshape(-1)[:: len(audio.layout.channels)]
                    pcm = (s16 / 32768.0).astype("float32")
                    if self.impairment is not None:
                        pcm = self.impairment.apply(sender_time, pcm)
                    if self.tap is not None:
                        self.tap.audio(sender_time, pcm)
                pts = round((sender_time - self.epoch) * 48000)
                if expected is not None and pts - expected >= AudioEncoder.SAMPLES // 2:
                    self._skip_audio(expected, pts)
                expected = pts + audio.samples
                if self.impairment is not None and pcm is not None:
                    packets = self._audio.encode(pcm, pts)
                else:
                    packets = self._audio.encode_frame(audio, pts)
                self._pacer.release("audio", packets)
                self.audio_frames_sent += 1

    def _skip_audio(self, start: int, end: int) -> None:
        """Keep the publisher's audio gap from ``start`` to ``end`` (pts) a gap of the same
        length: the encoder is fed silence for it, in whole blocks, and those packets are
        dropped. Fed across the gap instead, libopus would stamp the packet that straddles it
        with the time before the gap and shift the gap by a block."""
        block = AudioEncoder.SAMPLES
        for k in range(round((end - start) / block)):
            self._audio.encode(np.zeros(block, dtype=np.float32), start + k * block)
