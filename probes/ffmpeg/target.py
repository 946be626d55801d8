"""What a URL tells the FFmpeg probes: its kind, the TCP endpoint behind it, and how to point
it at another endpoint (the impairment proxy) without changing what it asks for.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from qoe.errors import ConfigError
from qoe.redact import redact_url

__all__ = ["DEFAULT_PORTS", "KINDS", "endpoint", "kind_of", "with_endpoint"]

KINDS = ("rtmp", "flv", "hls", "rtsp")
"""Viewer kinds the bundled FFmpeg serves. SRT is not among them: PyAV's wheels are built
without libsrt (``srt://`` opens with "Protocol not found")."""

SCHEMES: dict[str, tuple[str, ...]] = {
    "rtmp": ("rtmp", "rtmps"),
    "flv": ("http", "https"),
    "hls": ("http", "https"),
    "rtsp": ("rtsp",),
}
"""URL schemes each kind accepts."""

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443, "http": 80, "https": 443, "rtsp": 554}


def kind_of(url: str) -> str | None:
    """The viewer kind a URL implies, or None if it is none of ours.

    ``rtmp://`` and ``rtmps://`` are ``rtmp``; ``rtsp://`` is ``rtsp``; an http(s) path ending
    in ``.flv`` is ``flv`` and in ``.m3u8`` is ``hls`` (HTTP-FLV and HLS, as CDNs name them).
    ``srt://`` is refused with a ConfigError: the bundled FFmpeg has no SRT.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "srt":
        raise ConfigError(
            f"cannot probe {redact_url(url)!r}: the bundled FFmpeg (PyAV's wheels) has no SRT protocol"
        )
    if not parts.hostname:
        return None
    if scheme in SCHEMES["rtmp"]:
        return "rtmp"
    if scheme in SCHEMES["rtsp"]:
        return "rtsp"
    if scheme in ("http", "https"):
        path = parts.path.lower()
        if path.endswith(".flv"):
            return "flv"
        if path.endswith(".m3u8"):
            return "hls"
    return None


def endpoint(url: str) -> tuple[str, int]:
    """``(host, port)`` of the TCP connection ``url`` starts with (default port by scheme)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ConfigError(f"no host in {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad port in {url!r}: {exc}") from None
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme.lower())
        if port is None:
            raise ConfigError(f"no port in {url!r} and no default for {parts.scheme!r}")
    return host, port


def with_endpoint(url: str, host: str, port: int) -> str:
    """``url`` with its host and port replaced (user info, path and query kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{userinfo}@{hostport}" if userinfo else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
