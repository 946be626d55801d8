"""Keep secrets in target URLs, and a server's hostile text, out of results, labels and logs.

Stream keys and tokens travel in URLs: a password in the userinfo, values in the query string
(``?token=...``, ``?secret=...``) or a bare query (``?SECRET``), a path parameter
(``;jsessionid=...``) and, for RTMP, the stream name after the application. All are replaced
by ``***``; scheme, host, port and the path's shape stay, so a reader still knows which room
was meant. :func:`redact_text` does the same to every URL inside free text (an exception's
message quotes the URL it failed on).

Text that came from a server (an error body, a reason phrase) is untrusted: it may carry
terminal escapes, control characters that break XML, or megabytes. :func:`clean_text`
strips the first two and bounds the third before such text reaches a terminal, a log, JSON
or JUnit.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["clean_block", "clean_text", "redact_text", "redact_url"]

MASK = "***"
TEXT_LIMIT = 300
BLOCK_LIMIT = 65536
"""Characters of an untrusted document kept (an SDP is a few kilobytes)."""
"""Characters of untrusted text kept (a one-line reason needs no more)."""
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")
"""ANSI/VT escape sequences: CSI (colours, cursor moves), OSC (titles, links), and the
two-character ones."""
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
"""Control characters, and what XML 1.0 and UTF-8 cannot carry: lone surrogates (JSON's
``"\\ud800"`` makes one) and the two non-characters."""
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """``url`` with its password, query values and RTMP stream key masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    # A bare query (?SECRET) is a secret itself; of key=value pairs only the values are.
    query = "&".join(
        f"{pair.split('=', 1)[0]}={MASK}" if "=" in pair else MASK for pair in parts.query.split("&") if pair
    )
    segments = [_mask_parameters(segment) for segment in parts.path.split("/")]
    if parts.scheme.lower() in ("rtmp", "rtmps", "srt") and len(segments) > 2:
        # Everything after the application is the stream name (the key), trailing slash or not.
        segments[2:] = [MASK if segment else segment for segment in segments[2:]]
    return urlunsplit((parts.scheme, netloc, "/".join(segments), query, ""))


def _mask_parameters(segment: str) -> str:
    """A path segment's ``;name=value`` parameters (session ids) masked."""
    name, sep, _ = segment.partition(";")
    return f"{name};{MASK}" if sep else segment


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`)."""

    def one(match: re.Match[str]) -> str:
        url = match.group(0)
        kept = url.rstrip(".,;:)]")  # punctuation of the sentence, not of the URL
        return redact_url(kept) + url[len(kept) :]

    return _URL.sub(one, text)


def clean_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """Untrusted ``text`` made safe to show: escapes and control characters removed (a line
    break becomes a space), cut to ``limit`` characters."""
    text = _ESCAPES.sub("", text)
    text = _CONTROLS.sub("", text.replace("\r\n", " ").replace("\n", " ").replace("\t", " "))
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def clean_block(text: str, limit: int = BLOCK_LIMIT) -> str:
    """An untrusted document (a server's SDP or error page) made safe to store and show, its
    lines kept: escapes and control characters other than line breaks and tabs removed, cut
    to ``limit`` characters."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", text).replace("\r\n", "\n").replace("\t", " "))
    return text if len(text) <= limit else text[:limit] + f"\n[cut at {limit:,} characters]"
