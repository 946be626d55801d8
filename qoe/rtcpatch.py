"""Every change this project makes to aiortc and aioice, in one module, installed explicitly.

These module attributes are replaced, by :func:`install` and nowhere else:

- ``aioice.ice.get_host_addresses``: inside :data:`ICE_ADDRESSES` (set by
  :func:`probes.webrtc.peer.candidate_addresses`) the host candidates are exactly the given
  addresses, so two peers on loopback find a pair and nothing leaves the machine.
- ``aioice.ice.StunProtocol``: a subclass that hands each protocol created inside
  :data:`DATAGRAM_HOOK` (set by :func:`sim.shaper.shaping`) to that hook, which routes its
  datagrams through the weak-network shaper. Outside a hook it is aioice's own.
- ``aiortc.rtcrtpreceiver.decoder_worker``: does nothing for a receiver whose decoder queue is
  a :class:`LoopDecodeQueue` (the probe decodes those frames on the event loop).
- ``aiortc.rtcrtpreceiver.TimestampMapper``: a subclass that reads a step back in RTP time
  as a frame handed on out of order, not as a wrap of the 32-bit timestamp (which moves every
  later frame by 2**32 ticks and breaks A/V sync and the tone timeline of the whole run).
- ``aiortc.rtp.HeaderExtensionsMap``: a subclass that also knows the ``abs-capture-time``
  header extension (:data:`ABS_CAPTURE_TIME_URI`), which aiortc neither offers nor parses:
  an incoming packet's ``extensions.abs_capture_time`` is its sender's capture time (Unix
  seconds, or None), and a sender given a clock by :func:`send_capture_time` stamps it on
  every packet. ``install`` also adds the extension to the video header extensions aiortc
  offers and accepts (``aiortc.codecs.HEADER_EXTENSIONS``), so two patched peers negotiate it;
  a server that does not know it leaves it out of its answer, and nothing is sent.
- ``aiortc.clock.current_ntp_time`` and ``aiortc.clock.current_ms``: the same wall-clock
  readings, from ``time.time_ns`` instead of a timezone-aware datetime (a sender reads the
  NTP time twice a packet, for every viewer of the room).

Five functions reach into aiortc and aioice instead of replacing anything:
:func:`gather_more` gathers candidates from STUN and TURN servers on an agent that has
gathered already, which neither aiortc nor aioice can do (a WHIP or WHEP server names its
servers only in the answer to an offer that had to be gathered first);
:func:`leave_unoffered` lets a peer answer an offer that has no media section for one of its
transceivers (a WHEP server that offers video only to a viewer ready for audio too), which
aiortc's ``setLocalDescription`` otherwise fails on; :func:`report_due_times` has a
sender's RTCP sender reports tie RTP time to when a packet was due to leave, not to when a
busy loop let it go; :func:`on_feedback` hands the room
each viewer's bandwidth estimate (REMB) and loss (receiver reports), which aiortc applies
only to encoders of its own; and :func:`lean_history` keeps a sender's retransmission history
as tuples the garbage collector leaves alone, not as packet objects it scans.

:func:`receive_directly` is for light viewers only: it has one DTLS transport handle each SRTP
datagram as the socket delivers it, in the same call, instead of queueing it for the
transport's task (two hops through the event loop per packet). ``StunProtocol`` passes an
RTP or RTCP datagram on without trying to parse it as STUN first (RFC 7983: their first byte
is 128 to 191, STUN's 0 to 3), which is what aioice's parser concludes anyway.

The probes and the room also read private attributes of aiortc's receivers, jitter buffer,
senders and ICE agent (:data:`PRIVATE`). An aiortc release may move any of them, and a probe would then
lose its frame arrivals and A/V sync without a word. So :func:`install` first checks that every
one exists in the installed aiortc and aioice, and that the code calling the three replaced
functions still looks them up by their module-level name (else replacing them would change
nothing); it raises :class:`IncompatibleAiortc` naming what is missing and the installed
versions. ``pyproject.toml`` pins the ranges that pass.

The entry points call :func:`install` before they create a peer connection or gather
candidates: a probe's WebRTC session, the embedded room, the shaper's :func:`sim.shaper.shaping`
and :func:`probes.webrtc.peer.candidate_addresses`. A second call does nothing. Importing this
module changes nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import importlib
import importlib.metadata
import ipaddress
import logging
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import aioice.ice
import aiortc.clock
import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import aiortc.rtp
import pylibsrtp
from aioice import Candidate
from aiortc import RTCIceServer
from aiortc import clock as aiortc_clock
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcicetransport import RTCIceGatherer, connection_kwargs
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

__all__ = [
    "ABS_CAPTURE_TIME_ID",
    "ABS_CAPTURE_TIME_URI",
    "DATAGRAM_HOOK",
    "ICE_ADDRESSES",
    "PRIVATE",
    "IncompatibleAiortc",
    "LoopDecodeQueue",
    "check",
    "gather_more",
    "install",
    "installed",
    "leave_unoffered",
    "on_feedback",
    "pack_abs_capture_time",
    "parse_abs_capture_time",
    "receive_directly",
    "report_due_times",
    "send_capture_time",
]

ICE_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "qoe_ice_addresses", default=None
)
"""Host candidate addresses for the peers gathering in this context (None: every interface)."""

DATAGRAM_HOOK: contextvars.ContextVar[Callable[[Any], object] | None] = contextvars.ContextVar(
    "qoe_datagram_hook", default=None
)
"""Called with each aioice ``StunProtocol`` (one per UDP socket) created in this context."""


class LoopDecodeQueue:
    """Base of a receiver's decoder queue that decodes on the event loop: aiortc's decoder
    thread for that receiver returns at once."""


class IncompatibleAiortc(RuntimeError):
    """The installed aiortc or aioice lacks an attribute the project relies on."""


PRIVATE: tuple[tuple[str, str, str], ...] = (
    # (module, object in it ("" for the module itself), attribute); "init:" means an instance
    # attribute that the class's __init__ assigns, "uses:" a module-level name that the
    # class's code looks up when it runs (so that replacing it in the module takes effect).
    ("aioice.ice", "", "get_host_addresses"),
    ("aioice.ice", "", "StunProtocol"),
    ("aiortc.rtcrtpreceiver", "", "decoder_worker"),
    ("aioice.ice", "Connection", "uses:get_host_addresses"),
    ("aioice.ice", "Connection", "uses:StunProtocol"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "uses:decoder_worker"),
    ("aiortc.rtp", "", "HeaderExtensionsMap"),
    ("aiortc.rtp", "", "unpack_header_extensions"),
    ("aiortc.rtp", "", "pack_header_extensions"),
    ("aiortc.rtp", "HeaderExtensionsMap", "configure"),
    ("aiortc.rtp", "HeaderExtensionsMap", "get"),
    ("aiortc.rtp", "HeaderExtensionsMap", "set"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "uses:HeaderExtensionsMap"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "uses:HeaderExtensionsMap"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "init:_RTCRtpSender__rtp_header_extensions_map"),
    ("aiortc.codecs", "", "HEADER_EXTENSIONS"),
    ("aioice.ice", "StunProtocol", "connection_made"),
    ("aioice.ice", "StunProtocol", "connection_lost"),
    ("aioice.ice", "StunProtocol", "datagram_received"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "_handle_rtp_packet"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "_handle_rtcp_packet"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "_send_rtcp_nack"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__decoder_queue"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__decoder_error"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__jitter_buffer"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__kind"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__nack_generator"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__rtx_ssrc"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__timestamp_mapper"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__codecs"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__remote_streams"),
    ("aiortc.rtcrtpreceiver", "StreamStatistics", "add"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "_send_rtcp"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_track"),
    ("aiortc.rtcrtpreceiver", "NackGenerator", "init:missing"),
    ("aiortc.rtcrtpreceiver", "TimestampMapper", "init:_origin"),
    ("aiortc.rtcrtpreceiver", "TimestampMapper", "init:_last"),
    ("aiortc.rtcrtpreceiver", "", "TimestampMapper"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "uses:TimestampMapper"),
    ("aiortc.jitterbuffer", "JitterBuffer", "init:_origin"),
    ("aiortc.jitterbuffer", "JitterBuffer", "init:_packets"),
    ("aiortc.jitterbuffer", "JitterBuffer", "_remove_frame"),
    ("aiortc.mediastreams", "MediaStreamTrack", ""),
    ("aiortc.rtcrtpreceiver", "RemoteStreamTrack", "init:_queue"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "_send_keyframe"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "init:_RTCRtpSender__rtp_history"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "_retransmit"),
    ("aiortc.rtp", "RtpPacket", ""),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "_handle_rtcp_packet"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "init:_ssrc"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "init:_RTCRtpSender__ntp_timestamp"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "uses:_RTCRtpSender__ntp_timestamp"),
    ("aiortc.rtp", "", "unpack_remb_fci"),
    ("aiortc.rtp", "RtcpPsfbPacket", ""),
    ("aiortc.rtp", "RtcpRrPacket", ""),
    ("aiortc.rtp", "RtcpSrPacket", ""),
    ("aiortc.rtcicetransport", "RTCIceGatherer", "init:_connection"),
    ("aiortc.rtcicetransport", "", "connection_kwargs"),
    ("aioice.ice", "", "server_reflexive_candidate"),
    ("aioice.ice", "Connection", "get_component_candidates"),
    ("aioice.ice", "Connection", "init:_local_candidates"),
    ("aioice.ice", "Connection", "init:_protocols"),
    ("aioice.ice", "Connection", "init:_nominated"),
    ("aiortc.rtcrtptransceiver", "RTCRtpTransceiver", "init:_offerDirection"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__remote_bitrate_estimator"),
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver", "init:_RTCRtpReceiver__rtcp_ssrc"),
    ("aiortc.clock", "", "current_ntp_time"),
    ("aiortc.clock", "", "current_ms"),
    ("aiortc.rtcrtpsender", "RTCRtpSender", "uses:current_ntp_time"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "uses:current_ms"),
    ("aioice.ice", "Connection", "data_received"),
    ("aioice.ice", "Connection", "init:_queue"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "init:_rx_srtp"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "init:_state"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "init:_RTCDtlsTransport__rx_bytes"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "init:_RTCDtlsTransport__rx_packets"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_handle_rtp_data"),
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport", "_handle_rtcp_data"),
    ("aiortc.rtcicetransport", "RTCIceTransport", "init:_connection"),
)
"""What the patches, :mod:`probes.webrtc.peer` and the room rely on in aiortc and aioice."""

_original_get_host_addresses = aioice.ice.get_host_addresses
_original_stun_protocol = aioice.ice.StunProtocol
_original_decoder_worker = aiortc.rtcrtpreceiver.decoder_worker
_original_timestamp_mapper = aiortc.rtcrtpreceiver.TimestampMapper
_original_header_extensions_map = aiortc.rtp.HeaderExtensionsMap


def _has(module_name: str, owner: str, attribute: str) -> bool:
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError:
        return False
    if owner:
        target = getattr(target, owner, None)
        if target is None:
            return False
    if not attribute:
        return True
    if attribute.startswith("init:"):
        init = getattr(target, "__init__", None)
        code = getattr(init, "__code__", None)
        return code is not None and attribute[len("init:") :] in code.co_names
    if attribute.startswith("uses:"):
        return any(attribute[len("uses:") :] in code.co_names for code in _code_of(target))
    return hasattr(target, attribute)


def _code_of(cls: Any) -> Iterator[types.CodeType]:
    """The code of every function defined in ``cls``, with the lambdas and inner functions in it."""
    pending = []
    for member in vars(cls).values():
        function = getattr(member, "__func__", member)  # staticmethod, classmethod
        code = getattr(function, "__code__", None)
        if isinstance(code, types.CodeType):
            pending.append(code)
    while pending:
        code = pending.pop()
        yield code
        pending.extend(const for const in code.co_consts if isinstance(const, types.CodeType))


def check() -> None:
    """Raise :class:`IncompatibleAiortc` if anything in :data:`PRIVATE` is missing."""
    missing = [
        _describe(module, owner, attribute)
        for module, owner, attribute in PRIVATE
        if not _has(module, owner, attribute)
    ]
    if missing:
        versions = ", ".join(f"{name} {_version(name)}" for name in ("aiortc", "aioice"))
        raise IncompatibleAiortc(
            f"{versions} lack{'s' if len(missing) == 1 else ''} what the probes rely on "
            f"({', '.join(missing)}); install the versions pyproject.toml allows"
        )


def _describe(module: str, owner: str, attribute: str) -> str:
    if attribute.startswith("uses:"):
        name = attribute[len("uses:") :]
        return f"{module}.{owner} calling {module}.{name} by name"
    return ".".join(part for part in (module, owner, attribute.removeprefix("init:")) if part)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


_installed = False


def installed() -> bool:
    return _installed


def install() -> None:
    """Check aiortc and aioice, then replace the attributes listed above (once per process)."""
    global _installed
    if _installed:
        return
    check()
    aioice.ice.get_host_addresses = _get_host_addresses
    aioice.ice.StunProtocol = _HookedStunProtocol  # type: ignore[misc]
    aiortc.rtcrtpreceiver.decoder_worker = _decoder_worker
    aiortc.rtcrtpreceiver.TimestampMapper = _NearestCycleMapper  # type: ignore[misc]
    aiortc.rtp.HeaderExtensionsMap = _CaptureTimeMap  # type: ignore[misc]
    aiortc.clock.current_ntp_time = _current_ntp_time
    aiortc.clock.current_ms = _current_ms
    video = aiortc.codecs.HEADER_EXTENSIONS["video"]
    if not any(e.uri == ABS_CAPTURE_TIME_URI for e in video):
        video.append(RTCRtpHeaderExtensionParameters(id=ABS_CAPTURE_TIME_ID, uri=ABS_CAPTURE_TIME_URI))
    _installed = True


def _current_ntp_time() -> int:
    """aiortc's ``clock.current_ntp_time`` (the wall clock to the microsecond, as a 64-bit NTP
    timestamp) without building a timezone-aware datetime: a sender calls it twice a packet."""
    micros = time.time_ns() // 1000 + NTP_UNIX_OFFSET * 1_000_000
    return (micros // 1_000_000) << 32 | (micros % 1_000_000 << 32) // 1_000_000


def _current_ms() -> int:
    """aiortc's ``clock.current_ms`` (milliseconds since the NTP epoch), likewise."""
    return time.time_ns() // 1_000_000 + NTP_UNIX_OFFSET * 1000


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = ICE_ADDRESSES.get()
    if chosen is None:
        return list(_original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6))
    return [
        a
        for a in chosen
        if (use_ipv4 and ipaddress.ip_address(a).version == 4)
        or (use_ipv6 and ipaddress.ip_address(a).version == 6)
    ]


