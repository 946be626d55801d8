"""Encoding, pacing and fan-out of live media, shared by the embedded room and the publishers.

A :class:`~qoe.media.source.SignalSource` renders the test signal on the wall-clock grid, encodes
it once and releases every packet at capture time plus a fixed pipeline latency; a
:class:`~qoe.media.fanout.Fanout` hands the same packets to every subscriber's
:class:`~qoe.media.fanout.PacketTrack`, which aiortc sends without re-encoding. A source
encodes in another codec (H.264 beside its VP8) only while a subscriber takes it, once for all
of them (:mod:`qoe.media.renditions`).
"""

from __future__ import annotations

from qoe.media.encode import AudioEncoder, VideoEncoder
from qoe.media.fanout import Fanout, PacketTrack
from qoe.media.renditions import Renditions
from qoe.media.source import Knobs, SignalSource

__all__ = ["AudioEncoder", "Fanout", "Knobs", "PacketTrack", "Renditions", "SignalSource", "VideoEncoder"]
