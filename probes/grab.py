"""Coupon grab probe: watch a live-commerce room, grab each coupon drop the moment it shows.

A drop is the host's "coupons now!": a limited stock that the fastest viewers win. The probe
records, for every drop it sees, when it saw it, when the drop opened on the sender's clock,
and how its grab was answered; :func:`qoe.metrics.grabs` turns that into
``grab{seen_after_seconds, answer_seconds, won, sold_out, drops[...]}``. A sold-out answer is
a normal outcome, never an error.

Two ways to see a drop (``signal``):

- ``video`` (default): watch ``URL`` as a WHEP viewer (:func:`probes.webrtc.whep.view`, the
  same viewer as the ``whep`` kind, with all its figures) and read the drop id from the
  video code's tag (:func:`qoe.signal.drop_of`), as the embedded room's host shows it
  (``qoe room --coupon-every S``). The grab goes to ``/rooms/ROOM/grab`` beside the WHEP URL,
  whose answer says when the drop opened.
- ``poll`` or ``websocket``, for a real platform's own coupon API: ``URL`` is polled every
  ``poll_every`` seconds (http(s)) or read as a WebSocket (ws(s)), and a drop is a message
  in which ``drop_path`` (a dotted JSON path) or ``drop_regex`` (group 1) finds an id, as the
  chat probe finds its nonce. ``opened_at_path`` names the drop's opening time (Unix
  seconds) in the signal or the grab's answer, if the platform gives one.

The grab is an HTTP request to ``grab_url`` with ``grab_template`` as its body (``{drop}``
and ``{client}`` filled in); the answer is JSON whose ``outcome_path`` holds ``won_value`` or
``sold_out_value``. An answer with an error status (a 500), or none within ``grab_timeout``,
fails the run as ``grab_failed``; a 2xx answer that says neither as ``grab_garbled``. A
signal that never announces a drop within the watch is ``no_signal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from probes.base import ProbeSpec, Watch
from probes.options import Option
from probes.webrtc import whep
from qoe import clock
from qoe.errors import ConfigError, ConnectError, GrabAnswerError, GrabError, NoSignalError, ProbeError
from qoe.redact import clean_text, redact_url
from qoe.result import ProbeResult
from qoe.signal import drop_of
from qoe.timeline import Grab, Timeline, VideoFrameEvent

__all__ = ["DEFAULT_TEMPLATE", "OPTIONS", "PHASES", "SIGNALS", "grab_url_for", "probe"]

SIGNALS = ("video", "poll", "websocket")
GENERIC_PHASES = ("signal_connected",)
PHASES = (*whep.PHASES, *GENERIC_PHASES)
"""Join milestones: a WHEP viewer's (``signal = "video"``), or the signal's connection."""
DEFAULT_TEMPLATE = '{"drop": {drop}, "client": "{client}"}'

OPTIONS = (
    Option(
        "signal",
        str,
        "video",
        "how a drop is seen: video reads its id from the test signal's code as a WHEP viewer; "
        "poll GETs URL every poll_every seconds; websocket reads URL's messages",
        choices=SIGNALS,
    ),
    Option("drop_path", str, None, "poll/websocket: dotted JSON path of the drop id (default: drop)"),
    Option(
        "drop_regex", str, None, "poll/websocket, text signals: a regular expression whose group 1 is the id"
    ),
    Option(
        "opened_at_path",
        str,
        "opened_at",
        "dotted JSON path of the drop's opening time (Unix seconds) in the signal or the grab's answer",
    ),
    Option("poll_every", float, 0.2, "poll: seconds between two GETs of the signal URL", "s", positive=True),
    Option("grab_url", str, None, "where to grab (default: /rooms/ROOM/grab beside a /whep/ROOM URL)"),
    Option("grab_method", str, "POST", "the grab request's method", choices=("POST", "PUT")),
    Option(
        "grab_template", str, DEFAULT_TEMPLATE, "the grab request's body; {drop} and {client} are filled in"
    ),
    Option("grab_content_type", str, "application/json", "the grab body's Content-Type"),
    Option("outcome_path", str, "outcome", "dotted JSON path of the outcome in a grab's answer"),
    Option("won_value", str, "won", "the outcome that means a coupon was won"),
    Option("sold_out_value", str, "sold_out", "the outcome that means the drop sold out (not an error)"),
    Option("sold_out_at_path", str, "sold_out_at", "dotted JSON path of the sell-out time in an answer"),
    Option("client", str, None, "the client id grabs are made as (default: a fresh one per run)"),
    Option("grab_timeout", float, 5.0, "a grab not answered within this fails the run", "s", positive=True),
    *whep.OPTIONS,
)
"""What ``options`` a grab probe takes (see :mod:`probes.options`)."""


def grab_url_for(url: str) -> str:
    """The embedded room's grab endpoint beside a WHEP URL: ``/whep/ROOM`` -> ``/rooms/ROOM/grab``."""
    parts = urlsplit(url)
    if "/whep/" not in parts.path:
        raise ConfigError(
            f"option 'grab_url' of grab probes is needed: {redact_url(url)} is not a /whep/ROOM URL"
        )
    room = parts.path.rsplit("/whep/", 1)[1].strip("/")
    return urlunsplit((parts.scheme, parts.netloc, f"/rooms/{room}/grab", "", ""))


