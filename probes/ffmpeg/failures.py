"""PyAV and socket errors mapped to the project's error kinds, where they enter the project.

The same FFmpeg error means different things at different steps: an interrupted read (our
timeout firing) while opening means the stream never started, while watching it means the
media stopped. So each error is classified with the step it happened in.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from typing import Literal

import av

from qoe.errors import (
    ConfigError,
    ConnectError,
    CorruptStreamError,
    DisconnectedError,
    NoMediaError,
    NotFoundError,
    ProbeError,
    ProtocolError,
    RejectedError,
    StreamEndedError,
)
from qoe.redact import redact_url

__all__ = ["Step", "classify", "connect_error"]

Step = Literal["open", "probe", "read", "write"]
"""``open``: the protocol handshake (RTMP connect and play, the HTTP request); ``probe``:
FFmpeg's stream probing; ``read``: demuxing once media flowed; ``write``: publishing."""

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")
_REFUSED = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)


def connect_error(exc: OSError, host: str, port: int) -> ConnectError:
    """A failed TCP connect (refused, unreachable, DNS, timed out) as a ``connect`` error."""
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve {host}: {exc.strerror or exc}")
    if isinstance(exc, TimeoutError):
        return ConnectError(f"TCP connect to {host}:{port} timed out")
    # asyncio words a refused connect as "Connect call failed (host, port)": name the errno.
    reason = os.strerror(exc.errno) if exc.errno else exc.strerror or type(exc).__name__
    return ConnectError(f"TCP connect to {host}:{port} failed: {reason}")


def classify(exc: BaseException, step: Step, *, timeout: float) -> ProbeError | ConfigError:
    """The project error for ``exc`` raised at ``step``; ``timeout`` is the limit that step had
    (seconds), named in the message when it ran out."""
    if isinstance(exc, ProbeError | ConfigError):
        return exc
    text = _text(exc)
    if isinstance(exc, av.ProtocolNotFoundError | av.DemuxerNotFoundError | av.MuxerNotFoundError):
        return ConfigError(f"the bundled FFmpeg cannot handle this URL: {text}")
    if isinstance(exc, av.HTTPNotFoundError):
        return NotFoundError(f"HTTP 404: {text}")
    if isinstance(exc, av.HTTPClientError | av.HTTPServerError | av.HTTPError):
        return RejectedError(f"the server answered with an HTTP error: {text}")
    if isinstance(exc, av.ExitError | TimeoutError):
        return _timed_out(step, timeout)
    if isinstance(exc, av.InvalidDataError):
        return CorruptStreamError(f"data that does not {_verb(step)}: {text}")
    if isinstance(exc, EOFError):
        if step in ("open", "probe"):
            return StreamEndedError(f"the stream ended before it could be read ({step}): {text}")
        return StreamEndedError("the server ended the stream")
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) in _REFUSED:
        return ConnectError(f"connection refused: {text}")
    if isinstance(exc, OSError):
        if step == "open":
            # nginx-rtmp answers an unknown application by closing the connection, which
            # FFmpeg reports as EIO during the handshake; a reset there is the same refusal.
            return RejectedError(f"the server closed the connection while opening the stream: {text}")
        if step == "write":
            return DisconnectedError(f"the server stopped taking the stream: {text}")
        return DisconnectedError(f"the connection broke: {text}")
    if isinstance(exc, av.FFmpegError):
        return ProtocolError(f"FFmpeg could not {_verb(step)} the stream: {text}")
    return ProtocolError(f"{type(exc).__name__}: {text}")


def _timed_out(step: Step, timeout: float) -> ProbeError:
    if step == "open":
        return NoMediaError(
            f"the server took the connection but no stream started within {timeout:g} s "
            "(wrong stream key, or nobody is publishing)"
        )
    if step == "probe":
        return NoMediaError(f"no decodable audio or video found within {timeout:g} s")
    if step == "write":
        return DisconnectedError(f"the server took no data for {timeout:g} s")
    return DisconnectedError(f"no data for {timeout:g} s; the stream stalled or the sender is gone")


def _verb(step: Step) -> str:
    return {"open": "open", "probe": "probe", "read": "demux", "write": "mux"}[step]


def _text(exc: BaseException) -> str:
    """The first line of the message, with any URL in it redacted (PyAV names the URL)."""
    line = (str(exc) or type(exc).__name__).splitlines()[0]
    return _URL.sub(lambda m: redact_url(m.group(0)), line)
