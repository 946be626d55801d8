"""The project's exception tree.

::

    QoeError
    ├── ConfigError            bad command line, option or file      -> exit 2
    └── ProbeError             a probe could not measure             -> success=false, exit 1
        ├── ConnectError           "connect"        TCP connect refused, unreachable, DNS
        ├── NotFoundError          "not_found"      the server has no such room or stream
        ├── SignalingError         "signaling"      an unusable signaling answer (status, headers)
        ├── SdpError               "invalid_sdp"    an SDP offer or answer that cannot be applied
        ├── IceError               "ice_failed"     ICE found no working candidate pair
        ├── DtlsError              "dtls_failed"    the DTLS handshake failed
        ├── NoMediaError           "no_media"       no media arrived in time (when none of its
        │   │                                       subclasses says more precisely why)
        │   ├── NoCommonCodecError     "no_common_codec"  the answer has no video the probe decodes
        │   ├── NoRtpError             "no_rtp"           connected, but no video RTP came
        │   └── UndecodableError       "undecodable"      video RTP came, no frame could be shown
        ├── NoEchoError            "no_echo"        chat messages sent, none came back
        ├── NoSignalError          "no_signal"      no coupon drop was seen within the watch
        ├── GrabError              "grab_failed"    a grab got an error status or no answer
        │   └── GrabAnswerError        "grab_garbled"   a grab answer that says neither won nor sold out
        ├── ProtocolError          "protocol"       the server broke its protocol (e.g. non-JSON chat)
        ├── DisconnectedError      "disconnected"   media stopped mid-probe (peer gone)
        │   └── StreamEndedError       "stream_ended"   the server ended the stream mid-probe
        ├── RejectedError          "rejected"       the server refused the stream (RTMP app,
        │                                           HTTP 401/403 and other 4xx, 5xx)
        ├── CorruptStreamError     "corrupt_stream" bytes that do not demux or decode
        └── DeadlineError          "timeout"        the probe's deadline passed

Lower-level errors (aiohttp, aiortc, PyAV) are mapped to the most specific class where they
enter the project, so a :class:`~qoe.result.ProbeResult` always carries one of these kinds.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectError",
    "CorruptStreamError",
    "DeadlineError",
    "DisconnectedError",
    "DtlsError",
    "GrabAnswerError",
    "GrabError",
    "IceError",
    "NoCommonCodecError",
    "NoEchoError",
    "NoMediaError",
    "NoRtpError",
    "NoSignalError",
    "NotFoundError",
    "ProbeError",
    "ProtocolError",
    "QoeError",
    "RejectedError",
    "SdpError",
    "SignalingError",
    "StreamEndedError",
    "UndecodableError",
]


class QoeError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(QoeError):
    """A usage or configuration error: the command line, a profile or a fleet file."""


class ProbeError(QoeError):
    """A probe could not measure; ``kind`` lands in ``ProbeResult.error.kind``."""

    kind = "error"


class ConnectError(ProbeError):
    kind = "connect"


class NotFoundError(ProbeError):
    kind = "not_found"


class SignalingError(ProbeError):
    kind = "signaling"


class SdpError(ProbeError):
    kind = "invalid_sdp"


class IceError(ProbeError):
    kind = "ice_failed"


class DtlsError(ProbeError):
    kind = "dtls_failed"


class NoMediaError(ProbeError):
    kind = "no_media"


class NoCommonCodecError(NoMediaError):
    """The answer rejected the video, sends none, or only in codecs or H.264 profiles the
    probe did not offer: no frame can come, so the probe says so without waiting."""

    kind = "no_common_codec"


class NoRtpError(NoMediaError):
    """Connected (ICE and DTLS), but not one video RTP packet came within the join timeout."""

    kind = "no_rtp"


class UndecodableError(NoMediaError):
    """Video RTP came within the join timeout, but no frame of it could be shown: it failed
    to decode, or no keyframe came to start from."""

    kind = "undecodable"


class NoEchoError(ProbeError):
    kind = "no_echo"


class NoSignalError(ProbeError):
    """A grab probe saw no coupon drop within its watch: no frame announced one, or the drop
    signal (a polled URL, a WebSocket message) never matched its template."""

    kind = "no_signal"


class GrabError(ProbeError):
    """A grab request failed: the endpoint answered an error status (a 5xx, an unexpected
    4xx) or nothing at all. A sold-out answer is not one: it is a normal outcome."""

    kind = "grab_failed"


class GrabAnswerError(GrabError):
    """The grab endpoint answered, but its answer says neither won nor sold out (not JSON,
    or no outcome where the template says it is)."""

    kind = "grab_garbled"


class ProtocolError(ProbeError):
    kind = "protocol"


class DisconnectedError(ProbeError):
    kind = "disconnected"


class StreamEndedError(DisconnectedError):
    kind = "stream_ended"


class RejectedError(ProbeError):
    kind = "rejected"


class CorruptStreamError(ProbeError):
    kind = "corrupt_stream"


class DeadlineError(ProbeError):
    kind = "timeout"
