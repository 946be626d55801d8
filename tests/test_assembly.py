"""Frames from RTP packets alone (probes.webrtc.assembly), and the abs-capture-time value."""

from __future__ import annotations

import itertools

import pytest

from probes.webrtc.assembly import FrameAssembler, RtpFrame, Unwrapper
from qoe import rtcpatch

TICKS = 3000
"""RTP ticks between frames at 30 fps."""


def feed(
    assembler: FrameAssembler,
    frames: list[int],
    *,
    seq: int = 0,
    ts: int = 0,
    skip: set[int] = frozenset(),  # type: ignore[assignment]
    keyframes: set[int] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[RtpFrame], dict[int, tuple[int, int, bool]]]:
    """Send ``frames`` (packets per frame) from sequence number ``seq`` and timestamp ``ts``,
    leaving out the packets whose index is in ``skip``; frame indices in ``keyframes`` are
    keyframes. Returns what was released, and every packet by index, for sending later."""
    released: list[RtpFrame] = []
    packets: dict[int, tuple[int, int, bool]] = {}
    index = 0
    for number, count in enumerate(frames):
        for part in range(count):
            packet = ((seq + index) % 65536, (ts + number * TICKS) % 2**32, part == count - 1)
            packets[index] = packet
            if index not in skip:
                released += assembler.add(
                    *packet,
                    arrival=index / 100,
                    size=100,
                    keyframe=number in keyframes and part == 0,
                    starts=part == 0,
                )
            index += 1
    return released, packets


def test_a_frame_is_released_at_its_marker_packet() -> None:
    assembler = FrameAssembler()
    released, _ = feed(assembler, [1, 3, 2], keyframes={0})
    assert [f.rtp - released[0].rtp for f in released] == [0, TICKS, 2 * TICKS]
    assert [f.size for f in released] == [100, 300, 200]
    assert [f.complete for f in released] == [0.0, 0.03, 0.05]
    assert all(f.continuous for f in released)
    assert released[0].keyframe and not released[1].keyframe
    assert assembler.frames_lost == 0


def test_a_retransmitted_packet_completes_its_frame_and_releases_the_ones_it_held() -> None:
    assembler = FrameAssembler()
    released, packets = feed(assembler, [1, 2, 1, 1], keyframes={0}, skip={1})
    assert len(released) == 1  # frame 1 waits for its first packet, frames 2 and 3 wait for it
    late = assembler.add(*packets[1], arrival=1.0, size=100)
    assert [f.rtp for f in late] == [TICKS, 2 * TICKS, 3 * TICKS]
    assert late[0].retransmitted and late[0].complete == 1.0 and late[0].continuous
    assert assembler.frames_lost == 0 and assembler.packets_lost == 0


