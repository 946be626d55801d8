"""Headless Chromium as a reference player, driven over the Chrome DevTools Protocol.

:class:`Chromium` starts Debian's ``chromium`` on loopback with a fresh profile, in a process
group of its own, and stops that group by pid on every path out. It speaks CDP over one
WebSocket (aiohttp): the browser endpoint comes from the ``DevToolsActivePort`` file Chromium
writes into its profile, and each page is a flattened session on that socket
(``Target.attachToTarget`` with ``flatten``). A :class:`Page` evaluates JavaScript
(``Runtime.evaluate``, awaiting promises) and takes screenshots (``Page.captureScreenshot``).

:data:`PLAYER_JS`, injected into a page of the room, is a WHEP (and WHIP) client after
RFC 9725 (an SDP offer POSTed, a ``201 Created`` with the answer) that keeps its
``RTCPeerConnection`` as ``window.qoe.pc``; :func:`stats` reads its W3C ``getStats()``
figures (webrtc-stats: ``RTCInboundRtpStreamStats``, ``RTCOutboundRtpStreamStats``).
:func:`joined` publishes or watches from a page, optionally through a
:class:`~sim.proxy.UdpProxy` with a netem profile; :func:`watch_beside` runs ``qoe probe``
while the page plays and counts Chromium's figures over the probe's own watch window.

Under CI a missing Chromium fails the test (:func:`tests.servers.require`); elsewhere it skips.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _dt
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import numpy as np

from sim.profiles import load_profile
from sim.proxy import UdpProxy
from tests.servers import require

ROOT = str(Path(__file__).resolve().parent.parent)

__all__ = [
    "FLAGS",
    "PLAYER_JS",
    "Beside",
    "CdpError",
    "Chromium",
    "Joined",
    "Page",
    "Snapshot",
    "joined",
    "only_candidate",
    "stats",
    "strip_candidates",
    "watch_beside",
]

FLAGS = [
    "--headless=new",
    "--remote-debugging-port=0",
    "--remote-debugging-address=127.0.0.1",
    # Tests run as root in CI containers, where Chromium's sandbox cannot start.
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--window-size=800,600",
    # getUserMedia without a prompt, from a synthetic camera (a moving pattern) and microphone
    # (a beep a second).
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream=fps=30",
    "--autoplay-policy=no-user-gesture-required",
    # A hidden page must not be throttled: its timers and its video would stutter.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # The room listens on 127.0.0.1 only; Chromium leaves loopback out of ICE without this.
    "--allow-loopback-in-peer-connection",
    # Host candidates as addresses, not mDNS names the room would have to resolve.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
"""Chromium's command line after the binary and the profile directory."""

START_TIMEOUT = 20.0
"""Seconds Chromium may take to open its DevTools endpoint."""


class CdpError(RuntimeError):
    """A CDP command failed, or a page's JavaScript threw; the message says which and why."""