def find(text: str, path: str, pattern: re.Pattern[str] | None = None) -> str | None:
    """The value at dotted ``path`` in JSON ``text`` (or ``pattern``'s group 1), as text."""
    if pattern is not None:
        match = pattern.search(text)
        return match.group(1) if match else None
    try:
        value: Any = json.loads(text)
    except ValueError:
        return None
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return None if value is None or isinstance(value, dict | list) else str(value)


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


class _Grabber:
    """Grabs each drop once, as soon as it is seen; the first failure ends the run."""

    def __init__(self, spec: ProbeSpec, watch: Watch) -> None:
        options = spec.options
        self.spec, self.watch, self.options = spec, watch, options
        self.url = options["grab_url"] or grab_url_for(spec.url)
        self.client = options["client"] or f"qoe-{secrets.token_hex(6)}"
        self.http = aiohttp.ClientSession()
        self.tasks: set[asyncio.Task[None]] = set()
        self.failed: asyncio.Future[ProbeError] = asyncio.get_running_loop().create_future()
        self.grabbed: set[str] = set()

    def seen(self, drop: str, opened_wall: float | None = None) -> None:
        """A drop is on screen (or in the signal) now: grab it, once."""
        if drop in self.grabbed or self.failed.done():
            return
        self.grabbed.add(drop)
        attempt = Grab(drop, clock.wall(), opened_wall)
        self.watch.log.grabs.append(attempt)
        task = asyncio.create_task(self._grab(attempt), name=f"grab-{drop}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _grab(self, attempt: Grab) -> None:
        # A frame the player model shows later than now is seen then, and grabbed then.
        await asyncio.sleep(max(0.0, attempt.seen_wall - clock.wall()))
        try:
            await self._request(attempt)
        except ProbeError as exc:
            if not self.failed.done():
                self.failed.set_result(exc)

    async def _request(self, attempt: Grab) -> None:
        options = self.options
        body = options["grab_template"].replace("{drop}", attempt.drop).replace("{client}", self.client)
        shown = redact_url(self.url)
        attempt.sent = clock.monotonic()
        try:
            async with asyncio.timeout(options["grab_timeout"]):
                async with self.http.request(
                    options["grab_method"],
                    self.url,
                    data=body.encode(),
                    headers={"Content-Type": options["grab_content_type"]},
                    allow_redirects=False,
                ) as response:
                    text = await response.text(errors="replace")
                    attempt.answered, attempt.status = clock.monotonic(), response.status
        except TimeoutError:
            raise GrabError(
                f"{shown}: no answer to the grab of drop {attempt.drop} within {options['grab_timeout']:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise GrabError(
                f"{shown}: the grab of drop {attempt.drop} got no answer: {type(exc).__name__}"
            ) from exc
        if not 200 <= attempt.status < 300:
            raise GrabError(
                f"{shown}: the grab of drop {attempt.drop} was answered HTTP {attempt.status}: "
                f"{clean_text(text.strip(), 80)!r}"
            )
        outcome = find(text, options["outcome_path"])
        if outcome not in (options["won_value"], options["sold_out_value"]):
            raise GrabAnswerError(
                f"{shown}: the grab of drop {attempt.drop} was answered {clean_text(text.strip(), 80)!r}, "
                f"with no {options['won_value']!r} or {options['sold_out_value']!r} "
                f"at {options['outcome_path']!r}"
            )
        attempt.outcome = "won" if outcome == options["won_value"] else "sold_out"
        attempt.sold_out_wall = _number(find(text, options["sold_out_at_path"]))
        if attempt.opened_wall is None:
            attempt.opened_wall = _number(find(text, options["opened_at_path"]))

    async def settle(self, until: float) -> None:
        """Wait for the grabs still out, until monotonic ``until``; then raise a failure."""
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, until - clock.monotonic()))
        if self.failed.done():
            raise self.failed.result()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.http.close()