def test_a_hole_is_given_up_behind_the_nack_window_and_breaks_continuity() -> None:
    assembler = FrameAssembler(wait_packets=5)
    released, _ = feed(assembler, [1] * 12, keyframes={0}, skip={3})
    # Frame 3 never comes; once the newest packet is 6 past it, the rest is released.
    assert [f.rtp // TICKS for f in released] == [0, 1, 2, *range(4, 12)]
    assert not released[3].continuous and all(f.continuous for f in released[4:])
    assert (assembler.frames_lost, assembler.packets_lost, assembler.holes) == (1, 1, 1)


def test_a_complete_keyframe_ends_the_wait_at_once() -> None:
    assembler = FrameAssembler()
    released, _ = feed(assembler, [2, 2, 2, 3, 2], keyframes={0, 3}, skip={2})
    assert [f.rtp // TICKS for f in released] == [0, 3, 4]
    assert released[1].keyframe and not released[1].continuous
    assert assembler.frames_lost == 2  # frame 1 (half came) and frame 2 (whole, but behind it)


def test_frames_of_which_no_packet_came_are_counted_from_the_timestamps() -> None:
    assembler = FrameAssembler(wait_packets=3)
    released, _ = feed(assembler, [1] * 10, keyframes={0}, skip={4, 5, 6})
    assert [f.rtp // TICKS for f in released] == [0, 1, 2, 3, 7, 8, 9]
    assert assembler.frames_lost == 3 and assembler.packets_lost == 3


def test_a_sender_that_pauses_loses_no_frame() -> None:
    """A frozen camera sends nothing: the timestamps jump, the sequence numbers do not."""
    assembler = FrameAssembler()
    first, _ = feed(assembler, [1] * 5, keyframes={0})
    later, _ = feed(assembler, [1] * 5, seq=5, ts=20 * TICKS)
    assert len(first) + len(later) == 10 and assembler.frames_lost == 0
    assert all(f.continuous for f in later)


def test_sequence_numbers_and_timestamps_wrap_around() -> None:
    assembler = FrameAssembler()
    released, _ = feed(assembler, [2] * 6, seq=65530, ts=2**32 - 2 * TICKS, keyframes={0})
    assert len(released) == 6
    assert [b.rtp - a.rtp for a, b in itertools.pairwise(released)] == [TICKS] * 5
    assert [b.first_seq - a.last_seq for a, b in itertools.pairwise(released)] == [1] * 5
    assert assembler.frames_lost == 0


def test_a_viewer_joining_mid_frame_skips_the_tail() -> None:
    assembler = FrameAssembler()
    released, _ = feed(assembler, [3, 1, 1], skip={0})  # the first packet of frame 0 is missed
    assert [f.rtp // TICKS for f in released] == [1, 2]
    assert assembler.frames_lost == 0  # nothing was lost from a stream already followed


def test_without_start_bits_a_frame_after_a_hole_waits_for_a_known_start() -> None:
    """H.264 packets here carry no start bit: the packet after a hole might be a frame's tail."""
    assembler = FrameAssembler(wait_packets=2)
    released = []
    for seq in (0, 1, 3, 4, 5, 6):
        released += assembler.add(seq, seq * TICKS, True, seq / 100, 100, keyframe=seq == 0)
    assert [f.rtp // TICKS for f in released] == [0, 1, 4, 5, 6]
    assert assembler.frames_lost == 2


def test_duplicates_and_packets_already_released_are_ignored() -> None:
    assembler = FrameAssembler()
    released, packets = feed(assembler, [1, 1], keyframes={0})
    assert assembler.add(*packets[0], arrival=1.0, size=100) == []
    assert len(released) == 2


def test_payloads_are_kept_in_order_when_asked() -> None:
    assembler = FrameAssembler()
    assembler.keep_payloads = True
    assembler.add(10, 0, False, 0.0, 2, keyframe=True, payload=b"ab")
    (frame,) = assembler.add(11, 0, True, 0.01, 2, payload=b"cd")
    assert frame.payloads == [b"ab", b"cd"]


def test_a_frame_begun_before_payloads_were_kept_carries_none() -> None:
    # A decoding window opening in the middle of a keyframe: decoding its tail would fail, and
    # the player model would drop every frame to the next keyframe (a freeze of a whole GOP).
    assembler = FrameAssembler()
    assembler.add(10, 0, False, 0.0, 2, keyframe=True, payload=b"ab")
    assembler.keep_payloads = True
    (partial,) = assembler.add(11, 0, True, 0.01, 2, payload=b"cd")
    assert partial.payloads is None and partial.keyframe
    (whole,) = assembler.add(12, TICKS, True, 0.04, 2, starts=True, payload=b"ef")
    assert whole.payloads == [b"ef"]


def test_the_unwrapper_follows_the_nearest_point() -> None:
    u = Unwrapper(16)
    assert [u.unwrap(v) for v in (65534, 65535, 0, 1, 65535, 2)] == [65534, 65535, 65536, 65537, 65535, 65538]


def test_abs_capture_time_round_trips_and_carries_the_optional_offset() -> None:
    unix = 1_790_000_000.123456
    value = rtcpatch.pack_abs_capture_time(unix)
    assert len(value) == 8
    parsed = rtcpatch.parse_abs_capture_time(value)
    assert parsed is not None and parsed[0] == pytest.approx(unix, abs=1e-9) and parsed[1] is None
    offset = (-int(0.25 * 2**32)).to_bytes(8, "big", signed=True)
    parsed = rtcpatch.parse_abs_capture_time(value + offset)
    assert parsed is not None and parsed[1] == -0.25
    assert rtcpatch.parse_abs_capture_time(value[:7]) is None


def test_abs_capture_time_is_read_from_a_packet_as_the_patched_map_parses_it() -> None:
    """The exact bytes of RFC 8285 one-byte headers, as libwebrtc sends them: NTP UQ32.32."""
    import aiortc.rtp
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

    rtcpatch.install()
    extension_map = aiortc.rtp.HeaderExtensionsMap()
    extension_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(id=4, uri=rtcpatch.ABS_CAPTURE_TIME_URI),
            ]
        )
    )
    ntp = (3_999_999_999 << 32) | (1 << 31)  # NTP seconds 3999999999 and a half
    raw = bytes([0x10]) + b"0" + bytes([0x47]) + ntp.to_bytes(8, "big") + b"\x00\x00"
    values = extension_map.get(0xBEDE, raw)
    assert values.mid == "0"
    assert values.abs_capture_time == 3_999_999_999.5 - 2_208_988_800
    extension_map.capture = lambda: 1_790_000_000.5
    out = aiortc.rtp.HeaderExtensions(mid="0")
    again = extension_map.get(*extension_map.set(out))
    assert again.abs_capture_time == 1_790_000_000.5 and again.mid == "0"