class Chromium:
    """``async with Chromium(log_dir) as browser: page = await browser.new_page(url)``.

    ``log_dir`` receives ``chromium.log`` (its stderr and stdout), printed on a failed start.
    """

    def __init__(self, log_dir: Path, *, extra_flags: tuple[str, ...] = ()) -> None:
        self.binary = require("chromium")
        self.log = log_dir / "chromium.log"
        self.extra_flags = extra_flags
        self.proc: subprocess.Popen[bytes] | None = None
        self._profile: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> Chromium:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="chromium-")
        args = [self.binary, f"--user-data-dir={self._profile}", *FLAGS, *self.extra_flags, "about:blank"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # Chromium's singleton socket goes to TMPDIR: inside the profile, it goes with it.
                env={**os.environ, "TMPDIR": self._profile},
            )
        endpoint = await self._endpoint()
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(endpoint, max_msg_size=0, timeout=aiohttp.ClientWSTimeout())
        self._reader = asyncio.create_task(self._read())

    async def _endpoint(self) -> str:
        """The browser's DevTools WebSocket URL, from the port file Chromium writes when ready."""
        assert self.proc is not None and self._profile is not None
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode}: {self._tail()}")
            with contextlib.suppress(FileNotFoundError):
                lines = port_file.read_text().split()
                if len(lines) == 2:
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            await asyncio.sleep(0.05)
        raise TimeoutError(f"chromium opened no DevTools port within {START_TIMEOUT:g} s: {self._tail()}")

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    async def stop(self) -> None:
        """Close the socket, then end Chromium's whole process group by its pid."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.proc is not None:
            await asyncio.to_thread(_kill_group, self.proc)
            self.proc = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                future = self._pending.pop(data.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError("the DevTools connection closed"))
            self._pending.clear()

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send one CDP command and return its ``result``; :class:`CdpError` on an error reply."""
        if self._ws is None:
            raise CdpError("chromium is not running")
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps(message))
        try:
            async with asyncio.timeout(timeout):
                reply = await future
        finally:
            self._pending.pop(ident, None)
        if "error" in reply:
            raise CdpError(
                f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}".strip()
            )
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def new_page(self, url: str = "about:blank") -> Page:
        """Open ``url`` in a window of its own and wait until its document has loaded (a
        background tab decodes video but presents none of it)."""
        target = await self.send("Target.createTarget", {"url": "about:blank", "newWindow": True})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"], target["targetId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        if url != "about:blank":
            await page.goto(url)
        return page


class Page:
    """One tab, as a flattened CDP session of its :class:`Chromium`."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser = browser
        self.session = session
        self.target = target

    async def close(self) -> None:
        """Close the tab (and its window)."""
        await self.browser.send("Target.closeTarget", {"targetId": self.target})

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session, timeout=timeout)

    async def goto(self, url: str, timeout: float = 15) -> None:
        reply = await self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CdpError(f"cannot open {url}: {reply['errorText']}")
        await self.wait_for("document.readyState === 'complete'", timeout)

    async def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of ``expression`` in the page (a promise is awaited), as JSON gives it."""
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "userGesture": True},
            timeout=timeout,
        )
        details = reply.get("exceptionDetails")
        if details is not None:
            thrown = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression[:80]!r} threw: {thrown}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15, every: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy and return it; TimeoutError with its last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(every)
        raise TimeoutError(f"{expression!r} was still {value!r} after {timeout:g} s")

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page's viewport to ``path``."""
        reply = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(reply["data"]))
        return path


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to Chromium's process group (its renderers and GPU/utility helpers), then
    SIGKILL if the browser has not gone within 5 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Helpers that outlived the browser.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# -- a WHEP / WHIP client in the page ------------------------------------------------------

