"""The HTTP side of WHIP (RFC 9725) and WHEP: POST the offer, trickle candidates, DELETE.

Every way this can go wrong is mapped here to one :mod:`qoe.errors` kind, with a one-line
message that names the URL without its secrets and never holds the bearer token.

What RFC 9725 asks of a client beyond one POST and one DELETE, and how :class:`Endpoint`
does it:

- Authentication (section 4.7): given a token, ``Authorization: Bearer TOKEN`` goes on every
  request, redirected POSTs, PATCH and DELETE included. A server that quotes the token back
  in an error body does not get it into a message: every message is scrubbed of it.
- Redirects (section 4.5): 307 and 308 are followed here, by hand, resending the offer and
  the token, for at most :data:`MAX_REDIRECTS` hops, and the session's ``Location`` resolves
  against the URL that answered. aiohttp's own following keeps the body of a 307 or 308 but
  drops the ``Authorization`` header as soon as the host changes, which is exactly what a
  load balancer handing the session to a media server does; and it turns a 301, 302 or 303
  POST into a GET without the offer, which is refused here as a broken redirect instead.
  A hop from https to http is refused too, so the token never travels in the clear.
- Overload (section 4.5): a 503 with ``Retry-After`` is retried after that delay when the
  retry still fits before the deadline; otherwise it fails naming the delay asked for.
- STUN and TURN servers (section 4.6): ``Link: <turn:...>; rel="ice-server"`` headers of the
  201 become :attr:`Answer.ice_servers` (:mod:`probes.webrtc.session` says how they are used).
- Trickle ICE (sections 4.3.1 and 4.3.2): :meth:`Endpoint.trickle` PATCHes an
  ``application/trickle-ice-sdpfrag`` with ``If-Match`` on the ETag the 201 gave. A server
  that does not take PATCH (405, or 501) is no error: the candidates stay unsent.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiortc import RTCIceServer
from aiortc.rtcicetransport import parse_stun_turn_uri
from multidict import CIMultiDict

from qoe import clock
from qoe.errors import ConnectError, NotFoundError, SignalingError
from qoe.redact import MASK, clean_block, redact_text, redact_url
from qoe.timeline import HttpExchange

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_REDIRECTS",
    "Answer",
    "Contact",
    "Endpoint",
    "ice_servers",
    "trickle_fragment",
]

SDP_TYPE = "application/sdp"
TRICKLE_TYPE = "application/trickle-ice-sdpfrag"
MAX_REDIRECTS = 5
"""Redirects one POST may follow (a load balancer and a regional one make two)."""
MAX_ATTEMPTS = 5
"""POSTs one offer may take when the server answers 503 with Retry-After; the join timeout
bounds them too, but a server asking again and again for no delay would not be."""
PATCH_UNSUPPORTED = (405, 501)


@dataclass(frozen=True)
class Answer:
    """What the endpoint's 201 Created carried."""

    sdp: str
    """Its SDP: the answer to the probe's offer, or in server-offer mode the server's offer."""
    location: str
    """Absolute URL of the session resource (for PATCH and DELETE)."""
    etag: str | None
    ice_servers: tuple[RTCIceServer, ...] = ()
    """STUN and TURN servers the 201 announced in its ``Link`` headers, in their order."""


Contact = Callable[[str], bool]
"""Whether the probe may contact a URL a server named (a redirect, a session's Location)."""


