"""A live test-signal source: rendered on the wall-clock grid, encoded once, released on time.

Timing is what the measurements rest on, so it is explicit:

- Video frame k is *captured* at wall time ``k / fps`` (a grid aligned to whole seconds, so a
  frame falls on every second and carries the flash); audio block j starts at sample
  ``j * 960`` of the 48 kHz grid. The capture time is what the frame's code says, whatever
  the event loop's wake-up jitter.
- Every packet, audio or video, leaves at capture time + ``latency`` (+ the ``delay`` knob).
  Holding both media to the same latency makes the sender's RTCP reports, which aiortc stamps
  with the send time of the last packet, map RTP time to capture time + a constant for both
  streams: a receiver that lip-syncs on them sees exactly the offset the source put in.
- Audio and video timestamps count from one epoch, so containers (FLV) carry the same
  relation.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from qoe import clock
from qoe.errors import ConfigError
from qoe.media.compose import RawTap
from qoe.media.encode import AUDIO_RATE, AudioEncoder
from qoe.media.fanout import Fanout
from qoe.media.ladder import make_ladder
from qoe.media.pacing import Pacer
from qoe.media.renditions import Renditions
from qoe.signal import HOST_TONE_HZ, SignalAudio, SignalVideo

__all__ = ["ECHO_DELAY_LIMIT", "PIPELINE_LATENCY", "QUALITY_DROP_BITRATE", "Knobs", "SignalSource"]

PIPELINE_LATENCY = 0.040
"""Capture-to-send latency of the source, seconds: covers the encode (about 2 ms for VP8 at
640x360 here, up to 10 ms on a busy core) with room to spare, as a hardware encoder's fixed
latency would."""
AUDIO_BLOCK = 960
QUALITY_DROP_BITRATE = 60_000
"""Video bit rate (bit/s) asked of the encoder in the ``quality_drop`` knob's windows: below
what it can reach, so it codes at its coarsest quantizer. On the test signal at 640x360 that
is about 200 kbit/s and a luma PSNR near 31 dB, against 38 dB at the default 500 kbit/s."""
KEYFRAME_MIN_INTERVAL = 0.25
"""Forced keyframes are at most this often, however many viewers join or ask."""
ECHO_DELAY_LIMIT = 1.0
"""Longest echo delay the knobs inject, seconds: a probe looks for an echo up to
:data:`qoe.metrics.ECHO_MAX_DELAY_SECONDS` after the host's tone."""
AV_OFFSET_LIMIT = 5.0
"""Largest ``--av-offset`` either way, seconds: probes measure +-3 s and must report anything
up to here as out of range (pairing by a second's identity mod 16 tells them apart up to 8 s)."""


