"""The video codec the room sends each WHEP viewer: VP8, or H.264 when a viewer offers no VP8.

H.264 goes out as Chromium offers and accepts it: constrained baseline, profile-level-id
42e01f, packetization-mode 1 (RFC 6184: single NAL units, STAP-A and FU-A), which is what the
room's encoder makes and aiortc packetizes. The choice is made per video m-line, before
negotiation, so an offer the room cannot serve is refused with what it offered.
"""

from __future__ import annotations

from aiortc import RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.sdp import H264Profile, SessionDescription, parse_h264_profile_level_id

__all__ = ["SENDS", "UnusableOffer", "restrict_video", "video_codecs_for"]

H264_PROFILE_LEVEL_ID = "42e01f"
SENDS = "VP8 or H.264 (profile-level-id 42e01f, packetization-mode=1) video, Opus audio"
"""What the room sends a viewer, as its error messages say it."""
NOT_CODECS = {"video/rtx", "video/red", "video/ulpfec", "video/flexfec-03"}
"""Payload types an offer lists beside its codecs (retransmission, redundancy, FEC)."""


class UnusableOffer(ValueError):
    """A WHEP offer whose video the room cannot send in any codec; the message says why."""


def _room_codecs(codec: str) -> list[RTCRtpCodecCapability]:
    def wanted(c: RTCRtpCodecCapability) -> bool:
        if codec == "vp8":
            return c.mimeType.lower() == "video/vp8"
        return (
            c.mimeType.lower() == "video/h264"
            and str(c.parameters.get("profile-level-id", "")).lower() == H264_PROFILE_LEVEL_ID
            and str(c.parameters.get("packetization-mode")) == "1"
        )

    return [c for c in RTCRtpSender.getCapabilities("video").codecs if wanted(c)]


def _takes_room_h264(codec: RTCRtpCodecParameters) -> bool:
    """Whether an offered codec accepts the room's H.264, by the rule aiortc negotiates with:
    same packetization mode and profile (an absent profile-level-id meaning 42e01f)."""
    if codec.mimeType.lower() != "video/h264" or codec.clockRate != 90000:
        return False
    try:
        profile, _ = parse_h264_profile_level_id(str(codec.parameters.get("profile-level-id", "42e01f")))
        mode = int(str(codec.parameters.get("packetization-mode", "0")))
    except ValueError:
        return False
    return mode == 1 and profile == H264Profile.PROFILE_CONSTRAINED_BASELINE


def restrict_video(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Let ``transceiver`` send ``codec`` only (``"vp8"`` or ``"h264"``), with RTX."""
    rtx = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == "video/rtx"]
    transceiver.setCodecPreferences(_room_codecs(codec) + rtx)


def _describe(codec: RTCRtpCodecParameters) -> str:
    name = codec.mimeType.split("/", 1)[-1]
    if name.upper() != "H264":
        return name
    level = codec.parameters.get("profile-level-id", "none")
    mode = codec.parameters.get("packetization-mode", 0)
    return f"H264 ({level}, packetization-mode={mode})"


def video_codecs_for(offer: str) -> list[str]:
    """The codec to send on each video m-line of ``offer``, in order: ``"vp8"`` when offered,
    else ``"h264"`` when offered in the form above. An offer that does not parse gives [] (the
    negotiation then refuses it); one whose video has neither raises :class:`UnusableOffer`."""
    try:
        description = SessionDescription.parse(offer)
    except Exception:  # aiortc's parser raises many types for text it cannot read
        return []
    chosen = []
    for media in description.media:
        if media.kind != "video":
            continue
        offered = media.rtp.codecs
        if media.port == 0 or any(c.mimeType.lower() == "video/vp8" for c in offered):
            chosen.append("vp8")  # a rejected m-line sends nothing; VP8 is the room's own
        elif any(_takes_room_h264(c) for c in offered):
            chosen.append("h264")
        else:
            names = list(dict.fromkeys(_describe(c) for c in offered if c.mimeType.lower() not in NOT_CODECS))
            what = ", ".join(names) if names else "no codec"
            raise UnusableOffer(
                f"the offer has no media this room can send: its video offers {what}; the room sends {SENDS}"
            )
    return chosen