PLAYER_JS = r"""
window.qoe = (() => {
  const self = { pc: null, resource: null, video: null };

  // Create the peer connection and its offer, with every candidate in it (no trickle ICE).
  // role "whep": receive video and audio; "whip": send the fake camera and microphone.
  // codecs: video mimeTypes to offer, in order (setCodecPreferences), or null for all.
  // A publisher's m-lines come in getUserMedia's order, audio first; a viewer's video first
  // unless audioFirst.
  self.offer = async (role, codecs, audioFirst = false) => {
    self.close();
    const pc = self.pc = new RTCPeerConnection();
    let video;
    if (role === "whip") {
      const media = await navigator.mediaDevices.getUserMedia({
        video: { width: 640, height: 360, frameRate: 30 }, audio: true,
      });
      for (const track of media.getTracks()) {
        pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
      }
      video = pc.getTransceivers().find((t) => t.sender.track && t.sender.track.kind === "video");
    } else {
      const audio = audioFirst && pc.addTransceiver("audio", { direction: "recvonly" });
      video = pc.addTransceiver("video", { direction: "recvonly" });
      if (!audio) pc.addTransceiver("audio", { direction: "recvonly" });
      const element = self.video = document.createElement("video");
      element.autoplay = element.muted = element.playsInline = true;
      element.width = 640;
      document.body.appendChild(element);
      pc.ontrack = (e) => { element.srcObject = e.streams[0] || new MediaStream([e.track]); };
    }
    if (codecs) {
      const all = RTCRtpReceiver.getCapabilities("video").codecs;
      const chosen = codecs.flatMap((m) => all.filter((c) => c.mimeType.toLowerCase() === m.toLowerCase()));
      video.setCodecPreferences(chosen);
    }
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
      if (pc.iceGatheringState === "complete") return done();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
      setTimeout(done, 2000);
    });
    return pc.localDescription.sdp;
  };

  // RFC 9725: POST the offer as application/sdp; 201 Created carries the answer and the
  // session's Location.
  self.post = async (url, sdp) => {
    const headers = { "Content-Type": "application/sdp" };
    const response = await fetch(url, { method: "POST", headers, body: sdp });
    const body = await response.text();
    if (response.status === 201) self.resource = new URL(response.headers.get("Location"), url).href;
    return { status: response.status, body };
  };

  // Apply the answer and wait until the connection is up (or failed).
  self.accept = async (sdp, timeout = 10000) => {
    const pc = self.pc;
    await pc.setRemoteDescription({ type: "answer", sdp });
    await new Promise((done) => {
      const check = () => ["connected", "failed", "closed"].includes(pc.connectionState) && done();
      pc.addEventListener("connectionstatechange", check);
      check();
      setTimeout(done, timeout);
    });
    return pc.connectionState;
  };

  self.connect = async (url, role, codecs, audioFirst = false) => {
    const reply = await self.post(url, await self.offer(role, codecs || null, audioFirst));
    if (reply.status !== 201) return { status: reply.status, body: reply.body, state: null };
    return { status: 201, body: reply.body, state: await self.accept(reply.body) };
  };

  const INBOUND = ["freezeCount", "totalFreezesDuration", "pauseCount", "totalPausesDuration",
    "framesReceived", "framesDecoded", "framesDropped", "framesPerSecond", "jitterBufferDelay",
    "jitterBufferEmittedCount", "nackCount", "pliCount", "packetsReceived", "packetsLost",
    "frameWidth", "frameHeight", "totalInterFrameDelay", "keyFramesDecoded"];
  const OUTBOUND = ["framesEncoded", "framesSent", "framesPerSecond", "packetsSent", "nackCount",
    "pliCount", "frameWidth", "frameHeight", "qualityLimitationReason", "keyFramesEncoded"];
  const pick = (stat, keys) => Object.fromEntries(keys.map((k) => [k, stat[k] ?? null]));

  // The video inbound-rtp and outbound-rtp figures, the codec in use, and the wall time.
  self.stats = async () => {
    const out = { at: Date.now() / 1000, inbound: null, outbound: null, codec: null };
    if (!self.pc) return out;
    const report = await self.pc.getStats();
    for (const stat of report.values()) {
      if (stat.kind !== "video") continue;
      if (stat.type === "inbound-rtp") out.inbound = pick(stat, INBOUND);
      if (stat.type === "outbound-rtp") out.outbound = pick(stat, OUTBOUND);
      if ((stat.type === "inbound-rtp" || stat.type === "outbound-rtp") && stat.codecId) {
        const codec = report.get(stat.codecId);
        out.codec = codec ? codec.mimeType : null;
      }
    }
    return out;
  };

  self.close = () => {
    if (self.resource) { fetch(self.resource, { method: "DELETE" }).catch(() => {}); self.resource = null; }
    if (self.pc) { self.pc.close(); self.pc = null; }
  };
  return self;
})();
true
"""
"""Defines ``window.qoe``: ``offer(role, codecs)``, ``post(url, sdp)``, ``accept(answer)``,
``connect(url, role, codecs)`` (all three), ``stats()`` and ``close()``."""


