"""Thin, stateful wrappers over PyAV encoders that return packets ready for RTP or a container.

Packet timestamps are seconds since the owner's epoch converted to each codec's RTP clock
(90 kHz video, 48 kHz audio), so one epoch keeps audio and video on one timeline.
"""

from __future__ import annotations

import fractions
from typing import cast

import av
import numpy as np

__all__ = ["AUDIO_TIME_BASE", "VIDEO_TIME_BASE", "AudioEncoder", "VideoEncoder"]

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, 48000)
AUDIO_RATE = 48000


class VideoEncoder:
    """Real-time VP8 or H.264 at a target bit rate; keyframes every ``gop`` frames or on demand."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        codec: str = "vp8",
        bitrate: int = 500_000,
        gop: int = 60,
        fps: int = 30,
    ) -> None:
        name = {"vp8": "libvpx", "h264": "libx264"}.get(codec)
        if name is None:
            raise ValueError(f"unsupported video codec {codec!r}; use vp8 or h264")
        ctx = cast(av.VideoCodecContext, av.CodecContext.create(name, "w"))
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.bit_rate = bitrate
        ctx.time_base = VIDEO_TIME_BASE
        ctx.gop_size = gop
        # Rate control budgets bits per frame from the frame rate; left unset, libx264 takes
        # 1/time_base (90000 frames a second) and spends a few bytes on each.
        ctx.framerate = fractions.Fraction(fps)
        ctx.thread_count = 1
        if codec == "vp8":
            # Real-time, no look-ahead: every frame comes out as soon as it goes in.
            ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        else:
            # Constrained baseline, as WebRTC peers take H.264 (profile-level-id 42e01f): x264
            # marks its baseline streams so (SPS 42c0xx). Setting the context's profile instead
            # leaves libx264 on High, the profile the preset picks.
            ctx.options = {"preset": "veryfast", "tune": "zerolatency", "bf": "0", "profile": "baseline"}
        self.codec = codec
        self._ctx = ctx

    def encode(self, image: np.ndarray, pts: int, keyframe: bool = False) -> list[av.Packet]:
        """Encode one yuv420p frame (planar array, shape (h*3/2, w)) with ``pts`` at 90 kHz."""
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        return self.encode_frame(frame, pts, keyframe)

    def encode_frame(self, frame: av.VideoFrame, pts: int, keyframe: bool = False) -> list[av.Packet]:
        if frame.format.name != "yuv420p" or (frame.width, frame.height) != (
            self._ctx.width,
            self._ctx.height,
        ):
            frame = frame.reformat(width=self._ctx.width, height=self._ctx.height, format="yuv420p")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = list(self._ctx.encode(frame))
        for packet in packets:
            packet.time_base = VIDEO_TIME_BASE
        return packets


class AudioEncoder:
    """Opus (default) or AAC-LC at 48 kHz stereo, fed in blocks of any size (normally 960).

    Opus, as WebRTC sends it, in 20 ms frames (960 samples). Opus looks 312 samples ahead;
    PyAV stamps each packet 312 samples early and a decoder that does not skip the pre-roll
    (aiortc's does not) delivers the samples exactly that late, so packet timestamps and
    decoded samples stay aligned.

    AAC (``codec="aac"``, FFmpeg's native encoder), as RTMP/FLV and HLS carry it, in frames of
    1024 samples; PyAV re-chunks the blocks it is fed. The encoder primes with 1024 samples
    and stamps its first packet at -1024: a decoder that outputs the priming (FFmpeg's
    ``aac`` does, unless the container asks it to skip) delivers every sample at its input
    time, and one that skips it advances the timestamps by as much, so either way timestamps
    and decoded samples stay aligned. The AudioSpecificConfig a container needs is in
    :attr:`extradata` (global header).
    """

    SAMPLES = 960

    def __init__(self, *, bitrate: int = 64_000, codec: str = "opus") -> None:
        name = {"opus": "libopus", "aac": "aac"}.get(codec)
        if name is None:
            raise ValueError(f"unsupported audio codec {codec!r}; use opus or aac")
        ctx = cast(av.AudioCodecContext, av.CodecContext.create(name, "w"))
        ctx.sample_rate = AUDIO_RATE
        ctx.layout = "stereo"
        # The AAC encoder takes planar float only; PyAV converts the s16 blocks fed to it.
        ctx.format = "s16" if codec == "opus" else "fltp"
        ctx.bit_rate = bitrate
        ctx.time_base = AUDIO_TIME_BASE
        if codec == "aac":
            ctx.flags |= av.codec.context.Flags.global_header
            ctx.open()
        self.codec = codec
        self._ctx = ctx

    @property
    def extradata(self) -> bytes | None:
        """The codec configuration a container's stream header carries (AAC's
        AudioSpecificConfig), or None before the encoder has made one."""
        data = self._ctx.extradata
        return bytes(data) if data else None

    def encode(self, samples: np.ndarray, pts: int) -> list[av.Packet]:
        """Encode mono float samples in [-1, 1] (any count, normally 960) starting at ``pts``."""
        pcm = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        s16 = (pcm * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(s16, 2).reshape(1, -1), format="s16", layout="stereo")
        return self.encode_frame(frame, pts)

    def encode_frame(self, frame: av.AudioFrame, pts: int) -> list[av.Packet]:
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        packets = list(self._ctx.encode(frame))
        for packet in packets:
            packet.time_base = AUDIO_TIME_BASE
        return packets
