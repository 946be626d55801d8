"""Room chat: JSON messages over a WebSocket, broadcast to everyone in the room.

``ws://H:P/chat/ROOM``: every text frame a client sends must be a JSON object; the room adds
``"room"`` and ``"received_at"`` (its Unix time) and broadcasts it to every connected client
of the room, the sender included, after the ``--chat-delay`` knob. The built-in host reads
the chat too: a message with an integer ``"nonce"`` makes it show that nonce in its video
code (the host "answers on camera"), which is what the interaction-loop probe measures.

Ground-truth knobs: ``chat_delay`` (seconds before a broadcast) and ``chat_drop_every``
(the room silently drops every Nth message it receives, so a test knows exactly which).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from qoe import clock

__all__ = ["ChatKnobs", "ChatRoom"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024


@dataclass(frozen=True)
class ChatKnobs:
    chat_delay: float = 0.0
    chat_drop_every: int = 0
    """Drop every Nth received message (0: none), counted per room from its start."""


@dataclass
class ChatRoom:
    """The chat of one room: its clients, its counters and who listens in."""

    knobs: ChatKnobs
    clients: set[web.WebSocketResponse] = field(default_factory=set)
    received: int = 0
    dropped: list[int] = field(default_factory=list)
    """1-based numbers of the messages the drop knob removed (ground truth)."""
    listeners: list[Callable[[dict[str, object]], None]] = field(default_factory=list)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    async def serve(self, request: web.Request, room: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        self.clients.add(ws)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except json.JSONDecodeError:
                    await ws.send_json({"error": "messages must be JSON objects"})
                    continue
                if not isinstance(data, dict):
                    await ws.send_json({"error": "messages must be JSON objects"})
                    continue
                self.received += 1
                every = self.knobs.chat_drop_every
                if every and self.received % every == 0:
                    self.dropped.append(self.received)
                    continue
                data["room"] = room
                data["received_at"] = clock.wall()
                task = asyncio.create_task(self._broadcast(data))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
        finally:
            self.clients.discard(ws)
        return ws

    async def _broadcast(self, data: dict[str, object]) -> None:
        if self.knobs.chat_delay:
            await asyncio.sleep(self.knobs.chat_delay)
        for listener in self.listeners:
            try:
                listener(data)
            except Exception:  # a listener's bug must not stop the chat
                log.exception("chat listener failed")
        text = json.dumps(data)
        for ws in list(self.clients):
            if not ws.closed:
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    self.clients.discard(ws)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for ws in list(self.clients):
            await ws.close()
        self.clients.clear()
