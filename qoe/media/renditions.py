"""One source's video in each codec and rendition its viewers take: one encoder per
(codec, rung), not per viewer.

A source always encodes its best rendition (rung 0) in its own codec. An encoder for another
codec or a lower rung (:mod:`qoe.media.ladder`) starts when the first viewer takes it and is
dropped once none is left, so a room whose viewers all take VP8 at the top spends nothing on
H.264 or on small pictures. Every encoder encodes the same instant with the same timestamp
(a lower rung from the same frame rendered at its size), and the source's pacer releases all
of them together: the freezes, delay and A/V relation a viewer measures do not depend on
the codec or rung it took.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import Executor

import av
import numpy as np

from qoe.media.encode import VideoEncoder
from qoe.media.fanout import Fanout
from qoe.media.ladder import Rung

__all__ = ["Renditions"]


class Renditions:
    """The video encoders behind one :class:`Fanout`; also its keyframe handler.

    ``ladder`` gives each rung's size and bitrate (None: one rung, sized by the first picture,
    at ``bitrate``). ``keyframe_interval`` (seconds) spaces forced keyframes of each encoder,
    however many viewers join or ask.
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
        starved_bitrate: int = 60_000,
        ladder: tuple[Rung, ...] | None = None,
    ) -> None:
        self.fanout = fanout
        self.codec = codec
        self.keyframe_interval = keyframe_interval
        self.ladder = ladder
        self._bitrate = bitrate
        self._options = {"gop": gop, "fps": fps}
        self.starved_bitrate = starved_bitrate
        self._encoders: dict[tuple[str, int, bool], VideoEncoder] = {}
        """By codec, rung and starved or not; touched only in the source's encoder thread."""
        self._starved: dict[tuple[str, int], bool] = {}
        self._size: tuple[int, int] | None = None
        self._keyframes_wanted: set[tuple[str, int]] = {(codec, 0)}
        self._last_keyframe: dict[tuple[str, int], float] = {}
        self.codecs: tuple[str, ...] = (codec,)
        """The codecs the latest picture was encoded in, the source's own first."""
        fanout.set_keyframe_handler(self.request_keyframe, codec=codec)

    def request_keyframe(self, codec: str | None = None, rung: int = 0) -> None:
        self._keyframes_wanted.add((codec or self.codec, rung))

    def close(self) -> None:
        self.fanout.set_keyframe_handler(None)

    def rungs(self) -> list[int]:
        """The rungs to encode now: the best always, and every other that a viewer is on or
        switching to."""
        count = 1 if self.ladder is None else len(self.ladder)
        return sorted({0} | {rung for _, rung in self.fanout.wanted if rung < count})

    async def encode(
        self,
        executor: Executor,
        picture: np.ndarray | av.VideoFrame,
        pts: int,
        at: float,
        *,
        starved: bool = False,
        lower: dict[int, np.ndarray] | None = None,
    ) -> list[tuple[str, int, list[av.Packet]]]:
        """Encode ``picture`` (a yuv420p frame or planar array, shape (h*3/2, w)) captured at
        ``at`` (seconds) in every codec wanted, and each lower rung's picture in ``lower`` (by
        rung), on ``executor``: (codec, rung, packets) triples.

        ``starved`` encodes at ``starved_bitrate`` instead, with a second encoder per codec
        and rung: a rate controller takes seconds to follow a new target, and the knob wants
        the drop from its first frame. Each change of encoder starts with a keyframe."""
        pictures: dict[int, np.ndarray | av.VideoFrame] = {0: picture, **(lower or {})}
        codecs = (self.codec, *sorted(self.fanout.codecs - {self.codec}))
        wanted = self.fanout.wanted
        jobs = [
            (codec, rung)
            for codec in codecs
            for rung in sorted(pictures)
            if (codec == self.codec and rung == 0) or (codec, rung) in wanted
        ]
        keyframes = set()
        for job in jobs:
            if self._starved.get(job, False) != starved:
                keyframes.add(job)  # the other encoder's stream starts here
                self._starved[job] = starved
                self._last_keyframe[job] = at
            elif job in self._keyframes_wanted and at - self._last_keyframe.get(job, -math.inf) >= (
                self.keyframe_interval
            ):
                keyframes.add(job)
                self._keyframes_wanted.discard(job)
                self._last_keyframe[job] = at
        self.codecs = codecs
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._encode, pictures, pts, jobs, keyframes, starved)

    def _encode(
        self,
        pictures: dict[int, np.ndarray | av.VideoFrame],
        pts: int,
        jobs: list[tuple[str, int]],
        keyframes: set[tuple[str, int]],
        starved: bool,
    ) -> list[tuple[str, int, list[av.Packet]]]:
        frames = {
            rung: av.VideoFrame.from_ndarray(p, format="yuv420p") if isinstance(p, np.ndarray) else p
            for rung, p in pictures.items()
        }
        if self._size is None:
            self._size = (frames[0].width, frames[0].height)
        # A starved encoder lives for one window: idle in between, its rate control would
        # bank the unspent seconds and spend them on a sharp first keyframe next time.
        for key in [k for k in self._encoders if k[:2] not in jobs or (k[2] and not starved)]:
            del self._encoders[key]
        encoded = []
        for codec, rung in jobs:
            encoder = self._encoders.get((codec, rung, starved))
            if encoder is None:
                size = (
                    self._size if self.ladder is None else (self.ladder[rung].width, self.ladder[rung].height)
                )
                bitrate = self._bitrate if self.ladder is None else self.ladder[rung].bitrate
                encoder = self._encoders[(codec, rung, starved)] = VideoEncoder(
                    *size, codec=codec, bitrate=self.starved_bitrate if starved else bitrate, **self._options
                )
            encoded.append((codec, rung, encoder.encode_frame(frames[rung], pts, (codec, rung) in keyframes)))
        return encoded