@dataclass(frozen=True)
class Knobs:
    """Ground-truth impairments the room and its host inject, for tests and demos."""

    av_offset: float = 0.0
    """Seconds the audio runs ahead of the video (ITU-R BT.1359 sign: positive = audio early)."""
    freeze_every: float | None = None
    """Stop sending video for ``freeze_for`` seconds at every multiple of this many Unix seconds."""
    freeze_for: float = 0.0
    delay: float = 0.0
    """Extra one-way delay before media leaves the source, seconds."""
    join_delay: float = 0.0
    """Seconds the room holds each WHEP answer, as a slow signaling server would."""
    chat_delay: float = 0.0
    """Seconds the room's chat holds each message before broadcasting it."""
    chat_drop_every: int = 0
    """The room's chat drops every Nth message it receives (0: none)."""
    cohost_offset: float = 0.0
    """Seconds the room delays a co-host's media behind the host's."""
    quality_drop_every: float | None = None
    """Encode video at its coarsest (:data:`QUALITY_DROP_BITRATE`) for ``quality_drop_for``
    seconds at every multiple of this many Unix seconds (a starved uplink's picture, on a known
    schedule)."""
    quality_drop_for: float = 0.0
    mute_every: float | None = None
    """Send no audio for ``mute_for`` seconds at every multiple of this many Unix seconds: the
    audio blocks captured then are never encoded, so a receiver sees a gap of that length in
    the audio's RTP timestamps (a sender whose capture stalled, or a path that lost them)."""
    mute_for: float = 0.0
    echo_gain: float = 0.0
    """A co-host publisher leaks this share (amplitude) of the host's test signal, as it would
    hear it from an open loudspeaker, back into its microphone (0: none)."""
    echo_delay: float = 0.0
    """Seconds from the host's signal (on the shared wall clock) to its echo in the audio."""
    cohost_echo_gain: float = 0.0
    """The room leaks this share of its host's audio into a co-host's audio (0: none)."""
    cohost_echo_delay: float = 0.0
    """Seconds from the host's audio (its send clock) to its echo in the co-host's."""
    cohost_noise_db: float | None = None
    """The room adds white noise to a co-host's audio, this many dB below the marker tone's
    power (a sine of amplitude 0.5: 0.125, -3 dBFS); None: no noise."""

    def __post_init__(self) -> None:
        if not -AV_OFFSET_LIMIT <= self.av_offset <= AV_OFFSET_LIMIT:
            limit = f"{AV_OFFSET_LIMIT:g}"
            raise ConfigError(
                f"--av-offset must be between -{limit} and {limit} seconds, got {self.av_offset}"
            )
        if self.delay < 0 or self.delay > 30:
            raise ConfigError(f"--delay must be between 0 and 30 seconds, got {self.delay}")
        if not 0 <= self.cohost_offset <= 5:
            raise ConfigError(f"--cohost-offset must be between 0 and 5 seconds, got {self.cohost_offset}")
        if not 0 <= self.chat_delay <= 30:
            raise ConfigError(f"--chat-delay must be between 0 and 30 seconds, got {self.chat_delay}")
        if self.chat_drop_every < 0:
            raise ConfigError(f"--chat-drop-every must be 0 or more, got {self.chat_drop_every}")
        if not 0 <= self.join_delay <= 30:
            raise ConfigError(f"--join-delay must be between 0 and 30 seconds, got {self.join_delay}")
        _check_schedule("freeze", self.freeze_every, self.freeze_for)
        _check_schedule("quality-drop", self.quality_drop_every, self.quality_drop_for)
        _check_schedule("mute", self.mute_every, self.mute_for)
        for gain_flag, gain, delay_flag, delay in (
            ("--echo-gain", self.echo_gain, "--echo-delay", self.echo_delay),
            ("--cohost-echo", self.cohost_echo_gain, "--cohost-echo-delay", self.cohost_echo_delay),
        ):
            if not 0 <= gain <= 1:
                raise ConfigError(f"{gain_flag} must be between 0 and 1, got {gain}")
            if not 0 <= delay <= ECHO_DELAY_LIMIT:
                raise ConfigError(
                    f"{delay_flag} must be between 0 and {ECHO_DELAY_LIMIT:g} seconds, got {delay}"
                )
        if self.cohost_noise_db is not None and not 0 <= self.cohost_noise_db <= 60:
            raise ConfigError(f"--cohost-noise-db must be between 0 and 60 dB, got {self.cohost_noise_db}")

    def frozen(self, capture: float) -> bool:
        every = self.freeze_every
        return every is not None and capture % every < self.freeze_for

    def quality_dropped(self, capture: float) -> bool:
        every = self.quality_drop_every
        return every is not None and capture % every < self.quality_drop_for

    def muted(self, sample: int, rate: int) -> bool:
        """Whether the audio sample of index ``sample`` (Unix time x ``rate``) is muted; on
        whole samples, as Unix seconds near 2e9 in a float cannot place a 20 ms block's
        start on the right side of a window's edge."""
        every = self.mute_every
        return every is not None and sample % round(every * rate) < round(self.mute_for * rate)


def _check_schedule(name: str, every: float | None, length: float) -> None:
    """``--NAME-every`` and ``--NAME-for``: windows of ``length`` s at each multiple of ``every``."""
    if every is not None:
        if every <= 0:
            raise ConfigError(f"--{name}-every must be positive, got {every}")
        if not 0 < length < every:
            raise ConfigError(
                f"--{name}-for must be positive and shorter than --{name}-every ({every}), got {length}"
            )
    elif length:
        raise ConfigError(f"--{name}-for needs --{name}-every")


