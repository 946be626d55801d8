"""The WebRTC probes as RFC 9725 clients: what a WHIP or WHEP server may ask of them.

Each behaviour is checked against a small server on loopback that behaves that way
(:mod:`tests.whep_front`): STUN and TURN servers announced in ``Link`` headers, a bearer token
on every request and in no output, 307 and 308 redirects of the POST, candidates trickled by
PATCH with ``If-Match`` (and a server that takes no PATCH), 503 with ``Retry-After``, a server
that makes the offer itself, redirects and session URLs to other hosts when the probe is fenced
to some (as ``qoe serve`` fences /probe), and a media path through a real TURN server only
(Debian's coturn).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aioice import stun
from aiortc import RTCIceServer, VideoStreamTrack

from probes import probe_spec, run_probe
from probes.options import OptionError, validate
from probes.webrtc import whep
from probes.webrtc.signaling import MAX_REDIRECTS, ice_servers, retry_delay, trickle_fragment
from qoe.fleet.config import parse_fleet
from qoe.result import ProbeResult
from qoe.timeline import Timeline
from tests.servers import aiohttp_app, free_port, require, stop_process
from tests.whep_front import Front, IceServer, Seen, front_end, peer_server, redirects

TOKEN = "tok-3f9a1c77e2d84b6a"
"""A bearer token no output may show."""

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
    "a=ice-ufrag:AbCd\r\na=ice-pwd:0123456789abcdef012345\r\na=recvonly\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
    "a=ice-ufrag:AbCd\r\na=ice-pwd:0123456789abcdef012345\r\na=recvonly\r\n"
)


# -- the pieces, on their own ----------------------------------------------------------


def test_link_headers_name_stun_and_turn_servers() -> None:
    links = [
        '<stun:stun.example.net>; rel="ice-server"',
        '<turn:turn.example.net:3478?transport=udp>; rel="ice-server"; username="u"; '
        'credential="p"; credential-type="password", <https://example.net/help>; rel="help"',
        '<turns:turn.example.net?transport=tcp>; rel=ice-server; username=u2; credential="a;b,c"',
        '<ftp:nonsense>; rel="ice-server"',
    ]
    assert ice_servers(links) == (
        RTCIceServer("stun:stun.example.net", username=None, credential=None),
        RTCIceServer("turn:turn.example.net:3478?transport=udp", username="u", credential="p"),
        RTCIceServer("turns:turn.example.net?transport=tcp", username="u2", credential="a;b,c"),
    )


def test_retry_after_is_seconds_or_a_date() -> None:
    assert retry_delay("3") == 3.0
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    delay = retry_delay(in_a_minute)
    assert delay is not None and 55 < delay <= 60
    assert retry_delay("soon") is None


def test_trickle_fragment_names_the_offers_ice_session() -> None:
    fragment = trickle_fragment(
        OFFER, ["1 1 udp 1694498815 192.0.2.7 50000 typ srflx raddr 10.0.0.2 rport 5000"]
    )
    assert fragment.split("\r\n") == [
        "a=ice-ufrag:AbCd",
        "a=ice-pwd:0123456789abcdef012345",
        "m=video 9 UDP/TLS/RTP/SAVPF 97 98",
        "a=mid:0",
        "a=candidate:1 1 udp 1694498815 192.0.2.7 50000 typ srflx raddr 10.0.0.2 rport 5000",
        "a=end-of-candidates",
        "",
    ]


def test_a_fleet_file_sets_the_token_and_the_ice_transport(cli, tmp_path) -> None:
    fleet = tmp_path / "fleet.toml"
    target = '[[targets]]\nname = "shop"\nurl = "http://127.0.0.1:9/whep/shop"\n'
    fleet.write_text(f'{target}options = {{ token = "{TOKEN}", ice_transport = "relay" }}\n')
    (parsed,) = parse_fleet(fleet.read_text()).targets
    assert parsed.options == {"token": TOKEN, "ice_transport": "relay"}
    checked = cli("fleet", "check", str(fleet))
    assert checked.returncode == 0, checked.stderr
    fleet.write_text(f"{target}options = {{ token = 1234567 }}\n")
    refused = cli("fleet", "check", str(fleet))
    assert refused.returncode == 2 and "options.token: option 'token' of whep probes" in refused.stderr
    for done in (checked, refused):
        assert TOKEN not in done.stdout + done.stderr and "1234567" not in done.stderr


def test_a_bad_token_is_refused_without_being_shown() -> None:
    with pytest.raises(OptionError) as refused:
        validate("whep", {"token": 1234567}, whep.OPTIONS)
    assert "1234567" not in str(refused.value)
    assert validate("whep", {"token": TOKEN}, whep.OPTIONS)["token"] == TOKEN
    assert validate("whep", {}, whep.OPTIONS)["ice_transport"] == "all"


# -- against a front end to the room ---------------------------------------------------

ROOM_PROBE = {"duration": 2.0, "join_timeout": 5.0}


async def watch(url: str, **options: object) -> ProbeResult:
    return await run_probe(probe_spec(url, options=options, **ROOM_PROBE))  # type: ignore[arg-type]


def assert_watched(result: ProbeResult) -> None:
    assert result.success, result.error
    assert result.video.frames and result.video.frames > 20
    assert set(result.join.phases) == set(whep.PHASES)


@pytest.mark.slow
async def test_announced_ice_servers_are_used_and_their_candidates_trickled(room) -> None:
    async with room() as live, IceServer.serve() as (ice, port):
        front = Front(
            live.url,
            token=TOKEN,
            links=[
                f'<stun:127.0.0.1:{port}>; rel="ice-server"',
                f'<turn:127.0.0.1:{port}?transport=udp>; rel="ice-server"; username="u"; '
                'credential="p"; credential-type="password"',
            ],
        )
        async with front_end(front) as base:
            result = await watch(f"{base}/whep/demo", token=TOKEN)
    assert_watched(result)
    assert ice.bindings, "the announced STUN server was never asked"
    assert set(ice.allocations) == {"u"}, "the announced TURN server was not asked with its credentials"
    (offer,) = front.requests("POST")
    assert "a=end-of-candidates" not in offer.body
    (patch,) = front.requests("PATCH")
    assert patch.headers["Content-Type"] == "application/trickle-ice-sdpfrag"
    assert patch.headers["If-Match"].startswith('"')
    assert " typ srflx " in patch.body and patch.body.endswith("a=end-of-candidates\r\n")
    ufrag = next(line for line in offer.body.splitlines() if line.startswith("a=ice-ufrag:"))
    assert patch.body.startswith(ufrag)
    for request in front.seen:
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}", request.method
    assert [r.method for r in front.seen] == ["POST", "PATCH", "DELETE"]
    assert (result.ice.local_candidate_type, result.ice.remote_candidate_type) == ("host", "host")


@pytest.mark.slow
@pytest.mark.parametrize(("patch_status", "etag"), [(405, True), (501, True), (None, False)])
async def test_a_server_that_takes_no_trickle_is_watched_all_the_same(room, patch_status, etag) -> None:
    async with room() as live, IceServer.serve() as (_, port):
        front = Front(live.url, links=[f"<stun:127.0.0.1:{port}>; rel=ice-server"], etag=etag)
        front.patch_status = patch_status
        async with front_end(front) as base:
            result = await watch(f"{base}/whep/demo")
    assert_watched(result)
    assert len(front.requests("PATCH")) == (1 if etag else 0)


@pytest.mark.slow
async def test_redirects_are_followed_with_the_offer_and_the_token(room) -> None:
    async with room() as live:
        front = Front(live.url, token=TOKEN)
        async with front_end(front) as base:
            table = {"/whep/demo": (307, "/moved/whep/demo"), "/moved/whep/demo": (308, f"{base}/whep/demo")}
            async with redirects(table) as (balancer, hops):
                result = await watch(f"{balancer}/whep/demo", token=TOKEN)
    assert_watched(result)
    (offer,) = front.requests("POST")
    assert [h.path for h in hops] == ["/whep/demo", "/moved/whep/demo"]
    for hop in hops:
        assert hop.body == offer.body and "m=video" in offer.body
        assert hop.headers["Authorization"] == f"Bearer {TOKEN}"
    (delete,) = front.requests("DELETE")  # the relative Location, resolved against the last URL
    assert delete.path == "/whep/sessions/1"
    assert delete.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"/whep/demo": (307, "/whep/demo")}, f"more than {MAX_REDIRECTS} redirects"),
        ({"/whep/demo": (302, "/elsewhere")}, "HTTP 302 redirect of the POST, which drops the offer"),
    ],
)
async def test_redirects_that_cannot_be_followed_fail_as_signaling(table, message) -> None:
    async with redirects(table) as (base, hops):
        result = await watch(f"{base}/whep/demo")
    assert result.error is not None and result.error.kind == "signaling"
    assert message in result.error.message
    assert len(hops) <= MAX_REDIRECTS + 1


@pytest.mark.slow
async def test_a_busy_server_is_asked_again_after_its_retry_after(room) -> None:
    async with room() as live:
        front = Front(live.url, busy=["1"])
        async with front_end(front) as base:
            result = await watch(f"{base}/whep/demo")
    assert_watched(result)
    assert len(front.requests("POST")) == 2
    assert result.join.phases["signaling"] >= 1.0


async def test_a_retry_after_past_the_join_timeout_fails_at_once() -> None:
    front = Front("http://127.0.0.1:9", busy=["30"])
    async with front_end(front) as base:
        started = time.monotonic()
        result = await watch(f"{base}/whep/demo")
    assert result.error is not None and result.error.kind == "signaling"
    assert "HTTP 503 Service Unavailable with Retry-After 30 s, past the join timeout" in result.error.message
    assert time.monotonic() - started < 2.0


# -- the server makes the offer ---------------------------------------------------------


@pytest.mark.slow
async def test_a_server_that_makes_the_offer_gets_the_answer_by_patch() -> None:
    """Server-offer mode, as Janus's WHEP front end speaks it: the POST's offer is not taken,
    a 406 brings the server's offer, and the probe PATCHes its answer, with the candidates of
    the STUN server the 406 announced already in it. A probe that expects to offer is told
    what to do instead."""
    seen: list[Seen] = []
    async with IceServer.serve() as (ice, port):
        links = (f"<stun:127.0.0.1:{port}>; rel=ice-server",)
        async with peer_server(VideoStreamTrack, server_offer=True, links=links, seen=seen) as url:
            watched = await watch(url, offer="server")
            offered = await watch(url)
    assert watched.success, watched.error
    assert watched.video.frames and watched.video.frames > 20
    assert list(watched.join.phases) == list(whep.PHASES)
    post, patch, delete = seen[:3]
    assert (post.method, post.headers["Content-Type"]) == ("POST", "application/sdp")
    assert post.body.startswith("v=0") and "a=candidate" not in post.body  # never applied
    assert (patch.method, patch.path, patch.headers["Content-Type"]) == (
        "PATCH",
        "/whep/demo/1",
        "application/sdp",
    )
    assert patch.headers["If-Match"] == '"1"'
    assert patch.body.startswith("v=0") and " typ srflx " in patch.body
    assert ice.bindings, "the announced STUN server was never asked"
    assert (delete.method, delete.path) == ("DELETE", "/whep/demo/1")
    assert offered.error is not None and offered.error.kind == "signaling"
    assert offered.error.message == (
        f"{url}: HTTP 406 with an offer of the server's own: this endpoint makes the offer; "
        'probe it with --offer server (options.offer = "server")'
    )


# -- URLs a server names, fenced --------------------------------------------------------


async def test_a_fenced_probe_follows_no_redirect_to_another_host() -> None:
    async with redirects({"/whep/demo": (307, "http://127.0.0.2:9/whep/demo")}) as (base, hops):
        spec = probe_spec(f"{base}/whep/demo", may_contact=lambda url: url.startswith(base), **ROOM_PROBE)
        result = await run_probe(spec)
    assert result.error is not None and result.error.kind == "signaling"
    assert result.error.message == (
        f"{base}/whep/demo: refused a redirect to http://127.0.0.2:9/whep/demo, which is not allowed"
    )
    assert len(hops) == 1


async def test_a_fenced_probe_sends_nothing_to_a_session_location_on_another_host() -> None:
    """A 201 whose Location names another host: refused before anything goes there, so the
    probe's DELETE (with its token) never reaches that host."""

    async def created(request: web.Request) -> web.Response:
        return web.Response(
            status=201,
            text="v=0\r\n",
            content_type="application/sdp",
            headers={"Location": "http://127.0.0.2:9/sessions/1"},
        )

    app = web.Application()
    app.router.add_post("/whep/demo", created)
    logs: list[Timeline] = []
    async with aiohttp_app(app) as base:
        spec = probe_spec(
            f"{base}/whep/demo",
            may_contact=lambda url: url.startswith(base),
            options={"token": TOKEN},
            **ROOM_PROBE,
        )
        result = await run_probe(spec, on_log=logs.append)
    assert result.error is not None and result.error.kind == "signaling"
    assert (
        "refused a session Location of http://127.0.0.2:9/sessions/1, which is not allowed"
        in result.error.message
    )
    assert [(e.method, e.url) for e in logs[0].http] == [("POST", f"{base}/whep/demo")]