class _HookedStunProtocol(_original_stun_protocol):
    """aioice's StunProtocol, handed to :data:`DATAGRAM_HOOK` when created inside one."""

    def __init__(self, receiver: Any) -> None:
        super().__init__(receiver)
        hook = DATAGRAM_HOOK.get()
        if hook is not None:
            hook(self)

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes) and data and 127 < data[0] < 192:  # RTP or RTCP (RFC 7983)
            self.receiver.data_received(data, self.local_candidate.component)
            return
        super().datagram_received(data, addr)


class _NearestCycleMapper(_original_timestamp_mapper):
    """aiortc's RTP timestamp mapper, reading a frame's timestamp in the 32-bit cycle nearest
    the last one's: aiortc takes any step back for a wrap and moves every later frame 2**32
    ticks on (some 24 hours of audio, 13 of video), which a frame handed on out of order by a
    jitter buffer that fell behind makes it do."""

    def map(self, timestamp: int) -> int:
        last = timestamp if self._last is None else self._last
        if self._origin is None:
            self._origin = timestamp
        elif timestamp < last and last - timestamp > 1 << 31:
            self._origin -= 1 << 32  # wrapped
        elif timestamp > last and timestamp - last > 1 << 31:
            return timestamp - self._origin - (1 << 32)  # from before the last wrap
        self._last = timestamp
        return timestamp - self._origin