async def probe(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
    """Watch for coupon drops on ``spec.url`` until the run stops watching; grab each one."""
    options = spec.options
    regex = options["drop_regex"]
    try:
        pattern = re.compile(regex) if regex else None
    except re.error as exc:
        raise ConfigError(f"option 'drop_regex' of grab probes is not a regular expression: {exc}") from exc
    if pattern is not None and pattern.groups < 1:
        raise ConfigError("option 'drop_regex' of grab probes needs a group: the drop id is its group 1")
    grabber = _Grabber(spec, watch)
    watch.defer(grabber.close)
    signal = options["signal"]
    if signal == "video":
        body = whep.view(spec, watch, lambda event: _on_frame(grabber, event))
        read = "frames"
    else:
        log = watch.open_log(GENERIC_PHASES, "grab")
        watch.on_close(log.finish)
        read = "poll answers" if signal == "poll" else "messages"
        body = _read_signal(spec, watch, grabber, log, pattern)
    watching: asyncio.Future[Any] = asyncio.ensure_future(body)
    failing: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(grabber.failed))
    try:
        await asyncio.wait({watching, failing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        failing.cancel()
        if not watching.done():
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
    if grabber.failed.done():
        raise grabber.failed.result()
    watching.result()  # the viewer's or the signal's own failure
    await grabber.settle(watch.until)
    if not watch.log.grabs:
        where = "the video code's tag" if signal == "video" else _template(options)
        raise NoSignalError(f"no coupon drop seen in {spec.duration:g} s of {read} (looked for {where})")


def _on_frame(grabber: _Grabber, event: VideoFrameEvent) -> None:
    drop = drop_of(event.tag)
    if drop is not None and str(drop) not in grabber.grabbed:
        grabber.seen(str(drop))
        grabber.watch.log.grabs[-1].seen_wall = event.wall  # when the player showed it


def _template(options: Any) -> str:
    if options["drop_regex"]:
        return f"drop_regex {options['drop_regex']!r}"
    return f"drop_path {options['drop_path'] or 'drop'!r}"


async def _read_signal(
    spec: ProbeSpec, watch: Watch, grabber: _Grabber, log: Timeline, pattern: re.Pattern[str] | None
) -> None:
    options = spec.options
    path = options["drop_path"] or "drop"
    opened_path = options["opened_at_path"]

    def saw(text: str) -> None:
        drop = find(text, path, pattern)
        if drop is not None and drop != "":
            grabber.seen(drop, _number(find(text, opened_path)))

    shown = redact_url(spec.url)
    http = grabber.http
    if options["signal"] == "websocket":
        try:
            ws = await http.ws_connect(spec.url, timeout=aiohttp.ClientWSTimeout(ws_close=spec.join_timeout))
        except aiohttp.WSServerHandshakeError as exc:
            raise ConnectError(f"{shown}: WebSocket handshake refused: HTTP {exc.status}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {shown}: {type(exc).__name__}") from exc
        watch.defer(ws.close)
        log.mark("signal_connected")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(watch.left()):
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        saw(message.data)
        return
    while watch.left() > 0:
        try:
            async with asyncio.timeout(min(spec.join_timeout, max(watch.left(), 0.01))):
                async with http.get(spec.url) as response:
                    text = await response.text(errors="replace")
        except TimeoutError:
            continue
        except aiohttp.ClientError as exc:
            raise ConnectError(f"cannot poll {shown}: {type(exc).__name__}") from exc
        if response.status == 200:
            log.mark("signal_connected")
            saw(text)
        await asyncio.sleep(min(options["poll_every"], watch.left()))
