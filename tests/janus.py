"""Janus as a real SFU for the tests: in a network namespace of its own, behind a veth pair.

Why a namespace: Janus gathers its ICE candidates with libnice, which never offers a
loopback address, so on loopback alone no probe could reach its media. Each :class:`Janus`
makes a namespace and a veth pair whose two ends get addresses from a private /24 that
exists nowhere else on the machine; Janus runs inside (``ip netns exec``), and the tests
and probes stay on the host's side and reach it by the veth addresses. A probe whose URL
names a non-loopback host gathers on every interface (``probes.webrtc.peer``), the veth's
among them, so the front ends here listen on the host's veth address, not on loopback.

Janus 1.1 speaks its own JSON API, not WHIP or WHEP, so :func:`front_end` translates:

- ``POST /whip/ROOM`` with an offer joins a VideoRoom as a publisher (``joinandconfigure``
  with the offer; the room is created on first use) and answers 201 with Janus's answer;
- ``POST /whep/ROOM`` subscribes to every publisher of the room, in the order they joined
  (host first, then co-host), and ``POST /whep/stream/ID`` watches a Streaming mountpoint.
  Janus 1.1 makes the offer to every subscriber (its Streaming plugin takes a viewer's offer
  only from 1.1.4 on, its VideoRoom not at all), so these speak WHEP in server-offer mode,
  as Meetecho's own WHEP front end (``janus-whep-server``) does: the POST's offer is not
  taken, a 406 carries Janus's offer and the session's ``Location``, and the viewer PATCHes
  its answer (``application/sdp``) to the session, which starts the media; the WHEP probe
  does this with ``offer = "server"``;
- ``DELETE`` on a session ends its Janus session.

Under ``CI=true`` a missing ``janus`` or ``ip``, or no root, fails the test; elsewhere it
skips (:func:`tests.servers.unavailable`). Everything is stopped by pid, and the namespace
is deleted with ``ip netns del``, which takes the veth pair with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import re
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.servers import build, free_port, require, stop_process, unavailable, wait_http

__all__ = [
    "Janus",
    "JanusSession",
    "MeetechoWhep",
    "forward_into_mountpoint",
    "front_end",
    "janus",
    "meetecho_whep",
]

LIBRARY = Path("/usr/lib/x86_64-linux-gnu/janus")
"""Where Debian's janus package puts its plugins and transports."""
PLUGINS = ("streaming", "videoroom", "textroom")
HTTP_PORT = 8088
WS_PORT = 8188
"""Janus's WebSocket API, which Meetecho's WHEP server (through janode) speaks."""
RTP_PORTS = "20000-20999"
"""Janus's media ports, inside its namespace (so no other test's ports can collide)."""


