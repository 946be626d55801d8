"""The FFmpeg viewer probe: watch an RTMP, HTTP-FLV, HLS or RTSP stream as a player does.

Join milestones, in order (``PHASES``): ``connect`` (a TCP connect of the probe's own to the
server, before FFmpeg's), ``open`` (the protocol handshake: RTMP handshake, connect and play
until the first media message; the HTTP response; the HLS playlist), ``stream_probing``
(FFmpeg's stream probing, which dominates join time), ``first_packet``, ``first_keyframe``
and ``first_decoded_frame``. RTSP has no separate probing milestone (see :mod:`.inputs`).

The demuxing and decoding run in a thread (:mod:`.reader`); this coroutine waits for the
first frame within the join timeout, then watches until the duration is up, failing early
if the stream ends, breaks or goes silent for the media timeout. Audio and video share the
container's time base (FLV milliseconds, MPEG-TS 90 kHz), so both clock maps are identity
and the A/V offset is flash onset minus tone onset in container time (ITU-R BT.1359 sign).
"""

from __future__ import annotations

import asyncio
from typing import Any

from probes.base import ProbeSpec, Watch
from probes.ffmpeg.inputs import Limits
from probes.ffmpeg.reader import Reader, ReaderConfig
from probes.ffmpeg.route import Route, tcp_connect
from probes.ffmpeg.target import endpoint
from probes.options import QUALITY_OPTION, Option
from qoe import clock
from qoe.errors import DisconnectedError, NoMediaError, StreamEndedError
from qoe.result import ProbeResult
from qoe.signal import HOST_TONE_HZ
from qoe.timeline import ClockPoint, Timeline

__all__ = ["PHASES", "RTSP_PHASES", "phases", "probe"]

PHASES = ("connect", "open", "stream_probing", "first_packet", "first_keyframe", "first_decoded_frame")
RTSP_PHASES = ("connect", "open", "first_packet", "first_keyframe", "first_decoded_frame")
WATCH_PERIOD = 0.1
STOP_GRACE = 1.0
"""Seconds the probe waits for its reader thread once it stops watching; a thread still
blocked in a read then finishes on its own (within the media timeout)."""
JOIN_GRACE = 0.5
"""Seconds past the join window the probe waits for the reader's own, more specific error."""
SILENCE_GRACE = 1.0
"""The reader's own read timeout fires after the media timeout; this watchdog, a little
later, is the backstop should FFmpeg not return."""


OPTIONS = (
    Option(
        "tone_hz", float, HOST_TONE_HZ, "frequency of the tone markers to listen for", "Hz", positive=True
    ),
    Option("slot", int, 0, "which flash marker to read: 0 the host's, 1 a co-host's"),
    QUALITY_OPTION,
)
"""What ``options`` an RTMP, HTTP-FLV, HLS or RTSP viewer takes (see :mod:`probes.options`)."""


def phases(kind: str) -> tuple[str, ...]:
    return RTSP_PHASES if kind == "rtsp" else PHASES


async def probe(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
    """Watch ``spec.url`` as ``spec.kind`` until the run stops watching; record what it sees.

    Options: ``tone_hz`` (default the host's), ``slot`` (flash marker, 0 host, 1 co-host).
    """
    timeline = watch.open_log(phases(spec.kind), "viewer")
    route = Route(spec)
    reader: Reader | None = None

    async def report(stopped: float) -> None:
        # The reader thread stops and hands over what it read; frames it paced past the
        # window's end are not part of it.
        if reader is not None:
            reader.stop()
        await route.close()  # cuts a proxied read short
        if reader is not None:
            await reader.join(STOP_GRACE)
            reader.snapshot(timeline, stopped)
            timeline.quality_skipped = await reader.settle_scoring()
        timeline.finish(stopped)
        identity = [ClockPoint(0.0, 0.0)]
        timeline.sync = {"audio": identity, "video": list(identity)}
        timeline.network = route.stats

    watch.on_close(report)
    await route.__aenter__()
    host, port = endpoint(route.url)
    # FFmpeg's own timeouts end its blocking calls before the probe's deadline does, so
    # the reader thread is gone by the time the result is.
    budget = min(spec.join_timeout, spec.duration, spec.deadline - STOP_GRACE)
    await tcp_connect(host, port, budget)
    timeline.mark("connect")
    limits = Limits(
        join=max(0.1, budget - (clock.monotonic() - timeline.start)),
        read=min(spec.media_timeout, max(0.1, spec.deadline - STOP_GRACE)),
    )
    config = ReaderConfig(
        kind=spec.kind,
        url=route.url,
        limits=limits,
        decode=spec.decode,
        tone_hz=spec.options["tone_hz"],
        slot=spec.options["slot"],
        quality=None if spec.options["quality"] == "all" else spec.options["quality"],
        host_header=route.host_header,
    )
    reader = Reader(config, asyncio.get_running_loop())
    reader.start()
    await _watch(spec, timeline, reader)


async def _watch(spec: ProbeSpec, timeline: Timeline, reader: Reader) -> None:
    deadline = timeline.start + spec.duration
    join_end = min(timeline.start + spec.join_timeout, deadline)
    first: asyncio.Future[Any] = asyncio.ensure_future(reader.first_frame.wait())
    try:
        await asyncio.wait(
            {first, reader.done},
            timeout=max(0.0, join_end - clock.monotonic()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        first.cancel()
    if not reader.first_frame.is_set():
        # The reader's own open timeout ends with the join window (FFmpeg checks it every
        # 100 ms): give it a moment to say which step it was stuck in.
        await asyncio.wait({reader.done}, timeout=max(0.0, min(JOIN_GRACE, deadline - clock.monotonic())))
        _raise_if_done(reader)
        reached = [p for p in timeline.phases if p in timeline.milestones or p in reader.milestones]
        raise NoMediaError(
            f"no decoded video frame within {spec.join_timeout:g} s "
            f"(reached: {', '.join(reached) or 'nothing'})"
        )
    while (left := deadline - clock.monotonic()) > 0:
        await asyncio.wait({reader.done}, timeout=min(left, WATCH_PERIOD))
        if reader.done.done():
            await _play_out(reader, deadline)
            _raise_if_done(reader)
        last = reader.last_packet_at
        if last is not None and clock.monotonic() - last > spec.media_timeout + SILENCE_GRACE:
            raise DisconnectedError(f"no media for {spec.media_timeout:g} s; the sender is gone")


async def _play_out(reader: Reader, deadline: float) -> None:
    """Show the frames already received before stopping, as a player does when its stream
    ends: the end comes at the last frame's render time (or the deadline), not before."""
    if reader.video:
        wait = min(reader.video[-1].at, deadline) - clock.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


def _raise_if_done(reader: Reader) -> None:
    """Raise why the reader ended (it only ends on its own when something went wrong)."""
    if reader.done.done():
        reader.done.result()
        raise StreamEndedError("the stream ended")
