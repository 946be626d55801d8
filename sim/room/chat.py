"""Room chat: JSON messages over a WebSocket, broadcast to everyone in the room.

``ws://H:P/chat/ROOM``: every text frame a client sends must be a JSON object; the room adds
``"room"`` and ``"received_at"`` (its Unix time) and broadcasts it to every connected client
of the room, the sender included, after the ``--chat-delay`` knob. The built-in host reads
the chat too: a message with an integer ``"nonce"`` makes it show that nonce in its video
code (the host "answers on camera"), which is what the interaction-loop probe measures.

Ground-truth knobs: ``chat_delay`` (seconds before a broadcast) and ``chat_drop_every``
(the room silently drops every Nth message it receives, so a test knows exactly which).

Bounds (:class:`~sim.room.limits.RoomLimits`): each client has its own send queue and writer,
so a client that stops reading loses its own oldest messages (counted as ``slow_drops``)
instead of holding everyone's chat up; and a client sending faster than ``chat_rate`` has the
excess dropped and counted (``flood_drops``). Neither is ever silent: both are in the room's
JSON and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from qoe import clock

__all__ = ["ChatKnobs", "ChatRoom"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024
LOG_INTERVAL = 10.0
"""Seconds between log lines about one room's dropped chat (the drops between are counted)."""


@dataclass(frozen=True)
class ChatKnobs:
    chat_delay: float = 0.0
    chat_drop_every: int = 0
    """Drop every Nth received message (0: none), counted per room from its start."""


class _Client:
    """One WebSocket client: its queue, its writer and its send allowance."""

    def __init__(self, ws: web.WebSocketResponse, queue_size: int, rate: float) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.rate = rate
        self.allowance = rate
        self.checked = clock.monotonic()
        self.writer: asyncio.Task[None] | None = None

    def may_send(self) -> bool:
        """A token bucket of ``rate`` messages a second, as many in a burst."""
        now = clock.monotonic()
        self.allowance = min(self.rate, self.allowance + (now - self.checked) * self.rate)
        self.checked = now
        if self.allowance < 1.0:
            return False
        self.allowance -= 1.0
        return True

    def offer(self, text: str) -> bool:
        """Queue ``text``; False if the oldest queued message had to make room for it."""
        dropped = False
        if self.queue.full():
            self.queue.get_nowait()
            dropped = True
        self.queue.put_nowait(text)
        return not dropped

    async def write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not self.ws.closed:
                await self.ws.send_str(await self.queue.get())


@dataclass
class ChatRoom:
    """The chat of one room: its clients, its counters and who listens in."""

    knobs: ChatKnobs
    queue_size: int = 256
    rate: float = 50.0
    clients: dict[web.WebSocketResponse, _Client] = field(default_factory=dict)
    received: int = 0
    dropped: list[int] = field(default_factory=list)
    """1-based numbers of the messages the drop knob removed (ground truth)."""
    slow_drops: int = 0
    """Messages a client that did not read lost from its own queue."""
    flood_drops: int = 0
    """Messages a client sent faster than its rate allows, dropped on arrival."""
    listeners: list[Callable[[dict[str, object]], None]] = field(default_factory=list)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    _logged_at: float = -math.inf

    async def serve(self, request: web.Request, room: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        client = self.clients[ws] = _Client(ws, self.queue_size, self.rate)
        client.writer = writer = asyncio.create_task(client.write(), name=f"qoe-chat-writer-{room}")
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                if not client.may_send():
                    self.flood_drops += 1
                    self._note_drops(room)
                    continue
                try:
                    data = json.loads(message.data)
                except (ValueError, RecursionError):  # not JSON, too deep, an integer too long
                    data = None
                if not isinstance(data, dict):
                    client.offer(json.dumps({"error": "messages must be JSON objects"}))
                    continue
                self.received += 1
                every = self.knobs.chat_drop_every
                if every and self.received % every == 0:
                    self.dropped.append(self.received)
                    continue
                data["room"] = room
                data["received_at"] = clock.wall()
                task = asyncio.create_task(self._broadcast(data, room))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        finally:
            self.clients.pop(ws, None)
            writer.cancel()
        return ws

    async def _broadcast(self, data: dict[str, object], room: str) -> None:
        if self.knobs.chat_delay:
            await asyncio.sleep(self.knobs.chat_delay)
        for listener in self.listeners:
            try:
                listener(data)
            except Exception:  # a listener's bug must not stop the chat
                log.exception("chat listener failed")
        text = json.dumps(data)
        for client in list(self.clients.values()):
            if not client.offer(text):
                self.slow_drops += 1
                self._note_drops(room)

    def _note_drops(self, room: str) -> None:
        now = clock.monotonic()
        if now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            log.warning(
                "room %s chat: %d messages dropped for clients that do not read, %d for clients "
                "sending over %g a second (so far)",
                room,
                self.slow_drops,
                self.flood_drops,
                self.rate,
            )

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for ws in list(self.clients):
            await ws.close()
        self.clients.clear()