@dataclass(frozen=True)
class Snapshot:
    """One ``qoe.stats()`` reading: ``at`` (Unix seconds, the page's clock), the video
    ``inbound`` and ``outbound`` RTP figures (None where there is no such stream), ``codec``."""

    at: float
    inbound: dict[str, Any] | None
    outbound: dict[str, Any] | None
    codec: str | None

    def inbound_delta(self, earlier: Snapshot, key: str) -> float:
        """How much an inbound counter grew since ``earlier``."""
        assert self.inbound is not None and earlier.inbound is not None, "no inbound video"
        return float(self.inbound[key] or 0) - float(earlier.inbound[key] or 0)


async def stats(page: Page) -> Snapshot:
    """The page's ``qoe.stats()`` (inject :data:`PLAYER_JS` first)."""
    data = await page.evaluate("qoe.stats()")
    return Snapshot(data["at"], data["inbound"], data["outbound"], data["codec"])


CANDIDATE = re.compile(r"^a=candidate:\S+ \d (\S+) \d+ (\S+) (\d+) typ ")
"""An SDP candidate line: transport, address, port."""


def strip_candidates(sdp: str) -> str:
    """``sdp`` without its ``a=candidate`` and ``a=end-of-candidates`` lines: a peer given it can
    only learn the other's address from its connectivity checks (as peer-reflexive)."""
    lines = sdp.splitlines()
    kept = [line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept) + "\r\n"


def only_candidate(sdp: str, host: str, port: int) -> tuple[str, tuple[str, int]]:
    """``sdp`` with its first UDP candidate moved to ``host:port`` and every other candidate
    removed (in every media section), and the address that candidate had."""
    lines = sdp.splitlines()
    matches = [(line, CANDIDATE.match(line)) for line in lines]
    first = next((line for line, m in matches if m and m.group(1).lower() == "udp"), None)
    if first is None:
        raise ValueError("the SDP has no UDP candidate")
    m = CANDIDATE.match(first)
    assert m is not None
    address = m.group(2), int(m.group(3))
    moved = first.replace(f" {address[0]} {address[1]} typ ", f" {host} {port} typ ", 1)
    out = [
        moved if line == first else line
        for line in lines
        if line == first or not line.startswith("a=candidate:")
    ]
    return "\r\n".join(out) + "\r\n", address


# -- Chromium and the probe side by side ----------------------------------------------------


@dataclass
class Joined:
    """A Chromium session in a room: the HTTP ``status`` of its offer, the ``answer`` (or the
    room's error text), the ``state`` its connection reached, and the impairment relay its
    media goes through (None: straight to the room)."""

    status: int
    answer: str
    state: str | None
    proxy: UdpProxy | None = None


@contextlib.asynccontextmanager
async def joined(
    page: Page,
    url: str,
    role: str = "whep",
    *,
    codecs: list[str] | None = None,
    audio_first: bool = False,
    profile: str | None = None,
    seed: int = 0,
) -> AsyncIterator[Joined]:
    """Publish (``role="whip"``) or watch (``"whep"``) at ``url`` from ``page``; close it after.

    ``codecs`` are the video mimeTypes to offer (None: all Chromium has); ``audio_first`` puts
    a viewer's audio m-line before its video.

    With ``profile``, Chromium's media goes through a :class:`~sim.proxy.UdpProxy` with that
    profile's links (downlink: room to Chromium): the room's answer is given to Chromium with
    the proxy's address as its only candidate, and the offer reaches the room without
    Chromium's candidates, so neither side can find a path around the proxy.
    """
    await page.evaluate(PLAYER_JS)
    proxy: UdpProxy | None = None
    try:
        arguments = json.dumps([role, codecs, audio_first])[1:-1]
        offer = await page.evaluate(f"qoe.offer({arguments})")
        if profile is not None:
            offer = strip_candidates(offer)
        reply = await page.evaluate(f"qoe.post({json.dumps(url)}, {json.dumps(offer)})")
        answer, state = reply["body"], None
        if reply["status"] == 201:
            if profile is not None:
                _, room_address = only_candidate(answer, "127.0.0.1", 0)
                proxy = UdpProxy(
                    ("127.0.0.1", 0), room_address, load_profile(profile), np.random.default_rng(seed)
                )
                await proxy.start()
                answer, _ = only_candidate(answer, *proxy.address)
            state = await page.evaluate(f"qoe.accept({json.dumps(answer)})")
        yield Joined(reply["status"], answer, state, proxy)
    finally:
        with contextlib.suppress(CdpError):
            await page.evaluate("qoe.close(), true", timeout=5)
        if proxy is not None:
            await proxy.stop()


