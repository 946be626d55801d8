"""One source's video in each codec its viewers take: one encoder per codec, not per viewer.

A source always encodes in its own codec. An encoder for another codec starts when the first
viewer subscribes in it and is dropped once none is left, so a room whose viewers all take
VP8 spends nothing on H.264. Every codec encodes the same picture with the same timestamp,
and the source's pacer releases all of them at the same instant: the freezes, delay and A/V
relation a viewer measures do not depend on the codec it took.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import Executor

import av
import numpy as np

from qoe.media.encode import VideoEncoder
from qoe.media.fanout import Fanout

__all__ = ["Renditions"]


class Renditions:
    """The video encoders behind one :class:`Fanout`; also its keyframe handler.

    ``keyframe_interval`` (seconds) spaces forced keyframes of each codec, however many
    viewers join or ask.
    """

    def __init__(
        self,
        fanout: Fanout,
        *,
        codec: str = "vp8",
        bitrate: int = 500_000,
        gop: int = 60,
        fps: int = 30,
        keyframe_interval: float = 0.0,
    ) -> None:
        self.fanout = fanout
        self.codec = codec
        self.keyframe_interval = keyframe_interval
        self._options = {"bitrate": bitrate, "gop": gop, "fps": fps}
        self._encoders: dict[str, VideoEncoder] = {}
        """Touched only in the source's encoder thread."""
        self._size: tuple[int, int] | None = None
        self._keyframes_wanted = {codec}
        self._last_keyframe: dict[str, float] = {}
        self.codecs: tuple[str, ...] = (codec,)
        """The codecs the latest picture was encoded in, the source's own first."""
        fanout.set_keyframe_handler(self.request_keyframe, codec=codec)

    def request_keyframe(self, codec: str | None = None) -> None:
        self._keyframes_wanted.add(codec or self.codec)

    def close(self) -> None:
        self.fanout.set_keyframe_handler(None)

    async def encode(
        self, executor: Executor, picture: np.ndarray | av.VideoFrame, pts: int, at: float
    ) -> list[tuple[str, list[av.Packet]]]:
        """Encode ``picture`` (a yuv420p frame or planar array, shape (h*3/2, w)) captured at
        ``at`` (seconds) in every codec wanted, on ``executor``: (codec, packets) pairs."""
        codecs = (self.codec, *sorted(self.fanout.codecs - {self.codec}))
        keyframes = set()
        for codec in codecs:
            if codec in self._keyframes_wanted and at - self._last_keyframe.get(codec, -math.inf) >= (
                self.keyframe_interval
            ):
                keyframes.add(codec)
                self._keyframes_wanted.discard(codec)
                self._last_keyframe[codec] = at
        self.codecs = codecs
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._encode, picture, pts, codecs, keyframes)

    def _encode(
        self, picture: np.ndarray | av.VideoFrame, pts: int, codecs: tuple[str, ...], keyframes: set[str]
    ) -> list[tuple[str, list[av.Packet]]]:
        if isinstance(picture, np.ndarray):
            picture = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        if self._size is None:
            self._size = (picture.width, picture.height)
        for codec in [c for c in self._encoders if c not in codecs]:
            del self._encoders[codec]
        encoded = []
        for codec in codecs:
            encoder = self._encoders.get(codec)
            if encoder is None:
                encoder = self._encoders[codec] = VideoEncoder(*self._size, codec=codec, **self._options)
            encoded.append((codec, encoder.encode_frame(picture, pts, codec in keyframes)))
        return encoded