# -- the token in no output ----------------------------------------------------------


@pytest.mark.slow(seconds=11)
async def test_the_token_goes_on_every_request_and_into_no_output(room, cli, tmp_path) -> None:
    async with room() as live, IceServer.serve() as (_, port):
        front = Front(live.url, token=TOKEN, links=[f"<stun:127.0.0.1:{port}>; rel=ice-server"])
        async with front_end(front) as base:
            events = tmp_path / "run.json"
            watched = await _qoe(
                cli,
                "probe",
                f"{base}/whep/demo",
                "--token",
                TOKEN,
                "--duration",
                "2",
                "--json",
                "--events",
                str(events),
            )
            published = await _qoe(
                cli, "publish", f"{base}/whip/shop", "--token", TOKEN, "--duration", "2", "--json"
            )
            front.token = "another-token"
            refused = await _qoe(cli, "probe", f"{base}/whep/demo", "--token", TOKEN, "--duration", "2")
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout)["success"] is True
    assert published.returncode == 0, published.stderr
    assert [(r.method, r.headers.get("Authorization")) for r in front.seen[:3]] == [
        ("POST", f"Bearer {TOKEN}"),
        ("PATCH", f"Bearer {TOKEN}"),
        ("DELETE", f"Bearer {TOKEN}"),
    ]
    assert {r.method for r in front.seen if r.path.startswith("/whip/")} >= {"POST", "DELETE"}
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1 and "HTTP 401" in refused.stderr
    for done in (watched, published, refused):
        assert TOKEN not in done.stdout + done.stderr
    assert TOKEN not in events.read_text()


