"""A room's stream as FFmpeg-family players take it: HTTP-FLV and HLS, muxed once per room.

Most live-commerce viewers do not watch over WebRTC: they get HTTP-FLV (an FLV byte stream
over one long HTTP response) or HLS. So every room is also served as

- ``GET /flv/ROOM.flv``: FLV, from the next keyframe on, for as long as the client reads;
- ``GET /hls/ROOM/index.m3u8`` and its segments: HLS with 1 s MPEG-TS segments, six listed.

Both carry what a WebRTC viewer of the room's single video gets: the host's picture, in
H.264 from the room's one H.264 encoder (the encoder an H.264 WebRTC viewer takes too), with
keyframes on the wall-clock second so segments cut on time and a player joins within one.
The room's audio is Opus, which neither FLV nor MPEG-TS players take, so it is transcoded to
AAC once per room: the Opus packets decode from their timestamps (PyAV stamps them with the
encoder's look-ahead removed, and the decoder does not skip it) and the AAC encoder keeps
those timestamps, so the A/V relation the room puts in is what the container carries.

One :class:`ContainerOutput` per room muxes both, in a writer thread of its own (muxing and
HLS's file writes stay off the event loop). It starts with the first request and stops when
no FLV client has been connected and no HLS file asked for in :data:`IDLE_SECONDS`, or when
the room's source is replaced (a new publisher's timestamps start over; clients then see the
stream end, as they would on a media server, and reconnect).

There is no GOP cache: an FLV client starts at the next keyframe rather than a burst of the
last second, so its first frames are as live as the rest and glass-to-glass holds from the
start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import shutil
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

import av
from aiohttp import web

from qoe import clock
from qoe.media import AudioEncoder, Fanout
from qoe.media.encode import AUDIO_TIME_BASE, VIDEO_TIME_BASE
from qoe.media.fanout import PacketTrack

__all__ = ["HLS_SEGMENT_SECONDS", "IDLE_SECONDS", "ContainerOutput"]

log = logging.getLogger(__name__)

HLS_SEGMENT_SECONDS = 1
"""Target HLS segment length; segments cut at the keyframes the output asks for each second."""
HLS_LIST_SIZE = 6
"""Segments a playlist lists (older ones are deleted)."""
IDLE_SECONDS = 30.0
"""An output nobody has asked anything of for this long stops (and its encoders with it)."""
PLAYLIST_WAIT_SECONDS = 6.0
"""How long a request for the first playlist waits for the first segments to be cut."""
CLIENT_QUEUE_TAGS = 512
"""FLV tags queued for one HTTP client (some 8 s) before it skips to the next keyframe."""
AAC_BITRATE = 128_000
FLV_OPTIONS = {"flvflags": "no_duration_filesize", "max_interleave_delta": "1"}
"""A live FLV has no duration or size to write at the end, and tags go out as they come (the
room paces them already); FFmpeg's default interleaving would hold each stream for the other."""

_FLV_HEADER_SIZE = 13  # "FLV", version, flags, header length, PreviousTagSize0
_TAG = struct.Struct(">B3s3sB3s")  # type, data size, timestamp, timestamp extension, stream id
_AUDIO, _VIDEO, _SCRIPT = 8, 9, 18


class _FlvTags:
    """Splits the muxer's FLV byte stream into tags: the file header and the tags that set
    up a decoder (metadata, AVC and AAC sequence headers) are kept for clients that join
    later; every other tag is handed on, keyframes marked."""

    def __init__(self, on_tag: Any) -> None:
        self._buffer = bytearray()
        self._on_tag = on_tag
        self.header = b""
        self.setup: dict[int, bytes] = {}
        """Tag type -> the latest setup tag of that type (script data, sequence headers)."""

    def write(self, data: bytes) -> int:
        self._buffer += data
        if not self.header:
            if len(self._buffer) < _FLV_HEADER_SIZE:
                return len(data)
            self.header = bytes(self._buffer[:_FLV_HEADER_SIZE])
            del self._buffer[:_FLV_HEADER_SIZE]
        while len(self._buffer) >= _TAG.size:
            kind, size_bytes, *_ = _TAG.unpack_from(self._buffer)
            end = _TAG.size + int.from_bytes(size_bytes) + 4
            if len(self._buffer) < end:
                break
            tag = bytes(self._buffer[:end])
            del self._buffer[:end]
            body = tag[_TAG.size : _TAG.size + 2]
            if kind == _SCRIPT or (kind in (_AUDIO, _VIDEO) and len(body) == 2 and body[1] == 0):
                self.setup[kind if kind == _SCRIPT else kind * 10] = tag
            else:
                self._on_tag(tag, kind == _VIDEO and body[0] >> 4 == 1)
        return len(data)

    def preamble(self) -> bytes:
        """What a joining client reads before its first keyframe."""
        return self.header + b"".join(self.setup.values())  # in the order the muxer wrote them


