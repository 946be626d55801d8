"""FFmpeg-family probes on PyAV: RTMP, HTTP-FLV, HLS and RTSP viewers, and an RTMP publisher.

Kinds: ``rtmp``, ``flv``, ``hls``, ``rtsp`` (viewers, :func:`viewer.probe`) and
``rtmp-publish`` (:func:`publisher.probe`). SRT is not offered: PyAV's FFmpeg is built
without it. :func:`~.target.kind_of` tells a viewer kind from a URL.
"""

from __future__ import annotations

from probes.ffmpeg import publisher, viewer
from probes.ffmpeg.publisher import RtmpPublisher
from probes.ffmpeg.target import KINDS, kind_of

__all__ = ["KINDS", "PHASES", "PUBLISH_KIND", "RtmpPublisher", "kind_of", "publisher", "viewer"]

PUBLISH_KIND = "rtmp-publish"

PHASES: dict[str, tuple[str, ...]] = {kind: viewer.phases(kind) for kind in KINDS}
PHASES[PUBLISH_KIND] = publisher.PHASES