def _decoder_worker(loop: Any, input_q: Any, output_q: Any, decode_error: Any) -> None:
    if isinstance(input_q, LoopDecodeQueue):
        return  # the loop decodes; the thread aiortc starts for it has nothing to do
    _original_decoder_worker(loop, input_q, output_q, decode_error)


ABS_CAPTURE_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time"
"""The RTP header extension that carries a frame's capture time on the sender's clock."""
ABS_CAPTURE_TIME_ID = 4
"""Its extension id in the offers the patched aiortc makes. With BUNDLE the id space is shared
by audio and video, and aiortc uses 1 and 2 (audio), 1 and 3 (video)."""
NTP_UNIX_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""


def _ntp(unix: float) -> int:
    """The 64-bit NTP timestamp (UQ32.32) of ``unix`` seconds."""
    return round((unix + NTP_UNIX_OFFSET) * 2**32) % 2**64


def pack_abs_capture_time(unix: float) -> bytes:
    """The 8-byte ``abs-capture-time`` value for a capture at ``unix`` seconds: a 64-bit NTP
    timestamp in UQ32.32 format, without the optional estimated clock offset."""
    return _ntp(unix).to_bytes(8, "big")


def parse_abs_capture_time(value: bytes) -> tuple[float, float | None] | None:
    """``(capture Unix seconds, estimated capture clock offset seconds or None)`` from an
    ``abs-capture-time`` value: 8 bytes (UQ32.32 NTP time) or 16 (plus the sender's estimate
    of the capturer's clock offset, Q32.32 signed). None for any other length."""
    if len(value) not in (8, 16):
        return None
    capture = int.from_bytes(value[:8], "big") / 2**32 - NTP_UNIX_OFFSET
    if len(value) == 8:
        return capture, None
    return capture, int.from_bytes(value[8:], "big", signed=True) / 2**32