async def _qoe(cli, *args: str):  # type: ignore[no-untyped-def]
    """``qoe ARGS`` in its own process, without blocking this loop (the servers run on it)."""
    return await asyncio.to_thread(cli, *args)


# -- media through TURN only -----------------------------------------------------------


@contextlib.contextmanager
def coturn(directory: Path) -> Iterator[int]:
    """Debian's coturn on loopback with user ``u``, password ``p``; yields its port."""
    binary = require("turnserver")
    port = free_port()
    log = directory / "turnserver.log"
    args = [
        binary,
        "-n",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        "--allow-loopback-peers",
        "--lt-cred-mech",
        "--user=u:p",
        "--realm=r",
        f"--userdb={directory / 'turndb'}",
        f"--pidfile={directory / 'turnserver.pid'}",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        f"--listening-port={port}",
        "--log-file=stdout",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_for_stun(port, proc, log)
        yield port
    finally:
        stop_process(proc)


def _wait_for_stun(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    """Until a Binding request to ``port`` is answered: the server is ready."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"turnserver exited with {proc.returncode}: {log.read_text()[-2000:]}")
            probe.sendto(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)), ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                probe.recvfrom(2048)
                return
    raise TimeoutError(f"turnserver did not answer STUN within {timeout:g} s: {log.read_text()[-2000:]}")


@pytest.mark.slow
async def test_relay_only_media_goes_through_the_announced_turn_server(room, tmp_path) -> None:
    with coturn(tmp_path) as port:
        async with room() as live:
            link = (
                f'<turn:127.0.0.1:{port}?transport=udp>; rel="ice-server"; username="u"; '
                'credential="p"; credential-type="password"'
            )
            front = Front(live.url, links=[link])
            async with front_end(front) as base:
                result = await run_probe(
                    probe_spec(
                        f"{base}/whep/demo",
                        duration=4.0,
                        join_timeout=8.0,
                        options={"ice_transport": "relay"},
                    )
                )
    assert result.success, result.error
    assert set(result.join.phases) == set(whep.PHASES)
    assert (result.ice.local_candidate_type, result.ice.remote_candidate_type) == ("relay", "host")
    (patch,) = front.requests("PATCH")
    assert " typ relay " in patch.body and " typ host " not in patch.body
    (offer,) = front.requests("POST")
    assert "a=candidate:" not in offer.body  # relay only: nothing gathered before the 201
    print(f"\nthrough TURN: {result.ice}; {result.join}; {result.video.frames} frames")
