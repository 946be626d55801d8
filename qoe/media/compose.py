"""The co-host mix: host and co-host side by side, audio summed, encoded once per codec.

Layout (a contract with the viewers that read it): on a 640x360 canvas the host's picture,
scaled to half size, sits in the left half and the co-host's in the right half, both
vertically centred; :func:`mix_regions` gives those rectangles for any canvas size. Each
half keeps its participant's own test signal: code, flash marker (host slot 0, co-host
slot 1) and, in the audio, its own tone frequency.

Timing: both participants are placed on their send clocks (capture time plus the
sender's fixed pipeline latency, as their RTCP reports say), buffered, and read ``mix_delay``
seconds behind real time, the co-host another ``cohost_offset`` behind (the ground-truth
knob). So each participant's A/V relation survives the mix, and the co-host appears
exactly ``cohost_offset`` after the host.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from qoe import clock
from qoe.media.encode import AUDIO_RATE, AudioEncoder
from qoe.media.fanout import Fanout
from qoe.media.pacing import Pacer
from qoe.media.renditions import Renditions

__all__ = ["MIX_HEIGHT", "MIX_WIDTH", "Compositor", "RawTap", "mix_regions"]

MIX_WIDTH, MIX_HEIGHT = 640, 360
MIX_FPS = 60
"""The mix runs at twice the participants' 30 fps: a participant's frame then lands on an
output frame exactly when its send time plus the mix delay is on the 1/60 s grid, which
the defaults keep, so neither the co-host offset nor either A/V offset is quantised."""
MIX_DELAY = 0.21
"""Seconds the mix runs behind the participants' send clocks: a WHIP co-host's frames reach
the room about a jitter buffer (33 ms video, 80 ms audio) and a decode after they were sent.
With the senders' 40 ms pipeline latency, 0.25 s: 15 frames of the mix."""
SEND_TIME_SLACK = 0.5 / MIX_FPS
"""Frames are taken up to half a mix frame early, so each lands on the mix frame nearest its
send time. A relayed co-host's send times come from its RTCP sender reports, which place
them a few milliseconds off the grid (1-3 ms were seen on loopback): with less slack, a
frame 3 ms late would show one mix frame (17 ms) later and bias the co-host offset."""
VIDEO_KEEP = 2.0
STALE = 0.5
"""A participant whose latest frame is older than this (seconds) is shown as a dark half."""
AUDIO_RING_SECONDS = 4


