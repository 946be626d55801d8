"""The two patches that keep a stream's RTP time true: the receiver's timestamp mapper and the
sender's reports.

- aiortc's mapper took any step back in RTP time for a wrap of the 32-bit timestamp and moved
  every later frame on by 2**32 ticks; one audio frame handed on out of order by a jitter
  buffer behind a busy loop then put the rest of a run's tones some 24 hours away, and A/V
  found no flash and tone of the same second.
- aiortc's sender reports paired the last packet's RTP timestamp with the time it left the
  loop; a sender held up 0.7 s of every second made a probe read +0.77 s of A/V for a room
  that injected +0.08 s. Paired with the time the packet was due (its capture time plus the
  sender's fixed latency) instead, the reports give the same line whenever it went out.
"""

from __future__ import annotations

import types

import aiortc.rtcrtpreceiver
import aiortc.rtp
import pytest
from aiortc import RTCRtpSender
from aiortc.mediastreams import AudioStreamTrack
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

from qoe import rtcpatch

CYCLE = 1 << 32
TRANSPORT = types.SimpleNamespace(state="new")
"""All a sender asks of its transport before it starts."""


@pytest.fixture(autouse=True)
def _installed() -> None:
    rtcpatch.install()


def mapped(*timestamps: int) -> list[int]:
    mapper = aiortc.rtcrtpreceiver.TimestampMapper()
    return [mapper.map(t) for t in timestamps]


def test_a_frame_out_of_order_keeps_its_place_on_the_timeline() -> None:
    assert mapped(1000, 1960, 2920, 1960, 3880) == [0, 960, 1920, 960, 2880]


def test_a_wrap_of_the_32_bit_timestamp_still_counts_on() -> None:
    start = CYCLE - 1920
    assert mapped(start, start + 960, 0, 960) == [0, 960, 1920, 2880]


def test_a_frame_from_before_the_wrap_arriving_after_it_stays_before_it() -> None:
    start = CYCLE - 1920
    assert mapped(start, 0, CYCLE - 960, 960) == [0, 1920, 960, 2880]


class Clock:
    def __init__(self) -> None:
        self.capture: float | None = None

    def __call__(self) -> float | None:
        return self.capture


async def test_a_sender_report_carries_the_due_time_of_the_packet_sent_last() -> None:
    sender = RTCRtpSender(AudioStreamTrack(), TRANSPORT)  # type: ignore[arg-type]
    clock = Clock()
    rtcpatch.report_due_times(sender, clock)
    clock.capture = 1_700_000_000.25
    sender._RTCRtpSender__ntp_timestamp = 123  # type: ignore[attr-defined]  # what aiortc writes after a send
    reported = sender._RTCRtpSender__ntp_timestamp  # type: ignore[attr-defined]
    assert reported / 2**32 - rtcpatch.NTP_UNIX_OFFSET == pytest.approx(1_700_000_000.25, abs=1e-6)
    clock.capture = None  # a packet whose due time is not known: the send time stays
    sender._RTCRtpSender__ntp_timestamp = 456  # type: ignore[attr-defined]
    assert sender._RTCRtpSender__ntp_timestamp == 456  # type: ignore[attr-defined]


async def test_a_sender_without_due_times_reports_its_send_times() -> None:
    sender = RTCRtpSender(AudioStreamTrack(), TRANSPORT)  # type: ignore[arg-type]
    sender._RTCRtpSender__ntp_timestamp = 789  # type: ignore[attr-defined]
    assert type(sender) is RTCRtpSender
    assert sender._RTCRtpSender__ntp_timestamp == 789  # type: ignore[attr-defined]


async def test_a_lean_history_gives_back_the_packets_sent_byte_for_byte() -> None:
    sender = RTCRtpSender(AudioStreamTrack(), TRANSPORT)  # type: ignore[arg-type]
    rtcpatch.lean_history(sender)
    history = sender._RTCRtpSender__rtp_history  # type: ignore[attr-defined]
    extensions = aiortc.rtp.HeaderExtensionsMap()
    uris = (
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    )
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i + 1, uri=u) for i, u in enumerate(uris)]
        )
    )
    sent = {}
    for seq in range(65530, 65536 + 140):  # across the 16-bit wrap, past the 128 slots
        packet = aiortc.rtp.RtpPacket(
            111, seq % 3 == 0, seq % 65536, 48000 + 960 * seq, 4242, bytes([seq % 251]) * 90
        )
        packet.extensions.mid = "0"
        packet.extensions.abs_send_time = seq * 7 % (1 << 24)
        packet.extensions.audio_level = (False, -(seq % 100))
        history[packet.sequence_number % aiortc.rtp.RTP_HISTORY_SIZE] = packet  # as aiortc does
        sent[packet.sequence_number] = packet.serialize(extensions)  # then it sends it
    kept = [history.get(seq % aiortc.rtp.RTP_HISTORY_SIZE) for seq in range(65536 + 12, 65536 + 140)]
    assert [p.serialize(extensions) for p in kept] == [
        sent[seq % 65536] for seq in range(65536 + 12, 65536 + 140)
    ]
    assert sum(isinstance(v, aiortc.rtp.RtpPacket) for v in history.values()) == 1  # the newest only
    assert history.get(1000) is None
