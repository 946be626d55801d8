"""Opening a live stream with FFmpeg in steps a join time can be split by.

PyAV's ``av.open`` runs ``avformat_open_input`` and ``avformat_find_stream_info`` in one call,
so the protocol handshake and FFmpeg's stream probing (which dominates join time) cannot be
told apart from the outside. For RTMP and HTTP-FLV they are opened as two containers:

- the *transport*: the URL opened with FFmpeg's ``data`` demuxer, which performs the protocol
  open (TCP, RTMP handshake, connect, createStream and play up to the first media message;
  or the HTTP request up to the response headers) and then hands over the FLV byte stream
  as it arrives, unparsed. Its return is the ``open`` milestone.
- the *demuxer*: FFmpeg's ``flv`` demuxer reading those bytes through a Python file object
  (:class:`ByteBridge`). Its ``av.open`` is stream probing alone: the ``stream_probing``
  milestone.

HLS has no byte stream to split (the playlist names the segments), so ``open`` is the
playlist fetched by the probe itself (a 404 is reported from there) and ``stream_probing``
is FFmpeg's open of the HLS demuxer, which fetches the playlist again, the first segment and
probes. RTSP is a demuxer over its own sockets: one ``open`` milestone covers both.

Probing options: ``fpsprobesize=0`` stops FFmpeg from decoding 20 frames to estimate the
frame rate (about 1 s at 30 fps; the probe measures the frame rate itself), so probing ends
once the first keyframe has given the video's parameters. ``fflags=nobuffer`` is *not* used:
it drops the packets read while probing, that keyframe among them, which costs a whole GOP
of join time. ``tcp_nodelay=1`` keeps Nagle's algorithm from holding the client's small
handshake messages for a delayed ACK (about 130 ms of join time against nginx-rtmp).
"""

from __future__ import annotations

import http.client
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av

from probes.ffmpeg.failures import Step, classify
from qoe import clock
from qoe.errors import CorruptStreamError, NotFoundError, RejectedError

__all__ = ["PLAYLIST_MAX_BYTES", "ByteBridge", "Limits", "MediaInput", "open_input"]

TRANSPORT_OPTIONS = {"probesize": "32", "raw_packet_size": "65536", "tcp_nodelay": "1"}
"""The ``data`` demuxer: no probing to speak of (one read), reads of up to 64 KiB returned
as soon as any bytes are there."""
PROBE_OPTIONS = {"fpsprobesize": "0"}
HLS_OPTIONS = {**PROBE_OPTIONS, "tcp_nodelay": "1", "http_persistent": "0"}
RTSP_OPTIONS = {**PROBE_OPTIONS, "rtsp_transport": "tcp"}
PLAYLIST_MAX_BYTES = 1 << 20
FLV_SIGNATURE = b"FLV"


@dataclass(frozen=True)
class Limits:
    """Time limits of one open, seconds."""

    join: float
    """For everything up to the end of stream probing."""
    read: float
    """For any one read once media flowed (the probe's media timeout)."""


@dataclass
class MediaInput:
    """An opened stream: ``container`` yields its packets; ``close()`` releases everything."""

    container: Any
    """The ``av.container.InputContainer`` that demuxes the media."""
    transport: Any = None
    """The transport container under a :class:`ByteBridge`, if any."""
    bytes_read: Callable[[], int] = field(default=lambda: 0)

    def close(self) -> None:
        for container in (self.container, self.transport):
            if container is not None:
                container.close()