class _CaptureTimeMap(_original_header_extensions_map):
    """aiortc's header extension map, knowing ``abs-capture-time`` too (see the module)."""

    capture_id: int | None = None
    capture: Callable[[], float | None] | None = None
    """The sending track's capture time of the frame being sent (set by
    :func:`send_capture_time`); None: this map stamps nothing."""

    def configure(self, parameters: RTCRtpParameters) -> None:
        super().configure(parameters)
        for extension in parameters.headerExtensions:
            if extension.uri == ABS_CAPTURE_TIME_URI:
                self.capture_id = extension.id

    def get(self, extension_profile: int, extension_value: bytes) -> Any:
        values = super().get(extension_profile, extension_value)
        wanted = self.capture_id
        # Most packets (audio) carry no capture time: a one-byte header with its id and the
        # 8- or 16-byte length is looked for in C before anything is parsed in Python.
        if (
            wanted is not None
            and extension_value
            and (
                extension_profile != 0xBEDE
                or bytes((wanted << 4 | 7,)) in extension_value
                or bytes((wanted << 4 | 15,)) in extension_value
            )
        ):
            for x_id, x_value in aiortc.rtp.unpack_header_extensions(extension_profile, extension_value):
                if x_id == wanted:
                    parsed = parse_abs_capture_time(x_value)
                    values.abs_capture_time = None if parsed is None else parsed[0]  # type: ignore[attr-defined]
        return values

    def set(self, values: Any) -> tuple[int, bytes]:
        packed: tuple[int, bytes] = super().set(values)
        if self.capture_id is None or self.capture is None:
            return packed
        # A packet keeps the capture time of its first sending: a retransmission from the
        # sender's history serializes the same extensions again.
        stamp = getattr(values, "abs_capture_time", False)
        if stamp is False:
            stamp = values.abs_capture_time = self.capture()
        if stamp is None:
            return packed
        profile, value = packed
        if profile == 0xBEDE and self.capture_id <= 14:
            # One-byte headers: padding may sit between elements (RFC 8285 section 4.2), so
            # the capture time goes after aiortc's padded ones, without parsing them again.
            value += bytes((self.capture_id << 4 | 7,)) + pack_abs_capture_time(stamp)
            return profile, value + bytes(-len(value) % 4)
        extensions = aiortc.rtp.unpack_header_extensions(*packed)
        extensions.append((self.capture_id, pack_abs_capture_time(stamp)))
        return aiortc.rtp.pack_header_extensions(extensions)