def _jcfg(sections: dict[str, dict[str, object]]) -> str:
    """``sections`` in Janus's libconfig syntax."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return f'"{v}"'

    return "".join(
        f"{name}: {{\n" + "".join(f"\t{k} = {value(v)}\n" for k, v in body.items()) + "}\n"
        for name, body in sections.items()
    )


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no interface or route of this machine uses."""
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    used += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    start = os.getpid() % 250
    for n in itertools.chain(range(start, 250), range(start)):
        net = ipaddress.IPv4Network(f"10.213.{n}.0/24")
        if f"10.213.{n}." not in used:
            return net
    raise RuntimeError("no free /24 in 10.213.0.0/16 for Janus's veth pair")


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Janus:
    """A Janus in its own namespace; ``url`` is its HTTP API, ``host`` the veth address on
    this side (where front ends listen, so that probes gather the veth's candidates)."""

    tmp: Path
    namespace: str = ""
    host: str = ""
    janus_host: str = ""
    url: str = ""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.tmp / "janus.log"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else "(no log)"

    def _configure(self, veth: str) -> Path:
        """Config, plugin and transport folders under ``tmp``: only the plugins the tests use
        and the HTTP and WebSocket transports are linked in, so nothing else loads or listens."""
        conf, plugins, transports, empty = (self.tmp / d for d in ("conf", "plugins", "transports", "none"))
        for folder in (conf, plugins, transports, empty):
            folder.mkdir()
        for name in PLUGINS:
            (plugins / f"libjanus_{name}.so").symlink_to(LIBRARY / "plugins" / f"libjanus_{name}.so")
            (conf / f"janus.plugin.{name}.jcfg").write_text(_jcfg({"general": {}}))
        for transport in ("http", "websockets"):
            name = f"libjanus_{transport}.so"
            (transports / name).symlink_to(LIBRARY / "transports" / name)
        (conf / "janus.jcfg").write_text(
            _jcfg(
                {
                    "general": {
                        "configs_folder": str(conf),
                        "plugins_folder": str(plugins),
                        "transports_folder": str(transports),
                        "events_folder": str(empty),
                        "loggers_folder": str(empty),
                        "debug_level": 4,
                        "session_timeout": 0,
                        "server_name": "qoe-test",
                    },
                    "media": {"rtp_port_range": RTP_PORTS},
                    "nat": {"ice_enforce_list": veth},
                }
            )
        )
        (conf / "janus.transport.http.jcfg").write_text(
            _jcfg(
                {
                    "general": {"json": "plain", "base_path": "/janus", "http": True, "port": HTTP_PORT},
                    "admin": {"admin_http": False},
                }
            )
        )
        (conf / "janus.transport.websockets.jcfg").write_text(
            _jcfg(
                {
                    "general": {"json": "plain", "ws": True, "ws_port": WS_PORT, "wss": False},
                    "admin": {"admin_ws": False, "admin_wss": False},
                }
            )
        )
        return conf

    @contextlib.contextmanager
    def run(self) -> Iterator[Janus]:
        binary = require("janus")
        require("ip")
        if os.geteuid() != 0:
            unavailable("Janus's network namespace needs root (ip netns add)")
        net = _free_subnet()
        self.host, self.janus_host = str(net[1]), str(net[2])
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.namespace = f"qoe-janus-{tag}"
        outside, inside = f"qjh{tag}"[:15], f"qjn{tag}"[:15]
        _ip("netns", "add", self.namespace)
        proc = None
        try:
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", self.namespace)
            _ip("addr", "add", f"{self.host}/24", "dev", outside)
            _ip("link", "set", outside, "up")
            for args in (
                ("addr", "add", f"{self.janus_host}/24", "dev", inside),
                ("link", "set", inside, "up"),
                ("link", "set", "lo", "up"),
            ):
                _ip("-n", self.namespace, *args)
            conf = self._configure(inside)
            with open(self.log, "wb") as out:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.namespace, binary, "-F", str(conf), "-o"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self.url = f"http://{self.janus_host}:{HTTP_PORT}/janus"
            wait_http(f"{self.url}/info", proc=proc)
            yield self
        except Exception:
            print(self.log_tail())
            raise
        finally:
            if proc is not None:
                stop_process(proc)  # ip netns exec execs janus: its pid is Janus's
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", outside)
            _ip("netns", "del", self.namespace)


@contextlib.contextmanager
def janus(tmp: Path) -> Iterator[Janus]:
    """Janus 1.1 (Debian's) with the Streaming, VideoRoom and TextRoom plugins and the HTTP
    API, in a namespace of its own, until the block ends."""
    with Janus(tmp).run() as server:
        yield server


ROOT = Path(__file__).resolve().parent.parent