class ByteBridge:
    """A read-only file object over a transport container's raw packets (FFmpeg ``data``).

    ``read`` returns what the next packet holds (or what is left of it) and an empty string
    at the end of the stream or once ``stop`` is set, which ends the demuxer above cleanly
    between two reads. Errors of the transport (a timeout, a reset) pass through unchanged.
    A stream that does not start with the FLV signature is refused at once: FFmpeg's FLV
    demuxer would search it for tags to the end (FFmpeg's RTMP writes the signature itself).
    """

    def __init__(self, packets: Iterator[Any], stop: threading.Event) -> None:
        self._packets = packets
        self._stop = stop
        self._chunk = memoryview(b"")
        self._offset = 0
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._chunk):
            if self._stop.is_set():
                return b""
            try:
                packet = next(self._packets)
            except StopIteration:
                return b""
            self._chunk, self._offset = memoryview(bytes(packet)), 0
            if self.bytes == 0 and self._chunk[:3] != FLV_SIGNATURE[: len(self._chunk)]:
                raise CorruptStreamError("not an FLV stream (it does not start with 'FLV')")
        end = len(self._chunk) if size < 0 else min(len(self._chunk), self._offset + size)
        data = bytes(self._chunk[self._offset : end])
        self._offset = end
        self.bytes += len(data)
        return data

    def close(self) -> None:
        """Nothing to release here; the transport container is closed by its owner."""


def open_input(
    kind: str,
    url: str,
    limits: Limits,
    mark: Callable[[str], None],
    stop: threading.Event,
    *,
    host_header: str | None = None,
) -> MediaInput:
    """Open ``url`` as ``kind`` (blocking), marking ``open`` and ``stream_probing``.

    ``host_header`` is the Host an HTTP request must name when ``url`` points at a relay.
    Raises the project error for whatever goes wrong (see :func:`~.failures.classify`).
    """
    started = clock.monotonic()

    def left() -> float:
        return max(0.1, limits.join - (clock.monotonic() - started))

    http_options = {"headers": f"Host: {host_header}\r\n"} if host_header else {}
    if kind == "hls":
        _fetch_playlist(url, left(), host_header)
        mark("open")
        container = _open(url, None, {**HLS_OPTIONS, **http_options}, (left(), limits.read), "probe")
        mark("stream_probing")
        return MediaInput(container)
    if kind == "rtsp":
        container = _open(url, None, RTSP_OPTIONS, (left(), limits.read), "open")
        mark("open")
        return MediaInput(container)
    options = {**TRANSPORT_OPTIONS, **http_options}
    transport = _open(url, "data", options, (left(), limits.read), "open")
    try:
        mark("open")
        bridge = ByteBridge(transport.demux(), stop)
        container = _open(bridge, "flv", PROBE_OPTIONS, (left(), limits.read), "probe")
    except BaseException:
        transport.close()
        raise
    mark("stream_probing")
    return MediaInput(container, transport, lambda: bridge.bytes)


def _open(
    source: Any,
    format: str | None,
    options: dict[str, str],
    timeout: tuple[float, float],
    step: Step,
) -> Any:
    started = clock.monotonic()
    try:
        return av.open(source, format=format, options=options, timeout=timeout)
    except Exception as exc:
        # FFmpeg's RTMP reports its interrupted read (our timeout firing) as EIO.
        timed_out = isinstance(exc, OSError) and clock.monotonic() - started >= 0.9 * timeout[0]
        raise classify(TimeoutError() if timed_out else exc, step, timeout=timeout[0]) from exc


def _fetch_playlist(url: str, timeout: float, host_header: str | None) -> None:
    """GET the playlist; a 404 is ``not_found``, other HTTP errors ``rejected``, anything
    that is not an M3U8 playlist ``corrupt_stream``. Certificates are not verified, as
    FFmpeg does not verify them by default (``tls_verify=0``)."""
    request = urllib.request.Request(url, headers={"Host": host_header} if host_header else {})
    context = None
    if url.lower().startswith("https:"):  # building one loads the CA store: about 40 ms
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = response.read(PLAYLIST_MAX_BYTES)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFoundError(f"HTTP 404 ({exc.reason}) for the playlist") from None
        raise RejectedError(f"HTTP {exc.code} {exc.reason} for the playlist") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None)
        cause = reason if isinstance(reason, BaseException) else exc
        raise classify(cause, "open", timeout=timeout) from None
    if not body.lstrip(b"\xef\xbb\xbf").startswith(b"#EXTM3U"):
        raise CorruptStreamError("the playlist is not an M3U8 playlist (no #EXTM3U)")