class _DueTimeSender(aiortc.rtcrtpsender.RTCRtpSender):
    """An aiortc sender whose sender reports pair RTP time with when a packet was due to leave.

    aiortc pairs, in each RTCP sender report, the RTP timestamp of the last packet it sent
    with the wall time it sent it: behind a loop held up, that time is late, by a different
    amount for audio and for video, and a receiver lining the two up by these reports (a
    lip-syncing player, the probes' A/V figure) is off by the difference. RFC 3550 (section
    6.4.1) means the two to name one instant of the media's sampling clock, as libwebrtc
    computes them. The time the packet was due (its capture time plus the sender's fixed
    pipeline latency) gives that line, whenever the packet went out; the fixed latency is
    the same for audio and video, and keeps the reports where an on-time sender put them.
    """

    _qoe_due: Callable[[], float | None] | None = None

    @property
    def _RTCRtpSender__ntp_timestamp(self) -> int:
        return int(self.__dict__.get("_qoe_report_ntp", 0))

    @_RTCRtpSender__ntp_timestamp.setter
    def _RTCRtpSender__ntp_timestamp(self, sent: int) -> None:
        due = self._qoe_due() if self._qoe_due is not None else None
        self.__dict__["_qoe_report_ntp"] = sent if due is None else _ntp(due)


