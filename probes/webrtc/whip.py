"""WHIP publisher probe: publish the test signal into a room, as a host's app does.

The canary host of a room (and, later, its co-host). It reports how long it took to get
connected, with the same milestones as the viewer up to ``dtls_connected``, and how many
frames it sent. The signal it sends is what viewer probes read back.
"""

from __future__ import annotations

import functools

from probes.base import ProbeSpec, Watch
from probes.options import SENDER_OPTIONS, WEBRTC_OPTIONS
from probes.webrtc.peer import prefer_codecs
from probes.webrtc.session import Session
from qoe import clock, rtcpatch
from qoe.errors import IceError
from qoe.media import Fanout, Knobs, SignalSource
from qoe.media.fanout import PacketTrack
from qoe.result import ProbeResult

__all__ = ["PHASES", "probe"]

PHASES = ("signaling", "ice_connected", "dtls_connected")


OPTIONS = SENDER_OPTIONS + WEBRTC_OPTIONS
"""What ``options`` a WHIP publisher takes (see :mod:`probes.options`)."""


def _due_of(track: PacketTrack) -> float | None:
    """When the packet ``track`` is sending was due to leave (its sender reports say so)."""
    return track.due_wall


async def probe(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
    """Publish to ``spec.url`` over WHIP until the run stops watching; record what it sends.

    Options: ``knobs`` (a :class:`~qoe.media.Knobs`), ``tone_hz``, ``slot`` (flash marker
    position: 0 host, 1 co-host), ``width``, ``height``; ``token`` and ``ice_transport`` as
    for every WebRTC session (:mod:`probes.webrtc.session`).
    """
    timeline = watch.open_log(PHASES, "publisher")
    fanout = Fanout()
    options = spec.options
    source = SignalSource(
        fanout,
        knobs=options["knobs"] or Knobs(),
        tone_hz=options["tone_hz"],
        slot=options["slot"],
        width=options["width"],
        height=options["height"],
    )
    audio, video = fanout.subscribe()
    session = Session(
        spec.url,
        timeline,
        token=options["token"],
        relay=options["ice_transport"] == "relay",
        network=spec.network(),
        seed=spec.seed,
        may_contact=spec.may_contact,
    )
    watch.defer(session.close)

    async def report(stopped: float) -> None:
        await source.stop()
        audio.stop()
        video.stop()
        timeline.finish(stopped)
        timeline.published = (source.frames_sent, source.audio_frames_sent)
        timeline.network = session.network_snapshot()

    watch.on_close(report)
    for track, codecs in ((video, ("VP8",)), (audio, ("opus",))):
        transceiver = session.pc.addTransceiver(track, direction="sendonly")
        prefer_codecs(transceiver, track.kind, codecs)
        transceiver.sender._send_keyframe = fanout.request_keyframe  # type: ignore[method-assign]
        rtcpatch.report_due_times(transceiver.sender, functools.partial(_due_of, track))
        if track is video:
            rtcpatch.send_capture_time(transceiver.sender, lambda: video.capture_wall)
    await source.start()
    deadline = watch.until
    await session.negotiate(timeout=min(spec.join_timeout, spec.duration))
    join_left = min(timeline.start + spec.join_timeout, deadline) - clock.monotonic()
    if not await session.wait(session.connected, max(0.0, join_left)):
        raise IceError(f"not connected within {spec.join_timeout:g} s")
    await session.wait(session.failed, max(0.0, deadline - clock.monotonic()))
