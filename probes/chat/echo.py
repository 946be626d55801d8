"""Chat echo probe: how long a chat message takes from one client to another.

Two independently connected WebSocket clients join the chat: the sender posts ``count``
messages at ``rate`` per second, each carrying a nonce and its send time; the receiver
notes when each arrives. Echo latency is receive time minus send time (one clock: both run
here). A message not seen within ``timeout`` of its sending is lost; one seen twice is
duplicated; one arriving after a later-sent message is reordered.

It works with a platform's own chat protocol without code: ``template`` is the message to
send, with ``{nonce}`` and ``{sent_at}`` filled in, and the nonce is found in what comes
back by a dotted JSON path (``nonce_path``, e.g. ``data.msg.id``) or, for text protocols,
a regular expression with one group (``nonce_regex``). The defaults fit the embedded room.

Options (``spec.options``): ``rate`` (5/s), ``timeout`` (3 s), ``count`` (as many as fit in
the probe's duration less the timeout), ``template``,
``nonce_path`` ("nonce"), ``nonce_regex``, ``receiver_url`` (default: the same URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from probes.base import ProbeSpec, Watch
from probes.options import Option
from qoe import clock
from qoe.errors import ConfigError, ConnectError, DisconnectedError, NoEchoError, NotFoundError, ProtocolError
from qoe.redact import redact_url
from qoe.result import ProbeResult
from qoe.timeline import ChatReceived, ChatSent, Timeline

__all__ = ["DEFAULT_TEMPLATE", "PHASES", "probe"]

PHASES = ("receiver_connected", "sender_connected")
DEFAULT_TEMPLATE = (
    '{"type": "chat", "text": "qoe chat probe {nonce}", "nonce": "{nonce}", "sent_at": {sent_at}}'
)


OPTIONS = (
    Option("rate", float, 5.0, "messages sent per second", "1/s", positive=True),
    Option("timeout", float, 3.0, "a message not echoed within this is lost", "s", positive=True),
    Option("count", int, None, "messages to send (default: as many as fit in the duration)", positive=True),
    Option("template", str, DEFAULT_TEMPLATE, "the message sent; {nonce} and {sent_at} are filled in"),
    Option("nonce_path", str, None, "dotted JSON path of the nonce in an echo (default: nonce)"),
    Option("nonce_regex", str, None, "for text chats: a regular expression whose group 1 is the nonce"),
    Option("receiver_url", str, None, "where the receiving client connects (default: the probe's URL)"),
)
"""What ``options`` a chat echo probe takes (see :mod:`probes.options`)."""


@dataclass
class _Ledger:
    """What was sent and what came back, recorded in the run's log; keyed by nonce here so
    the probe knows when every message is back."""

    log: Timeline
    sent: set[str] = field(default_factory=set)
    received: set[str] = field(default_factory=set)

    def send(self, nonce: str, index: int, at: float) -> None:
        self.sent.add(nonce)
        self.log.chat_sent.append(ChatSent(nonce, index, at))

    def arrive(self, nonce: str, at: float) -> None:
        if nonce not in self.sent:
            return  # someone else's message, or an old one
        self.received.add(nonce)
        self.log.chat_received.append(ChatReceived(nonce, at))


def _find_nonce(text: str, path: str | None, pattern: re.Pattern[str] | None) -> str | None:
    if pattern is not None:
        match = pattern.search(text)
        return match.group(1) if match else None
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"chat server sent a message that is not JSON: {text[:80]!r}") from exc
    for part in (path or "nonce").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return None if value is None else str(value)


async def _connect(http: aiohttp.ClientSession, url: str, timeout: float) -> aiohttp.ClientWebSocketResponse:
    shown = redact_url(url)
    try:
        return await http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=timeout), heartbeat=None)
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status == 404:
            raise NotFoundError(f"{shown}: HTTP 404, no such chat") from exc
        raise ProtocolError(f"{shown}: WebSocket handshake refused: HTTP {exc.status}") from exc
    except aiohttp.ClientConnectorError as exc:
        raise ConnectError(f"cannot connect to {shown}: {exc.os_error.strerror or exc}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConnectError(f"cannot connect to {shown}: {type(exc).__name__}") from exc


async def probe(spec: ProbeSpec, result: ProbeResult, watch: Watch) -> None:
    """Measure chat echo latency on ``spec.url`` (ws:// or wss://); record each message sent and echoed."""
    options = spec.options
    rate, timeout = options["rate"], options["timeout"]
    # By default send for as long as the probe lasts, less the time the last one may take.
    count = options["count"] or max(1, int((spec.duration - timeout) * rate))
    template = options["template"]
    regex = options["nonce_regex"]
    try:
        pattern = re.compile(regex) if regex else None
    except re.error as exc:
        raise ConfigError(f"option 'nonce_regex' of chat probes is not a regular expression: {exc}") from exc
    path = options["nonce_path"]
    timeline = watch.open_log(PHASES, "chat")
    ledger = _Ledger(timeline)
    prefix = secrets.token_hex(4)

    def report(stopped: float) -> None:
        timeline.finish(stopped)

    watch.on_close(report)
    # Closing handshakes are teardown: they run once the window has closed.
    http = aiohttp.ClientSession()
    watch.defer(http.close)
    receiver = await _connect(http, options["receiver_url"] or spec.url, spec.join_timeout)
    watch.defer(receiver.close)
    timeline.mark("receiver_connected")
    sender = await _connect(http, spec.url, spec.join_timeout)
    watch.defer(sender.close)
    timeline.mark("sender_connected")
    closed = asyncio.get_running_loop().create_future()

    async def listen() -> None:
        async for message in receiver:
            if message.type == aiohttp.WSMsgType.TEXT:
                nonce = _find_nonce(message.data, path, pattern)
                if nonce is not None:
                    ledger.arrive(nonce, clock.wall())
            elif message.type == aiohttp.WSMsgType.ERROR:
                break
        if not closed.done():
            closed.set_result(None)

    async def drain() -> None:
        async for _ in sender:  # the sender hears the broadcasts too; keep its buffer empty
            pass

    tasks = [asyncio.create_task(listen()), asyncio.create_task(drain())]
    try:
        await _exchange(spec, sender, ledger, closed, template, prefix, count, rate, timeout)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, ProtocolError):
            raise outcome
    if ledger.sent and not ledger.received:
        raise NoEchoError(f"none of {len(ledger.sent)} messages came back within {timeout:g} s")


async def _exchange(
    spec: ProbeSpec,
    sender: aiohttp.ClientWebSocketResponse,
    ledger: _Ledger,
    closed: asyncio.Future[None],
    template: str,
    prefix: str,
    count: int,
    rate: float,
    timeout: float,
) -> None:
    for i in range(count):
        if closed.done() or sender.closed:
            raise DisconnectedError(f"chat server closed the connection after {i} of {count} messages")
        nonce = f"{prefix}-{i}"
        sent_at = clock.wall()
        text = template.replace("{nonce}", nonce).replace("{sent_at}", f"{sent_at:.6f}")
        ledger.send(nonce, i, sent_at)
        try:
            await sender.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            raise DisconnectedError(
                f"chat server closed the connection after {i} of {count} messages"
            ) from exc
        await asyncio.sleep(1 / rate)
    deadline = clock.monotonic() + timeout
    while len(ledger.received) < len(ledger.sent) and clock.monotonic() < deadline:
        if closed.done():
            raise DisconnectedError("chat server closed the connection before every message came back")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), 0.05)