def report_due_times(sender: Any, due: Callable[[], float | None]) -> None:
    """Have ``sender``'s RTCP sender reports pair the RTP timestamp of its last packet with
    ``due()``, the time (Unix seconds) that packet was due to leave, instead of the time it
    did (see :class:`_DueTimeSender`); where ``due()`` is None the send time stays. Call it
    before the sender starts."""
    if not isinstance(sender, _DueTimeSender):
        sent = sender.__dict__.pop("_RTCRtpSender__ntp_timestamp", 0)
        sender.__class__ = _DueTimeSender
        sender.__dict__["_qoe_report_ntp"] = sent
    sender._qoe_due = due


class _LeanHistory(dict[int, Any]):
    """A sender's last RTP packets, kept for retransmission (aiortc keeps 128 a sender), as
    tuples of numbers and bytes instead of packet objects.

    aiortc keeps each packet it sent as an ``RtpPacket`` with its header extensions and CSRC
    list: three objects the garbage collector tracks, living for 128 packets (2.5 s of audio,
    4 s of video), long enough to reach its oldest generation. A room sending to a hundred
    viewers promotes tens of thousands of them a second, and its full passes, which scan all
    of them, held its loop for tens of milliseconds at a time: a hold-up each of its viewers
    sees as a late frame. A tuple of numbers and bytes is left out of the passes once the
    collector has seen it. The newest packet stays an object until the next one is sent (it is
    serialized meanwhile, which sets the capture time it carries); a retransmission rebuilds
    the packet it asks for, with the same header and extensions."""

    def __init__(self) -> None:
        super().__init__()
        self._newest: int | None = None

    def __setitem__(self, key: int, packet: Any) -> None:
        newest = self._newest
        if newest is not None:
            held = dict.get(self, newest)
            if isinstance(held, aiortc.rtp.RtpPacket):
                x = held.extensions
                dict.__setitem__(
                    self,
                    newest,
                    (
                        held.payload_type,
                        held.marker,
                        held.sequence_number,
                        held.timestamp,
                        held.ssrc,
                        held.payload,
                        x.abs_send_time,
                        x.audio_level,
                        x.mid,
                        getattr(x, "abs_capture_time", False),
                    ),
                )
        dict.__setitem__(self, key, packet)
        self._newest = key

    def get(self, key: int, default: Any = None) -> Any:
        held = dict.get(self, key, default)
        if not isinstance(held, tuple):
            return held
        payload_type, marker, sequence_number, timestamp, ssrc, payload, send_time, level, mid, capture = held
        packet = aiortc.rtp.RtpPacket(payload_type, marker, sequence_number, timestamp, ssrc, payload)
        x = packet.extensions
        x.abs_send_time, x.audio_level, x.mid = send_time, level, mid
        if capture is not False:
            x.abs_capture_time = capture  # type: ignore[attr-defined]
        return packet


