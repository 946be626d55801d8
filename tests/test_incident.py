"""Incident bundles (``--save-incident DIR``): a failed run's offer, answer, signaling exchanges,
event log and result, written so that a vendor can read them, with no secret in any file."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap

import pytest

from qoe.incident import http_transcript, sdp_pair
from qoe.timeline import HttpExchange
from tests.servers import free_port
from tests.whep_front import Front, IceServer, front_end

TOKEN = "tok-5be0e1d2c3a4f607"
TURN_SECRET = "turn-secret-8c1d2e"
SDP = "application/sdp"


def exchange(method: str, request: str, status: int | None, response: str, **fields: str) -> HttpExchange:
    return HttpExchange(
        1.0,
        method,
        "http://h/whep/x",
        fields.get("sent", ""),
        request,
        status,
        fields.get("got", ""),
        response,
    )


def test_the_offer_and_answer_are_found_whichever_side_offered() -> None:
    client = [
        exchange(
            "POST", "v=0 offer", 201, "v=0 answer", sent=f"Content-Type: {SDP}", got=f"Content-Type: {SDP}"
        ),
        exchange("PATCH", "a=candidate:1", 204, "", sent="Content-Type: application/trickle-ice-sdpfrag"),
    ]
    server = [
        exchange("POST", "", 201, "v=0 offer", got=f"Content-Type: {SDP}; charset=utf-8"),
        exchange("PATCH", "v=0 answer", 204, "", sent=f"content-type: {SDP}"),
    ]
    refused = [exchange("POST", "v=0 offer", 400, "bad offer", sent=f"Content-Type: {SDP}")]
    assert sdp_pair(client) == ("v=0 offer", "v=0 answer")
    assert sdp_pair(server) == ("v=0 offer", "v=0 answer")
    assert sdp_pair(refused) == ("v=0 offer", None)
    assert sdp_pair([]) == (None, None)


def test_the_transcript_shows_each_request_and_what_came_back() -> None:
    sent = exchange("POST", "v=0", 201, "v=0 answer", sent=f"Content-Type: {SDP}", got="Location: /s/1")
    sent.at, sent.seconds = 1.25, 0.012
    lost = HttpExchange(1.5, "DELETE", "http://h/s/1", "", "", error="ClientConnectorError: refused")
    assert http_transcript([sent, lost], start=1.0) == textwrap.dedent(
        """\
        > POST http://h/whep/x   (at 250 ms)
        > Content-Type: application/sdp

        v=0

        < HTTP 201   (after 12 ms)
        < Location: /s/1

        v=0 answer

        > DELETE http://h/s/1   (at 500 ms)

        < no answer: ClientConnectorError: refused
        """
    )


@pytest.mark.slow
async def test_a_failed_probe_saves_a_bundle_without_a_secret(room, cli, tmp_path) -> None:
    """A WHEP probe whose answer rejects the video, with a token and a TURN credential on the
    way: the bundle has what a vendor needs and none of the secrets."""
    reject = lambda sdp: re.sub(r"^m=video \d+", "m=video 0", sdp, flags=re.M)  # noqa: E731
    incidents = tmp_path / "incidents"
    async with room() as live, IceServer.serve() as (_, port):
        link = (
            f'<turn:127.0.0.1:{port}?transport=udp>; rel="ice-server"; username="u"; '
            f'credential="{TURN_SECRET}"; credential-type="password"'
        )
        front = Front(live.url, token=TOKEN, links=[link], edit_answer=reject)
        async with front_end(front) as base:
            url = f"{base}/whep/demo?key=stream-key-1"
            args = ("probe", url, "--token", TOKEN, "--duration", "3", "--save-incident", str(incidents))
            failed = await _qoe(cli, *args)
            watched = await _qoe(
                cli, "probe", f"{live.url}/whep/demo", "--duration", "1", "--save-incident", str(incidents)
            )
    assert failed.returncode == 1, failed.stderr
    assert watched.returncode == 0, watched.stderr  # a run that worked saves nothing
    (folder,) = incidents.iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z-whep", folder.name)
    assert f"incident of whep saved in {folder}" in failed.stderr
    files = {p.name: p.read_bytes().decode() for p in folder.iterdir()}  # line ends as written
    assert sorted(files) == [
        "README.txt",
        "answer.sdp",
        "events.json",
        "http.txt",
        "offer.sdp",
        "result.json",
    ]
    for name, text in files.items():
        for secret in (TOKEN, TURN_SECRET, "stream-key-1"):
            assert secret not in text, f"{secret} in {name}"
    readme = files["README.txt"].splitlines()
    assert readme[0].startswith("whep (whep) failed; started ")
    assert readme[1] == f"target: {base}/whep/demo?key=***"
    assert readme[2].startswith(
        "error: no_common_codec: no video the probe can decode: the answer rejected the video"
    )
    assert readme[3] == "join reached: signaling " + readme[3].split("signaling ")[1]
    assert f"signaling: POST {base}/whep/demo?key=*** -> HTTP 201" in readme
    assert files["offer.sdp"].startswith("v=0\r\n") and "\r\nm=video " in files["offer.sdp"]
    assert "\r\nm=video 0 " in files["answer.sdp"] and files["answer.sdp"].endswith("\r\n")
    assert re.search(r"(?m)^a=ice-pwd:\*\*\*\r$", files["offer.sdp"])
    transcript = files["http.txt"]
    assert transcript.startswith(f"> POST {base}/whep/demo?key=***   (at ")
    assert "> Authorization: Bearer ***" in transcript
    assert "< Link: <turn:127.0.0.1:" in transcript and 'credential="***"' in transcript
    assert "< HTTP 201   (after " in transcript
    assert json.loads(files["result.json"])["error"]["kind"] == "no_common_codec"
    replayed = await _qoe(cli, "replay", str(folder / "events.json"), "--json")
    assert replayed.returncode == 1
    assert json.loads(replayed.stdout)["error"]["kind"] == "no_common_codec"


def test_a_fleet_saves_a_bundle_per_failed_run(cli, tmp_path) -> None:
    closed = free_port()
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        textwrap.dedent(
            f"""\
            [fleet]
            duration = 1
            count = 2
            wait = 0
            warmup = 0

            [[targets]]
            name = "gone"
            url = "http://127.0.0.1:{closed}/whep/demo"
            slos = ["success min >= 1"]
            """
        )
    )
    incidents = tmp_path / "incidents"
    done = cli("fleet", "run", str(fleet), "--save-incident", str(incidents))
    assert done.returncode == 1, done.stderr
    folders = sorted(incidents.iterdir())
    assert [f.name.split("-", 1)[1] for f in folders] == ["gone-none-0", "gone-none-1"]
    for folder in folders:
        readme = (folder / "README.txt").read_text().splitlines()
        assert readme[2].startswith(f"error: connect: cannot connect to http://127.0.0.1:{closed}/whep/demo")
        # the offer that never got through is kept; no answer came
        assert sorted(p.name for p in folder.iterdir()) == [
            "README.txt",
            "events.json",
            "http.txt",
            "offer.sdp",
            "result.json",
        ]


def test_an_unwritable_incident_directory_is_one_line(cli, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = cli(
        "probe",
        f"http://127.0.0.1:{free_port()}/whep/x",
        "--duration",
        "1",
        "--save-incident",
        str(blocker / "x"),
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == f"qoe probe: error: --save-incident {blocker / 'x'}: Not a directory"
    )


async def _qoe(cli, *args: str):  # type: ignore[no-untyped-def]
    """``qoe ARGS`` in its own process, without blocking this loop (the servers run on it)."""
    return await asyncio.to_thread(cli, *args)