@dataclass
class Beside:
    """What Chromium and the probe saw over the probe's watch window, and the room's truth.

    ``probe`` is the probe's ProbeResult JSON; ``window`` its watch, Unix seconds; ``before``
    and ``after`` Chromium's stats at (just before) the window's start and (just after) its
    end; ``injected`` the freezes the room's host injected wholly inside the window and
    ``straddling`` those across one of its edges (``[start, end]`` pairs, Unix seconds);
    ``room_stalls`` how often the room's own event loop ran over 100 ms late in the window (a
    machine too busy: freezes nobody injected).
    """

    probe: dict[str, Any]
    window: tuple[float, float]
    before: Snapshot
    after: Snapshot
    injected: list[tuple[float, float]]
    straddling: list[tuple[float, float]]
    room_stalls: int
    snapshots: list[Snapshot]
    """Every reading, in time order, for a look at when Chromium's counters moved."""

    def chromium(self, key: str) -> float:
        """How much Chromium's inbound ``key`` grew over the window."""
        return self.after.inbound_delta(self.before, key)


SNAPSHOT_EVERY = 0.2
"""Seconds between Chromium's stats readings while the probe watches."""


async def watch_beside(
    page: Page,
    room_url: str,
    duration: float,
    *,
    room: str = "demo",
    profile: str | None = None,
    seed: int = 0,
    phase: tuple[float, float] | None = None,
) -> Beside:
    """Run ``qoe probe`` on ``room`` for ``duration`` s while ``page`` (already watching) keeps
    playing, and read Chromium's stats every :data:`SNAPSHOT_EVERY` s to count over the
    probe's own window. ``profile`` and ``seed`` go to the probe. ``phase=(every, at)`` starts
    the probe when the wall clock is ``at`` seconds into a period of ``every`` seconds (the
    freeze knobs' period), so that no injected freeze straddles the window's edges.
    """
    if phase is not None:
        every, at = phase
        await asyncio.sleep((at - time.time() % every) % every)
    args = [sys.executable, "-m", "qoe", "probe", f"{room_url}/whep/{room}", "--duration", f"{duration:g}"]
    if profile is not None:
        args += ["--profile", profile, "--seed", str(seed)]
    proc = await asyncio.create_subprocess_exec(
        *args, "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT
    )
    snapshots: list[Snapshot] = []
    try:
        communicate = asyncio.ensure_future(proc.communicate())
        while not communicate.done():
            snapshots.append(await stats(page))
            await asyncio.wait([communicate], timeout=SNAPSHOT_EVERY)
        out, err = communicate.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    snapshots.append(await stats(page))
    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(f"qoe probe printed no result: {err.decode(errors='replace')[-2000:]}") from None
    start = _dt.datetime.fromisoformat(result["started_at"].replace("Z", "+00:00")).timestamp()
    end = start + result["duration_seconds"]
    before = max((s for s in snapshots if s.at <= start), key=lambda s: s.at, default=snapshots[0])
    after = min((s for s in snapshots if s.at >= end), key=lambda s: s.at, default=snapshots[-1])
    async with aiohttp.ClientSession() as http, http.get(f"{room_url}/rooms/{room}") as response:
        info = await response.json()
    freezes = [(a, b) for a, b in info.get("injected_freezes", [])]
    inside = [(a, b) for a, b in freezes if start < a and b < end]
    straddling = [(a, b) for a, b in freezes if a < start < b or a < end < b]
    stalls = sum(1 for stall in info.get("loop_stalls", []) if start <= stall["at"] <= end)
    return Beside(result, (start, end), before, after, inside, straddling, stalls, snapshots)
