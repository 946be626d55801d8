"""A run's event log on disk: save it, load it, and compute its result again.

The log (:class:`qoe.timeline.Timeline`) holds everything a run observed, so the result a
probe returned can be rebuilt from a saved log with no probe running
(:func:`qoe.metrics.result_of`): to check a figure by hand, to recompute old runs after a
metric's definition changes, or to test the metrics on a real run's events. The file is one
JSON document; floats are written exactly, so a replay gives the very same figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qoe.timeline import (
    AudioBlock,
    ChatReceived,
    ChatSent,
    ClockPoint,
    CpuReading,
    Failure,
    Grab,
    HttpExchange,
    IcePair,
    InteractionAsked,
    LoopTick,
    RunInfo,
    Timeline,
    ToneOnset,
    VideoFrameEvent,
)

__all__ = ["FORMAT", "EventLogError", "dumps", "from_dict", "load", "loads", "save", "to_dict"]

FORMAT = "qoe-event-log/1"
"""The document's ``format`` field: its name and version."""

_EVENTS: dict[str, type[Any]] = {
    "video": VideoFrameEvent,
    "tones": ToneOnset,
    "audio_blocks": AudioBlock,
    "chat_sent": ChatSent,
    "chat_received": ChatReceived,
    "asked": InteractionAsked,
    "grabs": Grab,
    "loop_ticks": LoopTick,
    "cpu": CpuReading,
    "ice_pairs": IcePair,
    "http": HttpExchange,
}


class EventLogError(ValueError):
    """A file that is not an event log this version can read."""


def to_dict(log: Timeline) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in Timeline.__dataclass_fields__:
        value = getattr(log, name)
        if name in _EVENTS:
            value = [_fields(e) for e in value]
        elif name == "sync":
            value = {media: [_fields(p) for p in points] for media, points in value.items()}
        elif name == "participants":
            value = {who: to_dict(sub) for who, sub in value.items()}
        elif name in ("run", "failure"):
            value = None if value is None else _fields(value)
        elif name in ("phases", "published"):
            value = None if value is None else list(value)
        data[name] = value
    return data


def _fields(event: Any) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__dataclass_fields__}


def from_dict(data: Any, where: str = "log") -> Timeline:
    if not isinstance(data, dict):
        raise EventLogError(f"{where}: expected an object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(Timeline.__dataclass_fields__))
    if unknown:
        raise EventLogError(f"{where}: unknown field {unknown[0]!r}")
    kwargs = dict(data)
    try:
        kwargs["phases"] = tuple(data.get("phases", ()))
        for name, cls in _EVENTS.items():
            kwargs[name] = [cls(**e) for e in data.get(name) or ()]
        kwargs["sync"] = {m: [ClockPoint(**p) for p in ps] for m, ps in (data.get("sync") or {}).items()}
        kwargs["participants"] = {
            who: from_dict(sub, f"{where}.participants.{who}")
            for who, sub in (data.get("participants") or {}).items()
        }
        kwargs["run"] = RunInfo(**(data.get("run") or {}))
        failure = data.get("failure")
        kwargs["failure"] = None if failure is None else Failure(**failure)
        published = data.get("published")
        kwargs["published"] = None if published is None else (int(published[0]), int(published[1]))
        return Timeline(**kwargs)
    except (TypeError, IndexError, AttributeError) as exc:
        raise EventLogError(f"{where}: {exc}") from exc


def dumps(log: Timeline) -> str:
    return json.dumps({"format": FORMAT, "log": to_dict(log)}, allow_nan=False)


def loads(text: str, source: str = "event log") -> Timeline:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventLogError(f"{source}: not JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise EventLogError(f"{source}: not a {FORMAT} document (format {found!r})")
    return from_dict(document.get("log"), source)


def save(log: Timeline, path: Path) -> None:
    path.write_text(dumps(log) + "\n")


def load(path: Path) -> Timeline:
    try:
        text = path.read_text()
    except OSError as exc:
        raise EventLogError(f"{path}: {exc.strerror or exc}") from exc
    return loads(text, str(path))