class Endpoint:
    """One WHIP or WHEP endpoint, as a client talks to it: with its token on every request.

    Every request and its answer is handed to ``record`` as an :class:`~qoe.timeline.
    HttpExchange`, secrets masked (the run's event log keeps them for an incident report).
    ``may_contact`` vets every URL the server names before it is contacted: a redirect's
    target and the session's ``Location``; a refused one fails the join, naming it.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        token: str | None = None,
        *,
        record: Callable[[HttpExchange], None] | None = None,
        may_contact: Contact | None = None,
    ) -> None:
        self._http = http
        self.url = url
        self._token = token or None
        self._record = record
        self._may_contact = may_contact

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Content-Type": content_type} if content_type else {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _scrub(self, text: str) -> str:
        """``text`` without the token, however a server or a library came to quote it."""
        return text.replace(self._token, MASK) if self._token else text

    async def _request(
        self, method: str, url: str, *, body: str | None, headers: dict[str, str], timeout: float
    ) -> tuple[int, CIMultiDict[str], str]:
        """One request, no redirect followed; its status, headers and body text. Recorded
        whatever happens; aiohttp's and asyncio's errors pass through to the caller."""
        exchange = HttpExchange(
            clock.monotonic(),
            method,
            redact_url(url),
            self._shown_headers(headers.items()),
            self._shown_body(body or ""),
        )
        try:
            async with self._http.request(
                method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text(errors="replace")
                status, received = response.status, CIMultiDict(response.headers)
        except (aiohttp.ClientError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            exchange.error = self._scrub(redact_text(f"{type(exc).__name__}: {exc}".rstrip(": ")))
            self._keep(exchange)
            raise
        exchange.status = status
        exchange.seconds = clock.monotonic() - exchange.at
        exchange.response_headers = self._shown_headers(received.items())
        exchange.response_body = self._shown_body(text)
        self._keep(exchange)
        return status, received, text

    def _keep(self, exchange: HttpExchange) -> None:
        if self._record is not None:
            self._record(exchange)

    def _shown_headers(self, headers: Iterable[tuple[str, str]]) -> str:
        lines = []
        for name, value in headers:
            if name.lower() in ("authorization", "proxy-authorization", "cookie", "set-cookie"):
                value = f"{value.split(' ', 1)[0]} {MASK}" if " " in value else MASK
            elif name.lower() == "link":
                value = _LINK_SECRET.sub(rf"\1{MASK}\2", value)
            elif name.lower() in ("location", "content-location"):
                value = redact_url(value)
            lines.append(f"{name}: {self._scrub(value)}")
        return "\n".join(lines)

    def _shown_body(self, body: str) -> str:
        return _ICE_PWD.sub(rf"\1{MASK}", self._scrub(redact_text(clean_block(body))))

    def _vet(self, url: str, what: str) -> str:
        if self._may_contact is not None and not self._may_contact(url):
            raise SignalingError(
                f"{redact_url(self.url)}: refused {what} {redact_url(url)}, which is not allowed"
            )
        return url

    async def post(self, sdp: str, *, deadline: float, server_offer: bool = False) -> Answer:
        """POST ``sdp`` and return what the 201 Created carried, by ``deadline`` (monotonic s).

        ``server_offer``: the endpoint makes the offer (Janus's WHEP front end does for
        subscriptions it cannot take an offer for): it answers the POST with its own offer,
        in a 406 Not Acceptable or a 201, to be answered with :meth:`answer`.
        """
        url, hops, attempts = self.url, 0, 0
        headers = self._headers(SDP_TYPE)
        while True:
            shown = redact_url(url)
            left = deadline - clock.monotonic()
            if left <= 0:
                raise SignalingError(f"{redact_url(self.url)}: no answer before the join timeout")
            attempts += 1
            try:
                status, received, body = await self._request(
                    "POST", url, body=sdp, headers=headers, timeout=left
                )
            except aiohttp.ClientConnectorError as exc:
                reason = exc.os_error.strerror or str(exc)
                raise ConnectError(self._scrub(f"cannot connect to {shown}: {reason}")) from exc
            except aiohttp.ClientError as exc:
                raise SignalingError(self._scrub(f"{shown}: {type(exc).__name__}: {exc}")) from exc
            except TimeoutError as exc:
                raise SignalingError(f"{shown}: no answer within {left:.3g} s") from exc
            if status in (307, 308):
                hops += 1
                url = self._vet(self._redirect(url, received.get("Location"), status, hops), "a redirect to")
                continue
            if status == 503 and "Retry-After" in received and attempts < MAX_ATTEMPTS:
                await self._wait_to_retry(shown, received["Retry-After"], deadline)
                continue
            created = self._created(url, status, received, body, server_offer=server_offer)
            self._vet(created.location, "a session Location of")
            return created

    def _redirect(self, url: str, location: str | None, status: int, hops: int) -> str:
        shown = redact_url(url)
        if not location:
            raise SignalingError(f"{shown}: HTTP {status} redirect without a Location header")
        if hops > MAX_REDIRECTS:
            raise SignalingError(f"{redact_url(self.url)}: more than {MAX_REDIRECTS} redirects")
        target = urljoin(url, location)
        if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
            raise SignalingError(f"{shown}: refused a redirect from https to {redact_url(target)}")
        return target

    async def _wait_to_retry(self, shown: str, retry_after: str, deadline: float) -> None:
        delay = retry_delay(retry_after)
        if delay is None:
            value = self._scrub(retry_after[:40])
            raise SignalingError(f"{shown}: HTTP 503 with a Retry-After that is no delay: {value!r}")
        if clock.monotonic() + delay >= deadline:
            raise SignalingError(
                f"{shown}: HTTP 503 Service Unavailable with Retry-After {delay:g} s, past the join timeout"
            )
        await asyncio.sleep(delay)

    def _created(
        self, url: str, status: int, headers: CIMultiDict[str], body: str, *, server_offer: bool = False
    ) -> Answer:
        shown = redact_url(url)
        detail = self._scrub(_first_line(body))
        content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if status == 406 and content_type == SDP_TYPE and not server_offer:
            raise SignalingError(
                f"{shown}: HTTP 406 with an offer of the server's own: this endpoint makes the "
                'offer; probe it with --offer server (options.offer = "server")'
            )
        if status == 406 and server_offer:
            status = 201  # the server's offer, as janus-whep-server sends it
        if status == 404:
            raise NotFoundError(f"{shown}: HTTP 404 {detail or 'Not Found'}")
        if status in (301, 302, 303):
            raise SignalingError(
                f"{shown}: HTTP {status} redirect of the POST, which drops the offer; "
                "WHIP and WHEP redirect with 307 or 308"
            )
        if status != 201:
            raise SignalingError(f"{shown}: expected 201 Created, got HTTP {status} {detail}".rstrip())
        if content_type != SDP_TYPE:
            raise SignalingError(
                f"{shown}: the 201 has Content-Type {content_type or 'none'!r}, not {SDP_TYPE}"
            )
        location = headers.get("Location")
        if not location:
            raise SignalingError(f"{shown}: 201 answer without a Location header (RFC 9725 section 4.2)")
        links = headers.getall("Link", [])
        return Answer(body, urljoin(url, location), headers.get("ETag"), ice_servers(links))

    async def answer(self, location: str, sdp: str, *, etag: str | None, timeout: float) -> None:
        """PATCH the probe's answer to the server's offer (server-offer mode) to the session."""
        headers = self._headers(SDP_TYPE)
        if etag is not None:
            headers["If-Match"] = etag
        status, body = await self._patch(location, sdp, headers, timeout)
        if status not in (200, 201, 204):
            detail = self._scrub(_first_line(body))
            shown = redact_url(location)
            raise SignalingError(
                f"PATCH {shown}: the answer was refused with HTTP {status} {detail}".rstrip()
            )

    async def trickle(self, location: str, fragment: str, *, etag: str, timeout: float) -> bool:
        """PATCH ``fragment`` to the session; False when the server does not take PATCH."""
        headers = {**self._headers(TRICKLE_TYPE), "If-Match": etag}
        status, body = await self._patch(location, fragment, headers, timeout)
        if status in PATCH_UNSUPPORTED:
            return False
        if status not in (200, 204):
            detail = self._scrub(_first_line(body))
            shown = redact_url(location)
            raise SignalingError(
                f"PATCH {shown}: trickled candidates refused with HTTP {status} {detail}".rstrip()
            )
        return True

    async def _patch(
        self, location: str, body: str, headers: dict[str, str], timeout: float
    ) -> tuple[int, str]:
        """PATCH ``body`` to the session: its status and answer's text; a request that got no
        answer is a SignalingError."""
        shown = redact_url(location)
        try:
            status, _, text = await self._request(
                "PATCH", location, body=body, headers=headers, timeout=timeout
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise SignalingError(self._scrub(f"PATCH {shown}: {type(exc).__name__}: {exc}")) from exc
        except TimeoutError as exc:
            raise SignalingError(f"PATCH {shown}: no answer within {timeout:.3g} s") from exc
        return status, text

    async def delete(self, location: str, *, timeout: float = 2.0) -> bool:
        """End a session with DELETE on its resource URL; True if the server confirmed it.

        Best effort: a probe that ends because the server died must not fail again here.
        """
        try:
            status, _, _ = await self._request(
                "DELETE", location, body=None, headers=self._headers(), timeout=timeout
            )
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False
        return status in (200, 204)


def retry_delay(value: str) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait: delay-seconds or an HTTP-date (RFC 9110
    section 10.2.3); None when it is neither."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock.wall())


_LINK_SECRET = re.compile(r'(\bcredential\s*=\s*"?)[^";,]*("?)', re.I)
_ICE_PWD = re.compile(r"(?m)^(a=ice-pwd:)\S+")
_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*[\w.*-]+\s*=\s*(?:"[^"]*"|[^;,]*))*)')
_PARAM = re.compile(r';\s*([\w.*-]+)\s*=\s*(?:"([^"]*)"|([^;,]*))')


def ice_servers(links: Sequence[str]) -> tuple[RTCIceServer, ...]:
    """The STUN and TURN servers in ``Link`` header values (``rel="ice-server"``, RFC 9725
    section 4.6), with their ``username``, ``credential`` and ``credential-type``. A URL aiortc
    cannot use (another scheme, a malformed one) is left out."""
    servers = []
    for value in links:
        for match in _LINK.finditer(value):
            params = {
                param.group(1).lower(): param.group(2)
                if param.group(2) is not None
                else param.group(3).strip()
                for param in _PARAM.finditer(match.group(2))
            }
            if "ice-server" not in params.get("rel", "").split():
                continue
            url = match.group(1).strip()
            try:
                parse_stun_turn_uri(url)
            except ValueError:
                continue
            servers.append(
                RTCIceServer(
                    url,
                    username=params.get("username"),
                    credential=params.get("credential"),
                    credentialType=params.get("credential-type", "password"),
                )
            )
    return tuple(servers)


def trickle_fragment(offer: str, candidates: Sequence[str]) -> str:
    """An ``application/trickle-ice-sdpfrag`` (RFC 8840) carrying ``candidates`` (each the
    value of an ``a=candidate:`` line) and end-of-candidates, for the offer's ICE session.

    It names the offer's ICE credentials (so the server knows it is no ICE restart) and its
    first media section, which under BUNDLE carries the transport of all of them.
    """
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", offer, re.M)
    pwd = re.search(r"^a=ice-pwd:(\S+)", offer, re.M)
    media = re.search(r"^m=.*$", offer, re.M)
    mid = re.search(r"^a=mid:(\S+)", offer, re.M)
    if not (ufrag and pwd and media and mid):
        raise ValueError("the offer lacks ice-ufrag, ice-pwd, an m= line or a mid")
    lines = [
        f"a=ice-ufrag:{ufrag.group(1)}",
        f"a=ice-pwd:{pwd.group(1)}",
        media.group(0).strip(),
        f"a=mid:{mid.group(1)}",
        *(f"a=candidate:{c}" for c in candidates),
        "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""