def lean_history(sender: Any) -> None:
    """Have ``sender`` keep its retransmission history as :class:`_LeanHistory` (same packets,
    none of them an object the garbage collector scans). Call it before the sender starts."""
    if not isinstance(sender._RTCRtpSender__rtp_history, _LeanHistory):
        sender._RTCRtpSender__rtp_history = _LeanHistory()


def send_capture_time(sender: Any, capture: Callable[[], float | None]) -> None:
    """Have ``sender`` stamp each RTP packet with ``capture()``, the capture time (Unix
    seconds) of the frame it is sending, as ``abs-capture-time``, when the remote side
    accepted the extension. Call it before the sender starts."""
    extension_map = sender._RTCRtpSender__rtp_header_extensions_map
    if isinstance(extension_map, _CaptureTimeMap):
        extension_map.capture = capture


AIORTC_COMPONENT = 1
"""The one ICE component of an aiortc agent: it multiplexes RTP and RTCP (rtcp-mux)."""


def on_feedback(sender: Any, remb: Callable[[int], None], loss: Callable[[float], None]) -> None:
    """Call ``remb`` with the bitrate (bit/s) of every REMB the remote receiver sends about
    ``sender``'s stream, and ``loss`` with the fraction lost (0..1) of every receiver report
    block about it, before aiortc's own handling (which applies a REMB only to an encoder of
    its own, and a room sending pre-encoded packets has none)."""
    handle = sender._handle_rtcp_packet

    async def handle_rtcp(packet: Any) -> None:
        if isinstance(packet, aiortc.rtp.RtcpPsfbPacket) and packet.fmt == aiortc.rtp.RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = aiortc.rtp.unpack_remb_fci(packet.fci)
            except ValueError:
                pass  # another application's feedback
            else:
                if sender._ssrc in ssrcs:
                    remb(bitrate)
        elif isinstance(packet, aiortc.rtp.RtcpRrPacket | aiortc.rtp.RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    loss(report.fraction_lost / 256)
        await handle(packet)

    sender._handle_rtcp_packet = handle_rtcp


def leave_unoffered(pc: Any) -> None:
    """Mark inactive the transceivers of ``pc`` that the remote offer just applied gave no
    media section: aiortc applies an answer by combining each transceiver's direction with
    the direction offered for it, and for one never offered that is None, which it cannot
    combine. Inactive is what the answer means for them: nothing flows either way."""
    for transceiver in pc.getTransceivers():
        if transceiver.mid is None and transceiver._offerDirection is None:
            transceiver._offerDirection = "inactive"


async def gather_more(
    gatherer: RTCIceGatherer, servers: list[RTCIceServer], *, timeout: float
) -> list[Candidate]:
    """Gather candidates from ``servers`` on ``gatherer``, which has gathered already.

    A server-reflexive candidate per IPv4 host candidate from the first STUN server, and a
    relayed one from the first TURN server (aioice takes one of each, as aiortc configures
    it); what a server does not give within ``timeout`` seconds is done without. The new
    candidates join the agent's own, so the checks that start when the answer is applied pair
    them too, and are returned for the caller to trickle. Call it before the remote
    description is set: pairs are formed then.
    """
    agent: Any = gatherer._connection
    settings = connection_kwargs(servers)
    queries: list[Any] = []
    stun_server = settings.pop("stun_server", None)
    if stun_server is not None:
        for protocol in agent._protocols:
            local = protocol.local_candidate
            if local.type == "host" and ipaddress.ip_address(local.host).version == 4:
                reflexive = aioice.ice.server_reflexive_candidate(protocol, stun_server)
                queries.append(asyncio.wait_for(reflexive, timeout))
    if "turn_server" in settings:
        for name, value in settings.items():
            setattr(agent, name, value)  # the public settings aioice's own gathering reads
        queries.append(
            agent.get_component_candidates(component=AIORTC_COMPONENT, addresses=[], timeout=timeout)
        )
    found: list[Candidate] = []
    for outcome in await asyncio.gather(*queries, return_exceptions=True):
        if isinstance(outcome, list):
            found += outcome  # the relayed candidate, or none
        elif isinstance(outcome, tuple):
            found.append(outcome[0])  # a server-reflexive candidate
    agent._local_candidates += found
    return found


logger = logging.getLogger(__name__)


class _DirectReceive:
    """Stands in for an aioice connection's ``data_received`` (see :func:`receive_directly`).

    A handler that suspends (a NACK or PLI sent through a shaped socket may wait) holds the
    datagrams after it in ``backlog`` until it finishes, so packets are handled in the order
    they arrived, as aiortc's one task handles them.
    """

    def __init__(self, dtls: RTCDtlsTransport, connection: Any) -> None:
        self.dtls = dtls
        self.enqueue = connection.data_received
        self.queue: asyncio.Queue[Any] = connection._queue
        self.backlog: collections.deque[bytes] = collections.deque()
        self.suspended = False
        self.handled = 0
        """Datagrams handled here, not by the transport's task."""

    def __call__(self, data: bytes, component: int) -> None:
        dtls = self.dtls
        if (
            not 127 < data[0] < 192
            or dtls._state is not State.CONNECTED
            or dtls._rx_srtp is None
            or not self.queue.empty()
        ):
            # DTLS, or SRTP before the keys or behind datagrams still queued: aiortc's path.
            self.enqueue(data, component)
        elif self.suspended:
            self.backlog.append(data)
        else:
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        dtls: Any = self.dtls
        dtls._RTCDtlsTransport__rx_bytes += len(data)
        dtls._RTCDtlsTransport__rx_packets += 1
        self.handled += 1
        try:
            if aiortc.rtp.is_rtcp(data):
                work = dtls._handle_rtcp_data(dtls._rx_srtp.unprotect_rtcp(data))
            else:
                arrival_ms = aiortc_clock.current_ms()
                work = dtls._handle_rtp_data(dtls._rx_srtp.unprotect(data), arrival_time_ms=arrival_ms)
        except pylibsrtp.Error:
            return  # as aiortc does: a packet that fails authentication is dropped
        self._step(work)

    def _step(self, work: Any) -> None:
        """Run ``work`` (a coroutine) until it finishes or waits; resume it when it can."""
        try:
            waiting = work.send(None)
        except StopIteration:
            self.suspended = False
            return
        except Exception:
            self.suspended = False
            logger.exception("light receive path: handling a packet failed")
            return
        self.suspended = True
        if waiting is None:  # a bare yield (asyncio.sleep(0)): resume on the next turn
            asyncio.get_running_loop().call_soon(self._resume, work)
        else:
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(lambda _: self._resume(work))

    def _resume(self, work: Any) -> None:
        self._step(work)
        while self.backlog and not self.suspended:
            self._handle(self.backlog.popleft())


def receive_directly(dtls: RTCDtlsTransport) -> _DirectReceive:
    """Have ``dtls`` handle each SRTP datagram in the socket's own callback.

    aiortc's path queues each datagram on the ICE connection, where the DTLS transport's task
    picks it up on a later turn of the event loop; that hop cost a light viewer about a fifth
    of its CPU. Here the datagram is decrypted, parsed and handed to its receiver at once,
    so its arrival time is the moment the socket delivered it. DTLS records, and anything
    arriving before the SRTP keys or while datagrams are still queued, take aiortc's own path,
    and so keep their order. Call it once the transport is final (after negotiation, when
    BUNDLE has chosen it); a second call on the same transport does nothing.
    """
    connection: Any = dtls.transport._connection
    current = connection.data_received
    if isinstance(current, _DirectReceive):
        return current
    direct = _DirectReceive(dtls, connection)
    connection.data_received = direct
    return direct