def mix_regions(width: int, height: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(host, co-host) rectangles (x, y, w, h) of the mix on a ``width`` x ``height`` frame."""
    half_w = width // 2
    region_h = height // 2
    top = (height - region_h) // 2
    return (0, top, half_w, region_h), (half_w, top, width - half_w, region_h)


def _half(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """A planar yuv420p frame (h*3/2, w) scaled to half size by 2x2 averaging."""
    y = image[:height].reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    chroma = image[height:].reshape(2, height // 2, width // 2)
    uv = chroma.reshape(2, height // 4, 2, width // 4, 2).mean(axis=(2, 4))
    return np.concatenate([y.astype(np.uint8), uv.reshape(-1, width // 2).astype(np.uint8)])


class RawTap:
    """A participant's raw media on its send clock, buffered for the mix."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._frames: deque[tuple[npt.NDArray[np.uint8], int, int]] = deque()
        # 2.3 MB of audio ring, made when the first audio comes: a room whose publisher never
        # sends (or never connects) does not pay for it.
        self._ring = np.zeros(0, dtype=np.float32)
        self._written = np.full(0, -1, dtype=np.int64)
        self.last_media = -math.inf
        """Wall time of the latest media handed in (for 'has the participant left')."""
        self._video_read = -math.inf
        self._audio_read = -math.inf
        self.late_frames = 0
        """Frames that arrived after the mix had passed their send time: the mix showed an
        older picture in their place. A busy room does this; its viewers then measure the
        mix as it was, not as the knobs say."""
        self.late_samples = 0
        """Audio samples that arrived after the mix had read their send time (heard as silence)."""

    def video(self, send_time: float, image: npt.NDArray[np.uint8], width: int, height: int) -> None:
        """A yuv420p planar frame (height*3/2, width) sent at ``send_time`` (Unix seconds)."""
        if self._times and send_time <= self._times[-1]:
            return
        if send_time <= self._video_read + SEND_TIME_SLACK:  # the mix read its slot already
            self.late_frames += 1
        self._times.append(send_time)
        self._frames.append((image, width, height))
        while self._times and self._times[0] < send_time - VIDEO_KEEP:
            self._times.popleft()
            self._frames.popleft()
        self.last_media = clock.wall()

    def audio(self, send_time: float, samples: npt.NDArray[np.float32]) -> None:
        """Mono samples at 48 kHz whose first one was sent at ``send_time``."""
        start = round(send_time * AUDIO_RATE)
        self.late_samples += int(np.clip(self._audio_read - start, 0, len(samples)))
        if not len(self._ring):
            self._ring = np.zeros(AUDIO_RING_SECONDS * AUDIO_RATE, dtype=np.float32)
            self._written = np.full(AUDIO_RING_SECONDS * AUDIO_RATE, -1, dtype=np.int64)
        index = (start + np.arange(len(samples))) % len(self._ring)
        self._ring[index] = samples
        self._written[index] = start + np.arange(len(samples))
        self.last_media = clock.wall()

    def frame_at(self, send_time: float) -> tuple[npt.NDArray[np.uint8], int, int] | None:
        """The latest frame sent at or before ``send_time``."""
        self._video_read = max(self._video_read, send_time)
        i = bisect.bisect_right(self._times, send_time + SEND_TIME_SLACK) - 1
        if i < 0 or send_time - self._times[i] > STALE:
            return None  # nothing yet, or the participant has left: that half goes dark
        return self._frames[i]

    def samples_at(self, send_time: float, count: int, *, mark_read: bool = True) -> npt.NDArray[np.float32]:
        """``count`` samples from ``send_time`` on; silence where nothing was received.

        ``mark_read=False`` reads without moving the mix's read position (a co-host's echo
        reads the host's audio on its own schedule), so late samples are not miscounted.
        """
        start = round(send_time * AUDIO_RATE)
        if mark_read:
            self._audio_read = max(self._audio_read, start + count)
        if not len(self._ring):
            return np.zeros(count, dtype=np.float32)
        wanted = start + np.arange(count)
        index = wanted % len(self._ring)
        return np.where(self._written[index] == wanted, self._ring[index], 0.0).astype(np.float32)


class Compositor:
    """Produces the mix into ``fanout`` from the host's and the co-host's taps."""

    def __init__(
        self,
        fanout: Fanout,
        host: RawTap,
        cohost: RawTap,
        *,
        cohost_offset: float = 0.0,
        mix_delay: float = MIX_DELAY,
        fps: int = MIX_FPS,
        latency: float = 0.040,
    ) -> None:
        self.fanout = fanout
        self.host, self.cohost = host, cohost
        self.cohost_offset = cohost_offset
        self.mix_delay = mix_delay
        self.fps = fps
        self.epoch = math.floor(clock.wall())
        self._pacer = Pacer(fanout, self.epoch, latency)
        self._video = Renditions(fanout, gop=2 * fps, bitrate=800_000, fps=fps)
        self._audio = AudioEncoder()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qoe-mix")
        self._tasks: list[asyncio.Task[None]] = []
        self.frames_sent = 0
        blank = np.full((MIX_HEIGHT * 3 // 2, MIX_WIDTH), 128, dtype=np.uint8)
        blank[:MIX_HEIGHT] = 16
        self._canvas = blank

    @property
    def late_output(self) -> tuple[int, float]:
        """Mix packets ready after their release time, and the latest one's lateness (s)."""
        return self._pacer.late, self._pacer.late_max

    def request_keyframe(self, codec: str | None = None) -> None:
        self._video.request_keyframe(codec)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run_video()), asyncio.create_task(self._run_audio())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pacer.cancel()
        self._executor.shutdown(wait=True)
        self._video.close()

    def compose(self, at: float) -> npt.NDArray[np.uint8]:
        """The mixed picture for output time ``at`` (wall clock)."""
        canvas = self._canvas.copy()
        y_plane = canvas[:MIX_HEIGHT]
        uv = canvas[MIX_HEIGHT:].reshape(2, MIX_HEIGHT // 2, MIX_WIDTH // 2)
        sources = (
            self.host.frame_at(at - self.mix_delay),
            self.cohost.frame_at(at - self.mix_delay - self.cohost_offset),
        )
        for (x, y, w, h), found in zip(mix_regions(MIX_WIDTH, MIX_HEIGHT), sources, strict=True):
            if found is None:
                continue
            image, width, height = found
            if (width // 2, height // 2) != (w, h):
                continue  # not the size the layout expects: leave the half dark
            half = _half(image, width, height)
            y_plane[y : y + h, x : x + w] = half[:h]
            chroma = half[h:].reshape(2, h // 2, w // 2)
            uv[:, y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = chroma
        return canvas

    async def _run_video(self) -> None:
        k = math.ceil(clock.wall() * self.fps) + 1
        while True:
            at = k / self.fps
            k += 1
            delay = at - clock.wall()
            if delay > 0:
                await asyncio.sleep(delay)
            image = self.compose(at)
            pts = round((at - self.epoch) * 90000)
            for codec, _, packets in await self._video.encode(self._executor, image, pts, at):
                self._pacer.release("video", packets, codec)
            self.frames_sent += 1

    async def _run_audio(self) -> None:
        block = 960
        j = math.ceil(clock.wall() * AUDIO_RATE / block) + 1
        first = round(self.epoch * AUDIO_RATE)
        while True:
            start = j * block
            j += 1
            at = start / AUDIO_RATE
            delay = at + block / AUDIO_RATE - clock.wall()
            if delay > 0:
                await asyncio.sleep(delay)
            mixed = self.host.samples_at(at - self.mix_delay, block) + self.cohost.samples_at(
                at - self.mix_delay - self.cohost_offset, block
            )
            self._pacer.release("audio", self._audio.encode(np.clip(mixed, -1.0, 1.0), start - first))
