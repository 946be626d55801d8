"""The interaction loop: a viewer asks in chat, the host answers on camera.

The viewer posts a chat message carrying a numeric nonce; the room's host shows that nonce
in its video code (the code's 16-bit tag field); the viewer notes the first decoded frame
that shows it. Chat sent to seen on screen is the latency a viewer feels when the host
answers a question: chat path, host reaction (the next captured frame), media path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from qoe import clock
from qoe.signal import NONCE_MAX
from qoe.timeline import InteractionAsked, Timeline

__all__ = ["InteractionLoop", "chat_url_for"]


def chat_url_for(whep_url: str) -> str:
    """The embedded room's chat next to a WHEP URL: ``/whep/ROOM`` -> ``ws://.../chat/ROOM``."""
    parts = urlsplit(whep_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.replace("/whep/", "/chat/", 1), "", ""))


class InteractionLoop:
    """Sends a nonce every ``every`` seconds and times when the video shows it."""

    def __init__(self, chat_url: str, log: Timeline, every: float = 1.0) -> None:
        self.chat_url = chat_url
        self.every = every
        self.log = log
        """Where each question goes (:class:`~qoe.timeline.InteractionAsked`); the frames
        that show its nonce are in the same log (:func:`qoe.metrics.interaction_latencies`)."""
        self._sent: set[int] = set()

    async def run(self, until: float) -> None:
        """Post nonces until monotonic time ``until``; errors end the loop, not the probe."""
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            async with aiohttp.ClientSession() as http, http.ws_connect(self.chat_url) as ws:
                drain = asyncio.create_task(self._drain(ws))
                try:
                    while clock.monotonic() + self.every < until:
                        nonce = self._nonce()
                        self._sent.add(nonce)
                        self.log.asked.append(InteractionAsked(nonce, clock.wall()))
                        await ws.send_str(
                            json.dumps({"type": "chat", "text": "qoe probe asks", "nonce": nonce})
                        )
                        await asyncio.sleep(self.every)
                finally:
                    drain.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await drain

    @staticmethod
    async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:  # the broadcasts come back to us too
            pass

    def _nonce(self) -> int:
        while True:
            nonce = secrets.randbelow(NONCE_MAX) + 1  # never the drop bit (qoe.signal.code)
            if nonce not in self._sent:
                return nonce
