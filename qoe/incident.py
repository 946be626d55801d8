"""Incident bundles: what an engineer needs to open a ticket with a vendor about a failed run.

A run that failed (no answer, refused, connected but no video, cut off) is saved, with
``--save-incident DIR``, as a folder of plain files, so that it can be attached to a ticket
as it is and read without this project:

- ``README.txt``: what failed and how far the join got, in a few lines, and what each file is;
- ``result.json``: the result, as ``qoe probe --json`` prints it;
- ``events.json``: the run's event log (:mod:`qoe.eventlog`); ``qoe replay events.json``
  computes the same result from it;
- ``offer.sdp`` and ``answer.sdp``: the WebRTC offer and answer, whichever side made them;
- ``http.txt``: every signaling request and its answer, in order, with their timing.

Secrets never reach the bundle: the signaling exchanges were masked when they were recorded
(:class:`qoe.timeline.HttpExchange`), and every URL is shown as :func:`qoe.redact.redact_url`
shows it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from qoe import eventlog
from qoe.result import ProbeResult
from qoe.timeline import HttpExchange, Timeline

__all__ = ["save_incident", "sdp_pair"]

SDP_TYPE = "application/sdp"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def save_incident(directory: Path, result: ProbeResult, log: Timeline) -> Path:
    """Write the bundle of ``result``'s run into a new folder under ``directory`` (made if
    missing), named by the time it started and the run (a fleet's run id, or the probe's
    label); returns the folder. Raises OSError when it cannot be written."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(log.started_at))
    name = _UNSAFE.sub("-", result.run or result.probe).strip("-") or result.kind or "probe"
    folder = directory / f"{stamp}-{name}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = directory / f"{stamp}-{name}-{suffix}"
    folder.mkdir(parents=True)
    files = {
        "result.json": result.to_json(indent=2) + "\n",
        "events.json": eventlog.dumps(log) + "\n",
    }
    offer, answer = sdp_pair(log.http)
    if offer is not None:
        files["offer.sdp"] = _crlf(offer)
    if answer is not None:
        files["answer.sdp"] = _crlf(answer)
    if log.http:
        files["http.txt"] = http_transcript(log.http, log.start)
    files["README.txt"] = _readme(result, log, sorted(files))
    for file, text in files.items():
        (folder / file).write_text(text, encoding="utf-8")
    return folder


def sdp_pair(exchanges: list[HttpExchange]) -> tuple[str | None, str | None]:
    """The offer and the answer of a run's signaling: the probe's offer POSTed and the 201's
    answer or, when the server made the offer (a POST with no body), the 201's offer and the
    answer the probe PATCHed."""
    offer = answer = None
    for exchange in exchanges:
        sent_sdp = _content_type(exchange.request_headers) == SDP_TYPE and exchange.request_body
        got_sdp = exchange.status == 201 and _content_type(exchange.response_headers) == SDP_TYPE
        if exchange.method == "POST":
            if sent_sdp:
                offer, answer = exchange.request_body, exchange.response_body if got_sdp else None
            elif got_sdp:
                offer, answer = exchange.response_body, None
        elif exchange.method == "PATCH" and sent_sdp:
            answer = exchange.request_body
    return offer, answer


def http_transcript(exchanges: list[HttpExchange], start: float) -> str:
    """The exchanges as text: ``>`` what was sent, ``<`` what came back, each with its time
    from the run's start."""
    parts = []
    for exchange in exchanges:
        at = (exchange.at - start) * 1000
        lines = [f"> {exchange.method} {exchange.url}   (at {at:.0f} ms)"]
        lines += [f"> {header}" for header in exchange.request_headers.splitlines()]
        if exchange.request_body:
            lines += ["", exchange.request_body.rstrip("\n")]
        lines.append("")
        if exchange.status is None:
            lines.append(f"< no answer: {exchange.error}")
        else:
            took = f"   (after {exchange.seconds * 1000:.0f} ms)" if exchange.seconds is not None else ""
            lines.append(f"< HTTP {exchange.status}{took}")
            lines += [f"< {header}" for header in exchange.response_headers.splitlines()]
            if exchange.response_body:
                lines += ["", exchange.response_body.rstrip("\n")]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _readme(result: ProbeResult, log: Timeline, files: list[str]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(log.started_at))
    error = result.error
    lines = [
        f"{result.probe} ({result.kind}) {'failed' if error else 'ran'}; started {when}",
        f"target: {result.target}",
    ]
    if error is not None:
        lines.append(f"error: {error.kind}: {error.message}")
    if log.phases:
        reached = [
            f"{p} {(log.milestones[p] - log.start) * 1000:.0f} ms" for p in log.phases if p in log.milestones
        ]
        missing = [p for p in log.phases if p not in log.milestones]
        lines.append(f"join reached: {', '.join(reached) or 'nothing'}")
        if missing:
            lines.append(f"join never reached: {', '.join(missing)}")
    if log.ice_pairs:
        pair = log.ice_pairs[-1]
        lines.append(f"ICE candidate pair: {pair.local_type} (probe) -> {pair.remote_type} (server)")
    for exchange in log.http:
        answer = f"HTTP {exchange.status}" if exchange.status is not None else f"no answer ({exchange.error})"
        lines.append(f"signaling: {exchange.method} {exchange.url} -> {answer}")
    described = {
        "result.json": "the result, as 'qoe probe --json' prints it",
        "events.json": "the run's event log; 'qoe replay events.json' computes the result again",
        "offer.sdp": "the WebRTC offer (the probe's, or the server's when the server offers)",
        "answer.sdp": "the WebRTC answer",
        "http.txt": "every signaling request and answer, in order (secrets masked)",
    }
    lines += ["", "files:"]
    lines += [f"  {file:<12} {described[file]}" for file in files]
    return "\n".join(lines) + "\n"


def _content_type(headers: str) -> str:
    for line in headers.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return value.split(";")[0].strip().lower()
    return ""


def _crlf(sdp: str) -> str:
    return "\r\n".join(sdp.replace("\r\n", "\n").rstrip("\n").split("\n")) + "\r\n"