class _FlvClient:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE_TAGS)
        self.started = False
        self.skipped = 0

    def offer(self, tag: bytes, keyframe: bool) -> None:
        if not self.started:
            if not keyframe:
                return
            self.started = True
        try:
            self.queue.put_nowait(tag)
        except asyncio.QueueFull:
            self.skipped += 1
            self.started = False  # a client too slow to keep up resumes at a keyframe

    def end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class ContainerOutput:
    """A room's HTTP-FLV and HLS output, from its :class:`Fanout` (see the module doc)."""

    def __init__(self, fanout: Fanout, name: str) -> None:
        self.name = name
        self.fanout = fanout
        self._loop = asyncio.get_running_loop()
        self.dir = Path(tempfile.mkdtemp(prefix=f"qoe-room-{name}-hls-"))
        self._flv = _FlvTags(self._tag_ready)
        self._clients: set[_FlvClient] = set()
        self._queue: queue.SimpleQueue[tuple[str, av.Packet] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name=f"qoe-room-mux-{name}", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._tracks: tuple[PacketTrack, PacketTrack] | None = None
        self.used_at = clock.monotonic()
        self.ended = asyncio.Event()
        self.error: str | None = None
        self.frames = 0

    async def start(self) -> None:
        audio, video = self.fanout.subscribe(codec="h264")
        self._tracks = (audio, video)
        self._thread.start()
        self._tasks = [
            asyncio.create_task(self._pump(audio), name=f"qoe-room-mux-audio-{self.name}"),
            asyncio.create_task(self._pump(video), name=f"qoe-room-mux-video-{self.name}"),
            asyncio.create_task(self._keyframes(), name=f"qoe-room-mux-gop-{self.name}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tracks is not None:
            for track in self._tracks:
                track.stop()
        if self._thread.is_alive():
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, 5.0)
        self._end()
        shutil.rmtree(self.dir, ignore_errors=True)

    def info(self) -> dict[str, Any]:
        """For the room's JSON: who watches, what went out, and why it stopped if it did."""
        return {
            "flv_clients": len(self._clients),
            "flv_clients_skipped": sum(c.skipped for c in self._clients),
            "frames": self.frames,
            "error": self.error,
        }

    def idle(self) -> bool:
        return not self._clients and clock.monotonic() - self.used_at > IDLE_SECONDS

    # -- HTTP ------------------------------------------------------------------------------

    async def serve_flv(self, request: web.Request) -> web.StreamResponse:
        client = _FlvClient()
        self._clients.add(client)
        response = web.StreamResponse(headers={"Content-Type": "video/x-flv", "Cache-Control": "no-cache"})
        try:
            await response.prepare(request)
            sent_preamble = False
            while (tag := await client.queue.get()) is not None:
                if not sent_preamble:
                    await response.write(self._flv.preamble())
                    sent_preamble = True
                await response.write(tag)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(client)
            self.used_at = clock.monotonic()
        return response

    async def serve_hls(self, request: web.Request, file: str) -> web.StreamResponse:
        self.used_at = clock.monotonic()
        path = self.dir / file
        if file == "index.m3u8":
            deadline = clock.monotonic() + PLAYLIST_WAIT_SECONDS
            while not path.exists() and not self.ended.is_set() and clock.monotonic() < deadline:
                await asyncio.sleep(0.05)
            kind = "application/vnd.apple.mpegurl"
        elif file.endswith(".ts") and "/" not in file:
            kind = "video/mp2t"
        else:
            return web.Response(status=404, text=f"no HLS file {file!r}\n")
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError:
            return web.Response(status=404, text=f"no HLS file {file!r} (yet, or any longer)\n")
        return web.Response(body=body, headers={"Content-Type": kind, "Cache-Control": "no-cache"})

    # -- on the event loop ---------------------------------------------------------------

    async def _pump(self, track: PacketTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                self._queue.put((track.kind, await track.recv()))

    async def _keyframes(self) -> None:
        """Ask for an H.264 keyframe on every wall-clock second (segment boundaries)."""
        while True:
            now = clock.wall()
            await asyncio.sleep(HLS_SEGMENT_SECONDS - now % HLS_SEGMENT_SECONDS)
            self.fanout.request_keyframe("h264")

    def _tag_ready(self, tag: bytes, keyframe: bool) -> None:
        self._loop.call_soon_threadsafe(self._offer, tag, keyframe)

    def _offer(self, tag: bytes, keyframe: bool) -> None:
        for client in list(self._clients):
            client.offer(tag, keyframe)

    def _end(self) -> None:
        self.ended.set()
        for client in list(self._clients):
            client.end()

    # -- in the writer thread --------------------------------------------------------------

    def _write(self) -> None:
        containers: list[Any] = []
        try:
            flv = av.open(cast(Any, self._flv), "w", format="flv", options=FLV_OPTIONS)
            hls = av.open(
                str(self.dir / "index.m3u8"),
                "w",
                format="hls",
                options={
                    "hls_time": str(HLS_SEGMENT_SECONDS),
                    "hls_list_size": str(HLS_LIST_SIZE),
                    "hls_flags": "delete_segments+independent_segments+omit_endlist",
                    "hls_segment_filename": str(self.dir / "segment%06d.ts"),
                    "max_interleave_delta": "1",
                },
            )
            containers = [flv, hls]
            self._mux(containers)
        except Exception as exc:  # FFmpeg raises many types; the clients need only an end
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("room %s: HTTP-FLV/HLS output stopped: %s", self.name, self.error)
        finally:
            for container in containers:
                with contextlib.suppress(Exception):
                    container.close()
            self._loop.call_soon_threadsafe(self._end)

    def _mux(self, containers: list[Any]) -> None:
        audio_in = av.AudioCodecContext.create("opus", "r")
        audio_in.sample_rate, audio_in.layout = 48000, "stereo"
        aac = AudioEncoder(codec="aac", bitrate=AAC_BITRATE)
        streams: list[dict[str, Any]] = []
        start = 0.0
        """Seconds (on the source's clock) of the first picture."""
        last: dict[str, float] = {}
        """Seconds of each stream's latest packet."""
        while (item := self._queue.get()) is not None:
            kind, packet = item
            if kind == "video" and not streams:
                # The first (key)frame sizes the picture; muxers get their streams now.
                size = _h264_size(packet)
                for container in containers:
                    video = container.add_mux_stream("h264", rate=30, width=size[0], height=size[1])
                    video.time_base = VIDEO_TIME_BASE
                    audio = container.add_stream("aac", rate=48000)
                    audio.codec_context.extradata = aac.extradata
                    streams.append({"video": video, "audio": audio})
                start = _seconds(packet, "video")
            if not streams or packet.pts is None:
                continue  # audio before the first picture: no stream to put it in yet
            if kind == "video":
                out = [packet]
            else:
                out = []
                for frame in audio_in.decode(packet):
                    out += aac.encode_frame(frame, packet.pts)
            for encoded in out:
                at = _seconds(encoded, kind)
                if at < last.get(kind, start):
                    if kind in last:
                        raise RuntimeError("the room's source started over")
                    continue  # FLV takes nothing stamped before its first packet
                last[kind] = at
                for container, stream in zip(containers, streams, strict=True):
                    container.mux(_copy(encoded, stream[kind], kind))
            if kind == "video":
                self.frames += 1


def _seconds(packet: av.Packet, kind: str) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    assert ts is not None, "the room stamps every packet"
    return ts * float(VIDEO_TIME_BASE if kind == "video" else AUDIO_TIME_BASE)


def _copy(packet: av.Packet, stream: Any, kind: str) -> av.Packet:
    """A packet of its own for one muxer: muxing rebases and takes the packet it is given,
    and the room's packets are shared with every WebRTC viewer's sender."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts = packet.pts, packet.dts
    copy.time_base = VIDEO_TIME_BASE if kind == "video" else AUDIO_TIME_BASE
    copy.is_keyframe = packet.is_keyframe
    copy.stream = stream
    return copy


def _h264_size(packet: av.Packet) -> tuple[int, int]:
    """The picture size of an H.264 keyframe (its SPS), by decoding it."""
    decoder = av.VideoCodecContext.create("h264", "r")
    decoder.thread_count = 1
    frames = [*decoder.decode(packet), *decoder.decode(None)]
    if not frames:
        raise RuntimeError("the room's first H.264 frame does not decode")
    return frames[0].width, frames[0].height