class SignalSource:
    """Renders, encodes and releases the test signal into a :class:`Fanout` until stopped."""

    def __init__(
        self,
        fanout: Fanout,
        *,
        width: int = 640,
        height: int = 360,
        fps: int = 30,
        slot: int = 0,
        tone_hz: float = 1000.0,
        knobs: Knobs | None = None,
        latency: float = PIPELINE_LATENCY,
        codec: str = "vp8",
        video_bitrate: int = 500_000,
        audio_codec: str = "opus",
        audio_bitrate: int = 64_000,
        renditions: int = 1,
    ) -> None:
        self.knobs = knobs or Knobs()
        self.fanout = fanout
        self.fps = fps
        self.latency = latency
        self.tag = 0
        """Shown in every frame's code from now on (the host "answers" a chat nonce)."""
        try:
            self.ladder = make_ladder(width, height, video_bitrate, renditions)
        except ValueError as exc:
            raise ConfigError(f"--renditions: {exc}") from None
        self._videos = [SignalVideo(rung.width, rung.height, slot=slot) for rung in self.ladder]
        """The signal at each rung's size: a lower rendition is rendered, not scaled."""
        self._video = self._videos[0]
        self._audio = SignalAudio(tone_hz=tone_hz, offset_seconds=self.knobs.av_offset)
        # What a co-host hears of the host: its test signal on the shared wall clock.
        self._heard = SignalAudio(tone_hz=HOST_TONE_HZ) if self.knobs.echo_gain else None
        # The fanout's keyframe requests go to the encoders, one per codec viewers take.
        self._video_out = Renditions(
            fanout,
            codec=codec,
            bitrate=video_bitrate,
            gop=2 * fps,
            fps=fps,
            keyframe_interval=KEYFRAME_MIN_INTERVAL,
            starved_bitrate=QUALITY_DROP_BITRATE,
            ladder=self.ladder,
        )
        self._aenc = AudioEncoder(codec=audio_codec, bitrate=audio_bitrate)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qoe-encode")
        self._tasks: list[asyncio.Task[None]] = []
        self._pacer: Pacer | None = None
        self.epoch = 0.0
        self.frames_sent = 0
        self.audio_frames_sent = 0
        self.injected_freezes: list[tuple[float, float]] = []
        self.injected_quality_drops: list[tuple[float, float]] = []
        self.tap: RawTap | None = None
        """Receives every rendered frame and audio block on the send clock (for a co-host mix)."""

    @property
    def audio_extradata(self) -> bytes | None:
        """The audio codec's configuration a container header needs (AAC), if any."""
        return self._aenc.extradata

    @property
    def video_codecs(self) -> tuple[str, ...]:
        """The codecs the latest frame was encoded in: the source's own, then any other
        a subscriber of the fanout takes."""
        return self._video_out.codecs

    def request_keyframe(self, codec: str | None = None, rung: int = 0) -> None:
        """Make the next frame in ``codec`` (None: the source's own) at rendition ``rung`` a
        keyframe, unless one went out less than ``KEYFRAME_MIN_INTERVAL`` ago."""
        self._video_out.request_keyframe(codec, rung)

    async def start(self) -> None:
        if self._tasks:
            return
        self.epoch = math.floor(clock.wall())
        self._pacer = Pacer(self.fanout, self.epoch, self.latency, self.knobs.delay)
        self.fanout.pts_captured = True  # a frame's pts is its capture time less the epoch
        self._tasks = [
            asyncio.create_task(self._run_video(), name="qoe-source-video"),
            asyncio.create_task(self._run_audio(), name="qoe-source-audio"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pacer is not None:
            self._pacer.cancel()
        self._executor.shutdown(wait=True)
        self._video_out.close()

    async def _run_video(self) -> None:
        pacer = self._pacer
        assert pacer is not None, "start() creates the pacer"
        k = math.ceil(clock.wall() * self.fps) + 1
        seq = 0
        while True:
            capture = k / self.fps
            k += 1
            await _sleep_until(capture)
            if self.knobs.frozen(capture):
                self._note_freeze(capture)
                continue
            image = self._video.render(capture, seq, self.tag)
            if self.tap is not None:
                self.tap.video(capture + self.latency, image, self._video.width, self._video.height)
            pts = round((capture - self.epoch) * 90000)
            starved = self.knobs.quality_dropped(capture)
            if starved:
                self._note_drop(capture)
            lower = {
                rung: self._videos[rung].render(capture, seq, self.tag)
                for rung in self._video_out.rungs()
                if rung > 0
            }
            encoded = await self._video_out.encode(
                self._executor, image, pts, capture, starved=starved, lower=lower
            )
            for codec, rung, packets in encoded:
                pacer.release("video", packets, codec, rung)
            self.frames_sent += 1
            seq = (seq + 1) & 0xFFFF

    async def _run_audio(self) -> None:
        pacer = self._pacer
        assert pacer is not None, "start() creates the pacer"
        first = round(self.epoch * AUDIO_RATE)
        j = math.ceil(clock.wall() * AUDIO_RATE / AUDIO_BLOCK) + 1
        while True:
            start = j * AUDIO_BLOCK
            j += 1
            # A block is "captured" once its last sample has been.
            captured = (start + AUDIO_BLOCK) / AUDIO_RATE
            await _sleep_until(captured)
            muted = self.knobs.muted(start, AUDIO_RATE)
            if muted:
                samples = np.zeros(AUDIO_BLOCK, dtype=np.float32)
            else:
                samples = self._audio.render(start, AUDIO_BLOCK)
                if self._heard is not None:
                    back = start - round(self.knobs.echo_delay * AUDIO_RATE)
                    samples = samples + self.knobs.echo_gain * self._heard.render(back, AUDIO_BLOCK)
                if self.tap is not None:
                    self.tap.audio(start / AUDIO_RATE + self.latency, samples)
            # A muted block is still encoded (silence) and its packet dropped: the encoder's
            # timestamps stay on the 20 ms grid, so the receiver's gap is exactly the mute.
            packets = self._aenc.encode(samples, start - first)
            if muted:
                continue
            pacer.release("audio", packets)
            self.audio_frames_sent += 1

    def _note_drop(self, capture: float) -> None:
        assert self.knobs.quality_drop_every is not None
        _note_window(
            self.injected_quality_drops, capture, self.knobs.quality_drop_every, self.knobs.quality_drop_for
        )

    def _note_freeze(self, capture: float) -> None:
        assert self.knobs.freeze_every is not None
        _note_window(self.injected_freezes, capture, self.knobs.freeze_every, self.knobs.freeze_for)


def _note_window(windows: list[tuple[float, float]], capture: float, every: float, length: float) -> None:
    """Record the knob's window ``capture`` falls in (once; the latest 1,000 are kept)."""
    begin = math.floor(capture / every) * every
    if not windows or windows[-1][0] != begin:
        windows.append((begin, begin + length))
        del windows[:-1000]


async def _sleep_until(wall_time: float) -> None:
    delay = wall_time - clock.wall()
    if delay > 0:
        await asyncio.sleep(delay)
