"""The HTTP side of WHIP (RFC 9725) and WHEP: POST an SDP offer, DELETE the session.

Every way this can go wrong is mapped here to one :mod:`qoe.errors` kind, with a one-line
message that names the URL without its secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp

from qoe.errors import ConnectError, NotFoundError, SignalingError
from qoe.redact import redact_url

__all__ = ["Answer", "delete_session", "post_offer"]

SDP_TYPE = "application/sdp"


@dataclass(frozen=True)
class Answer:
    sdp: str
    location: str
    """Absolute URL of the session resource (for DELETE)."""
    etag: str | None


async def post_offer(
    session: aiohttp.ClientSession,
    url: str,
    sdp: str,
    *,
    timeout: float,
    token: str | None = None,
) -> Answer:
    """POST ``sdp`` to a WHIP/WHEP endpoint and return the answer (201 Created)."""
    headers = {"Content-Type": SDP_TYPE}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    shown = redact_url(url)
    try:
        async with session.post(
            url, data=sdp, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            body = await response.text(errors="replace")
            if response.status == 404:
                raise NotFoundError(f"{shown}: HTTP 404 {_first_line(body) or 'Not Found'}")
            if response.status != 201:
                detail = _first_line(body) or response.reason or ""
                raise SignalingError(
                    f"{shown}: expected 201 Created, got HTTP {response.status} {detail}".rstrip()
                )
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type.lower() != SDP_TYPE:
                raise SignalingError(
                    f"{shown}: answer has Content-Type {content_type or 'none'!r}, not {SDP_TYPE}"
                )
            location = response.headers.get("Location")
            if not location:
                raise SignalingError(f"{shown}: 201 answer without a Location header (RFC 9725 section 4.2)")
            return Answer(body, urljoin(str(response.url), location), response.headers.get("ETag"))
    except aiohttp.ClientConnectorError as exc:
        raise ConnectError(f"cannot connect to {shown}: {exc.os_error.strerror or exc}") from exc
    except aiohttp.ClientError as exc:
        raise SignalingError(f"{shown}: {type(exc).__name__}: {exc}") from exc
    except TimeoutError as exc:
        raise SignalingError(f"{shown}: no answer within {timeout:g} s") from exc


async def delete_session(session: aiohttp.ClientSession, location: str, *, timeout: float = 2.0) -> bool:
    """End a session with DELETE on its resource URL; True if the server confirmed it.

    Best effort: a probe that ends because the server died must not fail again here.
    """
    try:
        async with session.delete(location, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status in (200, 204)
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""