class MeetechoWhep:
    """Meetecho's own WHEP server (``janus-whep-server`` from npm, run by node from
    ``tests/janus_whep.mjs``) in front of a :class:`Janus`, on the host's veth address."""

    def __init__(self, proc: subprocess.Popen[str], base: str) -> None:
        self._proc = proc
        self.base = base
        """``http://HOST:PORT/whep``: endpoints are at ``BASE/endpoint/ID``."""

    def videoroom(self, endpoint: str, room: int, feed: int) -> str:
        """Make endpoint ``endpoint``, a subscription to ``feed`` in ``room``; its URL."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"videoroom {endpoint} {room} {feed}\n")
        self._proc.stdin.flush()
        answer = _reply(self._proc)
        if answer != f"created {endpoint}":
            raise JanusError(f"janus-whep-server: {answer or 'exited'}")
        return f"{self.base}/endpoint/{endpoint}"


@contextlib.contextmanager
def meetecho_whep(server: Janus, tmp: Path) -> Iterator[MeetechoWhep]:
    """Meetecho's WHEP server for ``server``, installed by ``scripts/build-janus-whep.sh``
    (exit 2: node or npm missing, which CI treats as a failure), until the block ends."""
    module = build("build-janus-whep.sh")
    port = free_port(server.host)
    log = open(tmp / "janus-whep.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            require("node"),
            str(ROOT / "tests" / "janus_whep.mjs"),
            module,
            f"ws://{server.janus_host}:{WS_PORT}",
            str(port),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if _reply(proc) != "ready":
            raise JanusError(
                f"janus-whep-server did not start: {(tmp / 'janus-whep.log').read_text()[-2000:]}"
            )
        yield MeetechoWhep(proc, f"http://{server.host}:{port}/whep")
    finally:
        stop_process(proc)
        log.close()


def _reply(proc: subprocess.Popen[str]) -> str:
    """The script's next answer (a line starting ``@@``), past janode's log lines; "" at
    its end."""
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith("@@"):
            return line[2:].strip()
    return ""


class JanusError(RuntimeError):
    pass


class JanusSession:
    """One session of Janus's HTTP API, with its events long-polled in the background."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = url
        self.id: int | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        transaction = secrets.token_hex(8)
        async with self._http.post(f"{self._url}{path}", json={**body, "transaction": transaction}) as r:
            reply: dict[str, Any] = await r.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(f"Janus refused {body.get('janus')}: {reply['error']}")
        return reply

    async def open(self) -> JanusSession:
        self.id = (await self._post("", {"janus": "create"}))["data"]["id"]
        self._poller = asyncio.create_task(self._poll())
        return self

    async def _poll(self) -> None:
        """Deliver each asynchronous plugin event to the request it answers."""
        while True:
            async with self._http.get(f"{self._url}/{self.id}", params={"maxev": "10"}) as r:
                events = await r.json(content_type=None)
            for event in events if isinstance(events, list) else [events]:
                waiter = self._waiting.pop(event.get("transaction", ""), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event)

    async def attach(self, plugin: str) -> int:
        reply = await self._post(f"/{self.id}", {"janus": "attach", "plugin": f"janus.plugin.{plugin}"})
        return int(reply["data"]["id"])

    async def request(
        self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        """A plugin request; its result data and JSEP, whether Janus answers at once or later."""
        transaction = secrets.token_hex(8)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = waiter
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        async with self._http.post(f"{self._url}/{self.id}/{handle}", json=message) as r:
            reply: dict[str, Any] = await r.json(content_type=None)
        if reply.get("janus") == "ack":
            reply = await asyncio.wait_for(waiter, timeout)
        self._waiting.pop(transaction, None)
        if reply.get("janus") == "error":
            raise JanusError(f"Janus refused {body['request']}: {reply['error']}")
        data: dict[str, Any] = reply["plugindata"]["data"]
        if "error" in data:
            raise JanusError(f"{reply['plugindata']['plugin']} refused {body['request']}: {data['error']}")
        return data, reply.get("jsep")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self._poller
        if self.id is not None:
            with contextlib.suppress(JanusError, aiohttp.ClientError):
                await self._post(f"/{self.id}", {"janus": "destroy"})


def room_number(name: str) -> int:
    """VideoRoom rooms are numbered; a room named in a URL gets a stable number."""
    return int.from_bytes(name.encode()[:6].ljust(6, b"\0"), "big") % 1_000_000_000 + 1


@dataclass
class Front:
    """What the front end holds: Janus sessions by id, and each room's publishers in the
    order they joined (feed ids)."""

    janus: Janus
    sessions: dict[str, JanusSession] = field(default_factory=dict)
    publishers: dict[str, list[int]] = field(default_factory=dict)
    rooms: set[int] = field(default_factory=set)
    answers: dict[str, str] = field(default_factory=dict)
    """Janus's answer to each room's first publisher."""
    pending: dict[str, int] = field(default_factory=dict)
    """Session id -> plugin handle, of subscribers still owing their answer."""
    http: aiohttp.ClientSession | None = None


@contextlib.asynccontextmanager
async def front_end(server: Janus) -> AsyncIterator[tuple[str, Front]]:
    """WHIP and WHEP in front of ``server`` (see the module); yields its base URL, on the
    host's veth address, and its state."""
    ids = itertools.count(1)
    async with aiohttp.ClientSession() as http:
        front = Front(server, http=http)

        async def open_session(plugin: str) -> tuple[str, JanusSession, int]:
            session = await JanusSession(http, server.url).open()
            key = str(next(ids))
            front.sessions[key] = session
            return key, session, await session.attach(plugin)

        async def ensure_room(session: JanusSession, handle: int, room: int) -> None:
            if room in front.rooms:
                return
            await session.request(
                handle,
                {
                    "request": "create",
                    "room": room,
                    "publishers": 4,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                },
            )
            front.rooms.add(room)

        async def whip(request: web.Request) -> web.Response:
            name = request.match_info["room"]
            room = room_number(name)
            key, session, handle = await open_session("videoroom")
            await ensure_room(session, handle, room)
            data, jsep = await session.request(
                handle,
                {"request": "joinandconfigure", "room": room, "ptype": "publisher", "display": key},
                {"type": "offer", "sdp": await request.text()},
            )
            assert jsep is not None, data
            front.publishers.setdefault(name, []).append(int(data["id"]))
            front.answers.setdefault(name, jsep["sdp"])
            return web.Response(
                status=201,
                text=jsep["sdp"],
                content_type="application/sdp",
                headers={"Location": f"/whip/sessions/{key}"},
            )

        def offered(key: str, handle: int, jsep: dict[str, str] | None) -> web.Response:
            assert jsep is not None and jsep["type"] == "offer", jsep
            front.pending[key] = handle
            return web.Response(
                status=406,
                text=jsep["sdp"],
                content_type="application/sdp",
                headers={"Location": f"/whep/sessions/{key}"},
            )

        async def refuse_offer(request: web.Request) -> web.Response | None:
            """A POST must carry an SDP offer (which Janus does not take), as Meetecho's
            front end has it."""
            if request.content_type != "application/sdp" or "v=0" not in await request.text():
                return web.Response(status=415, text="Missing SDP offer\n")
            return None

        async def whep(request: web.Request) -> web.Response:
            if refused := await refuse_offer(request):
                return refused
            name = request.match_info["room"]
            feeds = front.publishers.get(name, [])
            if not feeds:
                return web.Response(status=404, text=f"no publisher in {name}\n")
            key, session, handle = await open_session("videoroom")
            _, jsep = await session.request(
                handle,
                {
                    "request": "join",
                    "room": room_number(name),
                    "ptype": "subscriber",
                    "streams": [{"feed": feed} for feed in feeds],
                },
            )
            return offered(key, handle, jsep)

        async def stream(request: web.Request) -> web.Response:
            if refused := await refuse_offer(request):
                return refused
            key, session, handle = await open_session("streaming")
            _, jsep = await session.request(handle, {"request": "watch", "id": int(request.match_info["id"])})
            return offered(key, handle, jsep)

        async def patch(request: web.Request) -> web.Response:
            key = request.match_info["session"]
            if request.content_type != "application/sdp" or key not in front.pending:
                return web.Response(status=405)
            handle = front.pending.pop(key)
            answer = {"type": "answer", "sdp": await request.text()}
            await front.sessions[key].request(handle, {"request": "start"}, answer)
            return web.Response(status=204)

        async def delete(request: web.Request) -> web.Response:
            session = front.sessions.pop(request.match_info["session"], None)
            if session is None:
                return web.Response(status=404)
            await session.close()
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/whip/{room}", whip)
        app.router.add_post("/whep/stream/{id}", stream)
        app.router.add_post("/whep/{room}", whep)
        app.router.add_patch("/{role:whip|whep}/sessions/{session}", patch)
        app.router.add_delete("/{role:whip|whep}/sessions/{session}", delete)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, server.host, 0).start()
        try:
            yield f"http://{server.host}:{runner.addresses[0][1]}", front
        finally:
            await runner.cleanup()
            for session in front.sessions.values():
                await session.close()


