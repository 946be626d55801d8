"""Keep secrets in target URLs out of results, labels, logs and error messages.

Stream keys and tokens travel in URLs: a password in the userinfo, values in the query string
(``?token=...``, ``?secret=...``) and, for RTMP, the stream name after the application. All are
replaced by ``***``; scheme, host, port and the path's shape stay, so a reader still knows
which room was meant.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact_url"]

MASK = "***"


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
    query = parts.query
    if query:
        query = urlencode([(k, MASK) for k, _ in parse_qsl(query, keep_blank_values=True)], safe="*")
    path = parts.path
    if parts.scheme.lower() in ("rtmp", "rtmps", "srt"):
        segments = path.split("/")
        if len(segments) > 2 and segments[-1]:
            segments[-1] = MASK
            path = "/".join(segments)
    return urlunsplit((parts.scheme, netloc, path, query, ""))
