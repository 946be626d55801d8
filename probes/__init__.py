"""Protocol probes, one module per family, all with one signature, in one registry.

``PROBES`` maps a kind to its probe function (see :mod:`probes.base` for the signature);
adding a protocol is adding a module and an entry here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from probes import ffmpeg, grab
from probes.base import ProbeFn, ProbeSpec, run
from probes.chat import echo
from probes.ffmpeg import publisher as rtmp_publish
from probes.ffmpeg import viewer as ffmpeg_viewer
from probes.options import Option, validate
from probes.webrtc import whep, whip
from qoe.errors import ConfigError
from qoe.result import ProbeResult
from qoe.timeline import Timeline

__all__ = [
    "OPTIONS",
    "PHASES",
    "PROBES",
    "PUBLISHERS",
    "ProbeSpec",
    "checked_options",
    "guess_kind",
    "phases_of",
    "probe_spec",
    "run_probe",
]

PROBES: dict[str, ProbeFn] = {
    "whep": whep.probe,
    "grab": grab.probe,
    "whip": whip.probe,
    "chat": echo.probe,
    **{kind: ffmpeg_viewer.probe for kind in ffmpeg.KINDS},
    ffmpeg.PUBLISH_KIND: rtmp_publish.probe,
}
"""Probe kind -> probe function."""

PUBLISHERS = frozenset({"whip", ffmpeg.PUBLISH_KIND})
"""The kinds that publish into a room rather than watch it."""

OPTIONS: dict[str, tuple[Option, ...]] = {
    "whep": whep.OPTIONS,
    "grab": grab.OPTIONS,
    "whip": whip.OPTIONS,
    "chat": echo.OPTIONS,
    **{kind: ffmpeg_viewer.OPTIONS for kind in ffmpeg.KINDS},
    ffmpeg.PUBLISH_KIND: rtmp_publish.OPTIONS,
}
"""Probe kind -> the options it takes (see :mod:`probes.options`)."""


def checked_options(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` validated for ``kind``, defaults filled in; OptionError names a bad key."""
    if kind not in PROBES:
        raise ConfigError(f"unknown probe kind {kind!r}; known: {', '.join(sorted(PROBES))}")
    return validate(kind, options, OPTIONS.get(kind, ()))  # a kind registered without options takes none


PHASES: dict[str, tuple[str, ...]] = {
    "whep": whep.PHASES,
    "grab": grab.PHASES,
    "whip": whip.PHASES,
    "chat": echo.PHASES,
    **ffmpeg.PHASES,
}
"""Probe kind -> its join milestones, in order (the keys of ``join.phases``)."""


def phases_of(kind: str) -> tuple[str, ...]:
    return PHASES.get(kind, ())


def guess_kind(url: str) -> str:
    """The probe kind a URL implies (``/whep/`` or ``/whip/`` in an HTTP path).

    FFmpeg kinds (:func:`probes.ffmpeg.kind_of`): ``rtmp://`` and ``rtmps://`` are ``rtmp``,
    ``rtsp://`` is ``rtsp``, an http(s) path ending in ``.flv`` is ``flv`` and in ``.m3u8``
    is ``hls``; ``srt://`` is refused (no SRT in the bundled FFmpeg). Publishing over RTMP
    (``rtmp-publish``) is never guessed: the same URL serves viewers and publishers.
    """
    media_kind = ffmpeg.kind_of(url)
    if media_kind is not None:
        return media_kind
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss") and parts.hostname:
        return "chat"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"cannot tell the probe kind of {url!r}: expected an http(s) WHEP URL, or pass --kind"
        )
    if "/whip/" in parts.path or parts.path.endswith("/whip"):
        return "whip"
    return "whep"


def probe_spec(url: str, *, kind: str | None = None, **fields: Any) -> ProbeSpec:
    """The :class:`ProbeSpec` for ``url``: the one way the CLI, a fleet run and ``/probe``
    make one, so each field means the same from all three.

    ``kind`` defaults to what the URL implies (:func:`guess_kind`); ``fields`` are the
    spec's other fields, None meaning the default. Everything a run would refuse is refused
    here, before anything starts, as a :class:`~qoe.errors.ConfigError`: an unknown kind, a
    bad option (named, with the nearest known one), a bad duration or timeout, an unknown
    network profile.
    """
    kind = kind or guess_kind(url)
    given = {name: value for name, value in fields.items() if value is not None}
    given["options"] = checked_options(kind, given.get("options", {}))
    spec = ProbeSpec(url=url, kind=kind, **given)
    spec.network()
    return spec


async def run_probe(spec: ProbeSpec, *, on_log: Callable[[Timeline], None] | None = None) -> ProbeResult:
    """Run the probe registered for ``spec.kind``; never raises for a failed probe.

    ``on_log`` is handed the run's event log once the result is computed (see
    :mod:`qoe.eventlog` to save it)."""
    probe = PROBES.get(spec.kind)
    if probe is None:
        raise ConfigError(f"unknown probe kind {spec.kind!r}; known: {', '.join(sorted(PROBES))}")
    spec = dataclasses.replace(spec, options=checked_options(spec.kind, spec.options))
    return await run(spec, probe, on_log=on_log)
