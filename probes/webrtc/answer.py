"""What an SDP answer gives a viewer: whether any video can come, and in which codecs.

A WHEP answer can leave a viewer without video before a packet is sent: it rejects the video
m-line (port 0), sends none (``inactive``, ``recvonly``), or answers only with codecs or H.264
profiles the viewer did not offer, and so cannot decode. :func:`video_problem` says which, by
the rule aiortc applies when it takes the answer (same codec and clock rate; for H.264 the
same profile and packetization mode, RFC 6184 section 8.2.2), so a probe can report that
rather than wait out its join timeout for frames that cannot come. :func:`negotiated` names
what was agreed, for the messages of the failures that come later.
"""

from __future__ import annotations

from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import MediaDescription, SessionDescription

__all__ = ["describe", "negotiated", "video_problem"]

NOT_CODECS = {"video/rtx", "video/red", "video/ulpfec", "video/flexfec-03", "audio/red"}
"""Payload types listed beside the codecs: retransmission, redundancy, forward error correction."""
RECEIVES_NOTHING = ("inactive", "recvonly")
"""An answer's directions that send the viewer nothing."""


def describe(codec: RTCRtpCodecParameters) -> str:
    """``VP8``, ``opus``, or ``H264 (42e01f, packetization-mode=1)``."""
    name = codec.mimeType.split("/", 1)[-1]
    if name.upper() != "H264":
        return name
    level = codec.parameters.get("profile-level-id", "none")
    return f"H264 ({level}, packetization-mode={codec.parameters.get('packetization-mode', 0)})"


def _codecs(media: MediaDescription) -> list[RTCRtpCodecParameters]:
    return [c for c in media.rtp.codecs if c.mimeType.lower() not in NOT_CODECS]


def _listed(codecs: list[RTCRtpCodecParameters]) -> str:
    return ", ".join(dict.fromkeys(describe(c) for c in codecs)) or "no codec"


def _parse(sdp: str) -> SessionDescription | None:
    try:
        return SessionDescription.parse(sdp)
    except Exception:  # aiortc's parser raises many types for text it cannot read
        return None


def video_problem(offer: str, answer: str) -> str | None:
    """Why ``answer`` gives the viewer that sent ``offer`` no video it can decode, or None.

    Only the first video m-line is judged (the host's, when a viewer asks for a co-host's
    tracks too). An answer that does not parse, or has no media at all, is not judged here:
    applying it fails, as an invalid answer.
    """
    mine, theirs = _parse(offer), _parse(answer)
    if mine is None or theirs is None or not theirs.media:
        return None
    videos = [m for m in theirs.media if m.kind == "video"]
    if not videos:
        return "the answer has no video m-line"
    video = videos[0]
    if video.port == 0:
        return "the answer rejected the video (m=video with port 0)"
    if video.direction in RECEIVES_NOTHING:
        return f"the answer sends no video (a={video.direction})"
    offered = next((_codecs(m) for m in mine.media if m.kind == "video"), [])
    answered = _codecs(video)
    if any(is_codec_compatible(a, o) for a in answered for o in offered):
        return None
    return f"the answer's video has no codec the probe offered ({_listed(offered)})"


def negotiated(answer: str) -> str:
    """The codec each of the answer's first video and audio m-lines sends, ``video VP8, audio
    opus``: the first it lists, its preferred (an answer may list every one it could send)."""
    parsed = _parse(answer)
    if parsed is None:
        return "nothing readable"
    kinds = []
    for kind in ("video", "audio"):
        media = next((m for m in parsed.media if m.kind == kind), None)
        if media is not None:
            kinds.append(f"{kind} {'rejected' if media.port == 0 else _listed(_codecs(media)[:1])}")
    return ", ".join(kinds) or "no media"