async def forward_into_mountpoint(front: Front, room: str, mountpoint: int) -> None:
    """Make Streaming mountpoint ``mountpoint`` and have the VideoRoom forward the room's
    first publisher into it as plain RTP inside Janus's namespace: the mountpoint's viewers
    then get what that publisher sent, relayed twice by Janus, decoded nowhere.

    Janus's answer to that publisher names the mids and payload types to forward and to
    announce."""
    media = []
    forwards = []
    for port, section in enumerate(re.split(r"(?m)^(?=m=)", front.answers[room])[1:], start=22000):
        kind, pt = re.match(r"m=(\w+) \d+ \S+ (\d+)", section).groups()  # type: ignore[union-attr]
        mid = re.search(r"(?m)^a=mid:(\S+)", section).group(1)  # type: ignore[union-attr]
        codec = re.search(rf"(?m)^a=rtpmap:{pt} ([\w-]+)/", section).group(1).lower()  # type: ignore[union-attr]
        media.append({"type": kind, "mid": mid, "port": port * 2, "pt": int(pt), "codec": codec})
        forwards.append({"mid": mid, "host": "127.0.0.1", "port": port * 2})
    assert front.http is not None
    session = await JanusSession(front.http, front.janus.url).open()
    key = f"mountpoint-{mountpoint}"
    front.sessions[key] = session
    streaming = await session.attach("streaming")
    await session.request(streaming, {"request": "create", "type": "rtp", "id": mountpoint, "media": media})
    videoroom = await session.attach("videoroom")
    await session.request(
        videoroom,
        {
            "request": "rtp_forward",
            "room": room_number(room),
            "publisher_id": front.publishers[room][0],
            "host": "127.0.0.1",
            "streams": forwards,
        },
    )
